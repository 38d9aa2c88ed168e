"""Config overrides, mesh resolution and the CLI's one-line errors."""

import pathlib
import re
import signal

import jax
import pytest
from jax.sharding import PartitionSpec as P

from imro_jax import cli
from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import config as config_lib
from imro_jax.train import guard
from imro_jax.train import mesh as mesh_lib
from imro_jax.train import partitioning, preemption
from imro_jax.train import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRIMODAL = str(ROOT / "experiments" / "configs" / "trimodal.py")
HANDWRITTEN = str(ROOT / "experiments" / "configs" / "handwritten.py")


@pytest.mark.parametrize("path", [TRIMODAL, HANDWRITTEN])
def test_overrides_are_parsed_to_the_type_of_the_key(path):
    config = config_lib.load_config(path, [
        "--config.optimizer.learning_rate=3",  # int text into a float key
        "--config.train.num_steps=7",
        "--config.mesh.fsdp=true",
        "--config.train.compute_dtype=bfloat16",
        "--config.mesh.rules=(('batch', 'data'), ('mlp', None))",
    ])
    assert config.optimizer.learning_rate == 3.0 and isinstance(config.optimizer.learning_rate, float)
    assert config.train.num_steps == 7 and config.mesh.fsdp is True
    assert config.train.compute_dtype == "bfloat16"
    assert config.mesh.rules == (("batch", "data"), ("mlp", None))
    with pytest.raises(AttributeError):  # locked: a typo cannot add a key later
        config.train.num_stpes = 3


def test_python_value_overrides_are_checked_like_the_command_line_ones():
    base = config_lib.load_config_file(TRIMODAL)
    config = config_lib.with_overrides(base, {"optimizer.learning_rate": 3, "mesh.rules": [["batch", "data"]],
                                              "model.reliability.decision": 0.5, "train.num_steps": 7})
    assert config.optimizer.learning_rate == 3.0 and isinstance(config.optimizer.learning_rate, float)
    assert config.mesh.rules == (("batch", "data"),) and config.train.num_steps == 7
    assert config.model.reliability.decision == 0.5
    assert base.train.num_steps != 7 and base.model.reliability.decision != 0.5  # a copy: base unchanged
    with pytest.raises(AttributeError):  # locked
        config.train.num_stpes = 3
    for overrides, message in [
        ({"optimizer.lr": 1.0}, "unknown config key 'optimizer.lr' (known here: accumulation_steps"),
        ({"optimiser.learning_rate": 1.0}, "'optimiser' is not a config section"),
        ({"train.num_steps": 7.0}, "config key 'train.num_steps' expects int, got 7.0"),
        ({"train.num_steps": True}, "config key 'train.num_steps' expects int, got True"),
        ({"mesh.fsdp": 1}, "config key 'mesh.fsdp' expects bool, got 1"),
        ({"model.fusion": 3}, "config key 'model.fusion' expects str, got 3"),
        ({"model.reliability": {"normalize": False}}, "config key 'model.reliability' is a section"),
    ]:
        with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
            config_lib.with_overrides(base, overrides)


@pytest.mark.parametrize("override,message", [
    ("--config.optimizer.lr=1", "unknown config key 'optimizer.lr' (known here: accumulation_steps"),
    ("--config.optimiser.learning_rate=1", "'optimiser' is not a config section"),
    ("--config.train.num_steps=ten", "config key 'train.num_steps' expects int, got 'ten'"),
    ("--config.mesh.fsdp=maybe", "config key 'mesh.fsdp' expects a bool"),
    ("--config.train=3", "config key 'train' is a section"),
    ("--config.train.num_steps", "must look like --config.key=value"),
])
def test_bad_overrides_are_one_line_cli_errors(tmp_path, capsys, override, message):
    status = cli.main(["train", "--config", TRIMODAL, "--workdir", str(tmp_path), override])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("imro: error: ") and message in err and err.count("\n") == 1, err


def test_impossible_mesh_is_a_one_line_cli_error(tmp_path, capsys):
    status = cli.main(["train", "--config", TRIMODAL, "--workdir", str(tmp_path),
                       "--config.mesh.model=3"])
    err = capsys.readouterr().err
    assert status == 2 and err == (
        "imro: error: cannot build mesh (model=3) on 8 devices: 8 is not divisible by 3\n")
    assert not (tmp_path / "checkpoints").exists()  # nothing started


@pytest.mark.parametrize("data,model,devices,shape", [
    (-1, 1, 8, (8, 1)), (-1, 2, 8, (4, 2)), (2, -1, 8, (2, 4)), (1, 1, 1, (1, 1)), (4, 2, 8, (4, 2)),
])
def test_mesh_shape_resolution(data, model, devices, shape):
    assert mesh_lib.resolve_mesh_shape(data, model, devices) == shape


@pytest.mark.parametrize("data,model,devices,message", [
    (-1, 2, 3, "cannot build mesh (model=2) on 3 devices: 3 is not divisible by 2"),
    (4, 1, 8, "mesh data=4 x model=1 needs 4 devices but 8 are available (use -1 for 'the rest')"),
    (-1, -1, 8, "at most one of mesh.data, mesh.model may be -1"),
    (0, 1, 8, "mesh.data must be a positive size or -1, got 0"),
])
def test_impossible_meshes_are_rejected(data, model, devices, message):
    with pytest.raises(mesh_lib.MeshError) as error:
        mesh_lib.resolve_mesh_shape(data, model, devices)
    assert str(error.value) == message


def test_mesh_uses_the_given_devices():
    mesh = mesh_lib.make_mesh(-1, 2, devices=jax.devices()[:6])
    assert dict(mesh.shape) == {"data": 3, "model": 2} and mesh.devices.size == 6
    with pytest.raises(mesh_lib.MeshError, match="3 is not divisible by 2"):
        mesh_lib.make_mesh(-1, 2, devices=jax.devices()[:3])


def test_axes_a_mesh_axis_does_not_divide_are_replicated():
    mesh = mesh_lib.make_mesh(8, 1)
    rules = partitioning.logical_axis_rules((("mlp", "model"),), fsdp=True)
    assert partitioning.mesh_partition_spec(("embed", "mlp"), (16, 6), rules, mesh) == P("data", "model")
    assert partitioning.mesh_partition_spec(("embed", "mlp"), (12, 6), rules, mesh) == P(None, "model")
    assert partitioning.mesh_partition_spec(None, (12,), rules, mesh) == P()
    with pytest.raises(ValueError, match="do not match array shape"):
        partitioning.mesh_partition_spec(("embed",), (12, 6), rules, mesh)


@pytest.mark.parametrize("override,message", [
    ("train.num_steps=-5", "config key 'train.num_steps' expects an integer >= 1, got -5"),
    ("train.log_every=0", "config key 'train.log_every' expects an integer >= 1, got 0"),
    ("train.eval_every=-1", "config key 'train.eval_every' expects an integer >= 0 (0: never), got -1"),
    ("checkpoint.every_steps=0", "config key 'checkpoint.every_steps' expects an integer >= 1, got 0"),
    ("checkpoint.keep_last=0", "config key 'checkpoint.keep_last' expects an integer >= 1, got 0"),
    ("optimizer.learning_rate=inf", "config key 'optimizer.learning_rate' expects a finite number > 0, got inf"),
    ("optimizer.learning_rate=-1e-3", "expects a finite number > 0, got -0.001"),
    ("optimizer.learning_rate=1e999", "expects a finite number > 0, got inf"),
    ("optimizer.warmup_steps=200", "config key 'optimizer.warmup_steps' expects fewer warmup updates than "
     "the run has optimizer updates (train.num_steps=200 // optimizer.accumulation_steps=1 = 200), got 200"),
    ("train.writers=('tensorbord',)", "train.writers: unknown writer(s) ['tensorbord']"),
    ("train.profile_steps=(5, 300)", "train.profile_steps (5, 300) must satisfy 1 <= first <= last <= "
     "train.num_steps (200)"),
    ("train.compute_dtype=float16", "config key 'train.compute_dtype' expects one of ('float32', 'bfloat16')"),
    ("model.fusion=average", "model.fusion must be one of"),
    ("data.name=mnist", "config key 'data.name' expects one of ('cmu_mosei', 'cmu_mosi', 'handwritten', "
     "'imro_synth'), got 'mnist'"),
    ("data.builder_config=tiny", "config key 'data.builder_config' expects one of ('default', 'default_regression', 'small', "
     "'small_regression') for "
     "imro_synth, got 'tiny'"),
    ("data.batch_size=12", "config key 'data.batch_size' expects a multiple of 8 (the number of 'data' mesh "
     "shards), got 12"),
])
def test_bad_values_are_one_line_errors_before_anything_runs(tmp_path, capsys, override, message):
    status = cli.main(["train", "--config", TRIMODAL, "--workdir", str(tmp_path / "run"),
                       f"--config.{override}"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("imro: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_data_dir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    status = cli.main(["train", "--config", TRIMODAL, "--workdir", str(tmp_path / "run"),
                       f"--config.data.data_dir={tmp_path / 'file'}"])
    assert status == 2 and capsys.readouterr().err == (
        f"imro: error: config key 'data.data_dir' expects a directory, got '{tmp_path / 'file'}' (a file)\n")


def test_an_unknown_eval_split_is_an_error_before_compiling(tmp_path, capsys):
    status = cli.main(["train", "--config", TRIMODAL, "--workdir", str(tmp_path / "run"),
                       "--config.data.builder_config=small", f"--config.data.data_dir={tmp_path / 'data'}",
                       "--config.train.eval_split=valid"])
    err = capsys.readouterr().err  # after the dataset's build progress
    assert status == 2 and err.splitlines()[-1] + "\n" == (
        "imro: error: config key 'train.eval_split' expects one of ('test', 'train', 'validation') "
        "for imro_synth/small, got 'valid'\n")
    assert not (tmp_path / "run").exists()


def _raises(error):
    def command():
        raise error

    return command


@pytest.mark.parametrize("error", [
    workdir_lib.WorkdirError("the config differs from the run in r at model.dim (64 -> 32)"),
    checkpoint_lib.IncompatibleCheckpointError(
        "checkpoint 4 in r holds another model:\n params.w saved [64] float32"),
    guard.InvalidDataError("training batch of step 6: 1 samples with modality 'a' non-finite"),
    guard.TrainingError("12 of the first 12 steps were skipped"),
])
def test_run_errors_are_one_line_with_exit_status_2(capsys, error):
    assert cli.exit_status(_raises(error)) == 2
    assert capsys.readouterr().err == f"imro: error: {' '.join(str(error).split())}\n"


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_preempted_run_exits_with_128_plus_the_signal(capsys, signum, status):
    assert cli.exit_status(_raises(preemption.Preempted(7, signum))) == status
    assert capsys.readouterr().err.startswith(f"imro: stopped by {signum.name} after step 7; ")

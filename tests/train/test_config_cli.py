"""Config overrides, mesh resolution and the CLI's one-line errors."""

import pathlib

import jax
import pytest
from jax.sharding import PartitionSpec as P

from imro_jax import cli
from imro_jax.train import config as config_lib
from imro_jax.train import mesh as mesh_lib
from imro_jax.train import partitioning

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

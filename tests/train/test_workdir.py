"""The run directory: one trainer at a time, a changed config or a lost run is an error, never a
silent restart; `--start_over` archives; `imro eval` uses the run's own config.json."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from toy import toy_config, toy_task

from imro_jax import cli
from imro_jax.train import checkpoint as checkpoint_lib
from imro_jax.train import loop
from imro_jax.train import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIMODAL = os.path.join(ROOT, "experiments", "configs", "trimodal.py")


def _config(**overrides):
    config = toy_config()
    config.train.num_steps, config.checkpoint.every_steps = 4, 2
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step toy run (checkpoints 2 and 4); tests copy it before changing it."""
    workdir = tmp_path_factory.mktemp("trained")
    loop.train(_config(), workdir, toy_task(_config()))
    return workdir


def _copy(trained, tmp_path):
    target = tmp_path / "run"
    subprocess.run(["cp", "-a", str(trained), str(target)], check=True)
    return target


def _snapshot(workdir):
    """Every file under `workdir` (but the lock) with its bytes."""
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.name != workdir_lib.LOCK_NAME}


def test_a_second_trainer_on_a_locked_workdir_is_refused_before_anything_runs(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdir_lib.lock(workdir):
        with pytest.raises(workdir_lib.WorkdirError, match=rf"in use by another trainer \(pid {os.getpid()} "):
            loop.train(_config(), workdir, toy_task(_config()))
    assert sorted(p.name for p in workdir.iterdir()) == [workdir_lib.LOCK_NAME]  # nothing written


def test_the_lock_of_a_killed_trainer_is_released_by_the_kernel(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from imro_jax.train import workdir as w\n"
         "with w.lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(workdir_lib.WorkdirError, match=f"pid {holder.pid} "):
            with workdir_lib.lock(tmp_path):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()
    with workdir_lib.lock(tmp_path):  # free again
        pass


def test_a_changed_config_names_the_keys_and_moves_nothing(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = _snapshot(workdir)
    changed = _config(**{"model.dropout": 0.2, "optimizer.learning_rate": 1e-2})
    with pytest.raises(workdir_lib.WorkdirError) as error:
        loop.train(changed, workdir, toy_task(changed))
    message = str(error.value)
    assert "model.dropout (0.1 -> 0.2)" in message and "optimizer.learning_rate (0.03 -> 0.01)" in message
    assert "\n" not in message
    assert _snapshot(workdir) == before  # no checkpoint moved, no log rewritten
    assert not (workdir / "corrupt_checkpoints").exists()
    # Operational keys may change on resume: the finished run resumes (nothing left to do).
    same = _config(**{"train.log_every": 2, "mesh.data": 4, "mesh.model": 2,
                      "train.writers": ("tensorboard",), "train.profile_steps": (3, 4)})
    loop.train(same, workdir, toy_task(same))
    assert (workdir / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def _corrupt_every_checkpoint(workdir):
    for path in (workdir / "checkpoints").glob("*/data/process_0-of-1.json"):
        path.unlink()


def test_a_run_without_a_usable_checkpoint_is_never_restarted_silently(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    metrics = (workdir / "metrics.jsonl").read_bytes()
    _corrupt_every_checkpoint(workdir)
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"steps \[4, 2\] are corrupted"):
        loop.train(_config(), workdir, toy_task(_config()))
    # The rerun (an automatic requeue) finds only quarantined checkpoints: refused.
    with pytest.raises(workdir_lib.WorkdirError, match="holds a run .* no usable checkpoint; pass --start_over"):
        loop.train(_config(), workdir, toy_task(_config()))
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    # An explicit start over archives the old run and trains from step 1.
    loop.train(_config(), workdir, toy_task(_config()), start_over=True)
    (archived,) = (workdir / "previous").iterdir()
    assert (archived / "metrics.jsonl").read_bytes() == metrics
    quarantined = (archived / "corrupt_checkpoints").iterdir()
    assert sorted(p.name.split("-")[0] for p in quarantined) == ["2", "4"]
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_eval_uses_the_runs_config_json_with_overrides_on_top(tmp_path, monkeypatch):
    """`imro eval` without the training overrides scores the run's data, not the file's."""
    from imro_jax.train import config as config_lib
    from imro_jax.train import model_task as model_task_lib
    from imro_jax.train import validate

    trained_with = config_lib.load_config(TRIMODAL, ["--config.data.builder_config=small",
                                                     "--config.model.dim=32"])
    (tmp_path / "config.json").write_text(trained_with.to_json_best_effort(indent=2))
    seen = {}
    monkeypatch.setattr(model_task_lib, "model_task", lambda config: seen.setdefault("config", config))
    monkeypatch.setattr(validate, "validate_split", lambda *args: None)
    monkeypatch.setattr(loop, "evaluate_checkpoint", lambda config, *args: {"accuracy": 1.0})
    status = cli.main(["eval", "--config", TRIMODAL, "--workdir", str(tmp_path),
                       "--config.train.eval_split=test"])
    assert status == 0
    config = seen["config"]
    assert config.data.builder_config == "small" and config.model.dim == 32  # from config.json
    assert config.train.eval_split == "test"  # the override, on top
    assert config.mesh.rules == trained_with.mesh.rules  # tuples, as in the config file
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0  # --config is not needed

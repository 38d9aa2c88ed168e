"""The run cache (`imro_jax.train.run_cache`): a per-user directory, keyed by the config and the
code that trains it, and a run killed before its first checkpoint trained again rather than
refused or reused."""

import json
import pathlib
import types

import numpy as np
import pytest
import toy
import trainlib  # noqa: F401  (a persistent compilation cache: the reuse compiles nothing new)

import imro_jax
from imro_jax.train import run_cache


def test_cache_dir_is_per_user_and_configurable(monkeypatch, tmp_path):
    monkeypatch.delenv("IMRO_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert run_cache.cache_dir() == tmp_path / "home" / ".cache" / "imro-jax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert run_cache.cache_dir() == tmp_path / "xdg" / "imro-jax"
    monkeypatch.setenv("IMRO_CACHE_DIR", str(tmp_path / "mine"))
    assert run_cache.cache_dir() == tmp_path / "mine"


def _fake_package(root: pathlib.Path) -> pathlib.Path:
    (root / "train").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "train" / "loop.py").write_text("STEPS = 1\n")
    return root / "__init__.py"


def test_code_fingerprint_follows_the_package_sources(monkeypatch, tmp_path):
    fake = _fake_package(tmp_path / "imro_jax")
    monkeypatch.setattr(run_cache.imro_jax, "__file__", str(fake))
    fingerprint = run_cache.code_fingerprint.__wrapped__
    before = fingerprint()
    (tmp_path / "imro_jax" / "__pycache__").mkdir()
    (tmp_path / "imro_jax" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "imro_jax" / "notes.txt").write_text("not code")
    assert fingerprint() == before  # compiled files and non-sources do not count
    (tmp_path / "imro_jax" / "train" / "loop.py").write_text("STEPS = 2\n")
    assert fingerprint() != before
    (tmp_path / "imro_jax" / "train" / "loop.py").write_text("STEPS = 1\n")
    assert fingerprint() == before
    (tmp_path / "imro_jax" / "train" / "loop.py").rename(tmp_path / "imro_jax" / "train" / "step.py")
    assert fingerprint() != before  # a renamed module is another package


def test_code_fingerprint_covers_the_module_that_calls_the_trainer():
    package = pathlib.Path(imro_jax.__file__).resolve().parent
    assert pathlib.Path(run_cache.__file__).resolve().is_relative_to(package)  # hashed with the package


def toy_experiment_config(num_steps: int = 4):
    """The trainer tests' toy config with the fields `run_cache.run_name` reads."""
    config = toy.toy_config()
    config.data.name = "toy"
    config.model.task = "classification"
    config.model.fusion = "toy"
    config.train.num_steps = num_steps
    config.checkpoint.every_steps = num_steps
    return config


@pytest.fixture
def toy_run_cache(monkeypatch):
    """`run_cache.train_or_reuse` on the toy task (no dataset, one small compiled step)."""
    monkeypatch.setattr(run_cache, "model_task", toy.toy_task)
    monkeypatch.setattr(run_cache, "build_model", lambda model_config: None)
    return run_cache


def _steps(workdir: pathlib.Path) -> list[int]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def test_run_name_ignores_only_the_data_dir():
    config = toy_experiment_config()
    name = run_cache.run_name(config)
    assert name.startswith("toy-classification-toy-seed0-steps4-")
    moved = toy_experiment_config()
    moved.data.data_dir = "/elsewhere"
    assert run_cache.run_name(moved) == name
    reseeded = toy_experiment_config()
    reseeded.seed = 1
    assert run_cache.run_name(reseeded) != name


def test_runs_are_keyed_by_config_and_code(monkeypatch, tmp_path):
    config = toy_experiment_config()
    workdir = run_cache.run_dir(config, tmp_path)
    assert workdir == tmp_path / f"code-{run_cache.code_fingerprint()}" / run_cache.run_name(config)
    assert run_cache.run_dir(toy_experiment_config(num_steps=5), tmp_path) != workdir
    monkeypatch.setattr(run_cache, "code_fingerprint", lambda: "changedcode0")
    assert run_cache.run_dir(config, tmp_path) == tmp_path / "code-changedcode0" / workdir.name


def test_a_run_killed_before_its_first_checkpoint_is_trained_again(toy_run_cache, tmp_path):
    config = toy_experiment_config()
    workdir = run_cache.run_dir(config, tmp_path)
    # What `kill -9` leaves after 2 logged steps, during the first save: config.json, the log,
    # the lock file, and an Orbax temporary directory in place of a committed checkpoint.
    (workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1764590000000000").mkdir(parents=True)
    (workdir / "config.json").write_text(config.to_json_best_effort())
    (workdir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 9.0}\n')
    (workdir / ".lock").write_text("pid 1 on elsewhere")
    messages = []
    trained = toy_run_cache.train_or_reuse(config, tmp_path, log=messages.append)
    assert trained.workdir == workdir
    assert _steps(workdir) == [1, 2, 3, 4]  # trained from scratch, the stale log not appended to
    assert "without a checkpoint" in messages[0]
    (archived,) = (workdir / "previous").iterdir()  # the stale run is kept, not deleted
    assert "9.0" in (archived / "metrics.jsonl").read_text()
    assert not run_cache._no_checkpoint_left(workdir)
    again = toy_run_cache.train_or_reuse(config, tmp_path, log=messages.append)  # finished: reused as it is
    assert again.workdir == workdir and _steps(workdir) == [1, 2, 3, 4] and len(messages) == 3
    assert run_cache.checkpoint_steps(config, workdir, toy.toy_task(config)) == [4]


def test_trained_history_and_speed(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 2.0, "steps_per_s": 0.5}\n\n{"step": 2, "steps_per_s": 10.0}\n'
        '{"step": 3, "steps_per_s": 30.0}\n{"step": 3, "eval_accuracy": 0.5}\n')
    trained = run_cache.Trained(model=None, variables={}, config=None, workdir=tmp_path)
    assert [r["step"] for r in trained.history()] == [1, 2, 3, 3]
    assert trained.steps_per_second() == 20.0  # median of 10 and 30; the first interval (compiling) left out
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "steps_per_s": 0.5}\n')
    assert np.isnan(trained.steps_per_second())


def test_enable_compilation_cache_creates_and_sets_the_directory(monkeypatch, tmp_path):
    updates = {}  # what it would set in jax.config (the session's own cache is left alone)
    fake_jax = types.SimpleNamespace(config=types.SimpleNamespace(update=updates.__setitem__))
    monkeypatch.setattr(run_cache, "jax", fake_jax)
    monkeypatch.setenv("IMRO_XLA_CACHE", str(tmp_path / "xla"))
    run_cache.enable_compilation_cache()
    assert (tmp_path / "xla").is_dir() and updates["jax_compilation_cache_dir"] == str(tmp_path / "xla")
    run_cache.enable_compilation_cache(tmp_path / "given")
    assert (tmp_path / "given").is_dir() and updates["jax_compilation_cache_dir"] == str(tmp_path / "given")

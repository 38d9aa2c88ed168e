"""The experiments' run cache: a per-user directory, keyed by the config and the code that trains
it, and a run killed before its first checkpoint trained again rather than refused or reused."""

import json
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO / "tests" / "train"))

import common  # noqa: E402
import toy  # noqa: E402
import trainlib  # noqa: E402, F401  (a persistent compilation cache: the reuse compiles nothing new)


def test_cache_dir_is_per_user_and_configurable(monkeypatch, tmp_path):
    monkeypatch.delenv("IMRO_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert common.cache_dir() == tmp_path / "home" / ".cache" / "imro-jax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert common.cache_dir() == tmp_path / "xdg" / "imro-jax"
    monkeypatch.setenv("IMRO_CACHE_DIR", str(tmp_path / "mine"))
    assert common.cache_dir() == tmp_path / "mine"
    args = common.parse_args("synth", "", [])
    assert args.workdir == tmp_path / "mine" / "runs"


def _fake_package(root: pathlib.Path) -> pathlib.Path:
    (root / "train").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "train" / "loop.py").write_text("STEPS = 1\n")
    return root / "__init__.py"


def test_code_fingerprint_follows_the_package_sources(monkeypatch, tmp_path):
    fake = _fake_package(tmp_path / "imro_jax")
    monkeypatch.setattr(common.imro_jax, "__file__", str(fake))
    fingerprint = common.code_fingerprint.__wrapped__
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


def test_code_fingerprint_follows_the_experiments_training_module(monkeypatch, tmp_path):
    assert pathlib.Path(common.__file__).resolve() in common.EXPERIMENT_SOURCES
    source = tmp_path / "common.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(common, "EXPERIMENT_SOURCES", (source,))
    fingerprint = common.code_fingerprint.__wrapped__
    before = fingerprint()
    source.write_text("A = 2\n")
    assert fingerprint() != before


def toy_experiment_config(num_steps: int = 4):
    """The trainer tests' toy config with the fields `common.run_name` reads."""
    config = toy.toy_config()
    config.data.name = "toy"
    config.model.task = "classification"
    config.model.fusion = "toy"
    config.train.num_steps = num_steps
    config.checkpoint.every_steps = num_steps
    return config


@pytest.fixture
def toy_common(monkeypatch):
    """`common.train` on the toy task (no dataset, one small compiled step)."""
    monkeypatch.setattr(common, "model_task", toy.toy_task)
    monkeypatch.setattr(common, "build_model", lambda model_config: None)
    return common


def _steps(workdir: pathlib.Path) -> list[int]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def test_runs_are_keyed_by_config_and_code(monkeypatch, tmp_path):
    config = toy_experiment_config()
    workdir = common.run_dir(config, tmp_path)
    assert workdir == tmp_path / f"code-{common.code_fingerprint()}" / common.run_name(config)
    assert common.run_dir(toy_experiment_config(num_steps=5), tmp_path) != workdir
    monkeypatch.setattr(common, "code_fingerprint", lambda: "changedcode0")
    assert common.run_dir(config, tmp_path) == tmp_path / "code-changedcode0" / workdir.name


def test_a_run_killed_before_its_first_checkpoint_is_trained_again(toy_common, tmp_path):
    config = toy_experiment_config()
    workdir = common.run_dir(config, tmp_path)
    # What `kill -9` leaves after 2 logged steps, during the first save: config.json, the log,
    # the lock file, and an Orbax temporary directory in place of a committed checkpoint.
    (workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1764590000000000").mkdir(parents=True)
    (workdir / "config.json").write_text(config.to_json_best_effort())
    (workdir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 9.0}\n')
    (workdir / ".lock").write_text("pid 1 on elsewhere")
    messages = []
    trained = toy_common.train(config, tmp_path, log=messages.append)
    assert trained.workdir == workdir
    assert _steps(workdir) == [1, 2, 3, 4]  # trained from scratch, the stale log not appended to
    assert "without a checkpoint" in messages[0]
    (archived,) = (workdir / "previous").iterdir()  # the stale run is kept, not deleted
    assert "9.0" in (archived / "metrics.jsonl").read_text()
    assert not common._no_checkpoint_left(workdir)
    again = toy_common.train(config, tmp_path, log=messages.append)  # finished: reused as it is
    assert again.workdir == workdir and _steps(workdir) == [1, 2, 3, 4] and len(messages) == 3

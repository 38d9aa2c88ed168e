"""`imro train` / `imro eval` on the real configs (IMRO model + TFDS/grain data) on CPU.

The commands run as subprocesses, as a user runs them. Compiling the real model dominates the
time of these tests, so XLA's CPU backend optimisation is turned down for them (level 0: same
results up to rounding, about half the compile time); the assertions do not depend on rounding.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from trainlib import subprocess_env

from imro_jax.train.mesh import simulated_cpu_xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL_MODEL = ["--config.model.dim=16", "--config.model.mlp_dim=32", "--config.model.depth=1",
               "--config.data.batch_size=64"]


def _imro(*args: str) -> None:
    env = subprocess_env()
    env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                        + simulated_cpu_xla_flags())
    result = subprocess.run([sys.executable, "-m", "imro_jax.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_then_eval_real_config(tmp_path):
    """The tri-modal config through `imro train` and `imro eval` on 8 simulated devices. (The
    Handwritten config trains end to end in tests/experiments/test_quick.py, through the same
    `imro_jax.train.loop.train`; its CLI run here cost 100 s of CI for no other code path.)"""
    extra = ["--config.data.builder_config=small", "--config.train.eval_split=test"]
    config = str(ROOT / "experiments" / "configs" / "trimodal.py")
    common = ["--config", config, "--workdir", str(tmp_path / "run"),
              f"--config.data.data_dir={tmp_path / 'data'}", *SMALL_MODEL, *extra]
    _imro("train", *common, "--config.train.num_steps=3", "--config.train.log_every=1",
          "--config.train.eval_every=3", "--config.checkpoint.every_steps=2",
          "--config.optimizer.warmup_steps=1")
    records = _records(tmp_path / "run")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in ("loss", "task_loss", "accuracy", "reliability/text", "entropy/text", "mi/text", "lr", "grad_norm", "skipped", "examples_per_s"):
        assert all(np.isfinite(r[key]) for r in train), key
    (final_eval,) = [r for r in records if "eval/accuracy" in r]
    assert final_eval["step"] == 3 and 0.0 <= final_eval["eval/accuracy"] <= 1.0
    split = "test"
    _imro("eval", *common, "--split", split)
    result = json.loads((tmp_path / "run" / f"eval_{split}.json").read_text())
    assert result["step"] == 3 and result["accuracy"] == final_eval["eval/accuracy"]
    assert result["num_examples"] == 500  # the whole test split of imro_synth/small

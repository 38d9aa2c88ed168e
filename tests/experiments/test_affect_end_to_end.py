"""CMU-MOSEI end to end on a fabricated pickle in the exact layout of MulT's aligned release:
the config, `imro train` on it, the affect metrics in its eval summary, and the experiment's
--quick mode; so the day a user drops the real `mosei_senti_data.pkl` in, the path runs.

The pickle is small (48/8/16 segments, front-padded with all-zero steps as in the release). The
runs are subprocesses on one CPU device sharing one data dir and one XLA cache, with the backend
optimisation lowered (these tests are about code paths, not speed).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from affectdata import MOSEI_DIMS, fabricate_affect_pickle
from testenv import cpu_subprocess_env

from imro_jax.data import make_pipeline, prepare_dataset
from imro_jax.models.encoders import feature_step_mask
from imro_jax.train.config import load_config_file

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "configs" / "cmu_mosei.py"
SIZES = {"train": 48, "valid": 8, "test": 16}
TINY = ["--config.model.dim=16", "--config.model.mlp_dim=32", "--config.model.depth=1",
        "--config.model.num_heads=2", "--config.data.batch_size=8"]


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    root = tmp_path_factory.mktemp("affect")
    manual = root / "manual"
    manual.mkdir()
    content = fabricate_affect_pickle(manual / "mosei_senti_data.pkl", dims=MOSEI_DIMS, sizes=SIZES,
                                      front_padding=True)
    cache = os.environ.get("IMRO_TEST_XLA_CACHE", str(root / "xla_cache"))
    env = cpu_subprocess_env(cache, IMRO_XLA_CACHE=cache)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    return {"root": root, "manual": manual, "content": content, "env": env}


def _run(fabricated, args, timeout=900):
    done = subprocess.run([sys.executable, *args], env=fabricated["env"], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    return done


def test_config_reads_the_pickle_with_padding_masked(fabricated):
    config = load_config_file(CONFIG)
    config.data.data_dir = str(fabricated["root"] / "tfds")
    config.data.manual_dir = str(fabricated["manual"])
    config.data.batch_size = 8
    prepare_dataset(config.data)
    batch = next(make_pipeline(config.data, split="test", train=False, seed=0))
    source = fabricated["content"]["test"]
    n = config.data.batch_size
    # TFDS stores the split shuffled; the labels (distinct within a split) identify the rows.
    rows = [int(np.flatnonzero(source["labels"][:, 0, 0] == y)[0]) for y in batch["label"]]
    for m, d in MOSEI_DIMS.items():
        assert batch[m].shape == (n, 50, d) and config.model.modalities[m].input_dim == d
        np.testing.assert_allclose(batch[m], source[m][rows], rtol=1e-6)
    # The encoder's padding mask marks exactly the front-padded steps as padding.
    words = np.any(source["text"][rows] != 0, axis=-1)
    np.testing.assert_array_equal(np.asarray(feature_step_mask(batch["text"])), words)
    assert not words[:, 0].all() and words[:, -1].all()
    assert config.model.task == "regression" and config.loss.regression_loss == "l1"


def test_imro_train_reports_the_affect_metrics(fabricated):
    # The experiment's quick IMRO run (below) has the same train step, so it reuses this compilation.
    variance = float(np.var(fabricated["content"]["train"]["labels"].astype(np.float64)))
    workdir = fabricated["root"] / "cli_run"
    done = _run(fabricated, [
        "-m", "imro_jax.cli", "train", "--config", str(CONFIG), "--workdir", str(workdir),
        f"--config.data.data_dir={fabricated['root'] / 'tfds'}", f"--config.data.manual_dir={fabricated['manual']}",
        *TINY, f"--config.model.label_variance={variance!r}", "--config.train.num_steps=2",
        "--config.train.log_every=1", "--config.train.eval_every=2", "--config.train.eval_split=test",
        "--config.checkpoint.every_steps=2", "--config.optimizer.warmup_steps=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    (final,) = [r for r in records if "eval/mae" in r]
    assert final["eval/num_examples"] == SIZES["test"]
    for key in ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5"):
        assert 0.0 <= final[f"eval/{key}"] <= 1.0, key
    # Scores are in [-3, 3] and the untrained predictions near 0: MAE is of the order of |y|.
    mean_abs = np.mean(np.abs(fabricated["content"]["test"]["labels"]))
    assert 0.3 * mean_abs < final["eval/mae"] < 3.0 * mean_abs + 1.0
    assert np.isfinite(final["eval/reliability/text"]) and "accuracy" not in final


def test_experiment_quick_writes_the_standard_table(fabricated):
    out = fabricated["root"] / "out"
    done = _run(fabricated, [
        str(REPO / "experiments" / "affect.py"), "--dataset", "cmu_mosei", "--manual_dir", str(fabricated["manual"]),
        "--quick", "--steps", "2", "--out", str(out), "--data_dir", str(fabricated["root"] / "tfds"),
        "--workdir", str(fabricated["root"] / "runs")])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"command", "seeds", "methods"} and summary["seeds"] == 1
    assert summary["command"].startswith("python experiments/affect.py --dataset cmu_mosei")
    assert set(summary["methods"]) == {"imro", "evidential (7 classes)"}
    assert 0.0 <= summary["methods"]["evidential (7 classes)"]["acc7"] <= 1.0
    assert summary["methods"]["imro"]["mae"] > 0 and 0.0 <= summary["methods"]["imro"]["f1_non0"] <= 1.0
    markdown = (out / "results.md").read_text()
    assert "QUICK" in markdown and "MulT (published" in markdown and "82.5" in markdown and "0.580" in markdown
    payload = json.loads((out / "results.json").read_text())
    gaussian = payload["per_seed"][0]["regression"]["sweeps"]["gaussian"]
    assert gaussian["subsets"] == [["audio"], ["text"], ["vision"]]
    assert set(payload["per_seed"][0]["regression"]["sweeps"]) == {"missing", "gaussian", "snr", "blank"}
    assert (out / "r_under_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_without_the_pickle_says_where_to_get_it(tmp_path, fabricated):
    done = _run(fabricated, [str(REPO / "experiments" / "affect.py"), "--dataset", "cmu_mosi",
                             "--manual_dir", str(tmp_path), "--out", str(tmp_path / "out")], timeout=300)
    assert done.returncode != 0
    assert f"{tmp_path / 'mosi_data.pkl'} not found" in done.stderr
    assert "https://github.com/yaohungt/Multimodal-Transformer" in done.stderr and "Traceback" not in done.stderr

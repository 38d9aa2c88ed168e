"""Grain pipelines: batch contract, per-process sharding, checkpoint/restore, errors; a whole split in memory."""

import json
import sys

import jax
import numpy as np
import pytest

from imro_jax import batch as batch_lib
from imro_jax.data import batched_dataset, datasets, load_split, make_pipeline, subset_rows


def _index_element(i):
    return {"x": np.int64(i), "mask": {"x": np.bool_(True)}, "label": np.int32(i % 3)}


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_synth_batches_follow_the_contract(synth_config):
    it = make_pipeline(synth_config, split="train", train=True, seed=0)
    batch = next(it)
    b = synth_config.batch_size
    assert batch_lib.modality_names(batch) == ["audio", "text", "vision"]
    assert batch["audio"].shape == (b, 8000) and batch["audio"].dtype == np.float32
    assert batch["text"].shape == (b, 32) and batch["text"].dtype == np.int32
    assert batch["vision"].shape == (b, 32, 32, 3) and batch["vision"].dtype == np.float32
    assert batch["label"].shape == (b,) and batch["label"].dtype == np.int32
    assert batch["caption"].shape == (b, 12) and batch["caption"].dtype == np.int32
    for m in ("audio", "text", "vision"):
        assert batch["mask"][m].dtype == np.bool_ and batch["mask"][m].all()
        q = batch["quality"][m]
        assert q.shape == (b,) and q.dtype == np.float32 and np.all((q >= 0) & (q <= 1))
    assert 0.0 <= batch["vision"].min() and batch["vision"].max() <= 1.0
    assert -1.0 <= batch["audio"].min() and batch["audio"].max() <= 1.0
    assert batch["text"].max() < 256 and np.all(batch["label"] < 4)
    assert "tensorflow" not in sys.modules


def test_checkpoint_restore_continues_identically(synth_config):
    it = make_pipeline(synth_config, split="train", train=True, seed=5)
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # serialisable, as saved with a checkpoint
    expected = _take(it, 3)
    restored = make_pipeline(synth_config, split="train", train=True, seed=5)
    restored.set_state(state)
    for a, b in zip(expected, _take(restored, 3)):
        np.testing.assert_equal(a, b)
    first_of = lambda seed: next(make_pipeline(synth_config, split="train", train=True, seed=seed))  # noqa: E731
    assert not np.array_equal(first_of(6)["label"], first_of(5)["label"])


def test_checkpoint_restore_across_epochs():
    source = list(range(10))
    make = lambda: iter(batched_dataset(source, _index_element, batch_size=4, train=True, seed=1))  # noqa: E731
    it = make()
    _take(it, 4)  # past the first epoch
    state = it.get_state()
    expected = [b["x"] for b in _take(it, 5)]
    restored = make()
    restored.set_state(state)
    np.testing.assert_array_equal(expected, [b["x"] for b in _take(restored, 5)])


def test_eval_shards_are_disjoint_and_complete():
    n, processes = 23, 3
    shards = []
    for p in range(processes):
        batches = list(batched_dataset(list(range(n)), _index_element, batch_size=6, train=False, seed=0,
                                       process_index=p, process_count=processes))
        assert all(len(b["x"]) <= 2 for b in batches)
        shards.append(np.concatenate([b["x"] for b in batches]))
    flat = np.concatenate(shards)
    assert len(flat) == n and len(set(flat.tolist())) == n
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))


def test_train_shards_partition_each_global_batch():
    source, processes, global_batch = list(range(30)), 4, 8
    single = iter(batched_dataset(source, _index_element, batch_size=global_batch, train=True, seed=3))
    shards = [
        iter(batched_dataset(source, _index_element, batch_size=global_batch, train=True, seed=3,
                             process_index=p, process_count=processes))
        for p in range(processes)
    ]
    stream = []
    for _ in range(12):  # several epochs (30 is not a multiple of 8)
        parts = [next(s)["x"] for s in shards]
        assert all(len(p) == global_batch // processes for p in parts)
        union = np.concatenate(parts)
        assert len(set(union.tolist())) == global_batch  # disjoint within the global batch
        stream.extend(next(single)["x"].tolist())
        np.testing.assert_array_equal(np.sort(union), np.sort(stream[-global_batch:]))
    assert sorted(stream[:30]) == source and sorted(stream[30:60]) == source  # each epoch once
    assert stream[:30] != stream[30:60]  # reshuffled every epoch


def test_handwritten_eval_over_processes_covers_test_split(handwritten_config):
    config = datasets.default_data_config(
        "handwritten", data_dir=handwritten_config.data_dir, batch_size=60
    )
    rows, labels = [], []
    for p in range(3):
        for batch in make_pipeline(config, split="test", train=False, seed=0, process_index=p, process_count=3):
            assert batch["fou"].shape[0] <= 20
            rows.append(np.concatenate([batch[v] for v in batch_lib.modality_names(batch)], axis=1))
            labels.append(batch["label"])
    rows = np.concatenate(rows)
    assert rows.shape == (400, 649)
    assert len(np.unique(rows, axis=0)) == 400
    np.testing.assert_array_equal(np.bincount(np.concatenate(labels)), np.full(10, 40))


def test_multiprocess_workers_match_in_process(synth_config):
    config = datasets.default_data_config(
        "imro_synth", builder_config="small", data_dir=synth_config.data_dir, batch_size=8, worker_count=1
    )
    in_process = datasets.default_data_config(
        "imro_synth", builder_config="small", data_dir=synth_config.data_dir, batch_size=8
    )
    workers = make_pipeline(config, split="validation", train=True, seed=2)
    try:
        got = _take(workers, 3)
    finally:
        workers.close()
    expected = _take(make_pipeline(in_process, split="validation", train=True, seed=2), 3)
    for a, b in zip(expected, got):
        np.testing.assert_equal(a, b)


def test_errors_are_clear(synth_config, tmp_path):
    with pytest.raises(ValueError, match="splits"):
        make_pipeline(synth_config, split="valid", train=False, seed=0)
    missing = datasets.default_data_config("imro_synth", builder_config="small", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m imro_jax.data.prepare"):
        make_pipeline(missing, split="train", train=True, seed=0)
    with pytest.raises(ValueError, match="not divisible"):
        make_pipeline(synth_config, split="train", train=True, seed=0, process_count=3)
    wrong = datasets.default_data_config(
        "imro_synth", builder_config="small", data_dir=synth_config.data_dir, num_classes=10
    )
    with pytest.raises(ValueError, match="num_classes=10"):
        make_pipeline(wrong, split="train", train=True, seed=0)
    with pytest.raises(ValueError, match=r"missing keys \['read_threads'\]"):
        bad = datasets.default_data_config("imro_synth")
        del bad["read_threads"]
        datasets.validate_data_config(bad)


def test_load_split_is_the_whole_split_in_order(synth_config):
    whole = load_split(synth_config, "test")
    batches = list(make_pipeline(synth_config, split="test", train=False, seed=0))
    assert len(batches) > 1  # the split spans several batches, concatenated in order
    expected = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(whole["label"], expected)
    size = datasets.get_builder(synth_config).info.splits["test"].num_examples
    for name in batch_lib.modality_names(whole):
        assert whole[name].shape[0] == size and whole["mask"][name].shape == (size,)
    first = subset_rows(whole, 5)
    assert jax.tree.structure(first) == jax.tree.structure(whole)
    for leaf, full in zip(jax.tree.leaves(first), jax.tree.leaves(whole)):
        assert isinstance(leaf, np.ndarray) and leaf.shape[0] == 5
        np.testing.assert_array_equal(leaf, full[:5])
    assert subset_rows({"x": np.arange(2)}, 5)["x"].tolist() == [0, 1]  # fewer rows than asked: all of them

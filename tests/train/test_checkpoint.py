"""Checkpoints: round trip, other mesh, corrupted/incomplete fallback, retention, fingerprints."""

import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainlib import tree_equal
from imro_jax.train import checkpoint as checkpoint_lib


@pytest.fixture(scope="module")
def states(setup):
    """Two different train states on the data=8 mesh (after 1 and 2 steps)."""
    s = setup()
    _, first = s.run(1)
    _, second = s.run(2)
    return jax.device_get(first), jax.device_get(second), first, second


def _checkpointer(tmp_path, **kwargs):
    kwargs.setdefault("keep_last", 3)
    return checkpoint_lib.Checkpointer(tmp_path / "checkpoints", **kwargs)


def _save_two(tmp_path, states):
    _, _, first, second = states
    ckpt = _checkpointer(tmp_path)
    ckpt.save(2, first, {"index": 2})
    ckpt.save(4, second, b"\x00grain\xffstate")
    ckpt.close()
    return tmp_path / "checkpoints"


def test_round_trip_restores_state_and_data_state_bitwise(tmp_path, setup, states):
    first_host, second_host, _, _ = states
    _save_two(tmp_path, states)
    ckpt = _checkpointer(tmp_path)
    abstract = setup().abstract_state()
    restored = ckpt.restore(2, abstract)
    assert restored.step == 2 and restored.data_state == {"index": 2}
    assert tree_equal(jax.device_get(restored.state), first_host)
    latest = ckpt.restore_latest(abstract)
    assert latest.step == 4 and latest.data_state == b"\x00grain\xffstate"
    assert tree_equal(jax.device_get(latest.state), second_host)
    ckpt.close()


def test_restore_onto_a_different_mesh(tmp_path, setup, states):
    _, second_host, _, _ = states
    _save_two(tmp_path, states)  # saved from data=8, model=1
    target = setup(data=4, model=2)
    ckpt = _checkpointer(tmp_path)
    restored = ckpt.restore_latest(target.abstract_state())
    ckpt.close()
    assert tree_equal(jax.device_get(restored.state), second_host)
    got = jax.tree.map(lambda x: x.sharding, restored.state)
    assert jax.tree.leaves(got) == jax.tree.leaves(target.shardings)
    kernel = restored.state.params["mlp_in"]["kernel"]  # [16, 32], mlp over model=2
    assert {shard.data.shape for shard in kernel.addressable_shards} == {(16, 16)}


def _flip_bytes(root):  # damage every array data chunk file of step 4
    chunks = [p for p in (root / "4" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for path in chunks:
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 3, min(len(data) // 3 + 16, len(data))):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))


def _swap_state(root):  # valid files, wrong values: only the fingerprints can tell
    shutil.rmtree(root / "4" / "state")
    shutil.copytree(root / "2" / "state", root / "4" / "state")


def _delete_data_state(root):
    (root / "4" / "data" / "process_0-of-1.json").unlink()


def _edit_data_state(root):  # valid JSON, another stream position: only the checksum can tell
    path = root / "4" / "data" / "process_0-of-1.json"
    payload = json.loads(path.read_text())
    payload["value"] = {"index": 3} if isinstance(payload["value"], dict) else "AAAA"
    path.write_text(json.dumps(payload))


def _truncate_meta(root):
    path = root / "4" / "meta" / "metadata"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# A failed TensorStore read can leave Orbax's event-loop callback to fire after the loop closed
# (an "Exception ignored" in a background thread, harmless): not ours to fix.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corrupt", [_flip_bytes, _swap_state, _delete_data_state, _edit_data_state,
                                     _truncate_meta])
def test_corrupted_latest_is_reported_and_skipped(tmp_path, setup, states, caplog, corrupt):
    first_host, _, _, _ = states
    root = _save_two(tmp_path, states)
    corrupt(root)
    ckpt = _checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING, logger=checkpoint_lib.__name__):
        restored = ckpt.restore_latest(setup().abstract_state())
    assert restored.step == 2 and restored.data_state == {"index": 2}
    assert tree_equal(jax.device_get(restored.state), first_host)
    assert any("checkpoint 4" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog.records)
    assert ckpt.steps() == [2]  # moved aside, so step 4 can be written again
    assert [p.name.split("-")[0] for p in (tmp_path / "corrupt_checkpoints").iterdir()] == ["4"]
    ckpt.save(4, restored.state, {"index": 4})
    ckpt.close()


def test_interrupted_save_is_reported_and_ignored(tmp_path, setup, states, caplog):
    root = _save_two(tmp_path, states)
    partial = root / "6.orbax-checkpoint-tmp"
    partial.mkdir()
    (partial / "junk").write_text("half a checkpoint")
    with caplog.at_level(logging.WARNING, logger=checkpoint_lib.__name__):
        ckpt = _checkpointer(tmp_path)
        restored = ckpt.restore_latest(setup().abstract_state())
    ckpt.close()
    assert restored.step == 4 and not partial.exists()
    assert any("6.orbax-checkpoint-tmp" in r.getMessage() for r in caplog.records)


def test_no_good_checkpoint_is_an_error_not_a_fresh_start(tmp_path, setup, states):
    root = _save_two(tmp_path, states)
    _delete_data_state(root)
    (root / "2" / "data" / "process_0-of-1.json").unlink()
    ckpt = _checkpointer(tmp_path)
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"steps \[4, 2\] are corrupted"):
        ckpt.restore_latest(setup().abstract_state())
    ckpt.close()
    assert _checkpointer(tmp_path).restore_latest(setup().abstract_state()) is None


@pytest.mark.parametrize("mode,best,kept", [("max", 2, [2, 4, 5]), ("min", 1, [1, 4, 5])])
def test_keeps_last_k_and_best(tmp_path, states, mode, best, kept):
    _, _, first, _ = states
    ckpt = _checkpointer(tmp_path, keep_last=2, best_metric="eval/accuracy", best_mode=mode)
    for step, accuracy in zip(range(1, 6), [0.5, 0.9, 0.6, 0.7, 0.8]):
        ckpt.save(step, first, {"index": step}, metrics={"eval/accuracy": accuracy})
    ckpt.wait()
    assert ckpt.steps() == kept and ckpt.best_step() == best
    ckpt.close()


def _numpy_fingerprint(x: np.ndarray) -> int:
    """Independent numpy/uint64 implementation of the module docstring's formula."""
    words = np.ascontiguousarray(x).reshape(-1).view(np.uint32).astype(np.uint64)
    mixed = ((words ^ (words >> 16)) * 0x45D9F3B) % 2**32
    index = np.arange(words.size, dtype=np.uint64)
    weights = ((index * 2654435761 + 1) % 2**32) | 1
    return int(np.sum((mixed * weights) % 2**32) % 2**32)


def test_fingerprint_matches_formula_on_any_sharding_and_sees_one_changed_word(setup, states):
    first_host, _, first, _ = states
    reference = {k: v for k, v in checkpoint_lib.fingerprint(first).items()}
    expected = {jax.tree_util.keystr(p): _numpy_fingerprint(np.asarray(x))
                for p, x in jax.tree_util.tree_leaves_with_path(first_host)}
    assert reference == expected
    other_mesh = jax.device_put(first_host, setup(data=4, model=2).shardings)
    assert checkpoint_lib.fingerprint(other_mesh) == reference
    changed = jax.tree.map(np.copy, first_host)
    changed.params["head"]["kernel"][3, 1] = np.nextafter(changed.params["head"]["kernel"][3, 1], 9)
    fingerprints = checkpoint_lib.fingerprint(changed)
    assert [k for k in fingerprints if fingerprints[k] != reference[k]] == [".params['head']['kernel']"]


def test_host_and_device_fingerprints_are_the_same_function():
    """On the CPU backend the fingerprints and finiteness are computed in numpy (no compilation);
    the jitted program (accelerators, several hosts) must give the same values, for every dtype
    of at most 4 bytes, sharded or not, empty or not."""
    rng = np.random.default_rng(3)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(8), ("data",))
    sharded = jax.device_put(rng.normal(size=(16, 3)).astype(np.float32),
                             jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    tree = {"f32": rng.normal(size=(5, 7)).astype(np.float32), "sharded": sharded,
            "bf16": jnp.asarray(rng.normal(size=(9,)), jnp.bfloat16), "f16": rng.normal(size=(4, 2)).astype(np.float16),
            "i8": rng.integers(-128, 127, size=(11,)).astype(np.int8), "u8": rng.integers(0, 255, (3, 3)).astype(np.uint8),
            "i32": rng.integers(-2**31, 2**31 - 1, size=(6,)).astype(np.int32), "bool": rng.random(13) < 0.5,
            "empty": np.zeros((0, 4), np.float32), "nan": np.array([1.0, np.nan], np.float32),
            "inf": jnp.asarray([np.inf], jnp.bfloat16)}
    assert checkpoint_lib._on_host_cpu(tree)
    host_finite, host_prints = checkpoint_lib._finite_and_fingerprint(tree)
    jit_finite, jit_prints = jax.device_get(checkpoint_lib._jit_finite_and_fingerprint(tree))
    assert {k: int(v) for k, v in host_prints.items()} == {k: int(v) for k, v in jit_prints.items()}
    assert {k: bool(v) for k, v in host_finite.items()} == {k: bool(v) for k, v in jit_finite.items()}
    assert [k for k, ok in host_finite.items() if not ok] == ["inf", "nan"]
    assert host_prints["f32"] == _numpy_fingerprint(tree["f32"])  # the formula, independently
    assert not checkpoint_lib._on_host_cpu({"x": np.zeros(3, np.float64)})  # 8-byte words: the jitted path


def _with_leaf(abstract, path_suffix, shape=None, dtype=None):
    """`abstract` with the leaf whose key path ends in `path_suffix` given another shape/dtype."""

    def change(path, leaf):
        if not jax.tree_util.keystr(path).endswith(path_suffix):
            return leaf
        return jax.ShapeDtypeStruct(shape or leaf.shape, dtype or leaf.dtype, sharding=leaf.sharding)

    return jax.tree_util.tree_map_with_path(change, abstract)


@pytest.mark.parametrize("change,named", [
    (dict(shape=(16, 8)), "params.head.kernel saved [16, 4] float32, requested [16, 8] float32"),
    (dict(dtype=np.float16), "params.head.kernel saved [16, 4] float32, requested [16, 4] float16"),
])
def test_a_checkpoint_of_another_model_is_an_error_and_is_not_moved(tmp_path, setup, states,
                                                                    change, named):
    root = _save_two(tmp_path, states)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    abstract = _with_leaf(setup().abstract_state(), ".params['head']['kernel']", **change)
    ckpt = _checkpointer(tmp_path)
    with pytest.raises(checkpoint_lib.IncompatibleCheckpointError) as error:
        ckpt.restore_latest(abstract)
    with pytest.raises(checkpoint_lib.IncompatibleCheckpointError):
        ckpt.restore(2, abstract)
    ckpt.close()
    assert f"checkpoint 4 in {root} holds another model: " in str(error.value)
    assert named in str(error.value)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before  # nothing moved
    assert not (tmp_path / "corrupt_checkpoints").exists()


def test_a_checkpoint_of_another_process_count_is_an_error_and_is_not_moved(tmp_path, setup,
                                                                            states):
    root = _save_two(tmp_path, states)
    for step in ("2", "4"):  # as a 2-process job saves them
        data = root / step / "data"
        (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
        shutil.copy(data / "process_0-of-2.json", data / "process_1-of-2.json")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    ckpt = _checkpointer(tmp_path)
    with pytest.raises(checkpoint_lib.IncompatibleCheckpointError, match=(
            rf"^checkpoint 4 in {root} holds the data iterator states of 2 processes, this job "
            r"has 1; resume it with that many processes")):
        ckpt.restore_latest(setup().abstract_state())
    ckpt.close()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before  # nothing moved
    assert not (tmp_path / "corrupt_checkpoints").exists()


def test_a_non_finite_state_is_never_saved(tmp_path, states):
    first_host, _, _, _ = states
    bad = jax.tree.map(np.copy, first_host)
    bad.opt_state[1][0].mu["mlp_in"]["bias"][5] = np.inf
    ckpt = _checkpointer(tmp_path)
    with pytest.raises(checkpoint_lib.CheckpointError, match=(
            r"refusing to save step 3: non-finite values in \[\"\.opt_state\[1\]\[0\]\.mu\['mlp_in'\]\['bias'\]\"\]")):
        ckpt.save(3, bad, {"index": 3})
    ckpt.close()
    assert _checkpointer(tmp_path).steps() == []


@pytest.mark.parametrize("data", [2, 4])
def test_restore_onto_fewer_devices(tmp_path, setup, states, data):
    _, second_host, _, _ = states
    _save_two(tmp_path, states)  # saved from data=8
    target = setup(data=data, model=1)
    ckpt = _checkpointer(tmp_path)
    restored = ckpt.restore_latest(target.abstract_state())
    ckpt.close()
    assert tree_equal(jax.device_get(restored.state), second_host)
    kernel = restored.state.params["mlp_in"]["kernel"]
    assert len(kernel.sharding.device_set) == data


def test_a_read_only_reader_leaves_a_save_in_progress_and_corrupted_steps_in_place(tmp_path, setup,
                                                                                  states):
    first_host, _, _, _ = states
    root = _save_two(tmp_path, states)
    in_progress = root / "6.orbax-checkpoint-tmp"  # a running trainer's save
    in_progress.mkdir()
    _delete_data_state(root)
    reader = _checkpointer(tmp_path, read_only=True)
    restored = reader.restore_latest(setup().abstract_state())
    reader.close()
    assert restored.step == 2 and tree_equal(jax.device_get(restored.state), first_host)
    assert in_progress.exists() and (root / "4").exists()
    assert not (tmp_path / "corrupt_checkpoints").exists()

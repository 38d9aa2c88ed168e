"""The restricted unpickler loads numpy/containers and refuses code-running payloads."""

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest

from imro_jax.data import pickle_safe


def _payload(callable_, *args):
    class Payload:
        def __reduce__(self):
            return callable_, args

    return Payload()


def test_refuses_shell_command_and_runs_nothing(tmp_path):
    marker = tmp_path / "created_by_payload"
    data = pickle.dumps(
        {"train": {"text": np.zeros((2, 3), np.float32), "labels": [_payload(os.system, f"touch {marker}")]}},
        protocol=2,
    )
    with pytest.raises(pickle_safe.UnsafePickleError, match=r"refusing to load global '(posix|os)\.system'"):
        pickle_safe.restricted_loads(data)
    assert not marker.exists()
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(pickle_safe.UnsafePickleError, match="evil.pkl"):
        pickle_safe.restricted_load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "callable_, args",
    [(builtins.eval, ("1 + 1",)), (subprocess.check_output, (["true"],)), (getattr, ("abc", "upper"))],
)
def test_refuses_other_globals(callable_, args):
    with pytest.raises(pickle_safe.UnsafePickleError):
        pickle_safe.restricted_loads(pickle.dumps(_payload(callable_, *args)))


def test_refuses_arbitrary_classes():
    with pytest.raises(pickle_safe.UnsafePickleError, match="collections.OrderedDict"):
        pickle_safe.restricted_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_numpy_and_containers(protocol):
    value = {
        "train": {
            "text": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            "labels": np.array([[[-1.5]], [[2.0]]]),
            "id": np.array([[b"vid", b"0"], [b"vid", b"1"]]),
            "names": np.array(["a", "bc"]),
            "objects": np.array([b"x", "y", 3], dtype=object),
            "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        },
        "meta": (1, 2.5, None, True, "s", b"b", [1, {"k": frozenset({1})}]),
        "scalar": np.float64(0.25),
    }
    loaded = pickle_safe.restricted_loads(pickle.dumps(value, protocol=protocol))
    for key, array in value["train"].items():
        np.testing.assert_array_equal(loaded["train"][key], array)
        assert loaded["train"][key].dtype == array.dtype
    assert loaded["meta"] == value["meta"]
    assert loaded["scalar"] == value["scalar"] and isinstance(loaded["scalar"], np.float64)


def _write(tmp_path, data: bytes, name="file.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # truncated
    lambda data: b"\x00garbage" + data[8:],  # garbage header
    lambda data: b"",  # empty
])
def test_truncated_or_garbage_pickles_are_errors_that_name_the_file(tmp_path, damage):
    data = pickle.dumps({"train": {"labels": np.arange(100.0)}}, protocol=4)
    path = _write(tmp_path, damage(data), "mosi_data.pkl")
    with pytest.raises(pickle_safe.PickleFormatError, match=rf"^{path}: not a readable pickle"):
        pickle_safe.restricted_load(path)


def _allocating(function, *args):
    class Allocating:
        def __reduce__(self):
            return function, args

    return pickle.dumps({"train": [Allocating()]}, protocol=2)


@pytest.mark.parametrize("function,args,size", [
    (pickle_safe._np_multiarray._reconstruct, (np.ndarray, (2**31,), b"f8"), 8 * 2**31),
    (np.ndarray, ((2**20, 2**12),), 8 * 2**32),
    (bytearray, (2**34,), 2**34),
])
def test_allowed_callables_cannot_allocate_beyond_the_file_size(tmp_path, function, args, size):
    path = _write(tmp_path, _allocating(function, *args))
    assert path.stat().st_size < 300  # a few hundred bytes asking for gigabytes
    with pytest.raises(pickle_safe.PickleFormatError, match=rf"^{path}: .* would allocate {size} bytes"):
        pickle_safe.restricted_load(path)


def test_a_nan_label_is_a_clear_error(tmp_path, mosi_pickle_factory):
    from imro_jax.data import datasets

    manual = tmp_path / "manual"
    manual.mkdir()
    content = mosi_pickle_factory(manual / "mosi_data.pkl")
    content["valid"]["labels"][3, 0, 0] = np.nan
    with open(manual / "mosi_data.pkl", "wb") as f:
        pickle.dump(content, f, protocol=2)
    config = datasets.default_data_config("cmu_mosi", data_dir=str(tmp_path / "d"),
                                          manual_dir=str(manual))
    with pytest.raises(ValueError, match=(
            rf"mosi_data.pkl: split 'valid': labels must be finite sentiment scores in \[-3, 3\]; "
            r"1 are NaN or inf, in rows \[3\]")):
        datasets.prepare_dataset(config)


def test_codecs_other_than_latin1_are_refused(tmp_path):
    import _codecs

    path = _write(tmp_path, _allocating(_codecs.encode, b"ab" * 50, "hex"))  # hex doubles its input
    with pytest.raises(pickle_safe.UnsafePickleError, match=rf"^{path}: refusing _codecs.encode with encoding 'hex'"):
        pickle_safe.restricted_load(path)

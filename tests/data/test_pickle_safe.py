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

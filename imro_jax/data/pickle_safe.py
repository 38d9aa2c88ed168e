"""Restricted unpickling: numpy arrays and plain containers only, everything else refused.

Pickles can run arbitrary code on load (any global callable can be invoked through REDUCE).
The CMU-MOSI/MOSEI feature releases are pickles, so they are read with ``RestrictedUnpickler``,
whose ``find_class`` admits only an explicit allow-list:

  * builtins: dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex, bool
    (None, True/False and literals need no lookup);
  * ``_codecs.encode`` (protocol-2 pickles store bytes through it);
  * numpy: ``ndarray``, ``dtype`` and the reconstruction helpers ``_reconstruct``, ``scalar``
    (``numpy.core.multiarray`` / ``numpy._core.multiarray``) and ``_frombuffer``
    (``numpy.core.numeric`` / ``numpy._core.numeric``, protocol 5).

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary classes) raises
``UnsafePickleError`` before it can be called. Names are resolved from the allow-list table, not
imported by name.
"""

from __future__ import annotations

import _codecs
import builtins
import io
import os
import pickle

import numpy as np

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
             "float", "complex", "bool")

ALLOWED_GLOBALS = {
    **{("builtins", name): getattr(builtins, name) for name in _BUILTINS},
    **{("__builtin__", name): getattr(builtins, name) for name in _BUILTINS},  # Python 2 pickles
    ("_codecs", "encode"): _codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (f"numpy.{core}.multiarray", name): getattr(_np_multiarray, name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    },
    **{(f"numpy.{core}.numeric", "_frombuffer"): _np_numeric._frombuffer for core in ("core", "_core")},
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed globals."""

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}'; only numpy arrays and "
                "plain containers (dict/list/tuple/str/bytes/int/float/bool/None) are allowed. "
                "If this file is trusted, convert it to .npz; otherwise do not use it."
            ) from None


def restricted_loads(data: bytes, *, source: str = "<bytes>"):
    """Unpickles ``data`` with ``RestrictedUnpickler`` (latin1 strings for Python 2 pickles)."""
    return RestrictedUnpickler(io.BytesIO(data), source=source).load()


def restricted_load(path: str | os.PathLike):
    """Unpickles the file at ``path`` with ``RestrictedUnpickler``.

    Raises:
      UnsafePickleError: the file references a global outside ``ALLOWED_GLOBALS``.
    """
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, source=str(path)).load()

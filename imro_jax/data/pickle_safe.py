"""Restricted unpickling: numpy arrays and plain containers only, everything else refused.

Pickles can run arbitrary code on load (any global callable can be invoked through REDUCE).
The CMU-MOSI/MOSEI feature releases are pickles, so they are read with ``RestrictedUnpickler``,
whose ``find_class`` admits only an explicit allow-list:

  * builtins: dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex, bool
    (None, True/False and literals need no lookup);
  * ``_codecs.encode`` with the ``latin1`` codec (protocol-2 pickles store bytes through it);
  * numpy: ``ndarray``, ``dtype`` and the reconstruction helpers ``_reconstruct``, ``scalar``
    (``numpy.core.multiarray`` / ``numpy._core.multiarray``) and ``_frombuffer``
    (``numpy.core.numeric`` / ``numpy._core.numeric``, protocol 5).

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary classes) raises
``UnsafePickleError`` before it can be called. Names are resolved from the allow-list table, not
imported by name.

Allowed callables that allocate from a size argument (``ndarray``, ``_reconstruct``, ``bytes``,
``bytearray``, ``_codecs.encode``) draw on a budget of ``ALLOCATION_FACTOR`` times the pickle's
size (plus ``ALLOCATION_SLACK``): array data lives inside the pickle, so a genuine file never
needs more, and a crafted one cannot make them allocate gigabytes. Exceeding it, like any
truncated or malformed file, raises ``PickleFormatError`` naming the file.
"""

from __future__ import annotations

import _codecs
import builtins
import io
import math
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


ALLOCATION_FACTOR = 2
ALLOCATION_SLACK = 1 << 16  # bytes


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""


class PickleFormatError(pickle.UnpicklingError):
    """A pickle is truncated, malformed, or asks for more memory than its size allows."""


def _nbytes(shape, dtype) -> int:
    """Bytes of an array of `shape` and `dtype`, computed without allocating it."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize


# How many bytes each size-taking allowed callable will allocate, from its arguments.
_ALLOCATES = {
    np.ndarray: lambda shape, dtype=float, *rest, **kw: _nbytes(shape, dtype),
    _np_multiarray._reconstruct: lambda subtype, shape, dtype: _nbytes(shape, dtype),
    bytes: lambda source=b"", *rest: source if isinstance(source, int) else 0,
    bytearray: lambda source=b"", *rest: source if isinstance(source, int) else 0,
    _codecs.encode: lambda obj, encoding="utf-8", *rest: _latin1_size(obj, encoding),
}


def _latin1_size(obj, encoding) -> int:
    """Size of `_codecs.encode(obj, "latin1")`, the only use pickles make of it (protocol-2
    bytes); other codecs (e.g. "hex", which doubles its input) are refused."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}; pickles "
                                "only use 'latin1'")
    return len(obj)


class _Bounded:
    """An allowed size-taking callable that charges the unpickler's budget before it runs.

    Arguments that are themselves `_Bounded` (``ndarray`` passed to ``_reconstruct``) are
    replaced by the callable they wrap.
    """

    def __init__(self, function, unpickler: "RestrictedUnpickler"):
        self.function, self._unpickler = function, unpickler

    def __call__(self, *args, **kwargs):
        args = tuple(a.function if isinstance(a, _Bounded) else a for a in args)
        try:
            need = _ALLOCATES[self.function](*args, **kwargs)
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{self._unpickler.source}: {error}") from None
        self._unpickler.charge(self.function, need)
        return self.function(*args, **kwargs)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed globals.

    Args:
        file: binary file object.
        source: name used in error messages (the path).
        encoding: for Python 2 strings.
        budget: bytes the size-taking callables may allocate (default unlimited).
    """

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "latin1",
                 budget: int | None = None):
        super().__init__(file, encoding=encoding)
        self.source = source
        self._budget = math.inf if budget is None else budget

    def _bounded(self, function):
        return _Bounded(function, self) if function in _ALLOCATES else function

    def charge(self, function, need: int) -> None:
        """Takes `need` bytes from the budget; raises if it does not hold them."""
        if need > self._budget:
            raise PickleFormatError(
                f"{self.source}: {getattr(function, '__name__', function)} would allocate "
                f"{need} bytes, more than a pickle of this size can hold"
            )
        self._budget -= need

    def find_class(self, module: str, name: str):
        try:
            return self._bounded(ALLOWED_GLOBALS[(module, name)])
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{module}.{name}'; only numpy arrays and "
                "plain containers (dict/list/tuple/str/bytes/int/float/bool/None) are allowed. "
                "If this file is trusted, convert it to .npz; otherwise do not use it."
            ) from None


def _load(file, size: int, source: str):
    budget = ALLOCATION_FACTOR * size + ALLOCATION_SLACK
    try:
        return RestrictedUnpickler(file, source=source, budget=budget).load()
    except (UnsafePickleError, PickleFormatError):
        raise
    except Exception as error:  # noqa: BLE001 - truncated/garbage files fail in many ways
        reason = " ".join(str(error).split())[:200]
        raise PickleFormatError(
            f"{source}: not a readable pickle (truncated or corrupted?): "
            f"{type(error).__name__}: {reason}"
        ) from error


def restricted_loads(data: bytes, *, source: str = "<bytes>"):
    """Unpickles ``data`` with ``RestrictedUnpickler`` (latin1 strings for Python 2 pickles).

    Raises:
      UnsafePickleError: a global outside ``ALLOWED_GLOBALS``.
      PickleFormatError: truncated or malformed data, or an allocation beyond its size.
    """
    return _load(io.BytesIO(data), len(data), source)


def restricted_load(path: str | os.PathLike):
    """Unpickles the file at ``path`` with ``RestrictedUnpickler``.

    Raises:
      UnsafePickleError: the file references a global outside ``ALLOWED_GLOBALS``.
      PickleFormatError: the file is truncated or malformed, or asks for more memory than its
        size allows; the message names the file.
    """
    with open(path, "rb") as f:
        return _load(f, os.fstat(f.fileno()).st_size, str(path))

"""Reading the authors' .npz files without letting them run code.

MERBench's label files (`label.npz`, `label-6way.npz`, `label_4way.npz`) store pickled Python dicts
inside the npz, and the AffectGPT authors load them and their result files with
`np.load(..., allow_pickle=True)`: a downloaded file could then run anything on unpickling. Here
every member is read with NumPy's own header reader; an array of plain dtype is read with
`allow_pickle=False`, and an object array's pickle goes through `RestrictedUnpickler`, which admits
only plain containers, strings and numbers and the few NumPy names that rebuild such arrays. Any
other name in the pickle stops the read with one line, before that name is ever looked up.
"""

from __future__ import annotations

import importlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from emer_builder.core.errors import UserError

# (module, name) as pickles spell them -> where NumPy 1 and 2 keep the object (numpy.core is numpy._core in NumPy 2).
_NUMPY_NAMES = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    **{(f"{pkg}.multiarray", name): ("numpy._core.multiarray", name) for pkg in ("numpy.core", "numpy._core") for name in ("_reconstruct", "scalar")},
}
_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool", "slice"})


class UnsafePickle(UserError):
    """The file's pickle names something other than plain data."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it to spell bytes, with no codec but latin-1."""
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _numpy_object(module: str, name: str) -> Any:
    target_module, target_name = _NUMPY_NAMES[(module, name)]
    try:
        return getattr(importlib.import_module(target_module), target_name)
    except ImportError:  # NumPy 1: the same objects live in numpy.core
        return getattr(importlib.import_module(target_module.replace("numpy._core", "numpy.core")), target_name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for plain data: containers, strings, numbers and NumPy arrays of them, nothing else."""

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, where: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles: bytes as latin-1, as NumPy advises
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:  # __builtin__: protocol-2 pickles
            return getattr(__import__("builtins"), name)
        if (module, name) in _NUMPY_NAMES:
            return _numpy_object(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickle(f"{self.where}: its pickle names {module}.{name}, which is not plain data (containers, strings, numbers, NumPy arrays); not loaded")


def restricted_loads(data: bytes, where: str = "pickle") -> Any:
    """`pickle.loads` through `RestrictedUnpickler`; a damaged stream is one line too."""
    try:
        value = RestrictedUnpickler(io.BytesIO(data), where).load()
    except UnsafePickle:
        raise
    except Exception as e:  # a truncated or malformed stream: pickle raises many kinds
        raise UserError(f"{where}: cannot read its pickle ({type(e).__name__}: {e})") from None
    _check_dtypes(value, where)
    return value


def _read_member(raw: bytes, where: str) -> Any:
    import numpy as np

    fp = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(fp)
    except ValueError as e:
        raise UserError(f"{where}: not a NumPy array ({e})") from None
    if not dtype.hasobject:
        fp.seek(0)
        try:
            return np.lib.format.read_array(fp, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"{where}: cannot read the array ({e})") from None
    array = restricted_loads(fp.read(), where)
    if not isinstance(array, np.ndarray):
        raise UserError(f"{where}: its pickle holds a {type(array).__name__}, not an array")
    return array


def _check_dtypes(value: Any, where: str) -> None:
    """Refuse arrays whose dtype's pickled state disagrees with the dtype it names: a pickle may set a dtype's
    flags, and an object array that says it holds no objects has its bytes read as pointers (a crash, or
    worse). Checked before any element is read; the elements of object arrays are checked in turn."""
    import numpy as np

    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, np.ndarray):
            dtype = item.dtype
            canonical = np.dtype(dtype.descr) if dtype.fields is not None else np.dtype(dtype.str)
            if dtype.flags != canonical.flags or dtype.hasobject != canonical.hasobject or dtype.itemsize != canonical.itemsize:
                raise UnsafePickle(f"{where}: its pickle gives an array a dtype whose state is not NumPy's own ({dtype.str}, flags {dtype.flags}); not loaded")
            if dtype.hasobject:
                pending.extend(item.ravel(order="K").tolist() if item.dtype.fields is None else [])
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)


def load_npz(path: str | Path) -> dict[str, Any]:
    """Every array of an .npz by name, object arrays unpickled with `RestrictedUnpickler`; a 0-d object array
    (how `np.savez` stores a dict) is returned as the object it holds."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz ({e})") from None
    out: dict[str, Any] = {}
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            try:
                raw = archive.read(info)
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                raise UserError(f"{path}: cannot read {info.filename} ({e})") from None
            array = _read_member(raw, f"{path} [{key}]")
            out[key] = array.item() if array.dtype.hasobject and array.shape == () else array
    return out

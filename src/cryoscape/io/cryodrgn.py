"""cryoDRGN pose and CTF pickles, read through a restricted unpickler.

cryoDRGN exchanges poses as ``pickle.dump((rot, trans))`` with ``rot``
``(N,3,3)`` (volume → particle frame, as RELION) and ``trans`` ``(N,2)`` as a
fraction of the box (RELION origin sign: ``trans * D`` = origin in pixels),
and CTF parameters as an ``(N,9)`` array with columns
``[box px, Å/px, defocus U Å, defocus V Å, defocus angle °, kV, Cs mm,
amplitude contrast, phase shift °]``.

Unpickling can run arbitrary code, so :func:`safe_load_pickle` only lets a
pickle rebuild numpy arrays, dtypes and scalars, tuples, lists, dicts and
numbers; any other global it names is refused before anything runs.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = [
    "safe_load_pickle",
    "read_pose_pkl",
    "read_ctf_pkl",
    "write_pose_pkl",
    "write_ctf_pkl",
    "read_index_pkl",
    "write_index_pkl",
    "ctf_array_to_fields",
    "ctf_fields_to_array",
    "CTF_COLUMNS",
]

#: Column order of cryoDRGN's ``ctf.pkl``.
CTF_COLUMNS: tuple[str, ...] = (
    "box",
    "apix",
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
)

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "tuple"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }
)


class _NumericUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed for numeric arrays."""

    def __init__(self, fh: io.BufferedReader, path: Path) -> None:
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise InputError(
            f"refusing to load {self._path}: the pickle references {module}.{name}, which is not plain numeric data"
            " (it could run code); recreate the file from its source with cryoDRGN or cryoscape"
        )


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a file that must contain only numbers, numpy arrays, tuples, lists and dicts."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pickle file {p} not found; check the path")
    with open(p, "rb") as fh:
        try:
            return _NumericUnpickler(fh, p).load()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {p} as a cryoDRGN pickle ({type(exc).__name__}: {exc}); check the file") from exc


def read_pose_pkl(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a cryoDRGN pose file: ``rot`` ``(N,3,3)`` float64 and ``trans`` ``(N,2)`` box fractions (or None)."""
    p = Path(path)
    obj = safe_load_pickle(p)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        rot, trans = obj
    else:
        rot, trans = obj, None
    rot = np.asarray(rot, dtype=np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(f"{p}: rotations have shape {rot.shape}, expected (N,3,3); pass a cryoDRGN pose .pkl")
    if trans is not None:
        trans = np.asarray(trans, dtype=np.float64)
        if trans.shape != (rot.shape[0], 2):
            raise InputError(f"{p}: translations have shape {trans.shape}, expected ({rot.shape[0]},2); pass a cryoDRGN pose .pkl")
    return rot, trans


def read_ctf_pkl(path: str | os.PathLike) -> np.ndarray:
    """Read a cryoDRGN CTF file as an ``(N,9)`` float64 array (columns :data:`CTF_COLUMNS`)."""
    p = Path(path)
    arr = np.asarray(safe_load_pickle(p), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 9:
        raise InputError(f"{p}: CTF table has shape {arr.shape}, expected (N,9); pass a cryoDRGN ctf .pkl")
    return arr


def _dump(path: str | os.PathLike, obj: Any, force: bool) -> Path:
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)
    return Path(path)


def write_pose_pkl(path: str | os.PathLike, rot: np.ndarray, trans_frac: np.ndarray, force: bool = False) -> Path:
    """Write ``(rot (N,3,3), trans (N,2) box fractions)`` as cryoDRGN reads it (float32, as cryoDRGN writes)."""
    rot = np.asarray(rot, dtype=np.float32)
    trans = np.asarray(trans_frac, dtype=np.float32)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3) or trans.shape != (rot.shape[0], 2):
        raise InputError(f"cannot write {path}: need rot (N,3,3) and trans (N,2), got {rot.shape} and {trans.shape}")
    return _dump(path, (rot, trans), force)


def write_ctf_pkl(path: str | os.PathLike, ctf: np.ndarray, force: bool = False) -> Path:
    """Write an ``(N,9)`` cryoDRGN CTF table (float32)."""
    arr = np.asarray(ctf, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 9:
        raise InputError(f"cannot write {path}: the CTF table must be (N,9), got {arr.shape}")
    return _dump(path, arr, force)


def read_index_pkl(path: str | os.PathLike) -> np.ndarray:
    """Read a cryoDRGN index file (a pickled 1-D integer array) as int64 ``(n,)``, in file order.

    Only the shape and the integer type are checked here; range checks need the
    particle count (see :func:`cryoscape.analysis.select.read_index_file`).
    """
    p = Path(path)
    obj = safe_load_pickle(p)
    try:
        arr = np.asarray(obj)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{p}: cannot read the index file as an array ({exc}); pass a pickled 1-D integer array") from exc
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InputError(
            f"{p}: index file holds a {arr.dtype} array of shape {arr.shape}, expected a 1-D integer array;"
            " pass a cryoDRGN index .pkl"
        )
    return arr.astype(np.int64)


def write_index_pkl(path: str | os.PathLike, indices: np.ndarray, force: bool = False) -> Path:
    """Write particle indices as cryoDRGN reads them: a plain 1-D int64 ``np.ndarray``, pickle protocol 4."""
    arr = np.asarray(indices)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InputError(f"cannot write {path}: indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return _dump(path, np.ascontiguousarray(arr, dtype=np.int64).view(np.ndarray), force)


def ctf_array_to_fields(ctf: np.ndarray) -> dict[str, np.ndarray]:
    """Split an ``(N,9)`` cryoDRGN CTF table into canonical ``(N,)`` arrays (plus ``box`` and ``apix``)."""
    arr = np.asarray(ctf, dtype=np.float64)
    out = {name: arr[:, i].copy() for i, name in enumerate(CTF_COLUMNS)}
    out["box"] = np.rint(out["box"]).astype(np.int64)
    out["bfactor_A2"] = np.zeros(arr.shape[0])
    return out


def ctf_fields_to_array(box: np.ndarray | int, apix: np.ndarray | float, fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """Build the ``(N,9)`` cryoDRGN CTF table (float64) from canonical CTF arrays."""
    n = len(np.asarray(fields["defocus_u_A"]))
    cols = [np.broadcast_to(np.asarray(box, dtype=np.float64), (n,)), np.broadcast_to(np.asarray(apix, dtype=np.float64), (n,))]
    cols += [np.asarray(fields[name], dtype=np.float64).reshape(n) for name in CTF_COLUMNS[2:]]
    return np.stack(cols, axis=1)

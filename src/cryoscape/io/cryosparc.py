"""cryoSPARC particle files (``.cs``): numpy structured arrays saved with :func:`numpy.save`.

Fields used (one row per particle):

- ``blob/path`` (bytes; a leading ``>`` marks an imported file), ``blob/idx``
  (0-based frame), ``blob/shape`` ``[ny, nx]`` px, ``blob/psize_A`` Å/px;
- ``alignments3D/pose`` axis-angle vector, ``R = Rotation.from_rotvec(pose).as_matrix().T``;
  ``alignments3D/shift`` pixels, RELION origin sign; ``alignments3D/split`` half set 0/1;
- ``ctf/df1_A``, ``ctf/df2_A``, ``ctf/df_angle_rad``, ``ctf/accel_kv``, ``ctf/cs_mm``,
  ``ctf/amp_contrast``, ``ctf/phase_shift_rad``, ``ctf/bfactor`` (optional), ``ctf/exp_group_id``.

A file with only ``alignments2D`` has no 3D poses.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cryoscape.geometry.rotations import cryosparc_pose_to_matrix, matrix_to_cryosparc_pose

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = ["read_cs", "write_cs", "cs_has_poses", "cs_has_ctf", "cs_poses", "cs_ctf", "cs_blob_paths", "matrices_to_cs_pose"]


def read_cs(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.cs`` file as a structured array (no pickles are allowed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"cryoSPARC file {p} not found; check the path")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read {p} as a cryoSPARC .cs file ({exc}); export the particles from cryoSPARC again") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None or arr.ndim != 1:
        raise InputError(f"{p} is not a cryoSPARC particle table (expected a 1D structured array); pass a particles .cs file")
    if "blob/path" not in arr.dtype.names and "blob/idx" not in arr.dtype.names:
        raise InputError(f"{p} has no blob/path and blob/idx fields; pass the particles .cs of an extract/refine job")
    return arr


def write_cs(path: str | os.PathLike, array: np.ndarray, force: bool = False) -> Path:
    """Write a structured array (e.g. a selection of rows of a read ``.cs``) atomically."""
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


def cs_has_poses(arr: np.ndarray) -> bool:
    """True when the file carries 3D alignments (``alignments3D/pose``)."""
    return "alignments3D/pose" in (arr.dtype.names or ())


def cs_has_ctf(arr: np.ndarray) -> bool:
    """True when the file carries defocus values."""
    names = arr.dtype.names or ()
    return "ctf/df1_A" in names and "ctf/df2_A" in names


def cs_poses(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(N,3,3)`` (volume → particle frame) and shifts ``(N,2)`` in pixels (RELION origin sign)."""
    pose = np.asarray(arr["alignments3D/pose"], dtype=np.float64).reshape(-1, 3)
    rot = cryosparc_pose_to_matrix(pose)
    if "alignments3D/shift" in arr.dtype.names:
        shift = np.asarray(arr["alignments3D/shift"], dtype=np.float64).reshape(-1, 2)
    else:
        shift = np.zeros((len(arr), 2))
    return rot, shift


def matrices_to_cs_pose(rotations: np.ndarray) -> np.ndarray:
    """Inverse of the pose convention: ``(N,3,3)`` matrices → ``(N,3)`` axis-angle vectors."""
    r = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    return matrix_to_cryosparc_pose(r)


def _field(arr: np.ndarray, name: str, default: float) -> np.ndarray:
    if name in arr.dtype.names:
        return np.asarray(arr[name], dtype=np.float64).reshape(len(arr))
    return np.full(len(arr), default, dtype=np.float64)


def cs_ctf(arr: np.ndarray) -> dict[str, np.ndarray]:
    """CTF parameters as canonical ``(N,)`` float64 arrays (angles converted to degrees)."""
    return {
        "defocus_u_A": _field(arr, "ctf/df1_A", 0.0),
        "defocus_v_A": _field(arr, "ctf/df2_A", 0.0),
        "defocus_angle_deg": np.degrees(_field(arr, "ctf/df_angle_rad", 0.0)),
        "voltage_kV": _field(arr, "ctf/accel_kv", 300.0),
        "cs_mm": _field(arr, "ctf/cs_mm", 2.7),
        "amplitude_contrast": _field(arr, "ctf/amp_contrast", 0.1),
        "phase_shift_deg": np.degrees(_field(arr, "ctf/phase_shift_rad", 0.0)),
        "bfactor_A2": _field(arr, "ctf/bfactor", 0.0),
    }


def cs_blob_paths(arr: np.ndarray) -> np.ndarray:
    """``blob/path`` as str (object array) with the import marker ``>`` removed."""
    raw = arr["blob/path"]
    out = np.empty(len(arr), dtype=object)
    cache: dict[bytes, str] = {}
    for i, b in enumerate(raw):
        s = cache.get(b)
        if s is None:
            s = b.decode("utf-8") if isinstance(b, bytes) else str(b)
            s = s.lstrip(">")
            cache[b] = s
        out[i] = s
    return out

"""MRC maps and image stacks through :mod:`mrcfile`.

Layouts: a volume is returned as ``[z, y, x]``, an image stack as
``[n, y, x]`` (a file holding one 2D image is a stack of one). The pixel
(voxel) size in Å is read from and written into the header; ``0.0`` means the
header does not record one.

Some programs write stacks whose header lacks the ``MAP `` identifier or
carries an unknown machine stamp. Such files are opened with
``permissive=True`` after a :func:`warnings.warn` naming the file, so the user
sees that the header is not standard.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import mrcfile
import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = ["read_mrc", "write_mrc", "open_stack", "MrcStack", "StackHeader", "read_stack_header"]


_WARNED: set[str] = set()  # files already reported as having a non-standard header


def _require_file(path: Path, what: str = "MRC file") -> None:
    if not path.is_file():
        raise InputError(f"{what} {path} not found; check the path (or pass --datadir for particle stacks)")


def _open(path: Path, *, mmap: bool = False, header_only: bool = False) -> Any:
    """Open read-only; fall back to permissive mode with a warning for odd headers."""
    _require_file(path)
    opener = mrcfile.mmap if mmap else mrcfile.open
    kwargs: dict[str, Any] = {"mode": "r"}
    if header_only and not mmap:
        kwargs["header_only"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return opener(str(path), **kwargs)
    except ValueError as exc:
        reason = str(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = opener(str(path), permissive=True, **kwargs)
    except Exception as exc:  # pragma: no cover - depends on the corruption
        raise InputError(f"cannot read {path} as MRC ({exc}); check that it is an MRC file") from exc
    if not header_only and handle.data is None:
        handle.close()
        raise InputError(f"cannot read {path} as MRC ({reason}); the file is damaged or not an MRC file")
    key = str(path.resolve())
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{path} has a non-standard MRC header ({reason}); reading it permissively", stacklevel=3)
    return handle


def _apix_from(handle: Any, path: Path) -> float:
    vs = handle.voxel_size
    sizes = (float(vs.x), float(vs.y), float(vs.z))
    if sizes[0] > 0 and sizes[1] > 0 and abs(sizes[0] - sizes[1]) > 1e-3 * sizes[0]:
        warnings.warn(f"{path} has anisotropic voxel size {sizes} Å; using the x size", stacklevel=3)
    return sizes[0]


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a whole MRC file into memory.

    Returns ``(data, apix)``: ``data`` float32 with layout ``[z, y, x]`` for a
    volume, ``[n, y, x]`` for a stack, ``[y, x]`` for a single image; ``apix``
    the voxel size in Å along x (``0.0`` when the header records none).
    """
    p = Path(path)
    with _open(p) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32).copy()
        apix = _apix_from(mrc, p)
    return data, apix


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    apix: float,
    force: bool = False,
    stack: bool | None = None,
) -> Path:
    """Write ``data`` as float32 MRC atomically, with voxel size ``apix`` Å and origin 0.

    ``data`` is ``[z, y, x]`` (volume), ``[n, y, x]`` (stack) or ``[y, x]``.
    ``stack`` marks a 3D array as an image stack (space group 0); by default
    it is true for a ``.mrcs`` suffix. Raises ``OutputExistsError`` when
    ``path`` exists and ``force`` is false.
    """
    arr = np.asarray(data)
    if hasattr(data, "detach"):
        arr = data.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise InputError(f"cannot write {path}: MRC data must be 2D or 3D, got shape {arr.shape}")
    if not (apix > 0 and np.isfinite(apix)):
        raise InputError(f"cannot write {path}: pixel size {apix} Å is not positive; pass the pixel size")
    if stack is None:
        stack = Path(path).suffix.lower() == ".mrcs"
    with atomic_path(path, force) as tmp:
        with mrcfile.new(str(tmp), overwrite=True) as mrc:
            mrc.set_data(arr)
            if stack and arr.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(apix)
            mrc.header.origin = (0.0, 0.0, 0.0)
            mrc.update_header_stats()
    return Path(path)


@dataclass(frozen=True)
class StackHeader:
    """What a particle stack's header says: ``n`` images of ``ny × nx`` px, ``apix`` Å/px (0 if unset)."""

    path: Path
    n: int
    ny: int
    nx: int
    apix: float


def read_stack_header(path: str | os.PathLike) -> StackHeader:
    """Read only the header of an image stack (cheap; no pixel data)."""
    p = Path(path)
    with _open(p, header_only=True) as mrc:
        h = mrc.header
        nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
        apix = _apix_from(mrc, p)
    return StackHeader(path=p, n=max(nz, 1), ny=ny, nx=nx, apix=apix)


class MrcStack:
    """A memory-mapped, read-only image stack ``[n, y, x]``.

    Indexing returns float32 copies; pixel data are read from disk only for
    the frames asked for. :meth:`read_frames` reads with positioned reads
    instead of through the map, so a pass over a stack larger than memory does
    not leave its pages resident in the process. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._mrc = _open(self.path, mmap=True)
        data = self._mrc.data
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            self._mrc.close()
            raise InputError(f"{self.path} is not an image stack (data shape {data.shape}); pass a 2D stack")
        self.data: np.ndarray = data
        self.apix: float = _apix_from(self._mrc, self.path)
        self._offset = 1024 + int(self._mrc.header.nsymbt)
        self._fd: int | None = os.open(self.path, os.O_RDONLY)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n, ny, nx)``."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.data[index], dtype=np.float32).copy()

    def read_frames(self, frames: np.ndarray | Sequence[int]) -> np.ndarray:
        """Frames ``frames`` (0-based, any order, in range) as float32 ``[len(frames), ny, nx]``.

        Runs of consecutive frames are read in one positioned read each.
        """
        fr = np.asarray(frames, dtype=np.int64).reshape(-1)
        _, ny, nx = self.shape
        out = np.empty((fr.size, ny, nx), dtype=np.float32)
        if fr.size == 0:
            return out
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        order = np.argsort(fr, kind="stable")
        srt = fr[order]
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        frame_bytes = ny * nx * self.data.dtype.itemsize
        direct = self.data.dtype == np.dtype(np.float32)  # native float32: read straight into ``out``
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, srt.size]):
            first, count = int(srt[lo]), int(srt[hi - 1] - srt[lo] + 1)
            rows = order[lo:hi]
            offset = self._offset + first * frame_bytes
            if direct and count == hi - lo and rows[-1] - rows[0] == count - 1 and np.all(np.diff(rows) == 1):
                _pread_into(self._fd, out[rows[0] : rows[0] + count], offset, self.path)
                continue
            buf = _pread_exact(self._fd, count * frame_bytes, offset, self.path)
            block = np.frombuffer(buf, dtype=self.data.dtype).reshape(count, ny, nx)
            out[rows] = block[srt[lo:hi] - first]
        return out

    def close(self) -> None:
        """Release the memory map and the file."""
        self._mrc.close()
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "MrcStack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pread_exact(fd: int, n: int, offset: int, path: Path) -> bytes:
    """``n`` bytes at ``offset`` of ``fd``; InputError if the file ends first."""
    parts, got = [], 0
    while got < n:
        chunk = os.pread(fd, n - got, offset + got)
        if not chunk:
            raise InputError(f"{path} ends before its header says; the stack is truncated, write it again")
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _pread_into(fd: int, out: np.ndarray, offset: int, path: Path) -> None:
    """Fill the contiguous array ``out`` with its size in bytes at ``offset`` of ``fd``; InputError if the file ends first."""
    view = memoryview(out.reshape(-1)).cast("B")
    got = 0
    while got < view.nbytes:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise InputError(f"{path} ends before its header says; the stack is truncated, write it again")
        got += n


def open_stack(path: str | os.PathLike) -> MrcStack:
    """Memory-map an MRC image stack (``.mrcs``/``.mrc``) for lazy reading."""
    return MrcStack(path)

"""Lazy particle images: each particle is one frame of one MRC stack on disk.

:class:`StackImageSource` maps particle ``i`` to ``(paths[file_index[i]],
frame_index[i])`` (0-based frame) and reads pixels from memory-mapped stacks
only when asked, a batch at a time, so memory does not grow with the number of
particles. :class:`ArrayImageSource` wraps images already in memory.

Images are returned as float32 ``[n, D, D]`` (``[y, x]`` per image). Nothing
is read from disk at construction; :meth:`StackImageSource.check` reads the
stack headers (not the pixels) and reports missing files, frames past the end
of a stack and non-square or mixed-size images as one-line
:class:`~cryoscape.errors.InputError`.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.mrc import MrcStack, StackHeader, read_stack_header

__all__ = ["ImageSource", "StackImageSource", "ArrayImageSource", "concat_sources"]

_MAX_OPEN_STACKS = 32


class ImageSource:
    """Interface: ``len(src)``, ``src.read(indices)``, ``src.subset(indices)``, ``src.iter_batches(batch_size)``."""

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, indices: np.ndarray | Sequence[int] | slice) -> np.ndarray:  # pragma: no cover - interface
        """Images ``[n, D, D]`` float32 for the given particle indices, in that order."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> "ImageSource":  # pragma: no cover - interface
        raise NotImplementedError

    def check(self) -> tuple[int, float]:  # pragma: no cover - interface
        """Validate the images; return ``(box px, header apix Å or 0)``."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A short human name for particle ``index`` (for error messages)."""
        return f"particle {index}"

    def _normalise(self, indices: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        n = len(self)
        if isinstance(indices, slice):
            return np.arange(n)[indices]
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for {n} particles")
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"particle index out of range for {n} particles")
        return np.where(idx < 0, idx + n, idx)

    def iter_batches(self, batch_size: int, indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices (b,), images [b, D, D] float32)`` over consecutive chunks.

        ``indices`` restricts (and orders) the particles visited; default all.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        order = np.arange(len(self)) if indices is None else self._normalise(indices)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, self.read(idx)


class ArrayImageSource(ImageSource):
    """Images held in memory (or any array-like ``[N, D, D]``, e.g. a numpy memmap)."""

    def __init__(self, images: np.ndarray, apix: float = 0.0) -> None:
        arr = images.detach().cpu().numpy() if hasattr(images, "detach") else images
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise InputError(f"images must be square [N, D, D], got shape {arr.shape}; crop or pad them to a square box")
        self.images = arr
        self.apix = float(apix)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def read(self, indices: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        idx = self._normalise(indices)
        return np.asarray(self.images[idx], dtype=np.float32)

    def subset(self, indices: np.ndarray) -> "ArrayImageSource":
        return ArrayImageSource(self.images[self._normalise(indices)], self.apix)

    def check(self) -> tuple[int, float]:
        return int(self.images.shape[1]), self.apix


class StackImageSource(ImageSource):
    """Particles as frames of MRC stacks on disk, read through memory maps.

    ``paths``: the stack files; ``file_index`` ``(N,)`` int: which file each
    particle is in; ``frame_index`` ``(N,)`` int: 0-based frame in that file;
    ``referenced_by``: the metadata file that named the stacks (for messages);
    ``warn_unlisted``: warn in :meth:`check` when the metadata names a single
    stack but lists fewer particles than it holds (set for sets read from a
    file, not for subsets made in code).
    """

    def __init__(
        self,
        paths: Sequence[Path | str],
        file_index: np.ndarray,
        frame_index: np.ndarray,
        referenced_by: Path | str | None = None,
        warn_unlisted: bool = False,
    ) -> None:
        self.paths: list[Path] = [Path(p) for p in paths]
        self.file_index = np.asarray(file_index, dtype=np.int32).reshape(-1)
        self.frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
        if self.file_index.shape != self.frame_index.shape:
            raise ValueError("file_index and frame_index must have the same length")
        self.referenced_by = Path(referenced_by) if referenced_by is not None else None
        self.warn_unlisted = warn_unlisted
        self._headers: dict[int, StackHeader] | None = None
        self._open: OrderedDict[int, MrcStack] = OrderedDict()

    # -- bookkeeping -----------------------------------------------------
    def __len__(self) -> int:
        return int(self.file_index.shape[0])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # memory maps do not travel between processes
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Release every open memory map."""
        for stack in getattr(self, "_open", {}).values():
            try:
                stack.close()
            except Exception:  # pragma: no cover - closing twice
                pass
        if hasattr(self, "_open"):
            self._open.clear()

    def describe(self, index: int) -> str:
        f = int(self.file_index[index])
        return f"particle {index} ({int(self.frame_index[index]) + 1}@{self.paths[f]})"

    def image_names(self, relative_to: Path | None = None) -> list[str]:
        """RELION ``index@path`` names (1-based index), paths relative to ``relative_to`` where possible."""
        names = []
        for p in self.paths:
            q = p
            if relative_to is not None:
                try:
                    q = Path(_relpath(p, relative_to))
                except ValueError:
                    q = p.resolve()
            names.append(str(q))
        return [f"{int(fr) + 1:06d}@{names[int(f)]}" for f, fr in zip(self.file_index, self.frame_index)]

    def subset(self, indices: np.ndarray) -> "StackImageSource":
        idx = self._normalise(indices)
        used, new_file = np.unique(self.file_index[idx], return_inverse=True)
        out = StackImageSource([self.paths[i] for i in used], new_file, self.frame_index[idx], self.referenced_by)
        if self._headers is not None:
            out._headers = {j: self._headers[int(i)] for j, i in enumerate(used) if int(i) in self._headers}
        return out

    # -- validation --------------------------------------------------------
    def _where(self) -> str:
        return f" (listed in {self.referenced_by})" if self.referenced_by is not None else ""

    def headers(self) -> dict[int, StackHeader]:
        """Read (once) the header of every stack; raise InputError for a missing file."""
        if self._headers is None:
            headers: dict[int, StackHeader] = {}
            for i, p in enumerate(self.paths):
                if not p.is_file():
                    raise InputError(
                        f"image stack {p} not found{self._where()}; pass --datadir with the folder that holds the stacks"
                    )
                headers[i] = read_stack_header(p)
            self._headers = headers
        return self._headers

    def check(self) -> tuple[int, float]:
        """Validate stacks against the particle list; return ``(box px, header apix Å)``.

        Errors: missing stack, frame past the end of a stack, non-square
        images, stacks of different image sizes. Warns (``warn_unlisted``) when
        the metadata names a single stack but lists fewer particles than it holds.
        """
        headers = self.headers()
        sizes = set()
        for i, h in headers.items():
            if h.nx != h.ny:
                raise InputError(f"{h.path} holds non-square images ({h.nx}×{h.ny} px); crop them to a square box first")
            sizes.add(h.nx)
        if len(sizes) > 1:
            raise InputError(
                f"the stacks{self._where()} hold images of different sizes {sorted(sizes)} px; rescale them to one box size first"
            )
        if len(self):
            nframes = np.array([headers[i].n for i in range(len(self.paths))], dtype=np.int64)
            past = self.frame_index >= nframes[self.file_index]
            neg = self.frame_index < 0
            if past.any() or neg.any():
                j = int(np.flatnonzero(past | neg)[0])
                h = headers[int(self.file_index[j])]
                raise InputError(
                    f"{self.referenced_by or 'the particle list'} refers to image {int(self.frame_index[j]) + 1} of {h.path},"
                    f" which holds only {h.n} images; fix the image names or point --datadir at the right stacks"
                )
            if self.warn_unlisted and len(self.paths) == 1 and len(self) < int(nframes[0]):
                warnings.warn(
                    f"{self.referenced_by or 'the particle list'} lists {len(self)} particles but {self.paths[0]} holds"
                    f" {int(nframes[0])} images; using only the listed ones",
                    stacklevel=2,
                )
        box = sizes.pop() if sizes else 0
        apix = headers[0].apix if headers else 0.0
        return int(box), float(apix)

    # -- reading -----------------------------------------------------------
    def _stack(self, f: int) -> MrcStack:
        stack = self._open.get(f)
        if stack is not None:
            self._open.move_to_end(f)
            return stack
        p = self.paths[f]
        if not p.is_file():
            raise InputError(f"image stack {p} not found{self._where()}; pass --datadir with the folder that holds the stacks")
        stack = MrcStack(p)
        self._open[f] = stack
        while len(self._open) > _MAX_OPEN_STACKS:
            _, old = self._open.popitem(last=False)
            old.close()
        return stack

    def read(self, indices: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """Read the given particles as float32 ``[n, D, D]``, grouping the reads by stack file."""
        idx = self._normalise(indices)
        if idx.size == 0:
            box, _ = self.check() if self.paths else (0, 0.0)
            return np.zeros((0, box, box), dtype=np.float32)
        files = self.file_index[idx]
        frames = self.frame_index[idx]
        out: np.ndarray | None = None
        for f in np.unique(files):
            sel = np.flatnonzero(files == f)
            stack = self._stack(int(f))
            n, ny, nx = stack.shape
            if ny != nx:
                raise InputError(f"{stack.path} holds non-square images ({nx}×{ny} px); crop them to a square box first")
            fr = frames[sel]
            if fr.max() >= n or fr.min() < 0:
                bad = int(fr[(fr >= n) | (fr < 0)][0])
                raise InputError(
                    f"{self.referenced_by or 'the particle list'} refers to image {bad + 1} of {stack.path}, which holds only"
                    f" {n} images; fix the image names or point --datadir at the right stacks"
                )
            if out is None:
                out = np.empty((idx.size, ny, nx), dtype=np.float32)
            elif out.shape[1:] != (ny, nx):
                raise InputError(
                    f"{stack.path} holds {nx}×{ny} px images but other stacks hold {out.shape[2]}×{out.shape[1]} px;"
                    " rescale them to one box size first"
                )
            out[sel] = stack.read_frames(fr)  # positioned reads: no pages left resident in the process
        assert out is not None
        return out


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve() if not path.is_absolute() else path, start.resolve())


def concat_sources(sources: Sequence[ImageSource | None]) -> ImageSource | None:
    """Concatenate image sources of the same kind (stacks with stacks, arrays with arrays)."""
    if any(s is None for s in sources):
        return None
    if all(isinstance(s, StackImageSource) for s in sources):
        paths: list[Path] = []
        pos: dict[Path, int] = {}
        fi, fr = [], []
        for s in sources:
            assert isinstance(s, StackImageSource)
            remap = np.empty(len(s.paths), dtype=np.int32)
            for j, p in enumerate(s.paths):
                if p not in pos:
                    pos[p] = len(paths)
                    paths.append(p)
                remap[j] = pos[p]
            fi.append(remap[s.file_index] if len(s.paths) else s.file_index)
            fr.append(s.frame_index)
        ref = sources[0].referenced_by if sources else None  # type: ignore[union-attr]
        return StackImageSource(paths, np.concatenate(fi), np.concatenate(fr), ref)
    if all(isinstance(s, ArrayImageSource) for s in sources):
        arrays = [np.asarray(s.images) for s in sources]  # type: ignore[union-attr]
        return ArrayImageSource(np.concatenate(arrays), sources[0].apix)  # type: ignore[union-attr]
    raise InputError("cannot concatenate particle sets whose images live partly on disk and partly in memory; write them to stacks first")

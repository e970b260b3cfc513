"""Image access of a particle set: the stack check, lazy reads, batches and the NaN/Inf scan.

:class:`ParticleImages` is a mixin of :class:`~cryoscape.particles.ParticleSet`;
it uses the set's ``n``, ``name``, ``images``, ``box_per_particle`` and
``_index``. Nothing is read at construction; :meth:`ParticleImages.check_images`
reads the stack headers once (missing files, frames past the end, a box that
disagrees with the metadata) and every read goes through it.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np

from cryoscape.errors import InputError
from cryoscape.particles.image_source import ImageSource

__all__ = ["ParticleImages"]


class ParticleImages:
    """Lazy image access for a particle set (mixin; see the module docstring)."""

    n: int
    name: str
    images: ImageSource | None
    box_per_particle: np.ndarray
    _checked: bool

    def _index(self, key: Any) -> np.ndarray:  # pragma: no cover - provided by ParticleSet
        raise NotImplementedError

    def check_images(self) -> ImageSource:
        """Check the image stacks (headers only) and return the image source.

        Raises :class:`~cryoscape.errors.InputError` when the set has no images,
        a stack is missing, a frame lies past the end of its stack, or the
        stacks' box disagrees with the metadata.
        """
        return self._require_images()

    def _check_images(self) -> None:
        if self._checked or self.images is None:
            return
        box_img, _ = self.images.check()
        known = self.box_per_particle[self.box_per_particle > 0]
        if known.size and np.any(known != box_img):
            raise InputError(
                f"{self.name} says the box is {int(known[0])} px but its stacks hold {box_img}×{box_img} px images;"
                " fix _rlnImageSize or point --datadir at the right stacks"
            )
        self.box_per_particle = np.where(self.box_per_particle > 0, self.box_per_particle, box_img).astype(np.int64)
        self._checked = True

    def _require_images(self) -> ImageSource:
        if self.images is None:
            raise InputError(f"{self.name} has no particle images (no _rlnImageName / blob/path); pass the image stacks")
        self._check_images()
        return self.images

    def read_images(self, indices: Any = None) -> np.ndarray:
        """Images ``[n, D, D]`` float32 for ``indices`` (default: all), read lazily from the stacks."""
        src = self._require_images()
        idx = np.arange(self.n) if indices is None else self._index(indices)
        return src.read(idx)

    def iter_batches(self, batch_size: int = 256, indices: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices (b,), images [b, D, D] float32)`` over consecutive chunks of the set.

        Reads are grouped by stack file and contiguous frames are read in one
        go; memory use depends on ``batch_size``, not on ``N``.
        """
        src = self._require_images()
        idx = None if indices is None else self._index(indices)
        yield from src.iter_batches(batch_size, idx)

    def validate_images(self, skip_bad: bool = False, batch_size: int = 256) -> np.ndarray:
        """Count images with NaN or Inf pixels; return the ``(N,)`` bool mask of good particles.

        Raises InputError when some are bad unless ``skip_bad`` (then warns).
        """
        src = self._require_images()
        good = np.ones(self.n, dtype=bool)
        for idx, imgs in src.iter_batches(batch_size):
            good[idx] = np.isfinite(imgs).reshape(len(idx), -1).all(axis=1)
        n_bad = int((~good).sum())
        if n_bad:
            first = src.describe(int(np.flatnonzero(~good)[0]))
            msg = f"{self.name}: {n_bad} of {self.n} particles have NaN or Inf pixels (first: {first})"
            if not skip_bad:
                raise InputError(msg + "; remove them or pass --skip-bad to leave them out")
            warnings.warn(msg + "; leaving them out", stacklevel=2)
        return good

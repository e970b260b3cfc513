"""The streaming accumulators of CTF-weighted Fourier backprojection.

:class:`Backprojector` holds one raw half-plane accumulator per particle
subset and feeds batches to :func:`cryoscape.imaging.backproject_images`;
:meth:`Backprojector.sums` adds the Friedel mates and returns the
:class:`BackprojectionSums` (numerator and CTF² weights per subset), from
which :meth:`BackprojectionSums.volume` makes a regularised volume. Grids and
layouts are described in :mod:`cryoscape.reconstruct.backprojection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.imaging import backproject_images, complete_channels

__all__ = ["BackprojectionSums", "Backprojector"]


#: Images handed to :func:`cryoscape.imaging.backproject_images` at once by
#: :meth:`Backprojector.insert`; bounds its per-call temporaries.
_CHUNK = 512


@dataclass
class BackprojectionSums:
    """Accumulated Fourier sums on the oversampled grid, per particle subset.

    ``numerator [S, M, M, M]`` complex64 holds ``Σ w_i CTF_i · (shifted image FT)``
    and ``weights [S, M, M, M]`` float32 ``Σ w_i CTF_i²`` (both Friedel-symmetric,
    centred; ``M = oversampling · box + 1``, see the module docstring); ``S`` is 2
    for half sets ``(0, 1)`` or 1.
    ``n_particles (S,)`` counts inserted particles and ``weight_sum (S,)`` their
    summed particle weights; ``n_skipped`` counts images left out for NaN/Inf.
    """

    numerator: torch.Tensor
    weights: torch.Tensor
    box: int
    apix: float
    oversampling: int
    n_particles: np.ndarray
    weight_sum: np.ndarray
    n_skipped: int = 0

    @property
    def n_sets(self) -> int:
        """Number of accumulated subsets ``S``."""
        return int(self.numerator.shape[0])

    def subset(self, index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(numerator, weights)`` of subset ``index``, or of all subsets summed (``None``)."""
        if index is None:
            return self.numerator.sum(0), self.weights.sum(0)
        return self.numerator[index], self.weights[index]

    def volume(self, index: int | None = None, regulariser: float | np.ndarray | torch.Tensor = 1e-3) -> np.ndarray:
        """Regularised volume ``[D, D, D]`` float32 of one subset (or all, ``None``).

        ``regulariser`` is the per-shell ``λ(k)`` added to the weights, ``(D//2+1,)``,
        or a scalar taken *relative* to each shell's mean weight (the default,
        ``1e-3``, is a nearly unregularised inverse). See
        :func:`cryoscape.reconstruct.wiener.wiener_volume`.
        """
        from cryoscape.reconstruct.wiener import relative_regulariser, wiener_volume

        num, den = self.subset(index)
        if np.ndim(regulariser) == 0:
            lam = relative_regulariser(den, self.box, self.oversampling, float(regulariser))
        else:
            lam = torch.as_tensor(np.asarray(regulariser), dtype=torch.float32)
        return wiener_volume(num, den, lam, self.box, self.oversampling)


class Backprojector:
    """Streaming CTF-weighted insertion into ``n_sets`` accumulators.

    A thin wrapper around :func:`cryoscape.imaging.backproject_images` holding one
    raw half-plane accumulator ``[3, M, M, M]`` (Re, Im of the numerator, Σ CTF²)
    per subset.

    Parameters
    ----------
    box, apix:
        Image side ``D`` (even, px) and pixel size (Å/px).
    oversampling:
        Fourier-grid oversampling factor (integer, default 2): the accumulators
        have side ``M = oversampling · D + 1``.
    n_sets:
        Number of independent accumulators (2 for gold-standard half sets).
    device:
        Torch device for the accumulators and all per-batch work.
    fine_radius:
        Padded radius (voxels) of the low-frequency disc filled from the
        zero-padded image FT (see :func:`cryoscape.imaging.backproject_images`);
        0 gives the plain adjoint of slice extraction.

    Call :meth:`insert` for each batch, then :meth:`sums`.
    """

    def __init__(self, box: int, apix: float, oversampling: int = 2, n_sets: int = 2,
                 device: str | torch.device = "cpu", fine_radius: int = 8):
        if box % 2:
            raise InputError(f"box size {box} is odd; cryoscape needs an even box (re-extract or crop the particles)")
        if oversampling < 1 or int(oversampling) != oversampling:
            raise ValueError(f"oversampling must be a positive integer; got {oversampling}")
        self.box = int(box)
        self.apix = float(apix)
        self.oversampling = int(oversampling)
        self.n_sets = int(n_sets)
        self.device = torch.device(device)
        self.fine_radius = int(fine_radius)
        self.N = self.box * self.oversampling
        self.M = self.N + 1
        M = self.M
        self._acc = torch.zeros(self.n_sets, 3, M, M, M, dtype=torch.float32, device=self.device)
        self._count = np.zeros(self.n_sets, dtype=np.int64)
        self._wsum = np.zeros(self.n_sets, dtype=np.float64)

    def _tensor(self, x, dtype=torch.float32) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=dtype)
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def insert(
        self,
        images: np.ndarray | torch.Tensor,
        rotations: np.ndarray | torch.Tensor,
        shifts_A: np.ndarray | torch.Tensor | None = None,
        ctf: Mapping[str, np.ndarray | torch.Tensor] | None = None,
        sets: np.ndarray | torch.Tensor | None = None,
        weights: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Add a batch of particles.

        images ``[b, D, D]``; rotations ``[b, 3, 3]`` (volume -> particle frame);
        shifts_A ``[b, 2]`` RELION origins (x, y) in Å or ``None`` (zero);
        ctf: the :data:`CTF_FIELDS` as ``(b,)`` arrays (the first six required), or
        ``None`` for no CTF; sets ``(b,)`` ints in ``0 .. n_sets-1`` (default 0);
        weights ``(b,)`` non-negative particle weights (default 1).
        """
        b = int(images.shape[0])
        if b == 0:
            return
        if tuple(images.shape[-2:]) != (self.box, self.box):
            raise InputError(f"images are {tuple(images.shape[-2:])} but the reconstruction box is {self.box}")
        set_idx = np.zeros(b, dtype=np.int64) if sets is None else _numpy(sets).astype(np.int64).reshape(b)
        if np.any((set_idx < 0) | (set_idx >= self.n_sets)):
            raise ValueError(f"set indices must lie in 0..{self.n_sets - 1}")
        wts = None if weights is None else _numpy(weights).astype(np.float64).reshape(b)
        for start in range(0, b, _CHUNK):
            sl = slice(start, min(start + _CHUNK, b))
            for s in np.unique(set_idx[sl]):
                rows = np.flatnonzero(set_idx[sl] == s) + start
                self._insert_rows(images, rotations, shifts_A, ctf, wts, rows, int(s))
        counts = np.bincount(set_idx, minlength=self.n_sets)
        self._count += counts
        self._wsum += counts if wts is None else np.bincount(set_idx, weights=wts, minlength=self.n_sets)

    def _insert_rows(self, images, rotations, shifts_A, ctf, wts, rows: np.ndarray, s: int) -> None:
        """Insert the particles ``rows`` (indices into the batch) into accumulator ``s``."""
        pick = lambda x: None if x is None else self._tensor(_take(x, rows))
        backproject_images(
            pick(images),
            pick(rotations),
            pick(shifts_A),
            None if ctf is None else {k: pick(v) for k, v in ctf.items()},
            apix=self.apix,
            oversampling=float(self.oversampling),
            out=self._acc[s],
            fine_radius=self.fine_radius,
            weights=pick(wts),
        )

    def sums(self) -> BackprojectionSums:
        """The accumulated sums with every contribution's Friedel mate added."""
        done = [complete_channels(acc) for acc in self._acc]
        return BackprojectionSums(
            numerator=torch.stack([torch.complex(c[0], c[1]) for c in done]),
            weights=torch.stack([c[2] for c in done]),
            box=self.box,
            apix=self.apix,
            oversampling=self.oversampling,
            n_particles=self._count.copy(),
            weight_sum=self._wsum.copy(),
        )


def _numpy(x) -> np.ndarray:
    """``x`` as a numpy array (tensors are moved to the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _take(x, rows: np.ndarray):
    """Rows ``rows`` of an array or tensor along its first axis (a view for a contiguous range)."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return x[int(rows[0]) : int(rows[-1]) + 1]
    if isinstance(x, torch.Tensor):
        return x.index_select(0, torch.as_tensor(rows, device=x.device))
    return np.asarray(x)[rows]

"""Fourier-slice projection and its exact adjoint (backprojection).

Model
-----
A volume ``V[z, y, x]`` (box ``D``, centre voxel ``D // 2``) is projected along the
particle's viewing direction. A rotation ``R`` maps volume coordinates into the
particle frame, so the projection's centred 2D FT at integer frequency
``k = (kx, ky)`` (cycles per box) is the volume's centred 3D FT at ``Rᵀ (kx, ky, 0)``
(Fourier-slice theorem). With the unnormalised centred DFT on both sides
(``fftn_c``), the slice value equals the 2D DFT of ``Σ_z V`` exactly: no scale factor.

Padded grid and interpolation
-----------------------------
The volume is zero-padded to ``N = oversampling * D`` (even) and transformed once;
a frequency ``q`` (cycles per box ``D``) sits at the continuous padded index
``N/2 + q * N / D``. Slices are sampled by trilinear interpolation. The padded
FT is stored on a *symmetric* grid of ``M = N + 1`` points per axis, index
``j ↔ (j - N/2)`` padded frequency units, ``j = 0..N``: plane ``j = N`` is the
periodic copy of plane ``j = 0`` (the DFT frequency ``+N/2`` equals ``-N/2``).
Every frequency inside the Nyquist sphere then has all 8 interpolation corners
in the array, and the grid is mirror-symmetric (``j -> N - j``) about DC, which
makes the Hermitian completion below exact.

Grid correction
---------------
Trilinear interpolation of a DFT is convolution with a triangle of width one
padded voxel, i.e. multiplication of the real-space (padded) volume by
``sinc²(π x / N)`` per axis (``x`` in voxels from the centre, ``sinc(t) = sin t / t``).
:func:`padded_volume_ft` therefore divides the volume by
:func:`grid_correction` (that product over the three axes) before padding, and
:func:`.wiener.wiener_volume` divides the reconstruction by it after the inverse FFT.
The correction is exact on average over interpolation offsets; for slices that
fall exactly on grid planes (e.g. rotations about z) the real-space weighting
``1/sinc²`` stays uncompensated along that axis (≤ 5 % at ``|x| = D/4`` with
``oversampling = 2``, ≤ 23 % at the box edge).

Nyquist circle and Hermitian symmetry
-------------------------------------
Slices are evaluated strictly inside the Nyquist circle, ``kx² + ky² < (D/2)²``;
the rest of the ``D x D`` centred grid is 0 (including the unpaired row and
column at index 0). For real volumes the FT is Hermitian, so by default only the
half set ``H`` (``kx > 0`` or ``kx == 0, ky >= 0``; see :mod:`._grid`) is
interpolated and ``-H`` is filled with complex conjugates (``hermitian=True``).
``hermitian=False`` interpolates every point (needed for non-Hermitian FTs).

Backprojection
--------------
:func:`insert_slices` is the exact adjoint of :func:`extract_slices`
(trilinear scatter of the same weights with ``index_add_``). In Hermitian mode
it scatters only the half set (DC with weight 1/2) and then adds the mirrored,
conjugated accumulator (:func:`hermitian_complete`); for slices that are FTs of
real images this equals scattering the whole disc. For accumulating many
batches, pass ``complete=False`` and call :func:`hermitian_complete` once at the
end. The fastest path is :func:`insert_half` into a channels-first real
accumulator ``[C, M, M, M]`` (a single ``index_add_`` along dim 1 for all
channels per chunk; measured ~5x faster on CPU than ``index_add_`` into an
``[M³, C]`` row layout).

For reconstructions use :func:`cryoscape.imaging.forward.backproject_images`:
near the origin the ``D``-spaced slice samples fall on only a few discrete radii
of the finer padded grid, which biases the ratio ``num / den`` at low
frequency (about 4 % volume error and −18 % integrated density in a noise-free
test at ``D = 32``); it inserts the zero-padded image's FT there instead.

Layout
------
The padded FT is made in :mod:`.padding`, the trilinear weights in
:mod:`.interpolation`, slices extracted in :mod:`.slicing`, inserted (the
adjoint) and Hermitian-completed in :mod:`.insertion`, and moved between the
half set and full grids or images in :mod:`.half_layout`. This module holds
:class:`FourierProjector` and re-exports those functions.
"""

from __future__ import annotations

import numpy as np
import torch

from ._grid import padded_size, slice_points
from .half_layout import full_to_half, half_to_full, half_to_image, image_to_half
from .insertion import (
    complete_channels,
    hermitian_complete,
    insert_half,
    insert_slices,
    insert_weights,
    new_accumulator,
)
from .padding import grid_correction, padded_volume_ft
from .slicing import extract_slices, extract_slices_half

__all__ = [
    "FourierProjector",
    "grid_correction",
    "padded_volume_ft",
    "extract_slices",
    "extract_slices_half",
    "insert_slices",
    "insert_weights",
    "insert_half",
    "new_accumulator",
    "hermitian_complete",
    "complete_channels",
    "half_to_full",
    "full_to_half",
    "half_to_image",
    "image_to_half",
    "padded_size",
    "slice_points",
]


class FourierProjector:
    """Projector of one volume by Fourier slicing, with its FT precomputed once.

    Args:
        volume: real ``[D, D, D]`` (z, y, x) tensor (or array); the projector follows
            its device and dtype (float32 default for arrays). Gradients flow to
            ``volume`` when the projector is built inside the autograd graph.
        oversampling: zero-padding factor (default 2).

    Accuracy: slices are sampled directly on the ``D × D`` grid, so the
    interpolation aliases of trilinear sampling (copies of the object one
    padded box away, attenuated by the sinc² side lobes) fold back into the
    image. Against an exact NUFFT the relative error is below 1 % for a compact
    object (within about half the box) at oversampling 2, but about 3 % for a
    volume that fills the box; use oversampling 3 (1.3 %) or 4 (0.7 %) there
    (``benchmarks/bench_projector.py`` measures this).

    Attributes:
        D, N (padded box), M = N + 1, oversampling, vol_ft (complex ``[M, M, M]``).
    """

    def __init__(self, volume, oversampling: float = 2.0) -> None:
        vol = volume if isinstance(volume, torch.Tensor) else torch.as_tensor(np.asarray(volume), dtype=torch.float32)
        self.D = int(vol.shape[-1])
        self.oversampling = float(oversampling)
        self.N = padded_size(self.D, oversampling)
        self.M = self.N + 1
        self.vol_ft = padded_volume_ft(vol, oversampling)

    @property
    def device(self) -> torch.device:
        return self.vol_ft.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vol_ft.real.dtype

    def slice_half(self, rotations) -> torch.Tensor:
        """Complex ``[..., P]`` slice values on the half set (``slice_points(D)``)."""
        return extract_slices_half(self.vol_ft, rotations, self.D, self.oversampling)

    def slice(self, rotations) -> torch.Tensor:
        """Centred 2D FTs of the projections, complex ``[..., D, D]`` (0 outside ``|k| < D/2``)."""
        return half_to_full(self.slice_half(rotations), self.D)

    def project(self, rotations) -> torch.Tensor:
        """Real projection images ``[..., D, D]`` (y, x), centre pixel ``D//2``."""
        return half_to_image(self.slice_half(rotations), self.D)

    def __repr__(self) -> str:
        return f"FourierProjector(D={self.D}, oversampling={self.oversampling}, dtype={self.dtype}, device={self.device})"

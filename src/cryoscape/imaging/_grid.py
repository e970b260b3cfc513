"""Private slice point sets and padded-grid sizes for the imaging kernels.

Centred transforms and frequency grids come from :mod:`cryoscape.geometry.fourier`
(``fftn_c``, ``ifftn_c``, ``fft_freqs``): boxes are even, ``D``; the DC term sits
at index ``D // 2`` on every axis, ``fftn_c(x) = fftshift(fftn(ifftshift(x)))``.
A centred index ``i`` stands for the integer frequency ``i - D // 2`` in cycles
per box, i.e. ``(i - D // 2) / (D * apix)`` cycles/Å.

The *half-plane point set* of a ``D x D`` slice is the set ``H`` of integer
frequencies ``(kx, ky)`` strictly inside the Nyquist circle (``kx² + ky² <
(D/2)²``) with ``kx > 0``, or ``kx == 0`` and ``ky >= 0`` (this includes DC,
which is stored first). Together with the mirrored set ``-H`` it covers the
whole disc exactly once (DC counted once); for the FT of a real image the
values on ``-H`` are the complex conjugates of those on ``H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["SlicePoints", "slice_points", "padded_size", "recon_points"]


def padded_size(D: int, oversampling: float) -> int:
    """Padded box ``N = round(oversampling * D)`` rounded up to even; ``N >= D``."""
    if oversampling < 1.0:
        raise ValueError(f"oversampling must be >= 1, got {oversampling}")
    N = int(round(oversampling * D))
    N += N % 2
    return max(N, D)


@dataclass(frozen=True)
class SlicePoints:
    """Integer frequencies of one slice's sample points and their storage indices.

    All tensors are 1D over the ``P`` points (int64 unless stated).

    kx, ky:       integer frequencies, cycles per box (float tensors of the default dtype kind).
    full_index:   flat index ``(ky + D//2) * D + (kx + D//2)`` into a centred ``D x D`` grid.
    neg_index:    for the half set only: flat index of ``-k`` for points ``1..P-1``
                  (DC, point 0, is its own mirror); empty for the full set.
    rfft_index:   flat index ``(ky mod D) * (D//2 + 1) + kx`` into an uncentred rfft layout
                  ``[D, D//2 + 1]`` (half set only; all ``kx >= 0``).
    rfft_mirror_src / rfft_mirror_dst: the kx == 0, ky > 0 points (positions into the
                  ``P`` list) and the rfft indices of their mirrors ``(-ky mod D, 0)``;
                  irfft needs the whole kx == 0 column.
    checker:      ``(-1) ** (kx + ky)`` (float), moves the image centre to ``D // 2``.
    insert_weight: 0.5 at DC, 1 elsewhere (half set), so that a half-plane scatter
                  followed by Hermitian completion counts DC once.
    """

    D: int
    half: bool
    kx: torch.Tensor
    ky: torch.Tensor
    full_index: torch.Tensor
    neg_index: torch.Tensor
    rfft_index: torch.Tensor
    rfft_mirror_src: torch.Tensor
    rfft_mirror_dst: torch.Tensor
    checker: torch.Tensor
    insert_weight: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.kx.shape[0])

    def freqs_A(self, apix: float, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kx, ky)`` of the points in cycles/Å: ``k / (D · apix)`` for pixel size ``apix`` (Å/px)."""
        scale = 1.0 / (self.D * float(apix))
        return self.kx.to(dtype) * scale, self.ky.to(dtype) * scale


@lru_cache(maxsize=32)
def _slice_points_cpu(D: int, half: bool) -> SlicePoints:
    if D % 2:
        raise ValueError(f"box size must be even, got {D}")
    k = torch.arange(D, dtype=torch.int64) - D // 2
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    ky, kx = ky.reshape(-1), kx.reshape(-1)
    inside = 4 * (kx * kx + ky * ky) < D * D
    if half:
        inside &= (kx > 0) | ((kx == 0) & (ky >= 0))
    kx, ky = kx[inside], ky[inside]
    # put DC first (stable order otherwise)
    order = torch.argsort((kx != 0) | (ky != 0), stable=True)
    kx, ky = kx[order], ky[order]
    h = D // 2
    full_index = (ky + h) * D + (kx + h)
    empty = torch.zeros(0, dtype=torch.int64)
    if half:
        neg_index = ((-ky[1:]) + h) * D + ((-kx[1:]) + h)
        rfft_index = (ky % D) * (h + 1) + kx
        src = torch.nonzero((kx == 0) & (ky > 0)).reshape(-1)
        dst = ((-ky[src]) % D) * (h + 1)
        weight = torch.ones(kx.shape[0])
        weight[0] = 0.5
    else:
        neg_index, rfft_index, src, dst = empty, empty, empty, empty
        weight = torch.ones(kx.shape[0])
    checker = 1.0 - 2.0 * ((kx + ky) % 2).to(torch.float32)
    return SlicePoints(D, half, kx.float(), ky.float(), full_index, neg_index, rfft_index, src, dst,
                       checker, weight)


_DEVICE_CACHE: dict = {}


def slice_points(D: int, half: bool = True, device=None) -> SlicePoints:
    """Cached :class:`SlicePoints` for box ``D`` on ``device`` (half set or whole disc)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (D, half, str(device))
    pts = _DEVICE_CACHE.get(key)
    if pts is None:
        cpu = _slice_points_cpu(D, half)
        if device.type == "cpu":
            pts = cpu
        else:
            pts = SlicePoints(D, half, *[getattr(cpu, f).to(device) for f in (
                "kx", "ky", "full_index", "neg_index", "rfft_index", "rfft_mirror_src",
                "rfft_mirror_dst", "checker", "insert_weight")])
        _DEVICE_CACHE[key] = pts
    return pts


def _minimal_points(D: int, kx: torch.Tensor, ky: torch.Tensor, weight: torch.Tensor) -> SlicePoints:
    empty = torch.zeros(0, dtype=torch.int64)
    checker = torch.ones(kx.shape[0])
    return SlicePoints(D, True, kx.float(), ky.float(), empty, empty, empty, empty, empty, checker,
                       weight.float())


def half_points_subset(D: int, idx: torch.Tensor, device=None) -> SlicePoints:
    """The half-set points ``idx`` of :func:`slice_points` as a minimal :class:`SlicePoints` (frequencies and
    insertion weights only; no storage indices), e.g. for the CTF and shift phase at a batch's fitted points."""
    half = slice_points(D, True, device)
    i = torch.as_tensor(idx, dtype=torch.int64, device=half.kx.device)
    return _minimal_points(D, half.kx[i], half.ky[i], half.insert_weight[i])


@lru_cache(maxsize=32)
def _recon_points_cpu(D: int, N: int, fine_radius: int):
    half = _slice_points_cpu(D, True)
    s = N / D
    r_pad = torch.sqrt(half.kx ** 2 + half.ky ** 2) * s
    keep = torch.nonzero(r_pad >= fine_radius).reshape(-1)
    coarse = _minimal_points(D, half.kx[keep], half.ky[keep], half.insert_weight[keep])
    inner_idx = torch.nonzero(r_pad < fine_radius).reshape(-1)
    inner = _minimal_points(D, half.kx[inner_idx], half.ky[inner_idx], half.insert_weight[inner_idx])
    k = torch.arange(-fine_radius + 1, fine_radius, dtype=torch.int64)
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    ky, kx = ky.reshape(-1), kx.reshape(-1)
    inside = (kx * kx + ky * ky < fine_radius * fine_radius) & ((kx > 0) | ((kx == 0) & (ky >= 0)))
    kx, ky = kx[inside], ky[inside]
    order = torch.argsort((kx != 0) | (ky != 0), stable=True)
    kx, ky = kx[order], ky[order]
    weight = torch.full((kx.shape[0],), 1.0 / (s * s))
    weight[0] *= 0.5
    fine = _minimal_points(D, kx / s, ky / s, weight)
    return keep, coarse, inner_idx, inner, fine


def recon_points(D: int, N: int, fine_radius: int, device=None):
    """Point sets for reconstruction-quality backprojection on the padded grid ``N``.

    Returns ``(keep, coarse, inner_idx, inner, fine)``: ``keep`` indexes the half set of
    :func:`slice_points` (``D``-spaced points at padded radius ``>= fine_radius``),
    ``coarse`` those points, ``inner_idx``/``inner`` the remaining ``D``-spaced points
    (radius ``< fine_radius``), and ``fine`` the half-plane points of the zero-padded
    image's FT (spacing ``D/N``, padded radius ``< fine_radius``; frequencies stored in
    cycles per box ``D``, so fractional) with weight ``(D/N)²`` (DC ``½ (D/N)²``), the
    area each represents relative to a coarse point.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = ("recon", D, N, fine_radius, str(device))
    hit = _DEVICE_CACHE.get(key)
    if hit is None:
        keep, coarse, inner_idx, inner, fine = _recon_points_cpu(D, N, fine_radius)
        if device.type != "cpu":
            mv = lambda p: SlicePoints(p.D, p.half, *[getattr(p, f).to(device) for f in (
                "kx", "ky", "full_index", "neg_index", "rfft_index", "rfft_mirror_src",
                "rfft_mirror_dst", "checker", "insert_weight")])
            keep, coarse, inner_idx, inner, fine = (keep.to(device), mv(coarse), inner_idx.to(device),
                                                    mv(inner), mv(fine))
        hit = (keep, coarse, inner_idx, inner, fine)
        _DEVICE_CACHE[key] = hit
    return hit

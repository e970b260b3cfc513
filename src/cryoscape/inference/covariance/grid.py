"""The ball of integer Fourier voxels that carries the covariance, and the image pixels that read it.

:class:`BallGrid` (built and cached by :func:`ball_grid`) lists the voxels
within ``radius + margin`` of DC in the order DC, half ball, rest, with the
index of each voxel's mirror ``−v``; and the pixels of the whole image disc
``|k| <= radius``. :func:`pixel_values` reads real images at those pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c

__all__ = ["INTERPOLATIONS", "BallGrid", "ball_grid", "pixel_values"]

INTERPOLATIONS = ("nearest", "trilinear")


@dataclass(frozen=True)
class BallGrid:
    """Integer Fourier voxels of the covariance and the pixels that read them.

    D: box; radius: pixel radius ``r`` (cycles per box); interpolation: ``"nearest"``
    or ``"trilinear"``. voxels ``[n, 3]`` int64 ``(x, y, z)`` with ``|v| <= r + margin``;
    lookup ``[L, L, L]`` int64 (``[z, y, x]`` offset by ``ext``) -> voxel index or −1;
    neg ``[n]``: index of ``−v``; half ``[nH]``: indices of the half ball (DC first);
    keep ``[n]`` bool: ``|v| <= r``; kx, ky ``[P]`` float pixel frequencies with
    ``kx² + ky² <= r²`` (whole disc); pix_index ``[P]`` flat index into a centred
    ``D x D`` grid.
    """

    D: int
    radius: float
    interpolation: str
    ext: int
    voxels: torch.Tensor
    lookup: torch.Tensor
    neg: torch.Tensor
    half: torch.Tensor
    keep: torch.Tensor
    kx: torch.Tensor
    ky: torch.Tensor
    pix_index: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def P(self) -> int:
        return int(self.kx.shape[0])

    def index_of(self, v: torch.Tensor) -> torch.Tensor:
        """Voxel indices of integer frequencies ``v [..., 3]`` (x, y, z); −1 outside the ball."""
        e = self.ext
        inside = (v.abs() <= e).all(-1)
        vc = v.clamp(-e, e) + e
        idx = self.lookup[vc[..., 2], vc[..., 1], vc[..., 0]]
        return torch.where(inside, idx, torch.full_like(idx, -1))


def _check_grid_inputs(D: int, radius: float, interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if D % 2 or D < 4:
        raise InputError(f"box {D} must be even and at least 4")
    if not 0 < radius < D / 2:
        raise InputError(f"the covariance radius {radius:g} px must lie in (0, {D // 2}); "
                         "choose a coarser resolution limit")


def _ball_voxels(radius: float, margin: float, ext: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxels ``[n, 3]`` within ``radius + margin`` ordered DC, half ball, rest; their half flags and ``|v|²``."""
    c = torch.arange(-ext, ext + 1)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    v = torch.stack([x, y, z], -1).reshape(-1, 3)
    r2 = (v * v).sum(-1).double()
    v = v[r2 <= (radius + margin) ** 2 + 1e-9]
    r2 = (v * v).sum(-1).double()
    half = (v[:, 2] > 0) | ((v[:, 2] == 0) & (v[:, 1] > 0)) | ((v[:, 2] == 0) & (v[:, 1] == 0) & (v[:, 0] >= 0))
    # DC first, then the half ball, then the rest (stable otherwise)
    order = torch.argsort(torch.where(r2 == 0, 0, torch.where(half, 1, 2)), stable=True)
    return v[order], half[order], r2[order]


def _disc_pixels(D: int, radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel frequencies ``kx, ky`` (float64) with ``|k| <= radius`` and their flat centred indices."""
    k = torch.arange(D) - D // 2
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    ky, kx = ky.reshape(-1), kx.reshape(-1)
    inside = (kx * kx + ky * ky).double() <= radius * radius + 1e-9
    kx, ky = kx[inside], ky[inside]
    pix_index = (ky + D // 2) * D + (kx + D // 2)
    return kx.double(), ky.double(), pix_index


@lru_cache(maxsize=16)
def ball_grid(D: int, radius: float, interpolation: str = "nearest") -> BallGrid:
    """The :class:`BallGrid` of box ``D`` for pixels within ``radius`` (cycles per box, ``< D/2``)."""
    _check_grid_inputs(D, radius, interpolation)
    margin = math.sqrt(3) * (0.5 if interpolation == "nearest" else 1.0)
    ext = math.floor(radius + margin)
    v, half, r2 = _ball_voxels(radius, margin, ext)
    L = 2 * ext + 1
    lookup = torch.full((L, L, L), -1, dtype=torch.int64)
    lookup[v[:, 2] + ext, v[:, 1] + ext, v[:, 0] + ext] = torch.arange(v.shape[0])
    neg = lookup[-v[:, 2] + ext, -v[:, 1] + ext, -v[:, 0] + ext]
    kx, ky, pix_index = _disc_pixels(D, radius)
    return BallGrid(D, float(radius), interpolation, ext, v, lookup, neg, torch.nonzero(half).reshape(-1),
                    r2 <= radius * radius + 1e-9, kx, ky, pix_index)


_GRIDS_ON: dict = {}


def _grid_on(grid: BallGrid, device) -> BallGrid:
    """``grid`` with its lookup table on ``device``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cpu":
        return grid
    key = (grid.D, grid.radius, grid.interpolation, str(device))
    if key not in _GRIDS_ON:
        _GRIDS_ON[key] = BallGrid(grid.D, grid.radius, grid.interpolation, grid.ext, grid.voxels.to(device),
                                  grid.lookup.to(device), grid.neg.to(device), grid.half.to(device),
                                  grid.keep.to(device), grid.kx.to(device), grid.ky.to(device),
                                  grid.pix_index.to(device))
    return _GRIDS_ON[key]


def pixel_values(images: torch.Tensor, pix_index: torch.Tensor) -> torch.Tensor:
    """Centred unnormalised DFT of real images ``[B, D, D]`` at flat centred indices -> ``[B, P]`` complex."""
    D = images.shape[-1]
    ft = fftn_c(images.reshape(-1, D, D), 2)
    return ft.reshape(ft.shape[0], D * D)[:, pix_index]

"""Real-space masks on the centred grid (origin at pixel/voxel ``D//2``).

Radii are in pixels; distances are measured from the centre index ``D//2`` on
every axis. Arrays are ``[z, y, x]`` / ``[y, x]``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["radius_grid", "soft_sphere_mask", "circle_mask", "default_volume_mask", "solvent_mask"]


def radius_grid(D: int, ndim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Distance in pixels from the centre ``D//2``, ``[D]*ndim`` float64."""
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3; got {ndim}")
    c = torch.arange(D, dtype=torch.float64, device=device) - D // 2
    grids = torch.meshgrid(*([c] * ndim), indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def soft_sphere_mask(
    D: int,
    radius_px: float,
    edge_px: float = 3.0,
    ndim: int = 3,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sphere (``ndim=3``) or disc (``ndim=2``) mask with a raised-cosine edge, ``[D]*ndim`` float32.

    1 for ``r <= radius_px``, ``0.5 · (1 + cos(π (r - radius_px) / edge_px))``
    for ``radius_px < r < radius_px + edge_px``, 0 beyond. ``edge_px = 0``
    gives a hard mask.
    """
    if radius_px < 0 or edge_px < 0:
        raise ValueError(f"radius_px and edge_px must be non-negative; got {radius_px}, {edge_px}")
    r = radius_grid(D, ndim, device)
    if edge_px == 0:
        return (r <= radius_px).to(torch.float32)
    t = ((r - radius_px) / edge_px).clamp(0.0, 1.0)
    return (0.5 * (1.0 + torch.cos(math.pi * t))).to(torch.float32)


def circle_mask(D: int, radius_px: float | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """2D boolean disc ``[D, D]``: True where the distance from ``D//2`` is ``<= radius_px`` (default ``D//2``)."""
    radius = D // 2 if radius_px is None else radius_px
    return radius_grid(D, 2, device) <= radius


def default_volume_mask(D: int) -> torch.Tensor:
    """The package's default soft spherical mask ``[D, D, D]`` float32 (masked FSC, metrics).

    Centred on voxel ``D//2``; radius ``min(0.4·D, D/2 − edge − 1)`` px with a
    raised-cosine edge of ``max(3, D/16)`` px, so it reaches 0 inside the box.
    """
    edge = max(3.0, D / 16.0)
    radius = max(min(0.4 * D, D / 2.0 - edge - 1.0), 0.0)
    return soft_sphere_mask(int(D), radius, edge, ndim=3)


def solvent_mask(
    volume,
    apix: float,
    lowpass_A: float = 15.0,
    threshold: float | None = None,
    dilate_A: float = 3.0,
    edge_A: float = 6.0,
) -> torch.Tensor:
    """A soft solvent mask ``[D, D, D]`` float32 in ``[0, 1]`` derived from a map.

    Steps: Gaussian low-pass of ``volume`` (``exp(-k²/(2 s²))`` with ``s = 1/lowpass_A``,
    ``k`` in 1/Å); binarise at ``threshold`` (default: 10 % of the low-passed
    maximum); keep the largest connected region; grow it by ``dilate_A`` Å; add a
    raised-cosine edge of ``edge_A`` Å (1 at distance ``<= dilate_A`` from the
    region, 0 at ``>= dilate_A + edge_A``); finally multiply by a soft sphere that
    reaches 0 inside the box, so the mask never touches the box faces.
    """
    import numpy as np
    from scipy import ndimage

    v = torch.as_tensor(volume, dtype=torch.float64).detach().cpu()
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"volume must be a cube [D, D, D]; got {tuple(v.shape)}")
    if not (apix > 0 and lowpass_A > 0 and dilate_A >= 0 and edge_A >= 0):
        raise ValueError("apix and lowpass_A must be positive, dilate_A and edge_A non-negative")
    D = v.shape[0]
    k = torch.fft.fftfreq(D, d=apix, dtype=torch.float64)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    smooth = torch.fft.ifftn(torch.fft.fftn(v) * torch.exp(-0.5 * k2 * lowpass_A ** 2)).real.numpy()
    level = 0.1 * float(smooth.max()) if threshold is None else float(threshold)
    binary = smooth > level
    labels, n = ndimage.label(binary)
    if n == 0:
        raise ValueError(f"no voxel of the low-passed map exceeds the threshold {level:g}; lower it")
    sizes = ndimage.sum(binary, labels, index=np.arange(1, n + 1))
    region = labels == (1 + int(np.argmax(sizes)))
    dist_A = ndimage.distance_transform_edt(~region) * apix
    t = np.clip((dist_A - dilate_A) / edge_A, 0.0, 1.0) if edge_A > 0 else (dist_A > dilate_A).astype(np.float64)
    soft = np.where(t >= 1.0, 0.0, 0.5 * (1.0 + np.cos(np.pi * t)))
    return (torch.as_tensor(soft, dtype=torch.float32) * default_volume_mask(D)).clamp(0.0, 1.0)

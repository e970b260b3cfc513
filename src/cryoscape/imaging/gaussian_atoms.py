"""Exact real-space images and volumes of isotropic Gaussian atoms.

Density model: ``ρ(r) = Σ_a w_a G(r − c_a; σ_a)`` with ``G`` the normalised 3D
Gaussian (integral 1), ``c_a`` in Å relative to the box centre (voxel ``D//2``
on every axis), coordinates ordered (x, y, z).

Pixels and voxels are *integrated*, not point-sampled: a pixel value is the
mass of the projected density inside that pixel (Gaussian CDF differences, via
``erf``), so images and volumes are in units of amplitude per pixel/voxel and
sum to ``Σ w_a`` for atoms well inside the box. Because the Gaussian is
separable, a voxel-integrated volume summed along z equals the pixel-integrated
projection exactly, so ``FourierProjector(rasterize_atoms(...)).project(R)``
agrees with ``project_atoms(..., R)`` up to interpolation error.

Projection uses separability: atom ``a`` at particle-frame position
``(x_a, y_a)`` contributes ``w_a g_a(y) h_a(x)`` (1D pixel integrals), so
``image = Gᵀ diag(w) H`` is one batched matrix product ``[D, A] @ [A, D]`` per
image. The 1D profiles are evaluated only in a window of ``± truncate · σ``
around each atom (mass outside it, < 1e-6 for ``truncate = 5``, is dropped).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["project_atoms", "rasterize_atoms", "pixel_profiles"]

_SQRT2 = math.sqrt(2.0)


def _tensor(x, dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype, device=device)


def pixel_profiles(pos_px: torch.Tensor, sigma_px: torch.Tensor, D: int,
                   truncate: float | None = 5.0, scale: torch.Tensor | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-integrated 1D Gaussian profiles.

    Args:
        pos_px: ``[..., A]`` continuous pixel coordinate of each atom (pixel ``j``
            covers ``[j − 0.5, j + 0.5]``).
        sigma_px: ``[A]`` or broadcastable to ``pos_px``, standard deviation in pixels.
        D: number of pixels.
        truncate: window half-width in sigmas (None: evaluate all ``D`` pixels). The
            window is kept inside ``[0, D)``; for atoms near or past the edge it still
            holds the exact integrals of its own pixels.
        scale: optional ``[..., A]`` factor per profile (e.g. the atom amplitudes).
        out: optional preallocated ``[..., A, D]`` buffer (overwritten; only use it
            when no gradient is needed).
    Returns:
        ``[..., A, D]`` masses per pixel (each row sums to ~1, times ``scale``, for atoms inside).
    """
    sigma_px = torch.broadcast_to(sigma_px, pos_px.shape)
    inv = 1.0 / (_SQRT2 * sigma_px)[..., None]
    W = int(math.ceil(2 * truncate * float(sigma_px.max()))) + 2 if truncate is not None else D
    if W >= D:
        edges = torch.arange(D + 1, device=pos_px.device, dtype=pos_px.dtype) - 0.5
        c = torch.erf((edges - pos_px[..., None]) * inv)
        vals = 0.5 * (c[..., 1:] - c[..., :-1])
        return vals if scale is None else vals * scale[..., None]
    start = torch.floor(pos_px.detach() - truncate * sigma_px.detach() + 0.5).clamp_(0, D - W)
    edges = start[..., None] - 0.5 + torch.arange(W + 1, device=pos_px.device, dtype=pos_px.dtype)
    c = torch.erf((edges - pos_px[..., None]) * inv)
    vals = 0.5 * (c[..., 1:] - c[..., :-1])  # [..., A, W]
    if scale is not None:
        vals = vals * scale[..., None]
    idx = start.long()[..., None] + torch.arange(W, device=pos_px.device)
    if out is None:
        out = torch.zeros(*pos_px.shape, D, device=pos_px.device, dtype=pos_px.dtype)
    else:
        out.zero_()
    return out.scatter_(-1, idx, vals)


def project_atoms(coords_A, amplitudes, sigma_A, rotations, D: int, apix: float,
                  shifts_A=None, batch_size: int = 16, truncate: float | None = 5.0,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Exact projections of Gaussian atoms, ``[B, D, D]`` (y, x), pixel-integrated.

    Args:
        coords_A: ``[A, 3]`` or per-image ``[B, A, 3]`` (x, y, z) Å from the box centre.
        amplitudes: ``[A]`` or ``[B, A]`` integrated mass of each atom.
        sigma_A: scalar or ``[A]`` standard deviation in Å.
        rotations: ``[B, 3, 3]``; atom ``c`` lands at particle-frame ``R c``.
        D, apix: box (px) and pixel size (Å/px).
        shifts_A: optional ``[B, 2]`` RELION origins (Å); the image is translated by
            ``−origin`` (an atom at the centre lands at ``−origin``).
        batch_size: images per chunk (small chunks keep temporaries in cache). truncate: profile window in sigmas (None: full).
        dtype: compute dtype (default: ``coords_A``'s if a float tensor, else float32).
    Gradients flow to coordinates, amplitudes, sigma and rotations.
    """
    if dtype is None:
        dtype = coords_A.dtype if isinstance(coords_A, torch.Tensor) and coords_A.is_floating_point() else torch.float32
    device = next((t.device for t in (coords_A, rotations, amplitudes) if isinstance(t, torch.Tensor)),
                  torch.device("cpu"))
    X = _tensor(coords_A, dtype, device)
    R = _tensor(rotations, dtype, device).reshape(-1, 3, 3)
    B = R.shape[0]
    w = _tensor(amplitudes, dtype, device)
    sig = _tensor(sigma_A, dtype, device).reshape(-1) / apix
    A = X.shape[-2]
    if sig.numel() == 1:
        sig = sig.expand(A)
    sh = None if shifts_A is None else _tensor(shifts_A, dtype, device).reshape(-1, 2)
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (X, R, w, sig) if isinstance(t, torch.Tensor))
    bufs = None if need_grad else [torch.empty(min(batch_size, B), A, D, device=device, dtype=dtype)
                                   for _ in range(2)]
    out = []
    for a in range(0, B, batch_size):
        b = min(B, a + batch_size)
        Xb = X if X.ndim == 2 else X[a:b]
        # particle-frame coordinates: (R c)_i = Σ_j R[i, j] c_j; only x, y are needed
        xy = torch.matmul(Xb, R[a:b, :2, :].transpose(-1, -2))  # [b, A, 2]
        if sh is not None:
            xy = xy - sh[a:b, None, :]
        pos = xy / apix + D // 2
        wb = w if w.ndim == 1 else w[a:b]
        wb = torch.broadcast_to(wb, pos.shape[:-1])
        gx = pixel_profiles(pos[..., 0], sig, D, truncate,
                            out=None if bufs is None else bufs[0][: b - a])  # [b, A, D]
        gy = pixel_profiles(pos[..., 1], sig, D, truncate, scale=wb,
                            out=None if bufs is None else bufs[1][: b - a])
        out.append(torch.matmul(gy.transpose(-1, -2), gx))  # [b, D(y), D(x)]
    return torch.cat(out, dim=0) if len(out) > 1 else out[0]


def rasterize_atoms(coords_A, amplitudes, sigma_A, D: int, apix: float,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """Voxel-integrated volume ``[D, D, D]`` (z, y, x) of the same density as :func:`project_atoms`.

    ``vol[z, y, x] = Σ_a w_a g_a(z) g_a(y) g_a(x)`` with ``g`` the 1D voxel integrals,
    computed as one matrix product ``[D, A] @ [A, D²]``.
    """
    if dtype is None:
        dtype = coords_A.dtype if isinstance(coords_A, torch.Tensor) and coords_A.is_floating_point() else torch.float32
    device = coords_A.device if isinstance(coords_A, torch.Tensor) else torch.device("cpu")
    X = _tensor(coords_A, dtype, device)
    w = _tensor(amplitudes, dtype, device)
    A = X.shape[0]
    sig = _tensor(sigma_A, dtype, device).reshape(-1) / apix
    if sig.numel() == 1:
        sig = sig.expand(A)
    pos = X / apix + D // 2  # [A, 3] (x, y, z)
    g = pixel_profiles(pos.t().contiguous(), sig, D, truncate=None)  # [3, A, D]
    gz = g[2] * w[:, None]
    plane = (g[1][:, :, None] * g[0][:, None, :]).reshape(A, D * D)
    return (gz.t() @ plane).reshape(D, D, D)

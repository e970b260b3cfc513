"""Trilinear interpolation on the symmetric padded grid: corner indices, weights, gathers.

Shared by slice extraction (:mod:`.slicing`) and its adjoint (:mod:`.insertion`):
for rotations ``R`` and 2D points ``(kx, ky)`` the 3D point ``Rᵀ (kx, ky, 0)``
(scaled to padded index units) gets 8 corner indices into the flattened
``M³`` grid and their trilinear weights. Work is done in chunks of at most
``_CHUNK_POINTS`` (image, point) pairs to bound temporary memory.
"""

from __future__ import annotations

import numpy as np
import torch

from ._grid import SlicePoints

# number of (image, point) pairs interpolated per chunk; bounds temporary memory
_CHUNK_POINTS = 1 << 16


def _as_tensor(x, like: torch.Tensor | None = None, dtype=None, device=None) -> torch.Tensor:
    """Tensor on ``like``'s device (and real dtype) unless given explicitly."""
    if like is not None:
        device = like.device if device is None else device
        if dtype is None:
            dtype = like.real.dtype if like.is_complex() else like.dtype
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device,
                    dtype=dtype if dtype is not None else x.dtype)
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _corner_offsets(M: int, device) -> torch.Tensor:
    d = torch.arange(8, device=device)
    dz, dy, dx = (d >> 2) & 1, (d >> 1) & 1, d & 1
    return dz * M * M + dy * M + dx


def _trilinear(rotations: torch.Tensor, pts: SlicePoints, D: int, N: int,
               band: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner indices and trilinear weights for all (rotation, point) pairs.

    ``rotations`` is ``[B, 3, 3]``. Returns ``idx`` (int64) and ``w`` (rotation
    dtype), both ``[8, B * P]`` corner-major (corner ``c = 4 dz + 2 dy + dx``),
    with ``idx`` flat into the ``M³`` symmetric padded grid (``M = N + 1``), or,
    with ``band = L``, into the central cube ``M = 2L + 1`` of
    :func:`~cryoscape.imaging.padding.padded_volume_ft_band` (the points must
    lie within ``L - 1`` padded units of the origin).
    Gradients flow to ``rotations`` through ``w``.
    """
    M = N + 1 if band is None else 2 * int(band) + 1
    centre = N / 2 if band is None else float(band)
    dtype = rotations.dtype
    kx = pts.kx.to(dtype)
    ky = pts.ky.to(dtype)
    # q = Rᵀ (kx, ky, 0): q_j = R[0, j] kx + R[1, j] ky, (x, y, z) order; padded index p = q N/D + N/2
    Rt = rotations[:, :2, :].permute(2, 1, 0) * (N / D)  # [3 (j), 2 (i), B]
    p = torch.addcmul(Rt[:, 0, :, None] * kx, Rt[:, 1, :, None], ky).add(centre).reshape(3, -1)
    p0 = torch.floor(p.detach()).clamp_(0, M - 2)
    f = p - p0
    i0 = p0.long()
    base = (i0[2] * M + i0[1]) * M + i0[0]
    idx = base[None, :] + _corner_offsets(M, rotations.device)[:, None]
    g = torch.stack([1 - f, f], dim=1)  # [3 (x, y, z), 2, n]
    w = (g[2, :, None, None] * g[1, None, :, None] * g[0, None, None, :]).reshape(8, -1)
    return idx, w


def _prep_rotations(rotations, like: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    R = _as_tensor(rotations, like=like)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must be [..., 3, 3], got {tuple(R.shape)}")
    batch = tuple(R.shape[:-2])
    return R.reshape(-1, 3, 3), batch


def _chunks(B: int, P: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_POINTS // max(P, 1))
    return [(i, min(B, i + step)) for i in range(0, B, step)]


def _gather(vol_ft_padded: torch.Tensor, rotations: torch.Tensor, pts: SlicePoints,
            D: int, N: int) -> torch.Tensor:
    """Trilinear samples ``[B, P]`` (complex) at the points of ``pts``."""
    M = N + 1
    if vol_ft_padded.shape != (M, M, M):
        raise ValueError(f"padded FT must be [{M}, {M}, {M}] for D={D}, N={N}; got {tuple(vol_ft_padded.shape)}")
    table = vol_ft_padded.reshape(M * M * M)
    rotations = rotations.to(vol_ft_padded.real.dtype)
    out = []
    for a, b in _chunks(rotations.shape[0], pts.n):
        idx, w = _trilinear(rotations[a:b], pts, D, N)
        vals = torch.view_as_real(table.index_select(0, idx.reshape(-1))).reshape(8, -1, 2)
        res = (vals * w[..., None]).sum(0)
        out.append(torch.view_as_complex(res).reshape(b - a, pts.n))
    return torch.cat(out, dim=0) if len(out) > 1 else out[0]

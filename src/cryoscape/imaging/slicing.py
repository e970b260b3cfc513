"""Central-slice extraction from a padded volume FT (the forward Fourier-slice operator).

Slice ``b`` samples ``V̂(R_bᵀ k)`` by trilinear interpolation inside the Nyquist
circle ``|k| < D/2``; by default only the half set ``H`` is interpolated and
``-H`` filled with conjugates (see :mod:`.projector`).
"""

from __future__ import annotations

import torch

from ._grid import _minimal_points, padded_size, slice_points
from .half_layout import half_to_full
from .interpolation import _chunks, _gather, _prep_rotations, _trilinear

__all__ = ["extract_slices_half", "extract_slices_half_stack", "extract_slices"]


def extract_slices_half(vol_ft_padded: torch.Tensor, rotations, D: int,
                        oversampling: float = 2.0) -> torch.Tensor:
    """Central-slice values on the half set ``H`` only.

    Args:
        vol_ft_padded: complex ``[M, M, M]`` from :func:`padded_volume_ft`.
        rotations: ``[..., 3, 3]`` (tensor or array).
        D: image box.
    Returns:
        complex ``[..., P]`` in the order of ``slice_points(D, half=True)``.
    """
    N = padded_size(D, oversampling)
    R, batch = _prep_rotations(rotations, vol_ft_padded)
    pts = slice_points(D, True, vol_ft_padded.device)
    vals = _gather(vol_ft_padded, R, pts, D, N)
    return vals.reshape(*batch, pts.n)


def extract_slices_half_stack(fts_padded: torch.Tensor, rotations, D: int, oversampling: float = 2.0,
                              points: torch.Tensor | None = None, band: int | None = None) -> torch.Tensor:
    """Half-set central slices of several volumes at once: complex ``[B, V, P']``.

    The same samples as :func:`extract_slices_half` of each ``fts_padded[v]``
    (``[V, M, M, M]``), taken at ``points`` (indices into the half set, default all
    ``P``) only: the corner indices and weights are computed once for every
    volume and only the requested points are interpolated. Differentiable in the
    FTs and the rotations. ``band = L``: ``fts_padded`` is the central cube of
    :func:`~cryoscape.imaging.padding.padded_volume_ft_band` (``[V, 2L+1, 2L+1, 2L+1]``)
    and every point must lie within ``L - 1`` padded units of the origin.
    """
    N = padded_size(D, oversampling)
    M = N + 1 if band is None else 2 * int(band) + 1
    V = fts_padded.shape[0]
    if tuple(fts_padded.shape[1:]) != (M, M, M):
        raise ValueError(f"padded FTs must be [V, {M}, {M}, {M}] for D={D}; got {tuple(fts_padded.shape)}")
    R, batch = _prep_rotations(rotations, fts_padded)
    half = slice_points(D, True, fts_padded.device)
    pts = half if points is None else _minimal_points(D, half.kx[points], half.ky[points], half.insert_weight[points])
    if band is not None:
        radius = float(torch.sqrt(pts.kx ** 2 + pts.ky ** 2).max())
        if radius * N / D > int(band) - 1:
            raise ValueError(f"band {band} is too narrow for the points (radius up to {radius:.3g} px at box {D})")
    corners = [_trilinear(R[i:j], pts, D, N, band) for i, j in _chunks(R.shape[0], pts.n)]  # shared by every volume
    per_volume = []
    for f in fts_padded:
        table = torch.view_as_real(f.reshape(M * M * M))
        parts = [(table.index_select(0, idx.reshape(-1)).reshape(8, -1, 2) * w[..., None].to(table.dtype)).sum(0)
                 for idx, w in corners]
        per_volume.append(torch.view_as_complex(torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]))
    vals = torch.stack(per_volume, dim=0).reshape(V, R.shape[0], pts.n).transpose(0, 1).contiguous()
    return vals.reshape(*batch, V, pts.n)


def extract_slices(vol_ft_padded: torch.Tensor, rotations, D: int, oversampling: float = 2.0,
                   hermitian: bool = True) -> torch.Tensor:
    """Central slices of a padded volume FT on the full centred grid.

    Args:
        vol_ft_padded: complex ``[M, M, M]`` (see :func:`padded_volume_ft`).
        rotations: ``[..., 3, 3]``; slice ``b`` samples ``V̂(R_bᵀ k)``.
        D: output box; oversampling: must match the padded FT.
        hermitian: assume the FT of a real volume and interpolate only the half set
            (exact for Hermitian input); False interpolates the whole disc.
    Returns:
        complex ``[..., D, D]`` centred (DC at ``D//2``), zero outside ``|k| < D/2``.
    """
    N = padded_size(D, oversampling)
    R, batch = _prep_rotations(rotations, vol_ft_padded)
    if hermitian:
        vals = extract_slices_half(vol_ft_padded, R, D, oversampling)
        return half_to_full(vals, D).reshape(*batch, D, D)
    pts = slice_points(D, False, vol_ft_padded.device)
    vals = _gather(vol_ft_padded, R, pts, D, N)
    out = vals.new_zeros(vals.shape[0], D * D)
    out[:, pts.full_index] = vals
    return out.reshape(*batch, D, D)

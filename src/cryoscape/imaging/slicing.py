"""Central-slice extraction from a padded volume FT (the forward Fourier-slice operator).

Slice ``b`` samples ``V̂(R_bᵀ k)`` by trilinear interpolation inside the Nyquist
circle ``|k| < D/2``; by default only the half set ``H`` is interpolated and
``-H`` filled with conjugates (see :mod:`.projector`).
"""

from __future__ import annotations

import torch

from ._grid import padded_size, slice_points
from .half_layout import half_to_full
from .interpolation import _gather, _prep_rotations

__all__ = ["extract_slices_half", "extract_slices"]


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

"""Backprojection kernels: the exact adjoint of slice extraction, and Hermitian completion.

:func:`insert_half` scatters real multi-channel point values into a channels-first
accumulator ``[C, M, M, M]`` with the trilinear weights of :mod:`.interpolation`;
:func:`insert_slices` / :func:`insert_weights` are the adjoints of
:func:`.slicing.extract_slices` for complex slices and real weights;
:func:`hermitian_complete` / :func:`complete_channels` add the mirrored
(conjugated) accumulator once half-plane insertion is done.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import scatter_cpu
from ._grid import SlicePoints, padded_size, slice_points
from .interpolation import _as_tensor, _chunks, _prep_rotations, _trilinear

__all__ = [
    "new_accumulator",
    "insert_half",
    "insert_ctf_weighted",
    "hermitian_complete",
    "complete_channels",
    "insert_slices",
    "insert_weights",
]


def new_accumulator(D: int, oversampling: float = 2.0, channels: int = 3, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Zeroed channels-first real accumulator ``[C, M, M, M]`` for :func:`insert_half`.

    Convention used by the reconstruction helpers: channel 0 = Re(numerator),
    1 = Im(numerator), 2 = weights (Σ CTF²).
    """
    M = padded_size(D, oversampling) + 1
    return torch.zeros(channels, M, M, M, device=device, dtype=dtype)


def insert_half(values: torch.Tensor, rotations, D: int, oversampling: float = 2.0,
                out: torch.Tensor | None = None, half: bool = True,
                points: SlicePoints | None = None) -> torch.Tensor:
    """Trilinear scatter of real multi-channel point values (the backprojection kernel).

    Args:
        values: real ``[B, P, C]`` on the points of ``points`` (default
            ``slice_points(D, half)``). Each point's ``insert_weight`` is applied here
            (1/2 at DC for half sets), so the result is ready for :func:`complete_channels`.
        rotations: ``[B, 3, 3]``.
        out: channels-first accumulator ``[C, M, M, M]`` (created if None), added to
            in place: on the CPU without autograd by the compiled kernel of
            :mod:`.scatter_cpu`, otherwise with one ``index_add_`` (along dim 1, all
            channels) per chunk.
        points: custom point set (frequencies in cycles per box ``D``, may be fractional).
    Returns:
        ``out`` (raw; *not* Hermitian-completed).
    """
    N = padded_size(D, oversampling)
    M = N + 1
    C = values.shape[-1]
    if out is None:
        out = torch.zeros(C, M, M, M, device=values.device, dtype=values.dtype)
    if out.shape != (C, M, M, M):
        raise ValueError(f"accumulator must be [{C}, {M}, {M}, {M}], got {tuple(out.shape)}")
    pts = slice_points(D, half, values.device) if points is None else points
    R = _as_tensor(rotations, like=values).reshape(-1, 3, 3)
    values = values * pts.insert_weight.to(values.dtype)[:, None]
    if scatter_cpu.usable(out, values, R):
        return scatter_cpu.scatter_trilinear(out, R, pts.kx, pts.ky, values, D, N)
    return _scatter_torch(out, R, pts, values, D, N)


def insert_ctf_weighted(y: torch.Tensor, ctf: torch.Tensor | None, image_weights: torch.Tensor | None,
                        rotations: torch.Tensor, D: int, oversampling: float, out: torch.Tensor,
                        points: SlicePoints) -> torch.Tensor:
    """Scatter the reconstruction channels ``(Re y·c, Im y·c, c²) · g`` into ``out [3, M, M, M]``.

    ``y`` complex ``[B, P]`` (shift-corrected image FT values at ``points``), ``c`` the
    CTF ``[B, P]`` (1 when None), ``g`` the image weight ``[B]`` (1 when None) times the
    points' ``insert_weight``. The same sums as :func:`insert_half` of the stacked
    channels; on the CPU without autograd the compiled kernel forms them in registers.
    """
    N = padded_size(D, oversampling)
    R = _as_tensor(rotations, like=y.real).reshape(-1, 3, 3)
    if scatter_cpu.usable(out, y.real, R) and not (ctf is not None and ctf.requires_grad) and not (
            image_weights is not None and image_weights.requires_grad):
        return scatter_cpu.scatter_ctf_weighted(out, R, points.kx, points.ky, y, ctf, image_weights,
                                                points.insert_weight.to(out.dtype), D, N)
    if ctf is not None:
        y = y * ctf
        w = (ctf * ctf).expand(y.shape)
    else:
        w = torch.ones(y.shape, device=y.device, dtype=y.real.dtype)
    vals = torch.stack([y.real, y.imag, w], dim=-1)
    if image_weights is not None:
        vals = vals * image_weights[:, None, None]
    return insert_half(vals, R, D, oversampling, out=out, points=points)


def _scatter_torch(out: torch.Tensor, R: torch.Tensor, pts: SlicePoints, values: torch.Tensor,
                   D: int, N: int) -> torch.Tensor:
    """The torch trilinear scatter of ``values [B, P, C]`` into ``out [C, M, M, M]`` (any device, autograd)."""
    C, M = out.shape[0], N + 1
    flat = out.view(C, M * M * M)
    for a, b in _chunks(R.shape[0], pts.n):
        idx, w = _trilinear(R[a:b], pts, D, N)
        v = values[a:b].permute(2, 0, 1).reshape(C, 1, -1).contiguous()  # [C, 1, b * P]
        flat.index_add_(1, idx.reshape(-1), (v * w[None]).reshape(C, -1))
    return out


def _flip3(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(-3, -2, -1))


def hermitian_complete(acc: torch.Tensor) -> torch.Tensor:
    """Complete a half-plane accumulator on the symmetric ``M³`` grid.

    Complex ``[..., M, M, M]``: ``acc + conj(flip(acc))``; real: ``acc + flip(acc)``
    (flip: ``j -> N - j`` on all three axes, i.e. ``q -> -q``). Returns a new tensor.
    """
    f = _flip3(acc)
    return acc + (f.conj() if acc.is_complex() else f)


def complete_channels(acc: torch.Tensor, odd_channels: Sequence[int] = (1,)) -> torch.Tensor:
    """Hermitian completion of a channels-first real accumulator ``[C, M, M, M]``.

    Channels listed in ``odd_channels`` (imaginary parts) get ``acc - flip(acc)``,
    the others ``acc + flip(acc)``. Returns a new tensor.
    """
    sign = torch.ones(acc.shape[0], device=acc.device, dtype=acc.dtype)
    for c in odd_channels:
        sign[c] = -1
    return acc + sign[:, None, None, None] * _flip3(acc)


def _insert_complex(slices: torch.Tensor, rotations, D: int, oversampling: float,
                    out: torch.Tensor | None, hermitian: bool, complete: bool) -> torch.Tensor:
    R, _ = _prep_rotations(rotations, slices)
    slices = slices.reshape(-1, D, D)
    pts = slice_points(D, hermitian, slices.device)
    vals = slices.reshape(-1, D * D)[:, pts.full_index]
    acc = insert_half(torch.view_as_real(vals.contiguous()), R, D, oversampling, half=hermitian)
    acc = torch.view_as_complex(acc.permute(1, 2, 3, 0).contiguous())
    return _finish_insert(acc, out, hermitian and complete)


def insert_slices(slices: torch.Tensor, rotations, D: int, oversampling: float = 2.0,
                  out: torch.Tensor | None = None, hermitian: bool = True,
                  complete: bool = True) -> torch.Tensor:
    """Backproject centred 2D FTs: the exact adjoint of :func:`extract_slices`.

    Args:
        slices: complex ``[..., D, D]`` centred; only ``|k| < D/2`` is read.
        rotations: ``[..., 3, 3]`` matching ``slices``.
        out: complex ``[M, M, M]`` accumulator added to in place (optional).
        hermitian: scatter only the half set, then complete (equals the full scatter
            when ``slices`` are FTs of real images). False: scatter the whole disc
            (exact C-linear adjoint of ``extract_slices(..., hermitian=False)``).
        complete: with ``hermitian``, apply :func:`hermitian_complete` (set False when
            accumulating many batches and complete once at the end).
    Returns:
        complex ``[M, M, M]``.
    """
    if not slices.is_complex():
        raise ValueError("slices must be complex (centred 2D FTs)")
    return _insert_complex(slices, rotations, D, oversampling, out, hermitian, complete)


def insert_weights(weights: torch.Tensor, rotations, D: int, oversampling: float = 2.0,
                   out: torch.Tensor | None = None, hermitian: bool = True,
                   complete: bool = True) -> torch.Tensor:
    """Backproject real weights (e.g. CTF²) ``[..., D, D]`` into a real ``[M, M, M]`` grid.

    Same geometry and options as :func:`insert_slices`; weights must be symmetric
    (``w(-k) = w(k)``) for ``hermitian=True`` to equal the full scatter.
    """
    R, _ = _prep_rotations(rotations, weights)
    weights = weights.reshape(-1, D, D)
    pts = slice_points(D, hermitian, weights.device)
    vals = weights.reshape(-1, D * D)[:, pts.full_index][..., None]
    acc = insert_half(vals, R, D, oversampling, half=hermitian)[0]
    return _finish_insert(acc, out, hermitian and complete)


def _finish_insert(acc: torch.Tensor, out: torch.Tensor | None, complete: bool) -> torch.Tensor:
    """Hermitian-complete ``acc`` if asked, then add it to ``out`` in place (or return it)."""
    if complete:
        acc = hermitian_complete(acc)
    if out is None:
        return acc
    out += acc
    return out

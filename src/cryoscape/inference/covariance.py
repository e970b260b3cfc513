"""Covariance of the 3D volume distribution from posed images, and its principal volumes.

Model (survey §5; Katsevich, Katsevich & Singer 2015; Andén & Singer 2018)
--------------------------------------------------------------------------
Particle ``i`` shows a volume ``V_i`` drawn from a distribution with mean ``μ``
and covariance ``Σ``: ``y_i = A_i V_i + ε_i`` with ``A_i = CTF_i · shift_i ·
slice(R_i)`` (the shared forward model, :mod:`cryoscape.imaging`) and white noise
``E|ε(k)|² = s²`` per Fourier coefficient. With ``r_i = y_i − A_i μ`` (``μ`` given,
e.g. a consensus reconstruction), the least-squares estimator of Katsevich and
Singer minimises ``Σ_i ‖r_i r_iᴴ − A_i Σ A_iᴴ − s² I‖²_F``; its normal equations are

    L(Σ) := Σ_i A_iᴴA_i Σ A_iᴴA_i = Σ_i A_iᴴ (r_i r_iᴴ − s² I) A_i =: Σ_i b_i b_iᴴ − s² Σ_i A_iᴴA_i,

with ``b_i = A_iᴴ r_i``.

Representation (low resolution, Fourier space)
----------------------------------------------
``Σ`` is the covariance of the volume's centred, unnormalised 3D DFT ``V̂(v)``
(:func:`cryoscape.geometry.fourier.fftn_c`; ``v`` integer frequencies in cycles
per box ``D``, order ``(x, y, z)``) on the *ball* of ``n`` integer voxels within
``radius + margin`` of DC (:class:`BallGrid`). Image pixels enter at integer 2D
frequencies with ``|k| <= radius``, the whole disc (both ``k`` and ``−k``), where
``radius = D · apix / resolution_A`` (e.g. 8 px for 12 Å at box 64, 1.5 Å/px).
Pixel ``k`` of image ``i`` reads the volume at ``q = R_iᵀ (kx, ky, 0)``:

* ``"nearest"`` (default): the voxel ``round(q)`` (``margin = √3/2``). Each pixel
  then touches one voxel, ``A_iᴴA_i`` is diagonal, ``L`` acts on each voxel pair
  separately, ``L(Σ)(v, v') = W(v, v') Σ(v, v')`` with ``W = Σ_i w_i w_iᵀ`` and
  ``w_i(v) = Σ_{k → v} CTF_i(k)²``, and the normal equations are solved exactly
  pair by pair (:func:`pairwise_solve`).
* ``"trilinear"``: the tent-weighted 8 corners of ``q`` (``margin = √3``). ``L``
  couples neighbouring pairs; :func:`cg_solve` runs conjugate gradients with
  :func:`normal_operator` applied image by image (batched) and the pairwise
  solve as preconditioner. Each iteration reads every image again and costs
  ``O(8 P n)`` per image (``P`` pixels), so it suits small problems; the
  pairwise solve with trilinear weights is the fast approximation.

Both views are local averages of ``V̂`` over one voxel: on average over poses,
the estimate is the covariance of ``g · V`` with ``g(x) = Π_axes sinc(π x / D)``
(nearest) or ``sinc²`` (trilinear), ``x`` voxels from the centre. Principal
volumes are therefore divided by ``g`` (the gridding correction of
:func:`cryoscape.imaging.wiener_volume`); for the exact trilinear least squares
(solver ``"cg"``) the unknown is the pre-corrected volume of
:func:`cryoscape.imaging.padded_volume_ft` and the volumes are multiplied by ``g``.

Hermitian symmetry: for real volumes and images ``b_i(−v) = conj(b_i(v))``, so
only the rows of the half ball (``z > 0``, or ``z = 0, y > 0``, or ``z = y = 0,
x >= 0``) are accumulated and the others filled by ``Σ(−v, −v') = conj(Σ(v, v'))``.

Regularisation
--------------
The pairwise estimate of ``Σ(v, v')`` has noise variance about ``s⁴ / W(v, v')``.
With a prior variance ``τ²(v, v') = σ²(|v|) σ²(|v'|)`` of each entry
(``σ²(shell)`` the shell mean of the unregularised diagonal, floored at
``1e-3`` of its largest value), the estimator solves
``L(Σ) + Λ ∘ Σ = RHS`` with ``Λ = regularization · s⁴ / τ²`` (a Wiener shrinkage
of poorly sampled pairs; ``regularization = 0`` gives plain least squares).

Noise
-----
``s²`` is the mean residual power ``|r_i(k)|²`` over the pixels with
``|k| >= noise_band · D/2`` (default the outer 20 % of the Nyquist disc), where
heterogeneity and mean errors are small; or given as the real-space pixel
variance ``σ² = s² / D²``. :attr:`CovarianceResult.residual_power` holds the
whole per-shell spectrum for checking that the band is flat.

Principal volumes
-----------------
The covariance of the real-space volume seen through the soft ``mask`` ``m``
is ``C = Φ Σ Φᴴ`` with ``Φ(x, v) = m(x) g(x)^±1 e^{2πi v·(x−c)/D} / D³``. With the Gram
matrix ``G = ΦᴴΦ = L Lᴴ`` (Toeplitz, from the FFT of ``(m g^±1)²``; ``L = V e^{1/2}``
over the eigenvalues of ``G`` above ``GRAM_TOL`` of the largest), the nonzero
eigenpairs of ``C`` are those of ``Lᴴ Σ L``; volumes ``Φ V e^{-1/2} u`` are orthonormal in
voxel L2 (zero outside the mask) and the eigenvalues are variances of the
coordinate along each unit-norm volume (volume units² summed over voxels, the
units of :attr:`cryoscape.inference.ppca_em.PPCAResult.eigenvalues`).

Low rank at full resolution
---------------------------
:func:`low_rank_covariance` never forms ``Σ``: it estimates ``m`` sampled
columns ``Σ[:, J]`` (the regularised pairwise estimate, ``J`` the voxels of a
small low-frequency ball), takes the Nyström factor ``Σ ≈ Z Zᴴ`` with
``Z = Σ[:, J] W^{+1/2}``, ``W = Σ[J, J]``, and finds the top eigenpairs of the
masked real-space operator ``Φ Z Zᴴ Φᴴ`` (applied with FFTs) by the randomised
eigensolver of Halko, Martinsson & Tropp (:func:`randomized_eigh`).

Coordinates of the particles along the principal volumes come from
:func:`project_latents` (the posterior mean ``(FᴴF + s² Λ⁻¹)⁻¹ Fᴴ r_i`` with ``F = A_i X``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.imaging.ctf import CTF_FIELDS, ctf_from_freqs
from cryoscape.imaging.projector import FourierProjector
from cryoscape.imaging.shift import phase_shift_at

__all__ = [
    "INTERPOLATIONS",
    "BallGrid",
    "ball_grid",
    "SliceOperator",
    "slice_operator",
    "pixel_values",
    "CovarianceStatistics",
    "hermitian_fill",
    "noise_from_residual_power",
    "accumulate_statistics",
    "normal_operator",
    "pairwise_solve",
    "cg_solve",
    "CGInfo",
    "randomized_eigh",
    "principal_volumes",
    "CovarianceResult",
    "estimate_covariance",
    "low_rank_covariance",
    "project_latents",
]

INTERPOLATIONS = ("nearest", "trilinear")
#: Floor of the shell prior variance relative to its largest shell value.
PRIOR_FLOOR = 1e-3
#: Relative eigenvalue threshold of the masked Gram matrix (directions with less energy in the mask are dropped).
GRAM_TOL = 1e-9
#: Default inner edge of the noise band, as a fraction of the Nyquist radius ``D/2``.
NOISE_BAND = 0.8


# ---------------------------------------------------------------- grids
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


@lru_cache(maxsize=16)
def ball_grid(D: int, radius: float, interpolation: str = "nearest") -> BallGrid:
    """The :class:`BallGrid` of box ``D`` for pixels within ``radius`` (cycles per box, ``< D/2``)."""
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if D % 2 or D < 4:
        raise InputError(f"box {D} must be even and at least 4")
    if not 0 < radius < D / 2:
        raise InputError(f"the covariance radius {radius:g} px must lie in (0, {D // 2}); "
                         "choose a coarser resolution limit")
    margin = math.sqrt(3) * (0.5 if interpolation == "nearest" else 1.0)
    ext = int(math.floor(radius + margin))
    c = torch.arange(-ext, ext + 1)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    v = torch.stack([x, y, z], -1).reshape(-1, 3)
    r2 = (v * v).sum(-1).double()
    v = v[r2 <= (radius + margin) ** 2 + 1e-9]
    r2 = (v * v).sum(-1).double()
    half = (v[:, 2] > 0) | ((v[:, 2] == 0) & (v[:, 1] > 0)) | ((v[:, 2] == 0) & (v[:, 1] == 0) & (v[:, 0] >= 0))
    # DC first, then the half ball, then the rest (stable otherwise)
    order = torch.argsort(torch.where(r2 == 0, 0, torch.where(half, 1, 2)), stable=True)
    v, half, r2 = v[order], half[order], r2[order]
    L = 2 * ext + 1
    lookup = torch.full((L, L, L), -1, dtype=torch.int64)
    lookup[v[:, 2] + ext, v[:, 1] + ext, v[:, 0] + ext] = torch.arange(v.shape[0])
    neg = lookup[-v[:, 2] + ext, -v[:, 1] + ext, -v[:, 0] + ext]
    k = torch.arange(D) - D // 2
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    ky, kx = ky.reshape(-1), kx.reshape(-1)
    inside = (kx * kx + ky * ky).double() <= radius * radius + 1e-9
    kx, ky = kx[inside], ky[inside]
    pix_index = (ky + D // 2) * D + (kx + D // 2)
    return BallGrid(D, float(radius), interpolation, ext, v, lookup, neg, torch.nonzero(half).reshape(-1),
                    r2 <= radius * radius + 1e-9, kx.double(), ky.double(), pix_index)


# ---------------------------------------------------------------- the slice operator
@dataclass
class SliceOperator:
    """The sparse ``A_i`` of a batch: ``A_i[p, idx[i, p, c]] += weight[i, p, c]``.

    idx ``[B, P, c]`` int64 voxel indices (``c = 1`` nearest, ``8`` trilinear),
    tent ``[B, P, c]`` real interpolation weights, transfer ``[B, P]`` complex
    ``CTF · shift phase`` (so ``weight = transfer[..., None] · tent``).
    """

    idx: torch.Tensor
    tent: torch.Tensor
    transfer: torch.Tensor

    @property
    def weight(self) -> torch.Tensor:
        return self.transfer[..., None] * self.tent.to(self.transfer.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A_i x`` for ball vectors ``x [n]`` or ``[B, n]`` -> ``[B, P]``."""
        B = self.idx.shape[0]
        xb = x.expand(B, -1) if x.ndim == 1 else x
        g = torch.gather(xb, 1, self.idx.reshape(B, -1)).reshape(self.idx.shape)
        return (g * self.weight).sum(-1)

    def adjoint(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """``A_iᴴ y_i`` for pixel values ``y [B, P]`` -> ``[B, n]`` complex."""
        vals = self.weight.conj() * y[..., None]
        return _scatter_rows(self.idx, vals, n)

    def gram_diagonal(self, n: int) -> torch.Tensor:
        """``w_i(v) = Σ_p |T_ip|² tent_ipv`` ``[B, n]`` real: the row sums of ``A_iᴴA_i``
        (its diagonal for nearest-neighbour slicing)."""
        t2 = self.transfer.real ** 2 + self.transfer.imag ** 2
        return _scatter_rows(self.idx, t2[..., None] * self.tent, n)


def _scatter_rows(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    """``out[b, idx[b, ...]] += vals[b, ...]`` -> ``[B, n]`` (real or complex)."""
    B = idx.shape[0]
    flat = (idx + n * torch.arange(B, device=idx.device).reshape(B, *([1] * (idx.ndim - 1)))).reshape(-1)
    if vals.is_complex():
        out = torch.zeros(B * n, 2, dtype=vals.real.dtype, device=vals.device)
        out.index_add_(0, flat, torch.view_as_real(vals.contiguous()).reshape(-1, 2))
        return torch.view_as_complex(out).reshape(B, n)
    out = torch.zeros(B * n, dtype=vals.dtype, device=vals.device)
    out.index_add_(0, flat, vals.reshape(-1))
    return out.reshape(B, n)


def _transfer(grid: BallGrid, apix: float, shifts_A, ctf_params: Mapping | None, B: int,
              dtype: torch.dtype, device) -> torch.Tensor:
    """``CTF · exp(+2πi k·o)`` at the grid's pixels ``[B, P]`` complex (the forward model's transfer)."""
    kx = grid.kx.to(device=device, dtype=dtype) / (grid.D * apix)
    ky = grid.ky.to(device=device, dtype=dtype) / (grid.D * apix)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    T = torch.ones(B, grid.P, dtype=cdt, device=device)
    if shifts_A is not None:
        s = torch.as_tensor(shifts_A).to(device=device, dtype=dtype).reshape(-1, 2)
        T = T * phase_shift_at(kx, ky, -s)
    if ctf_params is not None:
        kw = {k: torch.as_tensor(ctf_params[k]).to(device=device, dtype=dtype) for k in CTF_FIELDS if k in ctf_params}
        T = T * ctf_from_freqs(kx, ky, **kw)
    return T


def slice_operator(grid: BallGrid, rotations, shifts_A=None, ctf_params: Mapping | None = None,
                   apix: float = 1.0, dtype: torch.dtype = torch.float64, device=None) -> SliceOperator:
    """The :class:`SliceOperator` of a batch.

    rotations ``[B, 3, 3]`` (volume -> particle frame; pixel ``k`` reads ``q = Rᵀ (kx, ky, 0)``);
    shifts_A ``[B, 2]`` RELION origins (Å) or None; ctf_params CTF fields ``(B,)`` or None; apix Å/px.
    """
    R = torch.as_tensor(rotations).to(device=device, dtype=dtype).reshape(-1, 3, 3)
    B = R.shape[0]
    kx, ky = grid.kx.to(device=device, dtype=dtype), grid.ky.to(device=device, dtype=dtype)
    q = R[:, 0, None, :] * kx[None, :, None] + R[:, 1, None, :] * ky[None, :, None]  # [B, P, 3] (x, y, z)
    lookup = _grid_on(grid, device)
    if grid.interpolation == "nearest":
        idx = lookup.index_of(torch.round(q).long())[..., None]
        tent = torch.ones(idx.shape, dtype=dtype, device=device)
    else:
        f0 = torch.floor(q)
        f = q - f0
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=device)
        v = f0.long()[:, :, None, :] + corners  # [B, P, 8, 3]
        idx = lookup.index_of(v)
        wts = torch.where(corners.bool(), f[:, :, None, :], 1 - f[:, :, None, :])
        tent = wts.prod(-1)
    if bool((idx < 0).any()):
        raise RuntimeError("a slice sample fell outside the covariance ball")  # cannot happen by construction
    T = _transfer(grid, apix, shifts_A, ctf_params, B, dtype, device)
    return SliceOperator(idx, tent, T)


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


# ---------------------------------------------------------------- statistics (one pass)
@dataclass
class CovarianceStatistics:
    """Sums over the images (rows of the half ball; full matrices via :func:`hermitian_fill`).

    num ``[nH, n]`` complex128 ``Σ_i b_i b_iᴴ``; pair_weight ``[nH, n]`` float64
    ``Σ_i w_i w_iᵀ``; gram ``[nH, n]`` float64 ``Σ_i A_iᴴA_i``; residual_power
    ``[D//2]`` mean ``|r_i(k)|²`` per shell ``round(|k|)`` of the whole disc;
    n_images.
    """

    grid: BallGrid
    num: torch.Tensor
    pair_weight: torch.Tensor
    gram: torch.Tensor
    residual_power: np.ndarray
    n_images: int = 0


def hermitian_fill(rows: torch.Tensor, grid: BallGrid, conjugate: bool = True) -> torch.Tensor:
    """Full ``[n, n]`` matrix from its half-ball rows ``[nH, n]`` using ``X(−v, −v') = conj(X(v, v'))``."""
    n, half, neg = grid.n, grid.half.to(rows.device), grid.neg.to(rows.device)
    out = rows.new_zeros(n, n)
    out[half] = rows
    other = torch.ones(n, dtype=torch.bool, device=rows.device)
    other[half] = False
    u = torch.nonzero(other).reshape(-1)
    pos = torch.full((n,), -1, dtype=torch.int64, device=rows.device)
    pos[half] = torch.arange(half.shape[0], device=rows.device)
    src = rows[pos[neg[u]]][:, neg]
    out[u] = src.conj() if (conjugate and src.is_complex()) else src
    return out


def _gram_rows(op: SliceOperator, grid: BallGrid, out: torch.Tensor) -> None:
    """Add ``Σ_i A_iᴴA_i`` (rows of the half ball) into ``out [nH, n]``: pairs of corners of each pixel."""
    n = grid.n
    pos = torch.full((n,), -1, dtype=torch.int64, device=out.device)
    pos[grid.half.to(out.device)] = torch.arange(grid.half.shape[0], device=out.device)
    t2 = (op.transfer.real ** 2 + op.transfer.imag ** 2)[..., None, None]
    vals = (t2 * op.tent[..., :, None] * op.tent[..., None, :]).reshape(-1)
    rows = pos[op.idx][..., :, None].expand(*op.idx.shape, op.idx.shape[-1])
    cols = op.idx[..., None, :].expand_as(rows)
    ok = (rows >= 0).reshape(-1)
    flat = (rows * n + cols).reshape(-1)[ok]
    out.view(-1).index_add_(0, flat, vals[ok].to(out.dtype))


def _mean_slices(mean: torch.Tensor | None, oversampling: float) -> Callable:
    """``R -> centred full slices [B, D, D]`` of the mean (zeros if None)."""
    if mean is None:
        return lambda R: None
    proj = FourierProjector(mean, oversampling)
    return lambda R: proj.slice(R.to(proj.dtype))


def _check_particles(particles, what: str) -> None:
    particles.require_poses(what)
    if len(particles) < 2:
        raise InputError(f"{getattr(particles, 'name', 'the particle set')} has {len(particles)} particle(s); "
                         f"{what} needs many")


def _batches(particles, batch_size: int, use_ctf: bool, device, dtype):
    """Yield ``(images [B, D, D], R, shifts, ctf)`` tensors batch by batch."""
    from cryoscape.inference.ppca_em import batch_inputs

    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, dtype)
        yield torch.as_tensor(np.asarray(images), dtype=dtype, device=device), R, sh, ctf


def accumulate_statistics(particles, mean_volume, grid: BallGrid, *, use_ctf: bool = True,
                          oversampling: float = 2.0, batch_size: int = 512, progress: bool = False,
                          device="cpu", dtype: torch.dtype = torch.float32,
                          columns: torch.Tensor | None = None) -> CovarianceStatistics:
    """One pass over ``particles``: the sums of :class:`CovarianceStatistics`.

    ``mean_volume`` ``[D, D, D]`` real (``μ``; its slices come from the shared
    projector with ``oversampling``). With ``columns`` (voxel indices ``[m]``) only
    the columns ``J`` are accumulated: num/pair_weight/gram are ``[n, m]``
    (all rows, those columns) instead of half-ball rows.
    """
    D = grid.D
    apix = float(particles.apix)
    use_ctf = use_ctf and bool(particles.has_ctf)
    g = _grid_on(grid, device)
    mean_t = None if mean_volume is None else torch.as_tensor(np.asarray(mean_volume), dtype=dtype, device=device)
    slices = _mean_slices(mean_t, oversampling)
    n = grid.n
    rows = g.half if columns is None else torch.as_tensor(columns, device=device)
    shape = (rows.shape[0], n) if columns is None else (n, rows.shape[0])
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    num = torch.zeros(shape, dtype=torch.complex128, device=device)
    pw = torch.zeros(shape, dtype=torch.float64, device=device)
    gram = torch.zeros(shape, dtype=torch.float64, device=device)
    shell, counts = _disc_shells(D, device)
    power = torch.zeros(D // 2, dtype=torch.float64, device=device)
    n_img = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(particles), unit="img", desc="covariance statistics", leave=False)
    for images, R, sh, ctf in _batches(particles, batch_size, use_ctf, device, dtype):
        B = images.shape[0]
        op = slice_operator(g, R, sh, ctf, apix, dtype, device)
        ft = fftn_c(images, 2).reshape(B, D * D)
        ms = slices(R)
        if ms is not None:
            T_full = _full_transfer(D, apix, sh, ctf if use_ctf else None, B, dtype, device)
            ft = ft - T_full * ms.reshape(B, D * D)
        inside = shell >= 0
        power += torch.zeros_like(power).index_add_(0, shell[inside], (ft[:, inside].abs() ** 2).sum(0).double())
        r = ft[:, g.pix_index].to(cdt)
        b = op.adjoint(r, n)
        w = op.gram_diagonal(n)
        if columns is None:
            num += (b[:, rows].T @ b.conj()).to(num.dtype)
            pw += (w[:, rows].T @ w).double()
            _gram_rows(op, g, gram)
        else:
            num += (b.T @ b[:, rows].conj()).to(num.dtype)
            pw += (w.T @ w[:, rows]).double()
            _gram_columns(op, g, rows, gram)
        n_img += B
        if bar is not None:
            bar.update(B)
    if bar is not None:
        bar.close()
    res_power = (power / (counts * max(n_img, 1))).cpu().numpy()
    return CovarianceStatistics(grid, num, pw, gram, res_power, n_img)


def _gram_columns(op: SliceOperator, grid: BallGrid, cols_idx: torch.Tensor, out: torch.Tensor) -> None:
    """Add the columns ``cols_idx`` of ``Σ_i A_iᴴA_i`` into ``out [n, m]``."""
    n = grid.n
    pos = torch.full((n,), -1, dtype=torch.int64, device=out.device)
    pos[cols_idx] = torch.arange(cols_idx.shape[0], device=out.device)
    m = cols_idx.shape[0]
    t2 = (op.transfer.real ** 2 + op.transfer.imag ** 2)[..., None, None]
    vals = (t2 * op.tent[..., :, None] * op.tent[..., None, :]).reshape(-1)
    c = op.idx.shape[-1]
    rows = op.idx[..., :, None].expand(*op.idx.shape, c)
    cols = pos[op.idx][..., None, :].expand_as(rows)
    ok = (cols >= 0).reshape(-1)
    flat = (rows * m + cols).reshape(-1)[ok]
    out.view(-1).index_add_(0, flat, vals[ok].to(out.dtype))


def _full_transfer(D: int, apix: float, shifts_A, ctf_params, B: int, dtype, device) -> torch.Tensor:
    """The transfer ``CTF · shift phase`` on the whole centred ``D x D`` grid ``[B, D²]``."""
    k = (torch.arange(D, device=device, dtype=dtype) - D // 2) / (D * apix)
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    kx, ky = kx.reshape(-1), ky.reshape(-1)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    T = torch.ones(B, D * D, dtype=cdt, device=device)
    if shifts_A is not None:
        T = T * phase_shift_at(kx, ky, -torch.as_tensor(shifts_A).to(device=device, dtype=dtype).reshape(-1, 2))
    if ctf_params is not None:
        kw = {k_: torch.as_tensor(ctf_params[k_]).to(device=device, dtype=dtype)
              for k_ in CTF_FIELDS if k_ in ctf_params}
        T = T * ctf_from_freqs(kx, ky, **kw)
    return T


def _disc_shells(D: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell ``round(|k|)`` of each centred pixel (−1 outside ``|k| < D/2``) ``[D²]`` and counts ``[D//2]``."""
    k = torch.arange(D, device=device, dtype=torch.float64) - D // 2
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).reshape(-1)
    s = torch.round(r).long()
    s = torch.where((r < D / 2) & (s < D // 2), s, torch.full_like(s, -1))
    counts = torch.bincount(s[s >= 0], minlength=D // 2).double().clamp(min=1)
    return s, counts


def noise_from_residual_power(residual_power: np.ndarray, band: float = NOISE_BAND) -> float:
    """``s²`` per Fourier coefficient: the mean residual power of shells ``>= band · D/2``."""
    p = np.asarray(residual_power, dtype=np.float64)
    start = int(math.ceil(band * p.size))
    if start >= p.size:
        raise InputError(f"noise band {band} leaves no Fourier shell; use a value below 1")
    return float(p[start:].mean())


# ---------------------------------------------------------------- solvers
def _shell_prior(diag: torch.Tensor, grid: BallGrid) -> torch.Tensor:
    """``σ²(shell)`` per voxel ``[n]``: shell means of ``Re diag`` floored at ``PRIOR_FLOOR`` of the largest."""
    r = torch.sqrt((grid.voxels.double() ** 2).sum(-1)).to(diag.device)
    shell = torch.round(r).long()
    ns = int(shell.max()) + 1
    sums = torch.zeros(ns, dtype=torch.float64, device=diag.device).index_add_(0, shell, diag.real.double())
    cnt = torch.bincount(shell, minlength=ns).double().clamp(min=1)
    mean = sums / cnt
    top = float(mean.max()) if bool((mean > 0).any()) else 1.0
    return mean.clamp(min=PRIOR_FLOOR * top)[shell]


def _regulariser(stats: CovarianceStatistics, s2: float, regularization: float,
                 prior: torch.Tensor | None) -> torch.Tensor:
    """``Λ = regularization · s⁴ / (σ²(v) σ²(v'))`` ``[n, n]`` (zero when ``regularization == 0``)."""
    n = stats.grid.n
    if regularization == 0:
        return torch.zeros(n, n, dtype=torch.float64, device=stats.num.device)
    if prior is None:
        raw = hermitian_fill(stats.num, stats.grid) - s2 * hermitian_fill(stats.gram, stats.grid)
        den = hermitian_fill(stats.pair_weight, stats.grid)
        diag = torch.diagonal(raw).real / torch.diagonal(den).clamp(min=1e-30)
        prior = _shell_prior(diag, stats.grid)
    return regularization * s2 * s2 / (prior[:, None] * prior[None, :])


def pairwise_solve(stats: CovarianceStatistics, s2: float, regularization: float = 1.0,
                   prior: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ = (Σ b bᴴ − s² Σ AᴴA) / (W + Λ)`` per voxel pair -> ``[n, n]`` complex128 Hermitian.

    Exact least squares (``regularization = 0``) for nearest-neighbour slicing;
    the diagonal approximation of ``L`` for trilinear. ``prior``: ``σ²(v)`` ``[n]``
    or None (from the data, see the module docstring).
    """
    g = stats.grid
    rhs = hermitian_fill(stats.num, g) - s2 * hermitian_fill(stats.gram, g)
    den = hermitian_fill(stats.pair_weight, g)
    lam = _regulariser(stats, s2, regularization, prior)
    sig = rhs / (den + lam).clamp(min=1e-300)
    sig = torch.where(den + lam > 0, sig, torch.zeros_like(sig))
    return 0.5 * (sig + sig.conj().T)


def _operator_batch(Sigma: torch.Tensor, op: SliceOperator, chunk: int = 8) -> torch.Tensor:
    """``Σ_i A_iᴴA_i Σ A_iᴴA_i`` over one batch (``Sigma [n, n]`` complex) -> ``[n, n]``."""
    n = Sigma.shape[0]
    out = torch.zeros_like(Sigma)
    A, idx = op.weight.to(Sigma.dtype), op.idx
    c = idx.shape[-1]
    for a in range(0, idx.shape[0], chunk):
        Ab, ib = A[a:a + chunk], idx[a:a + chunk]
        b, P = ib.shape[0], ib.shape[1]
        X = sum(Ab[..., j, None] * Sigma[ib[..., j]] for j in range(c))  # A Σ  [b, P, n]
        M = sum(torch.gather(X, 2, ib[:, None, :, j].expand(b, P, P)) * Ab[:, None, :, j].conj()
                for j in range(c))  # A Σ Aᴴ [b, P, P]
        Y = torch.zeros(b, P, n, dtype=Sigma.dtype, device=Sigma.device)
        for j in range(c):  # (A Σ Aᴴ) A  [b, P, n]
            Y.scatter_add_(2, ib[:, None, :, j].expand(b, P, P), M * Ab[:, None, :, j])
        for j in range(c):  # Aᴴ (...)
            rows = ib[..., j].reshape(-1)
            vals = (Ab[..., j].conj()[..., None] * Y).reshape(-1, n)
            out.index_add_(0, rows, vals)
    return out


def normal_operator(Sigma: torch.Tensor, ops) -> torch.Tensor:
    """``L(Σ) = Σ_i A_iᴴA_i Σ A_iᴴA_i`` for ``Sigma [n, n]`` over an iterable of :class:`SliceOperator`."""
    out = torch.zeros_like(Sigma)
    for op in ops:
        out += _operator_batch(Sigma, op)
    return out


@dataclass
class CGInfo:
    """Relative residual ``‖RHS − (L + Λ)Σ‖ / ‖RHS‖`` after each iteration."""

    residuals: list[float] = field(default_factory=list)


def cg_solve(apply_L: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, lam: torch.Tensor,
             precond: torch.Tensor, n_iterations: int = 20, tol: float = 1e-6,
             x0: torch.Tensor | None = None) -> tuple[torch.Tensor, CGInfo]:
    """Preconditioned conjugate gradients for ``L(Σ) + Λ ∘ Σ = RHS`` over Hermitian ``[n, n]`` matrices.

    ``apply_L``: ``Σ -> L(Σ)`` (self-adjoint, positive semi-definite for ``⟨X, Y⟩ = Re tr(XᴴY)``);
    ``precond``: pairwise ``[n, n]`` positive weights ``M`` with ``M⁻¹ ∘ R`` the
    preconditioned residual (the pairwise solve's denominator ``W + Λ``).
    """
    dot = lambda a, b: float((a.conj() * b).real.sum())
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - (apply_L(x) + lam * x) if x0 is not None else rhs.clone()
    z = r / precond
    p = z.clone()
    rz = dot(r, z)
    norm_b = math.sqrt(max(dot(rhs, rhs), 1e-300))
    info = CGInfo()
    for _ in range(n_iterations):
        Ap = apply_L(p) + lam * p
        alpha = rz / max(dot(p, Ap), 1e-300)
        x = x + alpha * p
        r = r - alpha * Ap
        res = math.sqrt(dot(r, r)) / norm_b
        info.residuals.append(res)
        if res < tol:
            break
        z = r / precond
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return 0.5 * (x + x.conj().T), info


# ---------------------------------------------------------------- eigen-decomposition
def _grid_profile(D: int, interpolation: str, device=None) -> torch.Tensor:
    """``g(x) = Π_axes sinc(πx/D)`` (nearest) or ``sinc²`` (trilinear) ``[D, D, D]`` float64."""
    x = (torch.arange(D, dtype=torch.float64, device=device) - D // 2) / D
    s = torch.sinc(x) ** (1 if interpolation == "nearest" else 2)
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def _place(grid: BallGrid, coeffs: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Ball coefficients ``[m, len(sel)]`` on the voxels ``sel`` -> centred ``[m, D, D, D]`` spectra."""
    D = grid.D
    v = grid.voxels.to(coeffs.device)[sel] + D // 2
    flat = (v[:, 2] * D + v[:, 1]) * D + v[:, 0]
    out = coeffs.new_zeros(coeffs.shape[0], D ** 3)
    out[:, flat] = coeffs
    return out.reshape(-1, D, D, D)


def _sample(grid: BallGrid, spectra: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Centred spectra ``[m, D, D, D]`` at the voxels ``sel`` -> ``[m, len(sel)]``."""
    D = grid.D
    v = grid.voxels.to(spectra.device)[sel] + D // 2
    flat = (v[:, 2] * D + v[:, 1]) * D + v[:, 0]
    return spectra.reshape(spectra.shape[0], -1)[:, flat]


def _weight_volume(D: int, mask, interpolation: str, correction: str) -> torch.Tensor:
    """``h = m · g^{-1}`` (``"divide"``), ``m · g`` (``"multiply"``) or ``m`` (``"none"``) ``[D, D, D]`` float64."""
    from cryoscape.reconstruct.backprojection import default_mask

    m = torch.as_tensor(np.asarray(default_mask(D) if mask is None else mask), dtype=torch.float64)
    if tuple(m.shape) != (D, D, D):
        raise InputError(f"the mask is {tuple(m.shape)} but the box is {D}³; give a mask of the same box")
    g = _grid_profile(D, interpolation)
    return {"divide": m / g, "multiply": m * g, "none": m}[correction]


def _to_volumes(grid: BallGrid, coeffs: torch.Tensor, sel: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``h · IDFT(coeffs)`` for coefficient vectors ``[m, len(sel)]`` -> ``[m, D, D, D]`` complex."""
    return h * ifftn_c(_place(grid, coeffs, sel), 3)


def _gram(grid: BallGrid, sel: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``G = ΦᴴΦ`` for ``Φ = h · IDFT`` on the voxels ``sel``: ``G(v, v') = DFT(h²)(v − v') / D⁶``."""
    D = grid.D
    spec = fftn_c(h * h, 3) / float(D) ** 6
    v = grid.voxels[sel].to(h.device)
    d = (v[:, None, :] - v[None, :, :] + D // 2) % D
    return spec[d[..., 2], d[..., 1], d[..., 0]]


def _real_orthonormal(vols: torch.Tensor) -> torch.Tensor:
    """Real parts of complex volumes ``[K, ...]`` after removing each one's global phase, orthonormalised."""
    flat = vols.reshape(vols.shape[0], -1)
    s = (flat * flat).sum(-1)  # Σ v², phase 2θ
    phase = torch.exp(-0.5j * torch.angle(s))
    real = (flat * phase[:, None]).real
    q, _ = torch.linalg.qr(real.T)
    q = q.T * torch.sign(torch.einsum("kd,kd->k", q.T, real))[:, None]
    return q.reshape(vols.shape).real


def principal_volumes(Sigma: torch.Tensor, grid: BallGrid, n_components: int, mask=None,
                      correction: str = "divide") -> tuple[np.ndarray, np.ndarray]:
    """Top eigenpairs of the masked real-space covariance of ``Sigma`` (voxels ``|v| <= radius``).

    Returns ``(components [K, D, D, D] float32, eigenvalues [K] float64)``: orthonormal
    (voxel L2) volumes, zero outside the mask, sign fixed so each sums to ``>= 0``;
    eigenvalues descending (see the module docstring for ``correction``).
    """
    sel = torch.nonzero(grid.keep).reshape(-1)
    h = _weight_volume(grid.D, mask, grid.interpolation, correction)
    S = Sigma[sel][:, sel].to(torch.complex128)
    G = _gram(grid, sel, h.to(torch.complex128))
    G = 0.5 * (G + G.conj().T)
    # G = L Lᴴ with L = V e^{1/2} on the well-concentrated eigenvectors only: band-limited functions
    # living mostly outside the mask make G numerically singular (about (mask volume)·n/D³ survive)
    e, V = torch.linalg.eigh(G)
    good = e > GRAM_TOL * e.max()
    Lc = V[:, good] * torch.sqrt(e[good])
    M = Lc.conj().T @ S @ Lc
    M = 0.5 * (M + M.conj().T)
    k = min(n_components, M.shape[0])
    import scipy.linalg

    nM = M.shape[0]
    _, U = scipy.linalg.eigh(M.cpu().numpy(), subset_by_index=[nM - k, nM - 1], driver="evr")
    U = torch.as_tensor(U[:, ::-1].copy(), device=M.device)
    coeffs = (V[:, good] / torch.sqrt(e[good])) @ U  # L⁺ᴴ u
    vols = _to_volumes(grid, coeffs.T, sel, h.to(torch.complex128))
    comps = torch.where(h.real != 0, _real_orthonormal(vols), 0.0)  # exact zeros outside the mask
    # eigenvalues as Rayleigh quotients of the real volumes
    a = _sample(grid, fftn_c(comps.to(h.dtype) * h, 3), sel) / float(grid.D) ** 3  # Φᴴ x
    ev = torch.einsum("ki,ij,kj->k", a.conj(), S, a).real
    return _finish_signs(comps, ev)


def _finish_signs(comps: torch.Tensor, ev: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    order = torch.argsort(ev, descending=True)
    comps, ev = comps[order], ev[order]
    sign = torch.where(comps.reshape(comps.shape[0], -1).sum(-1) < 0, -1.0, 1.0).to(comps.dtype)
    comps = comps * sign[:, None, None, None]
    return comps.float().cpu().numpy(), ev.cpu().numpy()


def randomized_eigh(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, oversample: int = 10,
                    n_power: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64,
                    device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` eigenpairs of a Hermitian positive semi-definite operator (Halko, Martinsson & Tropp 2011).

    ``matvec``: ``X [n, l] -> A X``. Randomised range finder with ``n_power`` power
    iterations (re-orthonormalised each time, their Alg. 4.4) on ``l = k + oversample``
    Gaussian vectors, then the eigen-decomposition of ``Qᴴ A Q`` (Alg. 5.3).
    Returns ``(eigenvalues [k] descending, eigenvectors [n, k])``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    l = min(n, k + oversample)
    omega = torch.randn(n, l, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    Q, _ = torch.linalg.qr(matvec(omega))
    for _ in range(n_power):
        Q, _ = torch.linalg.qr(matvec(Q))
    Bm = Q.conj().T @ matvec(Q)
    evals, V = torch.linalg.eigh(0.5 * (Bm + Bm.conj().T))
    order = torch.argsort(evals, descending=True)[:k]
    return evals[order], Q @ V[:, order]


# ---------------------------------------------------------------- drivers
@dataclass
class CovarianceResult:
    """Principal volumes of a particle set's covariance.

    components ``[K, D, D, D]`` float32: orthonormal (voxel L2) principal volumes,
    zero outside the mask; eigenvalues ``[K]``: variance of each coordinate
    (descending); mean ``[D, D, D]`` float32 the ``μ`` used; noise_var: real-space
    noise variance per pixel ``σ² = s²/D²``; resolution_A and radius_px: the
    resolution limit and the pixel radius ``r``; interpolation, solver;
    residual_power ``[D//2]`` per shell (per Fourier coefficient); covariance: the
    Fourier covariance ``[n, n]`` complex on ``grid.voxels`` (None for the low-rank
    route); cg_residuals: relative CG residual per iteration (empty otherwise);
    n_particles; apix.
    """

    components: np.ndarray
    eigenvalues: np.ndarray
    mean: np.ndarray
    noise_var: float
    resolution_A: float
    radius_px: float
    interpolation: str
    solver: str
    residual_power: np.ndarray
    covariance: torch.Tensor | None
    grid: BallGrid | None
    cg_residuals: list[float]
    n_particles: int
    apix: float


def _radius(D: int, apix: float, resolution_A: float | None) -> float:
    if resolution_A is None:
        return D / 2 - 1
    if not resolution_A > 0:
        raise InputError(f"resolution_A must be a positive length in Å; got {resolution_A}")
    r = D * apix / resolution_A
    if r >= D / 2:
        raise InputError(f"{resolution_A:g} Å is finer than Nyquist ({2 * apix:g} Å) for these particles; "
                         "choose a coarser resolution")
    if r < 1:
        raise InputError(f"{resolution_A:g} Å is coarser than the box ({D * apix:g} Å); choose a finer resolution")
    return r


def _noise(stats: CovarianceStatistics, noise_var: float | None, D: int, band: float) -> float:
    """``s²`` per Fourier coefficient from a given pixel variance or the residual spectrum."""
    if noise_var is not None:
        if not noise_var > 0:
            raise InputError(f"noise_var must be positive; got {noise_var}")
        return float(noise_var) * D * D
    return noise_from_residual_power(stats.residual_power, band)


def _mean_array(mean_volume, D: int) -> np.ndarray:
    m = np.asarray(mean_volume.detach().cpu() if isinstance(mean_volume, torch.Tensor) else mean_volume,
                   dtype=np.float32)
    if m.shape != (D, D, D):
        raise InputError(f"the mean volume is {m.shape} but the particles have box {D}; give a [{D}, {D}, {D}] map")
    return m


def estimate_covariance(particles, mean_volume, *, n_components: int = 8, resolution_A: float = 15.0,
                        mask=None, noise_var: float | None = None, interpolation: str = "nearest",
                        solver: str = "pairwise", regularization: float = 1.0, cg_iterations: int = 10,
                        noise_band: float = NOISE_BAND, use_ctf: bool = True, oversampling: float = 2.0,
                        batch_size: int = 512, progress: bool = False, device="cpu",
                        dtype: torch.dtype = torch.float32) -> CovarianceResult:
    """Low-resolution covariance of the volumes of a posed particle set and its top principal volumes.

    Args:
        particles: :class:`~cryoscape.particles.ParticleSet` with poses (CTF used when present).
        mean_volume: ``μ`` ``[D, D, D]`` (e.g. a consensus reconstruction of the same particles).
        n_components: number of principal volumes ``K``.
        resolution_A: frequencies finer than this (Å) are ignored (pixel radius ``D·apix/resolution_A``).
        mask: soft real-space mask ``[D, D, D]`` (array or MRC path) in which the volumes are
            orthonormal; default :func:`cryoscape.reconstruct.backprojection.default_mask`.
        noise_var: real-space noise variance per pixel ``σ²``; None estimates it from the
            residual power beyond ``noise_band · Nyquist``.
        interpolation: ``"nearest"`` or ``"trilinear"`` slicing (module docstring).
        solver: ``"pairwise"`` (closed form per voxel pair; exact least squares for nearest)
            or ``"cg"`` (conjugate gradients on the exact operator, ``cg_iterations`` passes
            over the images, preconditioned and started by the pairwise solution).
        regularization: weight of the shell prior (0: plain least squares).
        use_ctf, oversampling (of the mean's slices), batch_size, progress, device, dtype.
    Returns:
        :class:`CovarianceResult`.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    _check_particles(particles, "covariance estimation")
    if solver not in ("pairwise", "cg"):
        raise InputError(f"solver {solver!r} is not 'pairwise' or 'cg'")
    if n_components < 1:
        raise InputError(f"n_components is {n_components}; ask for at least one principal volume")
    D, apix = int(particles.box), float(particles.apix)
    mean = _mean_array(mean_volume, D)
    mask_arr = load_mask(mask, D, apix)
    grid = ball_grid(D, _radius(D, apix, resolution_A), interpolation)
    stats = accumulate_statistics(particles, mean, grid, use_ctf=use_ctf, oversampling=oversampling,
                                  batch_size=batch_size, progress=progress, device=device, dtype=dtype)
    s2 = _noise(stats, noise_var, D, noise_band)
    Sigma = pairwise_solve(stats, s2, regularization)
    residuals: list[float] = []
    correction = "divide"
    if solver == "cg":
        Sigma, info = _cg_over_particles(particles, stats, Sigma, s2, regularization, cg_iterations,
                                         use_ctf, batch_size, device)
        residuals = info.residuals
        correction = "multiply" if interpolation == "trilinear" else "divide"
    comps, evals = principal_volumes(Sigma, grid, min(n_components, int(grid.keep.sum())), mask_arr, correction)
    return CovarianceResult(comps, evals, mean, s2 / (D * D), float(resolution_A), grid.radius, interpolation,
                            solver, stats.residual_power, Sigma, grid, residuals, len(particles), apix)


def _cg_over_particles(particles, stats: CovarianceStatistics, Sigma0: torch.Tensor, s2: float,
                       regularization: float, n_iterations: int, use_ctf: bool, batch_size: int,
                       device) -> tuple[torch.Tensor, CGInfo]:
    """CG on the exact operator, streaming the images' poses and CTFs once per iteration."""
    g = _grid_on(stats.grid, device)
    apix = float(particles.apix)
    use_ctf = use_ctf and bool(particles.has_ctf)
    from cryoscape.inference.ppca_em import batch_inputs

    def ops():
        for start in range(0, len(particles), batch_size):
            idx = np.arange(start, min(len(particles), start + batch_size))
            R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, torch.float64)
            yield slice_operator(g, R, sh, ctf, apix, torch.float64, device)

    rhs = hermitian_fill(stats.num, g) - s2 * hermitian_fill(stats.gram, g)
    lam = _regulariser(stats, s2, regularization, None)
    den = hermitian_fill(stats.pair_weight, g) + lam
    precond = den.clamp(min=float(den.max()) * 1e-12)
    return cg_solve(lambda X: normal_operator(X, ops()), rhs, lam, precond, n_iterations, x0=Sigma0)


def low_rank_covariance(particles, mean_volume, *, n_components: int = 8, resolution_A: float | None = None,
                        column_radius: float = 3.0, mask=None, noise_var: float | None = None,
                        regularization: float = 1.0, noise_band: float = NOISE_BAND,
                        use_ctf: bool = True, oversampling: float = 2.0, batch_size: int = 512,
                        oversample: int = 10, n_power: int = 2, seed: int = 0, progress: bool = False,
                        device="cpu", dtype: torch.dtype = torch.float32) -> CovarianceResult:
    """Top principal volumes from sampled covariance columns, without forming ``Σ``.

    The columns ``J`` are the voxels with ``|v| <= column_radius`` (cycles per box);
    every row up to ``resolution_A`` (None: Nyquist) is estimated for them by the
    regularised pairwise rule (prior ``σ²`` from the columns' own diagonal), then
    ``Σ ≈ Z Zᴴ`` (Nyström) and :func:`randomized_eigh` of the masked real-space
    operator ``Φ Z Zᴴ Φᴴ`` (see the module docstring). Nearest-neighbour slicing.
    Memory: ``O(n m)`` for ``n`` voxels and ``m = |J|`` columns.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    _check_particles(particles, "covariance estimation")
    D, apix = int(particles.box), float(particles.apix)
    mean = _mean_array(mean_volume, D)
    mask_arr = load_mask(mask, D, apix)
    radius = _radius(D, apix, resolution_A)
    grid = ball_grid(D, radius, "nearest")
    if not 0 < column_radius <= radius:
        raise InputError(f"column_radius {column_radius:g} px must lie in (0, {radius:g}]")
    r = torch.sqrt((grid.voxels.double() ** 2).sum(-1))
    J = torch.nonzero(r <= column_radius + 1e-9).reshape(-1)
    batch_size = min(batch_size, max(8, int(2e7 // grid.n)))  # bounds the [B, n] backprojections
    stats = accumulate_statistics(particles, mean, grid, use_ctf=use_ctf, oversampling=oversampling,
                                  batch_size=batch_size, progress=progress, device=device, dtype=dtype,
                                  columns=J)
    s2 = _noise(stats, noise_var, D, noise_band)
    cols = _column_solve(stats, J, s2, regularization)
    comps, evals = _low_rank_eigen(cols, J, grid, n_components, mask_arr, oversample, n_power, seed)
    return CovarianceResult(comps, evals, mean, s2 / (D * D), float(resolution_A or 2 * apix), radius,
                            "nearest", "low-rank", stats.residual_power, None, grid, [], len(particles), apix)


def _column_solve(stats: CovarianceStatistics, J: torch.Tensor, s2: float, regularization: float) -> torch.Tensor:
    """Regularised pairwise estimate of the columns ``Σ[:, J]`` ``[n, m]``."""
    rhs = stats.num - s2 * stats.gram
    den = stats.pair_weight
    if regularization:
        diag_all = torch.zeros(stats.grid.n, dtype=torch.float64, device=rhs.device)
        dj = rhs[J, torch.arange(J.shape[0])].real / den[J, torch.arange(J.shape[0])].clamp(min=1e-30)
        diag_all[J] = dj
        # shells beyond the columns' radius take the outermost column shell's value, scaled down by
        # the ratio of the mean residual power (a proxy for the signal spectrum)
        prior = _shell_prior_extrapolated(diag_all, J, stats)
        lam = regularization * s2 * s2 / (prior[:, None] * prior[J][None, :])
    else:
        lam = torch.zeros_like(den)
    cols = rhs / (den + lam).clamp(min=1e-300)
    return torch.where(den + lam > 0, cols, torch.zeros_like(cols))


def _shell_prior_extrapolated(diag_all: torch.Tensor, J: torch.Tensor, stats: CovarianceStatistics) -> torch.Tensor:
    """Prior ``σ²(v)`` ``[n]``: column shell means inside the column ball; outside, the last such shell's
    value times the ratio ``(P(|v|) − s²) / (P(r_J) − s²)`` of the excess residual power (clamped)."""
    g = stats.grid
    r = torch.sqrt((g.voxels.double() ** 2).sum(-1)).to(diag_all.device)
    shell = torch.round(r).long()
    ns = int(shell.max()) + 1
    inJ = torch.zeros(g.n, dtype=torch.bool, device=diag_all.device)
    inJ[J] = True
    sums = torch.zeros(ns, dtype=torch.float64, device=diag_all.device).index_add_(0, shell[inJ], diag_all[inJ])
    cnt = torch.bincount(shell[inJ], minlength=ns).double()
    known = cnt > 0
    mean = torch.where(known, sums / cnt.clamp(min=1), torch.zeros_like(sums))
    last = int(torch.nonzero(known).max())
    p = torch.as_tensor(stats.residual_power, dtype=torch.float64, device=diag_all.device)
    p = torch.cat([p, p[-1:].expand(max(0, ns - p.shape[0]))])[:ns]
    floor_p = float(p[-max(1, p.shape[0] // 5):].mean())
    excess = (p - floor_p).clamp(min=0)
    ratio = excess / max(float(excess[last]), 1e-300)
    ext = mean[last] * ratio
    vals = torch.where(known, mean, ext)
    top = float(vals.max()) if bool((vals > 0).any()) else 1.0
    return vals.clamp(min=PRIOR_FLOOR * top)[shell]


def _low_rank_eigen(cols: torch.Tensor, J: torch.Tensor, grid: BallGrid, k: int, mask, oversample: int,
                    n_power: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Nyström factor of the columns and the randomised eigen-decomposition in masked real space."""
    W = cols[J].to(torch.complex128)
    W = 0.5 * (W + W.conj().T)
    ew, Vw = torch.linalg.eigh(W)
    keep = ew > ew.max() * 1e-10
    sel = torch.nonzero(grid.keep).reshape(-1)  # rows |v| <= radius, as in principal_volumes
    Z = cols[sel].to(torch.complex128) @ (Vw[:, keep] / torch.sqrt(ew[keep]))  # Σ ≈ Z Zᴴ   [n', r]
    h = _weight_volume(grid.D, mask, "nearest", "divide").to(torch.complex128)
    D = grid.D
    # Φ Z: real-space columns (masked, corrected) [D³, r]
    PZ = _to_volumes(grid, Z.T, sel, h).reshape(Z.shape[1], -1).T
    matvec = lambda X: PZ @ (PZ.conj().T @ X.to(PZ.dtype))
    evals, vecs = randomized_eigh(matvec, PZ.shape[0], min(k, PZ.shape[1]), oversample, n_power, seed,
                                  dtype=torch.complex128)
    vols = vecs.T.reshape(-1, D, D, D)
    comps = torch.where(h.real != 0, _real_orthonormal(vols), 0.0)
    flat = comps.reshape(comps.shape[0], -1).to(torch.complex128)
    ev = ((flat @ PZ).abs() ** 2).sum(-1)
    return _finish_signs(comps, ev)


# ---------------------------------------------------------------- coordinates
def project_latents(particles, mean_volume, components, eigenvalues, noise_var: float, *,
                    resolution_A: float | None = None, use_ctf: bool = True, batch_size: int = 512,
                    device="cpu", dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """Posterior coordinates of each image along the principal volumes.

    ``b_i = (FᵢᴴFᵢ + s² Λ⁻¹)⁻¹ Fᵢᴴ (y_i − A_i μ)`` with ``F_i = A_i X`` (``X`` the
    components), ``Λ = diag(eigenvalues)`` and ``s² = D² noise_var``, over
    frequencies up to ``resolution_A`` (the PPCA E-step with a unit contrast,
    :func:`cryoscape.inference.ppca_em.posterior`). Returns ``(means [N, K],
    covariances [N, K, K])`` float32 in particle order.
    """
    from cryoscape.inference.ppca_em import batch_inputs, frequency_weights, image_terms, posterior
    from cryoscape.models.linear import LinearHyperMolecule

    D, apix, n = int(particles.box), float(particles.apix), len(particles)
    comps = torch.as_tensor(np.asarray(components), dtype=dtype, device=device)
    lam = torch.as_tensor(np.asarray(eigenvalues), dtype=torch.float64).clamp(min=1e-30)
    scale = torch.sqrt(lam).to(device=device, dtype=dtype)
    mean_t = torch.as_tensor(_mean_array(mean_volume, D), device=device)
    model = LinearHyperMolecule(mean_t, comps * scale[:, None, None, None])
    h = frequency_weights(D, apix, resolution_A, device, dtype)
    use_ctf = use_ctf and bool(particles.has_ctf)
    s2 = float(noise_var) * D * D
    means = np.zeros((n, comps.shape[0]), np.float32)
    covs = np.zeros((n, comps.shape[0], comps.shape[0]), np.float32)
    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, device, dtype)
        terms = image_terms(model, torch.as_tensor(np.asarray(images)), R, sh, ctf, apix, h)
        post = posterior(terms["C"], terms["d"], torch.ones(len(idx), dtype=dtype, device=device), s2)
        sc = scale.to(post.mean.dtype)
        means[idx] = (post.mean * sc).cpu().numpy()
        covs[idx] = (post.cov * sc[:, None] * sc[None, :]).cpu().numpy()
    return means, covs

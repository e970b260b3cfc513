"""Principal volumes: the top eigenpairs of the masked real-space covariance of a Fourier ``Σ``.

``C = Φ Σ Φᴴ`` with ``Φ = h · IDFT`` on the ball voxels, ``h = m g^{±1}`` the
mask times the gridding profile (:func:`_weight_volume`). :func:`principal_volumes`
factors the Gram matrix ``ΦᴴΦ`` and decomposes ``Lᴴ Σ L`` densely;
:func:`randomized_eigh` is the randomised eigensolver used where ``Σ`` is only
available as an operator (:mod:`.lowrank`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c, ifftn_c

from .grid import BallGrid

__all__ = ["GRAM_TOL", "principal_volumes", "randomized_eigh"]

#: Relative eigenvalue threshold of the masked Gram matrix (directions with less energy in the mask are dropped).
GRAM_TOL = 1e-9


def _grid_profile(D: int, interpolation: str, device=None) -> torch.Tensor:
    """``g(x) = Π_axes sinc(πx/D)`` (nearest) or ``sinc²`` (trilinear) ``[D, D, D]`` float64."""
    x = (torch.arange(D, dtype=torch.float64, device=device) - D // 2) / D
    s = torch.sinc(x) ** (1 if interpolation == "nearest" else 2)
    return s[:, None, None] * s[None, :, None] * s[None, None, :]


def _flat_voxels(grid: BallGrid, sel: torch.Tensor, device) -> torch.Tensor:
    """Flat indices into a centred ``D³`` spectrum of the voxels ``sel``."""
    D = grid.D
    v = grid.voxels.to(device)[sel] + D // 2
    return (v[:, 2] * D + v[:, 1]) * D + v[:, 0]


def _place(grid: BallGrid, coeffs: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Ball coefficients ``[m, len(sel)]`` on the voxels ``sel`` -> centred ``[m, D, D, D]`` spectra."""
    D = grid.D
    out = coeffs.new_zeros(coeffs.shape[0], D ** 3)
    out[:, _flat_voxels(grid, sel, coeffs.device)] = coeffs
    return out.reshape(-1, D, D, D)


def _sample(grid: BallGrid, spectra: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Centred spectra ``[m, D, D, D]`` at the voxels ``sel`` -> ``[m, len(sel)]``."""
    return spectra.reshape(spectra.shape[0], -1)[:, _flat_voxels(grid, sel, spectra.device)]


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


def _masked_eigenvectors(S: torch.Tensor, G: torch.Tensor, k: int) -> torch.Tensor:
    """Coefficients ``L⁺ᴴ u`` ``[n', k]`` of the top-``k`` eigenvectors ``u`` of ``Lᴴ S L``, ``G = L Lᴴ``."""
    # G = L Lᴴ with L = V e^{1/2} on the well-concentrated eigenvectors only: band-limited functions
    # living mostly outside the mask make G numerically singular (about (mask volume)·n/D³ survive)
    e, V = torch.linalg.eigh(G)
    good = e > GRAM_TOL * e.max()
    Lc = V[:, good] * torch.sqrt(e[good])
    M = Lc.conj().T @ S @ Lc
    M = 0.5 * (M + M.conj().T)
    k = min(k, M.shape[0])
    import scipy.linalg

    nM = M.shape[0]
    _, U = scipy.linalg.eigh(M.cpu().numpy(), subset_by_index=[nM - k, nM - 1], driver="evr")
    U = torch.as_tensor(U[:, ::-1].copy(), device=M.device)
    return (V[:, good] / torch.sqrt(e[good])) @ U


def principal_volumes(Sigma: torch.Tensor, grid: BallGrid, latent_dim: int, mask=None,
                      correction: str = "divide") -> tuple[np.ndarray, np.ndarray]:
    """Top eigenpairs of the masked real-space covariance of ``Sigma`` (voxels ``|v| <= radius``).

    Returns ``(components [K, D, D, D] float32, eigenvalues [K] float64)``: orthonormal
    (voxel L2) volumes, zero outside the mask, sign fixed so each sums to ``>= 0``;
    eigenvalues descending (see :mod:`cryoscape.inference.covariance` for ``correction``).
    """
    sel = torch.nonzero(grid.keep).reshape(-1)
    h = _weight_volume(grid.D, mask, grid.interpolation, correction)
    S = Sigma[sel][:, sel].to(torch.complex128)
    G = _gram(grid, sel, h.to(torch.complex128))
    coeffs = _masked_eigenvectors(S, 0.5 * (G + G.conj().T), latent_dim)
    vols = _to_volumes(grid, coeffs.T, sel, h.to(torch.complex128))
    comps = torch.where(h.real != 0, _real_orthonormal(vols), 0.0)  # exact zeros outside the mask
    # eigenvalues as Rayleigh quotients of the real volumes
    a = _sample(grid, fftn_c(comps.to(h.dtype) * h, 3), sel) / float(grid.D) ** 3  # Φᴴ x
    ev = torch.einsum("ki,ij,kj->k", a.conj(), S, a).real
    return _finish_signs(comps, ev)


def _finish_signs(comps: torch.Tensor, ev: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Volumes ordered by descending eigenvalue, each signed to sum to ``>= 0``, as numpy arrays."""
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

"""Probabilistic PCA of a heterogeneous particle set by expectation–maximisation.

Model (survey §5; Tagare, Kucukelbir, Sigworth, Wang & Rao 2015)
-----------------------------------------------------------------
Particle ``i`` is a volume ``V_i = X0 + Σ_k b_ik X_k`` with ``b_i ~ N(0, I_K)``,
imaged as ``y_i = a_i A_i V_i + ε_i``. ``A_i = CTF_i ∘ shift_i ∘ slice(R_i)`` is
the shared forward model (:mod:`cryoscape.imaging`) on the in-circle frequencies
of the ``D x D`` grid, ``a_i > 0`` a per-particle contrast, and ``ε_i`` white
Gaussian noise.

Fourier conventions
-------------------
Images enter through their unnormalised centred DFT (:func:`~cryoscape.imaging.image_to_half`)
on the half set ``H`` of in-circle frequencies (``P`` points, DC first). Every
sum over frequencies is a *full-disc* sum computed on ``H`` with Hermitian
weights ``h = 1`` at DC and ``2`` elsewhere (the values on ``-H`` are complex
conjugates, so ``Re Σ_disc conj(u) v = Σ_H h Re(conj(u) v)``). Internally the
noise variance ``s²`` is per Fourier coefficient, ``E|ε(k)|² = s²``; white noise of
real-space variance ``σ²`` per pixel has ``s² = D² σ²``. The reported
:attr:`PPCAResult.sigma2` is the real-space ``σ²`` (per pixel, image units²).

E-step (per image, batched)
---------------------------
With ``F_ip = A_i X_p`` (``p = 0..K``, ``F_i0`` the mean's image), the Gram matrix
``C_i = Re(F_iᴴ diag(h) F_i)`` (``(K+1)²``) and ``d_i = Re(F_iᴴ diag(h) y_i)``,
the posterior of ``b_i`` is Gaussian with precision
``Λ_i = I + a_i² C_i[1:, 1:] / s²`` and mean
``μ_i = Λ_i⁻¹ a_i (d_i[1:] − a_i C_i[1:, 0]) / s²`` (covariance ``Λ_i⁻¹``).

Contrast
--------
``a_i`` is the first coordinate of the MAP estimate of the linearised model
``y_i = a_i F_i0 + G_i c_i + ε`` with ``c_i = a_i b_i ~ N(0, I)`` and a Gaussian prior
``a_i ~ N(1, τ²)``, a linear ``(K+1) x (K+1)`` solve
(:func:`contrast_estimate`), clipped to ``>= MIN_CONTRAST``. The prior matters while
``s²`` is large (early iterations, when the components do not yet explain the
heterogeneity and a free ``a_i`` takes absurd values) and fades as ``s²`` falls; the posterior of ``b_i`` is then taken at that ``a_i``.
(Alternating ``a_i`` and the posterior of ``b_i`` instead converges very slowly:
``a`` and ``b`` trade off along the bilinear valley.) After each M-step the
contrasts are divided by their mean and all volumes multiplied by it (an exact
symmetry of the model), so ``mean(a) = 1``. ``estimate_contrast=False`` fixes ``a = 1``.
The prior's ``τ`` starts at ``CONTRAST_PRIOR_STD`` and is learnt (the EM update
``τ² = mean_i E[(a_i − 1)²]`` after each iteration with a free contrast) unless
given: with a fixed ``τ``, ``a_i`` follows the noise on data whose contrast does not
vary (adk-1d, 5 000 particles at box 64, 10 iterations: |Spearman| of the first
coordinate 0.871 with ``τ`` fixed at 0.3, 0.909 learnt; per-image FSC AUC equal).

With a free contrast the part of each component along the mean is not
identifiable: ``a (X0 + b (w + β X0))`` reproduces ``a' (X0 + b' w)`` for every
``β`` (``a' = a (1 + β b)``, ``b' = a b / a'``). The components are therefore kept
orthogonal to the masked mean (voxel L2) after every M-step when the contrast is
estimated; heterogeneity that only scales the whole map is absorbed by ``a_i``.

M-step (per Fourier voxel)
--------------------------
``Σ_i a_i² (A_iᵀA_i)(v) E[b̃_i b̃_iᵀ] X(v) = Σ_i a_i (A_iᵀ y_i)(v) E[b̃_i]`` for
``X(v) = (X̂0, X̂1, .., X̂K)(v)``. ``A_iᵀA_i`` is taken diagonal per voxel: the
trilinear backprojection of ``CTF_i²`` (:func:`~cryoscape.imaging.insert_half`),
one real channel per pair ``p <= q`` with signed per-image weights
``a_i² E[b̃_ip b̃_iq]``; the right-hand sides are ``K + 1`` complex numerators with
weights ``a_i E[b̃_ip]``. All channels go through one multi-channel insertion per
batch and point set, then :func:`~cryoscape.imaging.complete_channels`. The point
sets are those of the reconstruction backprojector
:func:`~cryoscape.imaging.backproject_images` (``D``-spaced samples beyond a padded
radius of ``fine_radius`` voxels, the zero-padded image FT inside it), which
halves the low-frequency bias of the plain adjoint (volume error 5 % instead of
11 % in a noise-free test at ``D = 20``). That function itself carries one
numerator and one non-negative weight per call, so the signed multi-channel sums
are inserted here with its point sets and helpers.

The ``(K+1) x (K+1)`` systems are solved for every voxel of the ``kx >= 0`` half
of the padded grid with a ridge ``λ(k) I`` added,
``λ(k) = ridge · ⟨Σ_i a_i² A_iᵀA_i⟩_k`` (``ridge`` times the shell mean of the
mean's weight channel, :func:`cryoscape.reconstruct.wiener.relative_regulariser`);
voxels beyond ``resolution_limit_A`` are zeroed.

Half-set filter (``fsc_filter``, default on): the sums are kept per gold-standard
half set (``particles.half_set``, random halves where unknown). Each half is
solved as above (nearly unregularised); the masked FSC per shell of the two
half-set volumes of the mean and of every component gives each channel's
spectral SNR of the full-data estimate, ``SSNR_p = 2 FSC_p / (1 − FSC_p)``.
The two halves are kept independent (``cross_halves``, default with the filter):
each half keeps its own model (its sums solved with the half-map Wiener term
``SSNR_p = FSC_p / (1 − FSC_p)``), and the posteriors of one half's images come
from the *other* half's model. With one shared model, a direction that fits the
noise of the images is reinforced in both halves at once (each image's latent is
its own noise projected on that direction), so the half volumes agree on it and
the FSC passes it as signal. Measured: on homogeneous noisy particles the latent
spread the EM claims is 3× smaller; on adk-1d at SNR 0.01 (20 000 particles, box
64) the latent-curve |Spearman| rose from 0.533 to 0.650 (AUC 0.424 → 0.428), at
SNR 0.05 nothing changed (AUC 0.547). The components still reach half-set FSC
"resolutions" of 3–4 Å at SNR 0.01 (the consensus map: 7.6 Å), unmasked as
well as masked; what they reproduce there is not traced. Both half models start
from the same volumes and are solved in the latent frame of the other, so they
stay in one frame. The full system is then solved with
a per-channel Wiener term on the diagonal, ``λ_p(k) = ⟨Σ_i a_i² E[b̃_ip²] A_iᵀA_i⟩_k
/ SSNR_p(k)`` (:func:`cryoscape.reconstruct.wiener.regulariser_from_ssnr`), on top
of the ridge. Without it the components soak up noise at the frequencies where
the heterogeneity has no signal, and the volume at a particle's latent gets worse
with every iteration (adk-1d, 20 000 particles: per-image FSC AUC 0.573 after the
first iteration, 0.533 after 20, i.e. that of the consensus map).
Volumes come back to real space
with :func:`cryoscape.imaging.wiener_volume` (inverse FFT, crop, grid correction).
Components are multiplied by the soft ``mask`` after every M-step (and, with a
free contrast, made orthogonal to the masked mean, see above).

Noise
-----
``s²`` is updated from the expected residual of the E-step,
``E‖y_i − a_i F_i b̃_i‖²_h = ‖y_i‖²_h − 2 a_i d_i·E[b̃_i] + a_i² tr(C_i E[b̃_i b̃_iᵀ])``,
summed over images and divided by the number of (full-disc) coefficients; it
therefore lags the volumes by one iteration. It is floored at
``SIGMA2_FLOOR`` times the mean power per coefficient of the data.

Objective
---------
The reported objective per iteration is the mean over images of the marginal
log-likelihood ``log p(y_i | a_i)`` up to a constant,
``−½ [‖y_i − a_i F_i0‖²_h / s² − rᵢᵀ μ_i + log det Λ_i + n log s²]``
(``r_i`` the right-hand side above, ``n`` the number of coefficients), evaluated
with the volumes and ``s²`` before that iteration's M-step.

Streaming: each iteration reads the particles once with
:meth:`~cryoscape.particles.ParticleSet.iter_batches`; memory holds the
accumulators (``2(K+1) + (K+1)(K+2)/2`` real channels on the ``M³`` padded
grid, one set per half set with the FSC filter) and ``N x K x K`` posterior
covariances, independent of the image count otherwise. The M-step completes and
solves the systems a few planes at a time (about 64 MB of float64 systems per
chunk), so it adds little beyond the output volumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.imaging import image_to_half, insert_half, wiener_volume
from cryoscape.imaging._grid import padded_size, recon_points, slice_points
from cryoscape.imaging.ctf import CTF_FIELDS, ctf_from_freqs
from cryoscape.imaging.forward import _fine_dft, _fine_ok, transfer_half
from cryoscape.imaging.shift import phase_shift_at
from cryoscape.models.linear import LinearHyperMolecule

__all__ = [
    "MIN_CONTRAST",
    "SIGMA2_FLOOR",
    "Posterior",
    "PPCAResult",
    "frequency_weights",
    "image_terms",
    "posterior",
    "MStepAccumulator",
    "fit_ppca",
    "batch_inputs",
]

#: Smallest contrast ``a_i`` (after normalisation the mean contrast is 1).
MIN_CONTRAST = 1e-2
#: Prior standard deviation of the contrast around 1 (keeps early iterations, whose
#: components do not yet explain the heterogeneity, from assigning absurd contrasts).
CONTRAST_PRIOR_STD = 0.3
#: Floor of the learnt contrast prior standard deviation.
MIN_CONTRAST_STD = 1e-3
#: Floor of the noise variance relative to the mean data power per coefficient.
SIGMA2_FLOOR = 1e-8


# ---------------------------------------------------------------- E-step
def frequency_weights(D: int, apix: float, resolution_limit_A: float | None = None,
                      device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Hermitian weights ``[P]`` on the half set: 1 at DC, 2 elsewhere, 0 beyond ``resolution_limit_A``.

    ``Σ_H h f`` equals the sum over the whole in-circle disc of a Friedel-symmetric ``f``.
    """
    pts = slice_points(D, True, device)
    h = 2.0 * pts.insert_weight.to(dtype)
    if resolution_limit_A is not None:
        k = torch.sqrt(pts.kx.to(dtype) ** 2 + pts.ky.to(dtype) ** 2) / (D * apix)
        h = torch.where(k <= 1.0 / resolution_limit_A, h, torch.zeros_like(h))
    return h


def image_terms(model: LinearHyperMolecule, images: torch.Tensor, rotations, shifts_A=None,
                ctf_params: Mapping | None = None, apix: float = 1.0,
                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The sufficient statistics of a batch of images under the linear model.

    Args:
        model: the current :class:`LinearHyperMolecule` (its device and dtype are used).
        images: real ``[B, D, D]``. rotations ``[B, 3, 3]``; shifts_A ``[B, 2]`` Å (RELION
            origins) or None; ctf_params: CTF fields ``(B,)`` or None; apix Å/px.
        weights: ``[P]`` from :func:`frequency_weights` (default: no resolution limit).
    Returns:
        dict with ``C [B, K+1, K+1]`` = ``Re(Fᴴ diag(h) F)``, ``d [B, K+1]`` = ``Re(Fᴴ diag(h) y)``,
        and ``yy [B]`` = ``‖y‖²_h``, where ``F = T · slices`` and ``T = CTF · shift phase``.
    """
    D = model.D
    x = images.to(device=model.device, dtype=model.dtype).reshape(-1, D, D)
    h = frequency_weights(D, apix, None, model.device, model.dtype) if weights is None else weights
    ctf, ph = transfer_half(D, apix, shifts_A, ctf_params, model.device, model.dtype)
    y = image_to_half(x)
    S = model.component_slices(rotations)  # [B, K+1, P]
    T = torch.ones_like(y)
    if ph is not None:
        T = T * ph
    if ctf is not None:
        T = T * ctf
    F = S * T[:, None, :]
    Fh = F.conj() * h
    C = torch.einsum("bkp,blp->bkl", Fh, F).real
    d = torch.einsum("bkp,bp->bk", Fh, y).real
    yy = (h * (y.real ** 2 + y.imag ** 2)).sum(-1)
    return {"C": C, "d": d, "yy": yy}


@dataclass
class Posterior:
    """Gaussian posterior of a batch's latents and its by-products.

    mean ``[B, K]``, cov ``[B, K, K]`` (``Λ⁻¹``), precision ``[B, K, K]`` (``Λ``),
    rhs ``[B, K]``, logdet ``[B]`` (``log det Λ``).
    """

    mean: torch.Tensor
    cov: torch.Tensor
    precision: torch.Tensor
    rhs: torch.Tensor
    logdet: torch.Tensor

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``E[b̃] [B, K+1]`` and ``E[b̃ b̃ᵀ] [B, K+1, K+1]`` for ``b̃ = (1, b)``."""
        return augmented_moments(self.mean, self.cov)


def augmented_moments(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[b̃]`` and ``E[b̃ b̃ᵀ]`` for ``b̃ = (1, b)``, ``b`` with mean ``[B, K]`` and covariance ``[B, K, K]``."""
    Eb = torch.cat([torch.ones_like(mean[:, :1]), mean], dim=1)
    Ebb = Eb[:, :, None] * Eb[:, None, :]
    Ebb[:, 1:, 1:] += cov
    return Eb, Ebb


def posterior(C: torch.Tensor, d: torch.Tensor, contrast: torch.Tensor, s2: float) -> Posterior:
    """Posterior of ``b_i`` given the statistics of :func:`image_terms`.

    ``Λ = I + a² C[1:, 1:] / s²``, ``rhs = a (d[1:] − a C[1:, 0]) / s²``, ``μ = Λ⁻¹ rhs``;
    ``contrast`` ``[B]``, ``s2`` the noise variance per Fourier coefficient.
    """
    K = C.shape[-1] - 1
    a = contrast.to(C.dtype)
    eye = torch.eye(K, dtype=C.dtype, device=C.device)
    lam = eye + (a * a / s2)[:, None, None] * C[:, 1:, 1:]
    rhs = (a / s2)[:, None] * (d[:, 1:] - a[:, None] * C[:, 1:, 0])
    L = torch.linalg.cholesky(lam)
    mean = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    cov = torch.cholesky_inverse(L)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return Posterior(mean, cov, lam, rhs, logdet)


def contrast_estimate(C: torch.Tensor, d: torch.Tensor, s2: float, prior_std: float = CONTRAST_PRIOR_STD,
                      return_variance: bool = False):
    """Per-image contrast ``[B]`` from the linearised model ``y = a F0 + G c + ε``, ``c = a b ~ N(0, I)``.

    ``(a, c)`` is the MAP estimate under ``a ~ N(1, prior_std²)``:
    ``(C / s² + diag(1/prior_std², 1, .., 1)) (a, c) = d / s² + (1/prior_std², 0, .., 0)``
    (linear in ``(a, c)``); ``a`` is clipped to ``>= MIN_CONTRAST``. With
    ``return_variance`` also the posterior variance of ``a`` (``[H⁻¹]₀₀`` of that
    system matrix ``H``), as ``(a, var)``.
    """
    K1 = C.shape[-1]
    reg = torch.ones(K1, dtype=C.dtype, device=C.device)
    reg[0] = 1.0 / prior_std ** 2
    rhs = d / s2
    rhs[:, 0] += reg[0]
    H = C / s2 + torch.diag(reg)
    if not return_variance:
        sol = torch.linalg.solve(H, rhs[..., None])[..., 0]
        return sol[:, 0].clamp(min=MIN_CONTRAST)
    e0 = torch.zeros_like(rhs)
    e0[:, 0] = 1.0
    sol = torch.linalg.solve(H, torch.stack([rhs, e0], dim=-1))
    return sol[:, 0, 0].clamp(min=MIN_CONTRAST), sol[:, 0, 1]


def expected_residual(terms: Mapping[str, torch.Tensor], contrast: torch.Tensor, post: Posterior) -> torch.Tensor:
    """``E‖y − a F b̃‖²_h`` ``[B]`` under the posterior."""
    Eb, Ebb = post.moments()
    a = contrast.to(Eb.dtype)
    return terms["yy"] - 2 * a * (terms["d"] * Eb).sum(-1) + a * a * (terms["C"] * Ebb).sum((-2, -1))


def log_likelihood(terms: Mapping[str, torch.Tensor], contrast: torch.Tensor, post: Posterior,
                   s2: float, n_coeff: float) -> torch.Tensor:
    """Marginal ``log p(y_i | a_i)`` up to a constant ``[B]`` (see the module docstring)."""
    a = contrast.to(post.mean.dtype)
    C, d = terms["C"], terms["d"]
    q0 = terms["yy"] - 2 * a * d[:, 0] + a * a * C[:, 0, 0]
    quad = q0 / s2 - (post.rhs * post.mean).sum(-1)
    return -0.5 * (quad + post.logdet + n_coeff * math.log(s2))


# ---------------------------------------------------------------- M-step
def _pairs(K1: int) -> list[tuple[int, int]]:
    return [(p, q) for p in range(K1) for q in range(p, K1)]


class MStepAccumulator:
    """Streaming sums of the PPCA M-step on the padded grid.

    Channels of the raw half-plane accumulator ``[C, M, M, M]``: ``2p`` and ``2p + 1``
    hold Re and Im of ``Σ_i a_i E[b̃_ip] Pᵀ(conj(T_i) y_i)`` (``p = 0..K``), then one
    channel per pair ``p <= q`` (order of :func:`_pairs`) holding
    ``Σ_i a_i² E[b̃_ip b̃_iq] Pᵀ|T_i|²``.
    """

    def __init__(self, D: int, K: int, oversampling: float = 2.0, device=None,
                 dtype: torch.dtype = torch.float32, fine_radius: int = 8) -> None:
        self.D, self.K, self.oversampling = D, K, float(oversampling)
        self.fine_radius = int(fine_radius)
        self.N = padded_size(D, oversampling)
        self.pairs = _pairs(K + 1)
        M = self.N + 1
        self.acc = torch.zeros(2 * (K + 1) + len(self.pairs), M, M, M, device=device, dtype=dtype)

    def insert(self, images: torch.Tensor, rotations, shifts_A, ctf_params: Mapping | None, apix: float,
               contrast: torch.Tensor, post: Posterior) -> None:
        """Add one batch: real images ``[B, D, D]``, rotations ``[B, 3, 3]``, shifts ``[B, 2]`` Å or None,
        CTF fields ``(B,)`` or None, and the batch's contrasts ``[B]`` and posterior."""
        Eb, Ebb = post.moments()
        a = contrast.to(Eb.dtype)
        u = a[:, None] * Eb  # [B, K+1]
        v = (a * a)[:, None, None] * Ebb
        pq = torch.stack([v[:, p, q] for p, q in self.pairs], dim=-1)  # [B, npair]
        x = images.to(device=self.acc.device, dtype=self.acc.dtype)
        R = torch.as_tensor(rotations, dtype=x.dtype, device=x.device).reshape(-1, 3, 3)
        for y, pts, wts in self._parts(x, ctf_params, apix):
            kx = pts.kx.to(x.dtype) / (self.D * apix)
            ky = pts.ky.to(x.dtype) / (self.D * apix)
            if shifts_A is not None:
                y = y * phase_shift_at(kx, ky, torch.as_tensor(shifts_A, dtype=x.dtype, device=x.device))
            t2 = torch.ones_like(y.real)
            if ctf_params is not None:
                ctf = ctf_from_freqs(kx, ky, **{k: ctf_params[k] for k in CTF_FIELDS if k in ctf_params})
                y, t2 = y * ctf, (ctf * ctf).expand_as(t2)
            num = u[:, None, :, None] * torch.stack([y.real, y.imag], dim=-1)[:, :, None, :]  # [B, P, K+1, 2]
            vals = torch.cat([num.reshape(*num.shape[:2], -1), t2[:, :, None] * pq[:, None, :]], dim=-1)
            if wts is not None:
                vals = vals * wts[:, None, None]
            insert_half(vals.contiguous(), R, self.D, self.oversampling, out=self.acc, points=pts)

    def _parts(self, x: torch.Tensor, ctf_params: Mapping | None, apix: float) -> list:
        """``(values [B, P'], points, per-image mask [B] or None)`` to insert, as in
        :func:`~cryoscape.imaging.backproject_images`: ``D``-spaced half-set samples beyond
        padded radius ``fine_radius``, the zero-padded image FT inside it (where the CTF is
        sampled finely enough, else the ``D``-spaced samples)."""
        D, N = self.D, self.N
        y_half = image_to_half(x)
        if self.fine_radius <= 0 or N <= D:
            return [(y_half, slice_points(D, True, x.device), None)]
        keep, coarse, inner_idx, inner, fine = recon_points(D, N, self.fine_radius, x.device)
        use_fine = _fine_ok(x.shape[0], D, N, apix, self.fine_radius, ctf_params, 1.0, x)
        return [(y_half[:, keep], coarse, None),
                (_fine_dft(x, fine.kx, fine.ky), fine, use_fine),
                (y_half[:, inner_idx], inner, 1.0 - use_fine)]

    def add(self, other: "MStepAccumulator") -> "MStepAccumulator":
        """Add ``other``'s sums (same box, ``K`` and grid) into this accumulator; returns self."""
        if other.acc.shape != self.acc.shape:
            raise ValueError(f"accumulators differ: {tuple(self.acc.shape)} and {tuple(other.acc.shape)}")
        self.acc += other.acc
        return self

    def solve(self, ridge: float, apix: float, resolution_limit_A: float | None = None,
              ssnr: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-voxel ridge solve and inverse FFT: ``(mean [D, D, D], components [K, D, D, D])`` real.

        ``ssnr`` ``[K + 1, D//2 + 1]`` (mean first, then the components): adds the
        per-channel Wiener term ``⟨weight of channel p⟩_k / SSNR_p(k)`` to the
        diagonal (see the module docstring); None: the ridge alone.
        """
        from cryoscape.reconstruct.wiener import regulariser_from_ssnr

        K1, N, h = self.K + 1, self.N, self.N // 2
        diag = [2 * K1 + self.pairs.index((p, p)) for p in range(K1)]
        means = self._shell_means(diag)  # [K1, D//2 + 1]; row 0: the mean's weight channel
        n_sh = means.shape[1]
        lam = [regulariser_from_ssnr(means[0], np.full(n_sh, 1.0 / ridge))] * K1
        if ssnr is not None:
            lam = [lam[0] + regulariser_from_ssnr(means[p], np.asarray(ssnr[p])) for p in range(K1)]
        lam_t = torch.stack(lam).to(torch.float64)  # [K1, n_sh]
        shell, radius = self._shells(self.acc.device)
        keep = radius <= self.D / 2
        if resolution_limit_A is not None:
            keep &= radius / (self.D * apix) <= 1.0 / resolution_limit_A
        cdtype = torch.complex128 if self.acc.dtype == torch.float64 else torch.complex64
        out = torch.zeros(K1, N, N, h + 1, dtype=cdtype, device=self.acc.device)
        for z0, z1 in self._plane_chunks():
            half = self._completed_planes(z0, z1)  # [C, dz, N, h + 1]
            A = torch.zeros(*half.shape[1:], K1, K1, dtype=torch.float64, device=half.device)
            for c, (p, q) in enumerate(self.pairs):
                A[..., p, q] = half[2 * K1 + c]
                A[..., q, p] = half[2 * K1 + c]
            sh = shell[z0:z1].clamp(max=n_sh - 1)
            A += torch.diag_embed(lam_t[:, sh].permute(1, 2, 3, 0))
            rhs = half[: 2 * K1].double().permute(1, 2, 3, 0).reshape(*half.shape[1:], K1, 2)
            X = torch.linalg.solve(A, rhs) * keep[z0:z1, ..., None, None]  # [dz, N, h+1, K1, 2]
            out[:, z0:z1] = torch.complex(X[..., 0], X[..., 1]).permute(3, 0, 1, 2).to(cdtype)
        vols = [self._to_real(out[p]) for p in range(K1)]
        return vols[0], torch.stack(vols[1:]) if self.K else vols[0].new_zeros(0, *vols[0].shape)

    def _signs(self) -> torch.Tensor:
        """Hermitian completion sign per channel: −1 for the imaginary parts of the numerators, else +1."""
        sign = torch.ones(self.acc.shape[0], dtype=self.acc.dtype, device=self.acc.device)
        sign[1: 2 * (self.K + 1): 2] = -1
        return sign

    def _completed_planes(self, z0: int, z1: int, channels: list[int] | None = None) -> torch.Tensor:
        """Hermitian-completed sums on planes ``z0:z1`` of the ``kx >= 0`` slab, ``[C, z1 − z0, N, N/2 + 1]``.

        Equals ``complete_channels(acc)[:, z0:z1, :N, N/2:]`` without completing the whole grid:
        the Friedel mate of index ``j`` is ``N − j`` on every axis of the ``M = N + 1`` grid.
        """
        N, h = self.N, self.N // 2
        acc, sign = self.acc, self._signs()
        if channels is not None:
            acc, sign = acc[channels], sign[channels]
        mate = torch.flip(acc[:, N - z1 + 1: N - z0 + 1, 1:, : h + 1], dims=(1, 2, 3))
        return acc[:, z0:z1, :N, h:] + sign[:, None, None, None] * mate

    def _plane_chunks(self, budget_bytes: float = 64e6) -> list[tuple[int, int]]:
        """``(z0, z1)`` ranges whose per-voxel systems take about ``budget_bytes`` (float64)."""
        K1, N = self.K + 1, self.N
        per_plane = N * (N // 2 + 1) * (K1 * K1 + 4 * K1) * 8
        step = max(1, int(budget_bytes // per_plane))
        return [(z, min(z + step, N)) for z in range(0, N, step)]

    def _shell_means(self, channels: list[int]) -> torch.Tensor:
        """Mean over each shell ``0 .. D//2`` (inside Nyquist) of the completed ``channels``, ``[len, D//2 + 1]`` float64.

        The same numbers as :func:`cryoscape.reconstruct.wiener.shell_mean_weight` of each completed channel.
        """
        from cryoscape.imaging.wiener import half_shells

        g = half_shells(self.D, self.oversampling, self.acc.device)
        sums = torch.zeros(len(channels), self.D // 2 + 1, dtype=torch.float64, device=self.acc.device)
        for z0, z1 in self._plane_chunks():
            w = self._completed_planes(z0, z1, channels).double() * g.plane_weight
            inside = g.inside[z0:z1]
            idx = g.shell[z0:z1][inside]
            for r in range(len(channels)):
                sums[r].index_add_(0, idx, w[r][inside])
        return sums / g.counts.clamp(min=1)

    def _shells(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Shell index ``round(|q|)`` and radius ``|q|`` (cycles per box ``D``) on the ``[N, N, N/2+1]`` slab."""
        N, D = self.N, self.D
        q = (torch.arange(N, dtype=torch.float64, device=device) - N // 2) * (D / N)
        qx = torch.arange(N // 2 + 1, dtype=torch.float64, device=device) * (D / N)
        r = torch.sqrt(q[:, None, None] ** 2 + q[None, :, None] ** 2 + qx[None, None, :] ** 2)
        return torch.round(r).long(), r

    def _to_real(self, slab: torch.Tensor) -> torch.Tensor:
        """Real ``[D, D, D]`` volume from its FT on the ``kx >= 0`` slab (padded grid, grid-corrected)."""
        N, h = self.N, self.N // 2
        M = N + 1
        full = slab.new_zeros(M, M, M)
        full[:N, :N, h:] = slab
        ones = torch.ones(M, M, M, dtype=slab.real.dtype, device=slab.device)
        vol = wiener_volume(full, ones, 0.0, self.D, self.oversampling)
        return vol.to(self.acc.dtype)


# ---------------------------------------------------------------- driver
@dataclass
class PPCAResult:
    """The fitted PPCA of a particle set.

    model: :class:`LinearHyperMolecule` with orthonormal components (unit L2 norm
    over voxels inside the mask) sorted by ``eigenvalues``; latents ``[N, K]``
    posterior means in that frame (particle order); latent_covariances ``[N, K, K]``;
    contrast ``[N]`` (mean 1); sigma2: real-space noise variance per pixel;
    eigenvalues ``[K]``: variance of each latent coordinate (``E[b_k²]`` over the
    particles, posterior spread included); objective: mean marginal
    log-likelihood per image (up to a constant) for each iteration; apix Å/px;
    half_set_fsc ``[K + 1, D//2 + 1]``: the last M-step's masked FSC between the
    half-set solves of the mean and of each component *in the EM's frame, before
    orthonormalisation* (None without ``fsc_filter``, and after a resume that ran
    no iteration); contrast_prior_std: the contrast prior's standard deviation
    at the end (learnt unless given; 0 when the contrast is fixed at 1);
    latent_prior_covariance ``[K, K]``: the prior ``N(0, I)`` of the EM's latents
    expressed in the output frame (``T Tᵀ`` for ``b' = T b``), the prior the
    posteriors include.
    """

    model: LinearHyperMolecule
    latents: np.ndarray
    latent_covariances: np.ndarray
    contrast: np.ndarray
    sigma2: float
    eigenvalues: np.ndarray
    objective: list[float] = field(default_factory=list)
    apix: float = 1.0
    half_set_fsc: np.ndarray | None = None
    contrast_prior_std: float = CONTRAST_PRIOR_STD
    latent_prior_covariance: np.ndarray | None = None


def _check_inputs(particles, n_components: int, n_iterations: int) -> None:
    particles.require_poses("PPCA")
    n = len(particles)
    if n_components < 1:
        raise InputError(f"n_components is {n_components}; PPCA needs at least one component")
    if n <= n_components:
        raise InputError(f"{getattr(particles, 'name', 'the particle set')} has {n} particles for "
                         f"{n_components} components; PPCA needs more particles than components")
    if n_iterations < 1:
        raise InputError(f"n_iterations is {n_iterations}; run at least one iteration")


def batch_inputs(particles, idx: np.ndarray, use_ctf: bool, device, dtype):
    """Rotations, shifts and CTF fields of the particles ``idx`` as tensors."""
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    R = t(particles.rotations[idx])
    sh = None if particles.shifts_A is None else t(particles.shifts_A[idx])
    ctf = None
    if use_ctf:
        table = particles.ctf_table()
        ctf = {k: t(np.broadcast_to(np.asarray(v, dtype=np.float64), (len(particles),))[idx])
               for k, v in table.items() if v is not None}
    return R, sh, ctf


def _initial_model(particles, K: int, mask: torch.Tensor, oversampling: int, ridge: float,
                   use_ctf: bool, batch_size: int, device, dtype, seed: int,
                   initial_components=None) -> LinearHyperMolecule:
    """``X0`` from a CTF-weighted backprojection; components given or seeded smooth random volumes in ``mask``."""
    from cryoscape.reconstruct.backprojection import backproject

    sums = backproject(particles, half_sets=False, use_ctf=use_ctf, batch_size=batch_size,
                       oversampling=oversampling, device=device, progress=False)
    mean = torch.as_tensor(np.asarray(sums.volume(0, regulariser=ridge)), dtype=dtype, device=device)
    D = mean.shape[-1]
    if initial_components is not None:
        comps = torch.as_tensor(np.asarray(initial_components), dtype=dtype, device=device)
        if tuple(comps.shape) != (K, D, D, D):
            raise InputError(f"initial components have shape {tuple(comps.shape)}; expected {(K, D, D, D)}")
        return LinearHyperMolecule(mean, comps * mask, float(oversampling))
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(K, D, D, D, generator=g, dtype=torch.float64)
    k = torch.fft.fftfreq(D, dtype=torch.float64)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    smooth = torch.fft.ifftn(torch.fft.fftn(noise, dim=(1, 2, 3)) * torch.exp(-k2 / (2 * 0.1 ** 2)), dim=(1, 2, 3)).real
    comps = smooth.to(device=device, dtype=dtype) * mask
    scale = (mean * mask).norm() / comps.reshape(K, -1).norm(dim=1).clamp(min=1e-30)
    comps = 0.1 * comps * scale[:, None, None, None]
    return LinearHyperMolecule(mean, comps, float(oversampling))


def _take(x, sel: torch.Tensor):
    """Rows ``sel`` of a batch tensor, of every field of a CTF mapping, or None."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _take(v, sel) for k, v in x.items()}
    return x[sel]


def _insert_by_half(accs: list[MStepAccumulator], halves: torch.Tensor | None, images: torch.Tensor, R, sh, ctf,
                    apix: float, a: torch.Tensor, post: Posterior) -> None:
    """Add a batch to ``accs[0]`` (``halves`` None) or to ``accs[0]``/``accs[1]`` by each image's half set."""
    if halves is None:
        accs[0].insert(images, R, sh, ctf, apix, a, post)
        return
    for label, acc in enumerate(accs):
        sel = torch.nonzero(halves == label).reshape(-1)
        if sel.numel():
            part = Posterior(*(getattr(post, f)[sel.to(post.mean.device)] for f in
                               ("mean", "cov", "precision", "rhs", "logdet")))
            acc.insert(images[sel], _take(R, sel.to(R.device)), _take(sh, sel.to(R.device)),
                       _take(ctf, sel.to(R.device)), apix, a[sel.to(a.device)], part)


def _passes(particles, model: LinearHyperMolecule, halves: np.ndarray | None,
            cross: list[LinearHyperMolecule] | None, batch_size: int):
    """``(indices, images, model for their posteriors)`` batches: all with ``model``, or with ``cross``
    each half set's images with the other half's model."""
    if cross is None:
        for idx, images in particles.iter_batches(batch_size):
            yield np.asarray(idx), images, model
        return
    for label in (0, 1):
        for idx, images in particles.iter_batches(batch_size, np.flatnonzero(halves == label)):
            yield np.asarray(idx), images, cross[1 - label]


def _iterate(particles, model: LinearHyperMolecule, state: dict, *, apix: float, use_ctf: bool,
             h: torch.Tensor, batch_size: int, estimate_contrast: bool,
             halves: np.ndarray | None = None, cross: list[LinearHyperMolecule] | None = None
             ) -> tuple[list[MStepAccumulator], float, float, float]:
    """One E-step pass over the particles with the M-step sums.

    Returns ``(accumulators, Σ residual, Σ loglik, Σ data power)``: one accumulator,
    or one per half set when ``halves`` (``(N,)`` labels 0/1) is given. ``cross``:
    the two half sets' models; each image's posterior then comes from the other half's.
    """
    accs = [MStepAccumulator(model.D, model.K, model.oversampling, model.device, model.dtype)
            for _ in range(1 if halves is None else 2)]
    n_coeff = float(h.sum())
    res_sum = ll_sum = power = 0.0
    for idx, images, e_model in _passes(particles, model, halves, cross, batch_size):
        R, sh, ctf = batch_inputs(particles, idx, use_ctf, model.device, model.dtype)
        terms = image_terms(e_model, torch.as_tensor(images), R, sh, ctf, apix, h)
        ti = torch.as_tensor(idx, device=model.device)
        if state["s2"] is None:
            q0 = terms["yy"] - 2 * terms["d"][:, 0] + terms["C"][:, 0, 0]
            state["s2"] = max(float(q0.mean()) / n_coeff, float(terms["yy"].mean()) / n_coeff * SIGMA2_FLOOR)
        if estimate_contrast:
            a, var_a = contrast_estimate(terms["C"], terms["d"], state["s2"], state["contrast_std"],
                                         return_variance=True)
            state["contrast_ss"] += float(((a - 1.0) ** 2 + var_a).sum())
        else:
            a = torch.ones_like(terms["yy"])
        post = posterior(terms["C"], terms["d"], a, state["s2"])
        _insert_by_half(accs, None if halves is None else torch.as_tensor(halves[idx]), torch.as_tensor(images),
                        R, sh, ctf, apix, a, post)
        state["mean"][ti], state["cov"][ti], state["contrast"][ti] = post.mean, post.cov, a
        res_sum += float(expected_residual(terms, a, post).sum())
        ll_sum += float(log_likelihood(terms, a, post, state["s2"], n_coeff).sum())
        power += float(terms["yy"].sum())
    return accs, res_sum, ll_sum, power


def half_set_fsc(halves: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> np.ndarray:
    """Masked FSC ``[K + 1, D//2 + 1]`` between two half-set solves ``(mean, components)``, mean first."""
    from cryoscape.validate.fsc import fsc

    (m0, c0), (m1, c1) = halves
    curves = [fsc(m0, m1, mask)] + [fsc(c0[k], c1[k], mask) for k in range(c0.shape[0])]
    return np.stack(curves)


def _m_step(accs: list[MStepAccumulator], ridge: float, apix: float, resolution_limit_A: float | None,
            mask: torch.Tensor, halves_too: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, list | None]:
    """Volumes from the sums: ``(mean, components, half-set FSC or None, half models or None)``; two
    accumulators get the FSC filter, and with ``halves_too`` each half's ``(mean, components)`` is
    solved with its half-map Wiener term as well."""
    if len(accs) == 1:
        mean, comps = accs[0].solve(ridge, apix, resolution_limit_A)
        return mean, comps, None, None
    from cryoscape.reconstruct.wiener import ssnr_from_fsc

    curves = half_set_fsc([a.solve(ridge, apix, resolution_limit_A) for a in accs], mask)
    half_models = None
    if halves_too:
        half_ssnr = ssnr_from_fsc(curves, full=False)
        half_models = [a.solve(ridge, apix, resolution_limit_A, ssnr=half_ssnr) for a in accs]
    full = accs[0].add(accs[1])
    mean, comps = full.solve(ridge, apix, resolution_limit_A, ssnr=ssnr_from_fsc(curves, full=True))
    return mean, comps, curves, half_models


def _constrained(mean: torch.Tensor, comps: torch.Tensor, mask: torch.Tensor, orthogonal: bool) -> torch.Tensor:
    """Components confined to the mask and, with a free contrast, orthogonal to the masked mean."""
    comps = comps * mask
    return _orthogonal_to(comps, mean * mask) if orthogonal else comps


def fit_ppca(particles, n_components: int, n_iterations: int = 20, mask=None,
             resolution_limit_A: float | None = None, seed: int = 0, progress: bool = True, *,
             ridge: float = 1e-2, estimate_contrast: bool = True, contrast_warmup: int = 3,
             contrast_prior_std: float | None = None, use_ctf: bool = True,
             batch_size: int = 256, oversampling: int = 2, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, initial_components=None,
             start_state: Mapping | None = None, fsc_filter: bool = True, cross_halves: bool = True,
             latent_resolution_A: float | None = None,
             on_iteration: Callable[[int, dict], None] | None = None) -> PPCAResult:
    """Fit ``V_i = X0 + Σ_k b_ik X_k`` to a posed particle set by EM (see the module docstring).

    Args:
        particles: :class:`~cryoscape.particles.ParticleSet` with poses (and CTF, used
            when present and ``use_ctf``).
        n_components: ``K``, the number of principal volumes (``< len(particles)``).
        n_iterations: EM iterations (each one pass over the images).
        mask: real-space soft mask ``[D, D, D]`` in ``[0, 1]`` (array, tensor or MRC
            path) confining the components; default
            :func:`cryoscape.reconstruct.backprojection.default_mask`.
        resolution_limit_A: frequencies finer than this (Å) are ignored by the
            E-step and zeroed in every volume; None uses all up to Nyquist.
        seed: seeds the random initial components.
        progress: show a progress bar over iterations.
        ridge: the M-step ridge relative to the shell-mean weight of the mean volume.
        estimate_contrast: estimate ``a_i`` (else 1); contrast_warmup: iterations with
            ``a_i = 1`` first, while the components start to explain the heterogeneity.
        contrast_prior_std: standard deviation of the contrast prior around 1; None
            (default) learns it: it starts at ``CONTRAST_PRIOR_STD`` and after every
            iteration with a free contrast becomes ``sqrt(mean_i E[(a_i − 1)²])``
            (the EM update of a prior variance, from each image's MAP contrast and its
            posterior variance), floored at ``MIN_CONTRAST_STD``; data without contrast
            variation thus drive it down instead of fitting noise with it.
        batch_size: images per batch; oversampling: padded-grid factor;
        device, dtype: where and in which precision to compute.
        initial_components: ``[K, D, D, D]`` starting principal volumes (e.g. the
            top eigenvectors of :mod:`cryoscape.inference.covariance`, scaled by
            the square roots of their eigenvalues); default: seeded smooth random
            volumes.
        start_state: a state passed to ``on_iteration`` by an earlier fit with the
            same data and settings; the fit continues after its iteration, and the
            result equals an uninterrupted fit (EM draws no random numbers after
            the start).
        fsc_filter: keep the M-step sums per half set and filter the mean and each
            component by its half-set FSC (see the module docstring); the half sets
            are ``particles.half_set``, split at random (``seed``) where unknown.
            The last iteration's curves are in :attr:`PPCAResult.half_set_fsc`.
        cross_halves: with the filter, keep one model per half set and take each
            image's posterior from the other half's model (see the module docstring).
        latent_resolution_A: infer the latents (E-step: posteriors, contrasts, noise
            variance, objective) from frequencies up to this resolution (Å) only; the
            M-step still uses every frequency up to ``resolution_limit_A``, so the
            principal volumes at finer resolution are what moves with the latents
            read at coarser resolution. None: the same frequencies as the M-step.
        on_iteration: called after every iteration with ``(iterations done, state)``;
            ``state`` holds tensors and floats only (volumes, noise variance,
            contrasts, posteriors, objective), so it can be saved with
            :meth:`~cryoscape.io.run_dir.RunDirectory.save_checkpoint`.
    Returns:
        :class:`PPCAResult` with orthonormal principal volumes.
    """
    from cryoscape.reconstruct.backprojection import load_mask

    _check_inputs(particles, n_components, n_iterations)
    D, apix, n = int(particles.box), float(particles.apix), len(particles)
    use_ctf = use_ctf and bool(particles.has_ctf)
    mask_t = torch.as_tensor(load_mask(mask, D, apix), dtype=dtype, device=device)
    K = n_components
    if start_state is not None:
        model, state, objective, first = _restore(start_state, n, K, D, float(oversampling), device, dtype)
    else:
        model = _initial_model(particles, n_components, mask_t, oversampling, ridge, use_ctf, batch_size,
                               device, dtype, seed, initial_components)
        state = {"mean": torch.zeros(n, K, dtype=dtype, device=device),
                 "cov": torch.zeros(n, K, K, dtype=dtype, device=device),
                 "contrast": torch.ones(n, dtype=dtype, device=device), "s2": None,
                 "contrast_std": CONTRAST_PRIOR_STD if contrast_prior_std is None else float(contrast_prior_std)}
        objective, first = [], 0
    h = frequency_weights(D, apix, _coarser_limit(resolution_limit_A, latent_resolution_A), device, dtype)
    n_coeff = float(h.sum())
    halves = cross = None
    if fsc_filter:
        from cryoscape.reconstruct.backprojection import assign_half_sets

        halves = assign_half_sets(getattr(particles, "half_set", None), n, seed)
        if cross_halves:
            cross = state.pop("half_models", None) or [_copy_model(model) for _ in range(2)]
    curves = None
    steps = range(first, n_iterations)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="PPCA EM", unit="iter", leave=False)
    for it in steps:
        free = estimate_contrast and it >= contrast_warmup
        state["contrast_ss"] = 0.0
        accs, res_sum, ll_sum, power = _iterate(particles, model, state, apix=apix, use_ctf=use_ctf, h=h,
                                                batch_size=batch_size, estimate_contrast=free, halves=halves,
                                                cross=cross)
        objective.append(ll_sum / n)
        mean, comps, curves, half_models = _m_step(accs, ridge, apix, resolution_limit_A, mask_t, cross is not None)
        del accs
        scale = float(state["contrast"].mean()) if free else 1.0
        state["contrast"] /= scale
        model.set_volumes(mean * scale, _constrained(mean, comps, mask_t, estimate_contrast) * scale)
        for half, (m_h, c_h) in zip(cross or [], half_models or []):
            half.set_volumes(m_h * scale, _constrained(m_h, c_h, mask_t, estimate_contrast) * scale)
        state["s2"] = max(res_sum / (n * n_coeff), power / (n * n_coeff) * SIGMA2_FLOOR)
        if free and contrast_prior_std is None:
            state["contrast_std"] = max(math.sqrt(state["contrast_ss"] / n), MIN_CONTRAST_STD)
        if on_iteration is not None:
            on_iteration(it + 1, _snapshot(model, state, objective, it + 1, cross))
    result = _finish(model, state, mask_t, objective, apix, D)
    result.half_set_fsc = curves
    result.contrast_prior_std = float(state["contrast_std"]) if estimate_contrast else 0.0
    return result


def _coarser_limit(a: float | None, b: float | None) -> float | None:
    """The coarser of two resolution limits in Å (None: no limit)."""
    limits = [x for x in (a, b) if x is not None]
    return max(limits) if limits else None


def _copy_model(model: LinearHyperMolecule) -> LinearHyperMolecule:
    """An independent copy of the volumes."""
    return LinearHyperMolecule(model.mean.clone(), model.components.clone(), model.oversampling)


def _snapshot(model: LinearHyperMolecule, state: dict, objective: list[float], done: int,
              cross: list[LinearHyperMolecule] | None = None) -> dict:
    """Everything needed to continue the EM after ``done`` iterations (tensors and numbers only)."""
    halves = {} if cross is None else {
        f"half{g}_{k}": v.detach().cpu().clone() for g, m in enumerate(cross)
        for k, v in (("mean", m.mean), ("components", m.components))}
    return {**halves, "iteration": int(done), "volume_mean": model.mean.detach().cpu().clone(),
            "volume_components": model.components.detach().cpu().clone(),
            "s2": float(state["s2"]), "latent_mean": state["mean"].cpu().clone(),
            "latent_cov": state["cov"].cpu().clone(), "contrast": state["contrast"].cpu().clone(),
            "contrast_std": float(state["contrast_std"]),
            "objective": torch.tensor(objective, dtype=torch.float64)}


def _restore(saved: Mapping, n: int, K: int, D: int, oversampling: float, device, dtype
             ) -> tuple[LinearHyperMolecule, dict, list[float], int]:
    """Model, EM state, objective and iterations done from a :func:`_snapshot`; one-line error if it does not fit."""
    try:
        mean, comps = saved["volume_mean"], saved["volume_components"]
        lat, cov, contrast = saved["latent_mean"], saved["latent_cov"], saved["contrast"]
        s2, done, objective = float(saved["s2"]), int(saved["iteration"]), saved["objective"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the saved PPCA state is incomplete ({exc}); start the fit again with --force") from None
    if tuple(comps.shape) != (K, D, D, D) or tuple(lat.shape) != (n, K):
        raise InputError(f"the saved PPCA state has components {tuple(comps.shape)} and latents {tuple(lat.shape)}, "
                         f"but this fit has K = {K}, box {D} and {n} particles; start again with --force")
    t = lambda x: torch.as_tensor(x).to(device=device, dtype=dtype)
    model = LinearHyperMolecule(t(mean), t(comps), oversampling)
    state = {"mean": t(lat), "cov": t(cov), "contrast": t(contrast), "s2": s2,
             "contrast_std": float(saved.get("contrast_std", CONTRAST_PRIOR_STD))}
    if "half0_mean" in saved and "half1_components" in saved:
        state["half_models"] = [LinearHyperMolecule(t(saved[f"half{g}_mean"]), t(saved[f"half{g}_components"]),
                                                    oversampling) for g in (0, 1)]
    return model, state, [float(v) for v in torch.as_tensor(objective).reshape(-1)], done


def _orthogonal_to(comps: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Remove from each of ``comps [K, D, D, D]`` its projection on ``ref [D, D, D]`` (voxel L2)."""
    r = ref.reshape(-1)
    coef = comps.reshape(comps.shape[0], -1) @ r / (r @ r).clamp(min=torch.finfo(r.dtype).tiny)
    return comps - coef[:, None, None, None] * ref


def _finish(model: LinearHyperMolecule, state: dict, mask: torch.Tensor, objective: list[float],
            apix: float, D: int) -> PPCAResult:
    """Orthonormalise the components and express the latents in the new frame."""
    mu, cov = state["mean"], state["cov"]
    second = (cov + mu[:, :, None] * mu[:, None, :]).double().mean(0)
    T, evals = model.orthonormalise_components(None, second)  # components are already masked
    mu_new = mu @ T.T
    cov_new = T @ cov @ T.T
    return PPCAResult(
        model=model,
        latents=mu_new.cpu().numpy(),
        latent_covariances=cov_new.cpu().numpy(),
        contrast=state["contrast"].cpu().numpy(),
        sigma2=float(state["s2"]) / (D * D),
        eigenvalues=evals.cpu().numpy(),
        objective=objective,
        apix=apix,
        latent_prior_covariance=(T @ T.T).double().cpu().numpy(),
    )

"""Probabilistic PCA of a heterogeneous particle set by expectation–maximisation.

Model (survey §5; Tagare, Kucukelbir, Sigworth, Wang & Rao 2015)
-----------------------------------------------------------------
Particle ``i`` is a volume ``V_i = X0 + Σ_k b_ik X_k`` with ``b_i ~ N(0, I_K)``,
imaged as ``y_i = a_i A_i V_i + ε_i``. ``A_i = CTF_i ∘ shift_i ∘ slice(R_i)`` is
the shared forward model (:mod:`cryoscape.imaging`) on the in-circle frequencies
of the ``D x D`` grid, ``a_i > 0`` a per-particle contrast, and ``ε_i`` white
Gaussian noise. The volumes are those of a representation linear in its latent
(:class:`~cryoscape.models.representation.LinearInLatent`, e.g.
:class:`~cryoscape.models.linear.LinearHyperMolecule`); ``K`` is its ``latent_dim``.

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

Layout
------
The code is in the package :mod:`cryoscape.inference.ppca`, one module per
step (:mod:`~cryoscape.inference.ppca.estep`, :mod:`~cryoscape.inference.ppca.mstep`,
:mod:`~cryoscape.inference.ppca.halves`, :mod:`~cryoscape.inference.ppca.start`,
:mod:`~cryoscape.inference.ppca.result`, :mod:`~cryoscape.inference.ppca.checkpoint`,
:mod:`~cryoscape.inference.ppca.loop`); this module re-exports its public names.
The representation fitted is passed to :func:`fit_ppca` and only used through
:class:`~cryoscape.models.representation.LinearInLatent`.
"""

from __future__ import annotations

from cryoscape.inference.ppca.checkpoint import EMState
from cryoscape.inference.ppca.estep import (CONTRAST_PRIOR_STD, MIN_CONTRAST, Posterior, augmented_moments,
                                            contrast_estimate, expected_residual, frequency_weights, image_terms,
                                            log_likelihood, posterior)
from cryoscape.inference.ppca.halves import half_set_fsc
from cryoscape.inference.ppca.loop import MIN_CONTRAST_STD, SIGMA2_FLOOR, fit_ppca
from cryoscape.inference.ppca.mstep import MStepAccumulator
from cryoscape.inference.ppca.result import PPCAResult
from cryoscape.inference.ppca.start import batch_inputs

__all__ = [
    "MIN_CONTRAST",
    "SIGMA2_FLOOR",
    "CONTRAST_PRIOR_STD",
    "MIN_CONTRAST_STD",
    "Posterior",
    "PPCAResult",
    "EMState",
    "frequency_weights",
    "image_terms",
    "posterior",
    "augmented_moments",
    "contrast_estimate",
    "expected_residual",
    "log_likelihood",
    "half_set_fsc",
    "MStepAccumulator",
    "fit_ppca",
    "batch_inputs",
]

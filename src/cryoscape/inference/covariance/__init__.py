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

Layout
------
* :mod:`.grid`: the ball of Fourier voxels and the image pixels (:class:`BallGrid`, :func:`ball_grid`);
* :mod:`.operators`: the sparse ``A_i`` of a batch (:class:`SliceOperator`, :func:`slice_operator`);
* :mod:`.statistics`: the one pass over the images (:func:`accumulate_statistics`) and the noise level;
* :mod:`.solvers`: the normal equations (:func:`pairwise_solve`, :func:`normal_operator`, :func:`cg_solve`);
* :mod:`.volumes`: principal volumes of a ``Σ`` (:func:`principal_volumes`, :func:`randomized_eigh`);
* :mod:`.estimate`: the dense driver (:func:`estimate_covariance`, :class:`CovarianceResult`);
* :mod:`.lowrank`: the column-sampled driver (:func:`low_rank_covariance`);
* :mod:`.latents`: particle coordinates along the volumes (:func:`project_latents`).
"""

from .estimate import CovarianceResult, estimate_covariance
from .grid import INTERPOLATIONS, BallGrid, ball_grid, pixel_values
from .latents import project_latents
from .lowrank import low_rank_covariance
from .operators import SliceOperator, slice_operator
from .solvers import CGInfo, cg_solve, normal_operator, pairwise_solve
from .statistics import CovarianceStatistics, accumulate_statistics, hermitian_fill, noise_from_residual_power
from .volumes import principal_volumes, randomized_eigh

# constants and private helpers, importable from here as from the former single module
from cryoscape.geometry.fourier import fftn_c  # noqa: F401
from .estimate import _check_particles, _mean_array, _radius  # noqa: F401
from .grid import _grid_on  # noqa: F401
from .lowrank import _column_solve, _low_rank_eigen, _shell_prior_extrapolated  # noqa: F401
from .operators import _scatter_rows, _transfer  # noqa: F401
from .solvers import PRIOR_FLOOR, _regulariser, _shell_prior  # noqa: F401
from .statistics import NOISE_BAND, _disc_shells, _gram_columns, _gram_rows, _noise  # noqa: F401
from .volumes import (GRAM_TOL, _finish_signs, _gram, _grid_profile, _place,  # noqa: F401
                      _real_orthonormal, _sample, _to_volumes, _weight_volume)

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

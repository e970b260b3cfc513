"""The covariance slice operator against the shared forward model (imaging.forward), and its adjoint.

``slice_operator(...).apply`` reads ball coefficients at ``round(Rᵀk)`` (nearest)
or tent-interpolates them (trilinear) on the ``D``-spaced grid, while
:func:`cryoscape.imaging.render` slices the grid-corrected FT padded to ``2D``.
The two agree exactly where the slice passes through grid points only: for the
24 rotations of the cube every ``Rᵀk`` is an integer voxel, and the padded FT
at even padded indices is the DFT of the pre-corrected volume. For general
poses both only approximate the continuous slice; the check there uses a
compact object and a tolerance measured for it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.geometry.fourier import fftn_c
from cryoscape.imaging import FourierProjector, grid_correction, render
from cryoscape.imaging._grid import slice_points
from cryoscape.imaging.ctf import ctf_from_freqs
from cryoscape.imaging.forward import transfer_half
from cryoscape.imaging.shift import phase_shift_at
from cryoscape.inference import covariance as cv
from cryoscape.models.linear import LinearHyperMolecule
from cryoscape.particles.particle_set import ParticleSet

D, APIX = 16, 2.0


def _cube_rotations() -> np.ndarray:
    """The 24 proper rotations that map the integer lattice onto itself (signed permutation matrices)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            M = np.zeros((3, 3))
            M[np.arange(3), perm] = signs
            if np.linalg.det(M) > 0:
                out.append(M)
    return np.array(out)


def _ctf(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    df = rng.uniform(5000, 15000, n)
    fields = {"defocus_u_A": df, "defocus_v_A": df * 0.95, "defocus_angle_deg": rng.uniform(0, 180, n),
              "voltage_kV": np.full(n, 300.0), "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}
    return {k: torch.as_tensor(v) for k, v in fields.items()}


def _poses(R: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(R), torch.as_tensor(rng.uniform(-3, 3, (len(R), 2))), _ctf(len(R), rng)


def _ball_coefficients(grid: cv.BallGrid, volume: torch.Tensor) -> torch.Tensor:
    """``fftn_c(volume)`` at the ball voxels ``[n]``."""
    return cv._sample(grid, fftn_c(volume, 3)[None], torch.arange(grid.n))[0]


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
def test_slice_operator_equals_the_forward_model_on_lattice_poses(interpolation):
    rng = np.random.default_rng(0)
    vol = torch.as_tensor(rng.standard_normal((D, D, D)))
    R, shifts, ctf = _poses(_cube_rotations(), seed=1)
    # the forward model divides by its trilinear profile before padding: render vol · g to slice vol's DFT
    g = grid_correction(D, 2.0, dtype=torch.float64)
    images = render(FourierProjector(vol * g, 2.0), R, shifts, ctf, APIX)
    grid = cv.ball_grid(D, 6.0, interpolation)  # trilinear voxels reach 6 + √3 < D/2
    got = cv.slice_operator(grid, R, shifts, ctf, APIX).apply(_ball_coefficients(grid, vol))
    ref = cv.pixel_values(images, grid.pix_index)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-11 * float(ref.abs().max()))


@pytest.mark.parametrize(("interpolation", "tol"), [("nearest", 0.15), ("trilinear", 0.05)])
def test_slice_operator_approximates_the_forward_model_on_general_poses(interpolation, tol):
    c = torch.arange(D, dtype=torch.float64) - D // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.exp(-(x ** 2 + y ** 2 + z ** 2) / 2) * (1 + 0.3 * x + 0.2 * y * z)  # compact: smooth FT
    R, shifts, ctf = _poses(Rotation.random(8, random_state=3).as_matrix(), seed=2)
    images = render(FourierProjector(vol, 2.0), R, shifts, ctf, APIX)
    grid = cv.ball_grid(D, 6.0, interpolation)
    coeffs = _ball_coefficients(grid, vol)
    ref = cv.pixel_values(images, grid.pix_index)
    err = lambda rot: float((cv.slice_operator(grid, rot, shifts, ctf, APIX).apply(coeffs) - ref).norm()
                            / ref.norm())
    # measured 0.106 (nearest) and 0.030 (trilinear); the transposed pose convention is worse (0.21, 0.18)
    assert err(R) < tol
    assert err(R.transpose(1, 2)) > 1.8 * err(R)


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
def test_apply_and_adjoint_are_adjoint(interpolation):
    rng = np.random.default_rng(4)
    R, shifts, ctf = _poses(Rotation.random(5, random_state=4).as_matrix(), seed=4)
    grid = cv.ball_grid(D, 5.5, interpolation)
    op = cv.slice_operator(grid, R, shifts, ctf, APIX)
    x = torch.as_tensor(rng.standard_normal((5, grid.n)) + 1j * rng.standard_normal((5, grid.n)))
    y = torch.as_tensor(rng.standard_normal((5, grid.P)) + 1j * rng.standard_normal((5, grid.P)))
    lhs = complex((op.apply(x).conj() * y).sum())
    rhs = complex((x.conj() * op.adjoint(y, grid.n)).sum())
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_transfer_equals_ctf_times_shift_phase_on_the_disc(dtype):
    """The operator's transfer (the forward model's, mirrored) against the direct formula at each pixel."""
    R, shifts, ctf = _poses(Rotation.random(6, random_state=5).as_matrix(), seed=5)
    grid = cv.ball_grid(D, 7.0, "nearest")
    kx, ky = (grid.kx / (D * APIX)).to(dtype), (grid.ky / (D * APIX)).to(dtype)
    direct = ctf_from_freqs(kx, ky, **{k: v.to(dtype) for k, v in ctf.items()}) * phase_shift_at(kx, ky, -shifts)
    op = cv.slice_operator(grid, R, shifts, ctf, APIX, dtype=dtype)
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(op.transfer.numpy(), direct.numpy(), rtol=0, atol=atol)
    # on the pixels of the forward model's half set it is that model's own transfer, bit for bit
    c, ph = transfer_half(D, APIX, shifts, ctf, dtype=dtype)
    half_pos = {int(f): i for i, f in enumerate(slice_points(D, True).full_index)}
    pairs = [(p, half_pos[int(f)]) for p, f in enumerate(grid.pix_index) if int(f) in half_pos]
    ours, theirs = zip(*pairs)
    np.testing.assert_array_equal(op.transfer[:, list(ours)].numpy(), (c * ph)[:, list(theirs)].numpy())
    plain = cv.slice_operator(grid, R, None, None, APIX, dtype=dtype).transfer
    assert plain.shape == (6, grid.P) and bool((plain == 1).all())


def test_statistics_subtract_the_rendered_mean_exactly():
    """Images rendered from the mean by the forward model leave no residual in the statistics."""
    rng = np.random.default_rng(6)
    n, Dm = 12, 8
    mean = torch.as_tensor(rng.standard_normal((Dm, Dm, Dm)))
    R, shifts, ctf = _poses(Rotation.random(n, random_state=6).as_matrix(), seed=6)
    images = render(FourierProjector(mean, 2.0), R, shifts, ctf, APIX)
    ps = ParticleSet.from_arrays(images.numpy(), R.numpy(), shifts.numpy(),
                                 ctf={k: v.numpy() for k, v in ctf.items()}, apix=APIX)
    grid = cv.ball_grid(Dm, 3.0, "nearest")
    stats = cv.accumulate_statistics(ps, mean.numpy(), grid, dtype=torch.float64)
    raw = cv.accumulate_statistics(ps, None, grid, dtype=torch.float64)  # no mean subtracted
    # the particle set stores float32 images: residuals at float32 rounding
    assert np.max(stats.residual_power / raw.residual_power) < 1e-10
    assert float(stats.num.abs().max()) < 1e-10 * float(raw.num.abs().max())


class _Template:
    """A linear-in-latent template that is not the concrete class: records what it is built with."""

    def __init__(self, box: int, latent_dim: int) -> None:
        self.inner = LinearHyperMolecule.empty(box, latent_dim)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def with_volumes(self, mean: torch.Tensor, components: torch.Tensor) -> LinearHyperMolecule:
        self.calls.append((mean, components))
        return self.inner.with_volumes(mean, components)


def test_project_latents_builds_its_model_from_the_template():
    rng = np.random.default_rng(7)
    n, Dm, K = 20, 8, 2
    R = Rotation.random(n, random_state=7).as_matrix().astype(np.float32)
    ps = ParticleSet.from_arrays(rng.standard_normal((n, Dm, Dm)).astype(np.float32), R, apix=APIX)
    mean = rng.standard_normal((Dm, Dm, Dm)).astype(np.float32)
    comps = rng.standard_normal((K, Dm, Dm, Dm)).astype(np.float32)
    evals = np.array([4.0, 1.0])
    template = _Template(Dm, K)
    lat, cov = cv.project_latents(ps, mean, comps, evals, 0.5, representation=template)
    (m_used, c_used), = template.calls
    np.testing.assert_array_equal(m_used.numpy(), mean)
    np.testing.assert_allclose(c_used.numpy(), comps * np.sqrt(evals)[:, None, None, None], rtol=1e-6)
    ref = cv.project_latents(ps, mean, comps, evals, 0.5, representation=LinearHyperMolecule.empty(Dm, K))
    np.testing.assert_array_equal(lat, ref[0])
    np.testing.assert_array_equal(cov, ref[1])
    assert lat.shape == (n, K) and cov.shape == (n, K, K)
    with pytest.raises(TypeError):
        cv.project_latents(ps, mean, comps, evals, 0.5)

"""Elastic-network modes against a finite-difference Hessian; analytic atom coefficients against drawn images;
the normal-mode representation against its own volumes and derivatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.errors import InputError
from cryoscape.imaging import FourierProjector, project_atoms
from cryoscape.imaging._grid import slice_points
from cryoscape.imaging.atoms_fourier import atom_coefficient_derivatives, atom_coefficients
from cryoscape.imaging.half_layout import image_to_half
from cryoscape.models import build_representation
from cryoscape.models.elastic_network import anm_energy, anm_hessian, normal_modes
from cryoscape.models.normal_modes import NormalModeModel


def _chain(n: int, seed: int) -> np.ndarray:
    """A compact random chain of ``n`` nodes 3.8 Å apart (Å)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    x = np.cumsum(steps, axis=0)
    return x - x.mean(0)


def test_hessian_equals_the_finite_difference_hessian_of_the_spring_energy() -> None:
    x0 = _chain(9, 0)
    cutoff = 9.0
    H = anm_hessian(x0, cutoff)
    n = 3 * len(x0)
    h = 1e-4
    fd = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            e = lambda di, dj: anm_energy((x0.reshape(-1) + di * h * np.eye(n)[i] + dj * h * np.eye(n)[j]).reshape(-1, 3),
                                          x0, cutoff)
            fd[i, j] = (e(1, 1) - e(1, -1) - e(-1, 1) + e(-1, -1)) / (4 * h * h)
    assert np.allclose(H, fd, atol=1e-5 * np.abs(H).max())


def test_modes_are_orthonormal_non_rigid_eigenvectors() -> None:
    x0 = _chain(20, 1)
    evals, modes = normal_modes(x0, 5, 10.0)
    H = anm_hessian(x0, 10.0)
    flat = modes.reshape(5, -1)
    assert np.allclose(flat @ flat.T, np.eye(5), atol=1e-10)
    assert np.allclose(H @ flat.T, flat.T * evals, atol=1e-8)
    assert np.all(np.diff(evals) >= 0) and evals[0] > 1e-6
    # orthogonal to the rigid motions: translations and small rotations cost no energy
    rot = Rotation.from_rotvec([0.0, 0.0, 1e-3]).as_matrix()
    assert anm_energy(x0 @ rot.T + 1.0, x0, 10.0) < 1e-12
    assert np.allclose(flat.reshape(5, -1, 3).sum(1), 0, atol=1e-10)


def test_a_network_that_falls_apart_is_refused() -> None:
    x = np.concatenate([_chain(6, 2), _chain(6, 3) + 100.0])
    with pytest.raises(InputError, match="raise --cutoff"):
        normal_modes(x, 3, 8.0)


def _atoms(n: int, seed: int, D: int, apix: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * (0.5 * D * apix)
    amps = 1 + 5 * torch.rand(n, generator=g, dtype=torch.float64)
    sig = apix * (1.0 + torch.rand(n, generator=g, dtype=torch.float64))
    return coords, amps, sig


@pytest.mark.parametrize("sigma_px, band, tol", [(1.0, 0.5, 1e-5), (1.5, 0.75, 1e-4)])
def test_analytic_coefficients_equal_the_fft_of_the_drawn_projection(sigma_px: float, band: float,
                                                                     tol: float) -> None:
    """Equal wherever the drawn image's aliases are negligible (below ``band`` of Nyquist for these widths)."""
    D, apix = 32, 2.0
    coords, amps, _ = _atoms(15, 0, D, apix)
    coords = coords * 0.6  # well inside the box: no mass outside the drawn image
    sig = torch.full((15,), sigma_px * apix, dtype=torch.float64)
    R = torch.tensor(Rotation.random(3, random_state=1).as_matrix())
    pts = slice_points(D, True)
    ref = image_to_half(project_atoms(coords, amps, sig, R, D, apix, truncate=None, dtype=torch.float64))
    ours = atom_coefficients(coords, amps, sig, R, D, apix, pts.kx, pts.ky)
    inside = (pts.kx**2 + pts.ky**2).sqrt() < band * D / 2
    err = (ours - ref)[:, inside].abs() / ref[:, inside].abs().max(dim=1, keepdim=True).values
    assert float(err.max()) < tol


def test_analytic_derivatives_equal_finite_differences() -> None:
    D, apix = 32, 2.0
    coords, amps, sig = _atoms(10, 2, D, apix)
    R = torch.tensor(Rotation.random(2, random_state=3).as_matrix())
    pts = slice_points(D, True)
    dirs = torch.randn(3, 10, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    J = atom_coefficient_derivatives(coords, amps, sig, R, D, apix, pts.kx, pts.ky, dirs)
    h = 1e-5
    for k in range(3):
        f = lambda t: atom_coefficients(coords + t * dirs[k], amps, sig, R, D, apix, pts.kx, pts.ky)
        fd = (f(h) - f(-h)) / (2 * h)
        assert torch.allclose(J[..., k], fd, atol=1e-6 * float(fd.abs().max()))


def _model(D: int = 32, apix: float = 2.0, K: int = 3) -> NormalModeModel:
    coords, amps, sig = _atoms(12, 5, D, apix)
    g = torch.Generator().manual_seed(6)
    owner = torch.arange(12) % 4  # four nodes: atoms 0..3 themselves
    omega = 0.05 * torch.randn(K, 4, 3, generator=g, dtype=torch.float64)
    vel = 0.5 * torch.randn(K, 4, 3, generator=g, dtype=torch.float64)
    rep = NormalModeModel(D, apix, 12, K, 4)
    rep.set_model(coords.numpy(), amps.numpy(), sig.numpy(), owner.numpy(), coords[:4].numpy(), omega.numpy(),
                  vel.numpy(), scale=2.0)
    return rep


def test_representation_slices_match_its_volumes_and_its_jacobian() -> None:
    rep = _model()
    R = torch.tensor(Rotation.random(2, random_state=7).as_matrix(), dtype=torch.float32)
    z = torch.tensor([[0.5, -1.0, 0.3], [0.0, 0.7, -0.2]])
    s = rep.slice_half(R, z).detach()
    pts = slice_points(rep.box, True)
    low = (pts.kx**2 + pts.ky**2).sqrt() < rep.box / 4
    for b in range(2):
        # exact against the drawn projection of the deformed atoms (where it has no aliases) ...
        drawn = image_to_half(project_atoms(rep.coordinates(z[b:b + 1])[0], rep.amplitudes, rep.sigmas_A,
                                            R[b:b + 1], rep.box, rep.apix, truncate=None)) * 2.0
        assert float((s[b, low] - drawn[0, low]).abs().max()) < 1e-4 * float(drawn.abs().max())
        # ... and consistent with its own volume through the Fourier-slice projector (interpolation error)
        vol = rep.volumes(z[b:b + 1])[0].double()
        ref = FourierProjector(vol).slice_half(R[b:b + 1].double()).reshape(-1)
        assert float((s[b].to(torch.complex128) - ref).norm() / ref.norm()) < 0.06
    ref0 = rep.reference_slices(R)
    assert torch.allclose(ref0, rep.slice_half(R, torch.zeros_like(z)).detach(), atol=1e-5 * float(ref0.abs().max()))
    J = rep.latent_jacobian(R, z)
    for k in range(3):
        e = torch.zeros_like(z)
        e[:, k] = 1e-2
        with torch.no_grad():
            fd = (rep.slice_half(R, z + e) - rep.slice_half(R, z - e)) / 2e-2
        assert float((J[..., k] - fd).abs().max()) < 1e-3 * float(fd.abs().max())


def test_representation_rebuilds_from_its_config_and_state() -> None:
    rep = _model()
    again = build_representation(rep.config())
    again.load_state_dict(rep.state_dict())
    R = torch.tensor(Rotation.random(1, random_state=8).as_matrix(), dtype=torch.float32)
    z = torch.tensor([[0.2, 0.1, -0.4]])
    assert torch.equal(again.slice_half(R, z), rep.slice_half(R, z))
    assert again.latent_dim == 3 and again.config()["kind"] == "normal-modes"


def test_blocks_move_rigidly_and_follow_the_linear_mode_at_small_amplitude() -> None:
    """Atoms of one block keep their distances at any amplitude; to first order they move along the mode."""
    from cryoscape.models.elastic_network import block_twists

    x0 = _chain(30, 9)
    _, modes = normal_modes(x0, 2, 10.0)
    omega, vel = block_twists(x0, modes * 3.0, radius_A=30.0)  # one block holding every node: a rigid body fit
    rep = NormalModeModel(64, 2.0, 30, 2, 30)
    rep.set_model(x0, np.ones(30), np.full(30, 2.0), np.zeros(30, dtype=np.int64), x0, omega, vel)
    # every atom moves with node 0's block: a rigid motion at any amplitude
    far = rep.coordinates(torch.tensor([[4.0, -3.0]]))[0].double().numpy()
    d0 = np.linalg.norm(x0[:, None] - x0[None], axis=-1)
    d1 = np.linalg.norm(far[:, None] - far[None], axis=-1)
    assert np.allclose(d0, d1, atol=1e-3)
    # small amplitude: velocity = the block's rigid fit, v + ω × (x − c)
    h = 1e-3
    step = (rep.coordinates(torch.tensor([[h, 0.0]])) - rep.coordinates(torch.tensor([[-h, 0.0]])))[0] / (2 * h)
    fit = vel[0, 0] + np.cross(omega[0, 0], x0 - x0[0])
    assert np.allclose(step.double().numpy(), fit, atol=2e-3)

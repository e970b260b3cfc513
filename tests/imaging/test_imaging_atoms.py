"""Gaussian-atom projector: geometry of a rotated point, agreement with the Fourier projector."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import FourierProjector, project_atoms, rasterize_atoms, render


def _centroid(img: torch.Tensor, half: int = 5) -> np.ndarray:
    """(x, y) intensity centroid in pixels from the centre, around the maximum."""
    D = img.shape[-1]
    iy, ix = np.unravel_index(int(img.argmax()), img.shape)
    win = img[iy - half: iy + half + 1, ix - half: ix + half + 1].clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(iy - half, iy + half + 1, dtype=img.dtype),
                            torch.arange(ix - half, ix + half + 1, dtype=img.dtype), indexing="ij")
    w = win.sum()
    return np.array([float((xs * win).sum() / w) - D // 2, float((ys * win).sum() / w) - D // 2])


def test_rotated_point_lands_at_R_c() -> None:
    D, apix, sigma = 64, 1.5, 1.5
    c = torch.tensor([[9.0, -6.0, 13.5]], dtype=torch.float64)  # (x, y, z) Å from the centre
    amp = torch.ones(1, dtype=torch.float64)
    vol = rasterize_atoms(c, amp, sigma, D, apix)
    # the raster puts the atom at voxel (z, y, x) = centre + c / apix
    iz, iy, ix = np.unravel_index(int(vol.argmax()), vol.shape)
    assert (ix - D // 2, iy - D // 2, iz - D // 2) == (6, -4, 9)
    R = torch.tensor(Rotation.from_euler("ZYZ", [[30, 50, -70], [200, 110, 15]], degrees=True)
                     .as_matrix().transpose(0, 2, 1).copy())
    expect = (R @ c[0]).numpy()[:, :2] / apix  # (x, y) px in the particle frame
    fourier = FourierProjector(vol).project(R)
    atoms = project_atoms(c, amp, sigma, R, D, apix)
    for b in range(2):
        assert np.allclose(_centroid(fourier[b]), expect[b], atol=0.05)
        assert np.allclose(_centroid(atoms[b]), expect[b], atol=0.05)
    # RELION origin o: the observed image is translated by -o
    o = torch.tensor([[4.5, -3.0], [-6.0, 1.5]], dtype=torch.float64)
    shifted = render(FourierProjector(vol), R, o, None, apix)
    shifted_atoms = project_atoms(c, amp, sigma, R, D, apix, shifts_A=o)
    for b in range(2):
        target = expect[b] - o[b].numpy() / apix
        assert np.allclose(_centroid(shifted[b]), target, atol=0.05)
        assert np.allclose(_centroid(shifted_atoms[b]), target, atol=0.05)


def test_project_atoms_matches_fourier_projection_of_raster() -> None:
    D, apix = 48, 2.0
    rng = np.random.default_rng(0)
    A = 400
    coords = torch.tensor(rng.normal(0, 7.0, (A, 3)))
    amp = torch.tensor(rng.uniform(0.5, 1.5, A))
    sigma = torch.full((A,), 1.5 * apix, dtype=torch.float64)
    R = torch.tensor(Rotation.random(12, random_state=1).as_matrix())
    direct = project_atoms(coords, amp, sigma, R, D, apix)
    vol = rasterize_atoms(coords, amp, sigma, D, apix)
    assert abs(float(vol.sum()) - float(amp.sum())) < 1e-6 * float(amp.sum())
    via_fourier = FourierProjector(vol).project(R)
    assert float((direct - via_fourier).norm() / direct.norm()) < 0.02
    # identity: the raster summed along z is exactly the (pixel-integrated) projection
    eye = torch.eye(3, dtype=torch.float64)[None]
    assert torch.allclose(project_atoms(coords, amp, sigma, eye, D, apix)[0], vol.sum(0), atol=1e-5)
    # windowed profiles equal full evaluation
    full = project_atoms(coords, amp, sigma, R, D, apix, truncate=None)
    assert torch.allclose(direct, full, atol=1e-6 * float(full.abs().max()))


def test_per_image_coordinates_and_gradients() -> None:
    D, apix = 32, 2.0
    g = torch.Generator().manual_seed(0)
    coords = (torch.randn(3, 20, 3, generator=g, dtype=torch.float64) * 5).requires_grad_(True)
    amp = torch.ones(3, 20, dtype=torch.float64)
    R = torch.tensor(Rotation.random(3, random_state=2).as_matrix())
    imgs = project_atoms(coords, amp, 3.0, R, D, apix, batch_size=2)
    one = project_atoms(coords[1].detach(), amp[1], 3.0, R[1:2], D, apix)
    assert imgs.shape == (3, D, D)
    assert torch.allclose(imgs[1], one[0])
    imgs.pow(2).sum().backward()
    assert coords.grad is not None and torch.isfinite(coords.grad).all() and coords.grad.abs().sum() > 0

"""The neural hyper-molecule: encodings, Hermitian symmetry, slices against the shared projector, encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.geometry.rotations import random_rotations
from cryoscape.imaging import FourierProjector, extract_slices_half, padded_volume_ft
from cryoscape.imaging._grid import slice_points
from cryoscape.imaging.projector import half_to_full, half_to_image, image_to_half
from cryoscape.inference.vae import fit_points, rotation_correction
from cryoscape.models.encoder import CNNEncoder, MLPEncoder
from cryoscape.models.neural import (
    GaussianEncoding,
    GeometricEncoding,
    NeuralHyperMolecule,
    build_decoder,
    canonical_sign,
    decoder_spec,
)

D = 16


def _decoder(pe: str = "geometric", latent_dim: int = 3, hidden: int = 32, seed: int = 0) -> NeuralHyperMolecule:
    torch.manual_seed(seed)
    return build_decoder(decoder_spec(D, latent_dim, hidden=hidden, layers=3, pe=pe, pe_dim=6))


def _lattice_rotations() -> torch.Tensor:
    """Proper rotations mapping the integer lattice onto itself, several with R ≠ Rᵀ."""
    mats = [np.eye(3), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
            [[1, 0, 0], [0, 0, -1], [0, 1, 0]], [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [[0, 1, 0], [0, 0, 1], [1, 0, 0]]]
    return torch.tensor(np.asarray(mats, dtype=np.float64), dtype=torch.float32)


# ------------------------------------------------------------------ encodings
def test_geometric_encoding_matches_its_formula() -> None:
    enc = GeometricEncoding(4, 0.5, 8.0)
    u = torch.tensor([[0.1, -0.2, 0.3]])
    radii = 0.5 * (8.0 / 0.5) ** (np.arange(4) / 3)  # 0.5, 1.26, 3.17, 8
    arg = 2 * math.pi * np.concatenate([radii * 0.1, radii * -0.2, radii * 0.3])
    expected = np.concatenate([np.sin(arg), np.cos(arg)])
    np.testing.assert_allclose(enc(u)[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert enc.out_dim == 24


def test_gaussian_encoding_is_seeded_and_saved_with_the_weights() -> None:
    a, b, c = GaussianEncoding(10, 2.0, seed=3), GaussianEncoding(10, 2.0, seed=3), GaussianEncoding(10, 2.0, seed=4)
    assert torch.equal(a.B, b.B) and not torch.equal(a.B, c.B)
    assert float(a.B.std() / (2 * math.pi)) == pytest.approx(2.0, rel=0.5)
    u = torch.rand(5, 3) - 0.5
    arg = 2 * math.pi * (u.double() @ (a.B.double() / (2 * math.pi)).T)
    np.testing.assert_allclose(a(u).numpy(), torch.cat([arg.sin(), arg.cos()], -1).numpy(), atol=1e-5)
    m1, m2 = _decoder("gaussian", seed=1), _decoder("gaussian", seed=2)
    m2.encoding.B.mul_(0)
    m2.load_state_dict(m1.state_dict())
    assert torch.equal(m1.encoding.B, m2.encoding.B)


# ------------------------------------------------------------------ symmetry
@pytest.mark.parametrize("pe", ["geometric", "gaussian"])
def test_decoder_is_hermitian(pe: str) -> None:
    m = _decoder(pe)
    g = torch.Generator().manual_seed(0)
    q = (torch.rand(1, 200, 3, generator=g) - 0.5) * D
    q[0, :20, 2] = 0  # the plane qz = 0 ...
    q[0, 20:30, 1:] = 0  # ... and the axis qy = qz = 0 are where the canonical half space is split
    q[0, 30] = 0
    z = torch.randn(1, 3, generator=g)
    with torch.no_grad():
        v, v_neg = m.evaluate(q, z), m.evaluate(-q, z)
    torch.testing.assert_close(v_neg, v.conj(), rtol=0, atol=0)
    assert float(v[0, 30].imag) == 0.0  # DC is real
    assert float(v.imag.abs().max()) > 1e-3  # not trivially real


def test_canonical_sign_splits_space_in_two_halves() -> None:
    f = torch.arange(-3, 4, dtype=torch.float32)
    q = torch.stack(torch.meshgrid(f, f, f, indexing="ij"), -1).reshape(-1, 3)
    s, s_neg = canonical_sign(q), canonical_sign(-q)
    nonzero = (q != 0).any(-1)
    assert torch.all(s[nonzero] == -s_neg[nonzero])  # exactly one of q, -q is canonical
    assert s[~nonzero].item() == 1.0


def test_full_volume_is_real_and_its_dft_is_the_decoder() -> None:
    m = _decoder()
    z = torch.randn(3)
    ft = m.volume_ft(z)
    vol = m.volume(z, scale=1.0)
    back = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(vol.double())))
    torch.testing.assert_close(back, ft.to(torch.complex128), rtol=0, atol=1e-4 * float(ft.abs().max()))
    f = torch.arange(D, dtype=torch.float32) - D // 2
    gz, gy, gx = torch.meshgrid(f, f, f, indexing="ij")
    q = torch.stack([gx, gy, gz], -1).reshape(1, -1, 3)
    inside = (4 * (q[0] ** 2).sum(-1) < D * D)
    with torch.no_grad():
        direct = m.evaluate(q[:, inside], z[None])[0]
    torch.testing.assert_close(ft.reshape(-1)[inside], direct, rtol=0, atol=1e-6)
    assert torch.all(ft.reshape(-1)[~inside] == 0)
    low = m.volume_ft(z, max_freq=0.5).reshape(-1)
    r2 = (q[0] ** 2).sum(-1)
    assert torch.all(low[r2 >= (D / 4) ** 2] == 0)
    torch.testing.assert_close(low[r2 < (D / 4) ** 2], ft.reshape(-1)[r2 < (D / 4) ** 2])


# ------------------------------------------------------------------ slices vs the shared projector
def test_slices_equal_the_projector_slices_of_the_full_volume_on_lattice_rotations() -> None:
    """Where ``Rᵀ k`` lands on the grid, trilinear interpolation is exact: the shared projector's
    slices of the decoder's volume (without grid correction) equal the decoder's slices."""
    m = _decoder()
    z = torch.randn(3)
    R = _lattice_rotations()
    with torch.no_grad():
        s = m.slice_half(R, z.expand(len(R), -1))
    vol = m.volume(z).double()
    ref = extract_slices_half(padded_volume_ft(vol, 2.0, correct=False), R.double(), D, 2.0)
    torch.testing.assert_close(s.to(torch.complex128), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_slices_agree_with_the_fourier_projector_for_a_fitted_compact_volume() -> None:
    """A decoder fitted to a compact volume is smooth, so its slices at random rotations agree with
    :class:`FourierProjector` slices of its own full volume; the transposed rotation convention does not."""
    torch.manual_seed(0)
    f = torch.arange(D, dtype=torch.float32) - D // 2
    zz, yy, xx = torch.meshgrid(f, f, f, indexing="ij")
    target = torch.exp(-((xx - 2) ** 2 + yy ** 2 + (zz + 1) ** 2) / 4) + 0.6 * torch.exp(-((xx + 2) ** 2 + (yy - 2) ** 2 + zz ** 2) / 3)
    proj = FourierProjector(target, 3.0)
    m = build_decoder(decoder_spec(D, 0, hidden=48, layers=3, pe_max_px=D / 8))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    for _ in range(200):
        R = torch.as_tensor(random_rotations(16, rng), dtype=torch.float32)
        loss = ((m.slice_half(R) - proj.slice_half(R)).abs() ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    R = torch.as_tensor(random_rotations(20, np.random.default_rng(0)), dtype=torch.float32)
    with torch.no_grad():
        s = m.slice_half(R)
    vol = m.volume()
    rel = lambda ref: float((s - ref).abs().norm() / ref.abs().norm())
    assert rel(FourierProjector(vol, 3.0).slice_half(R)) < 0.08
    assert rel(FourierProjector(vol, 3.0).slice_half(R.transpose(1, 2))) > 0.3


def test_slice_on_a_subset_of_points_is_the_subset_of_the_slice() -> None:
    m = _decoder()
    R = torch.as_tensor(random_rotations(4, np.random.default_rng(2)), dtype=torch.float32)
    z = torch.randn(4, 3)
    sub = fit_points(D, max_freq=0.5).fit
    with torch.no_grad():
        torch.testing.assert_close(m.slice_half(R, z, points=sub), m.slice_half(R, z)[:, sub])


def test_hermitian_weighted_half_set_error_equals_the_full_disc_error() -> None:
    pts = fit_points(D)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, slice_points(D).n, dtype=torch.complex64, generator=g)
    b = torch.randn(3, slice_points(D).n, dtype=torch.complex64, generator=g)
    a[:, 0], b[:, 0] = a[:, 0].real, b[:, 0].real  # DC of a real image is real
    half = ((a - b).abs() ** 2 * pts.weights).sum(-1)
    full = ((half_to_full(a, D) - half_to_full(b, D)).abs() ** 2).sum((-1, -2))
    torch.testing.assert_close(half, full, rtol=1e-5, atol=0)
    assert pts.n_disc == pytest.approx(float((4 * ((torch.arange(D) - D // 2)[:, None] ** 2 + (torch.arange(D) - D // 2) ** 2) < D * D).sum()))


# ------------------------------------------------------------------ latent Jacobian, pose corrections, encoders
def test_latent_jacobian_matches_autograd() -> None:
    m = _decoder(latent_dim=2)
    R = torch.as_tensor(random_rotations(2, np.random.default_rng(3)), dtype=torch.float32)
    z = torch.randn(2, 2)
    pts = fit_points(D, 0.6).fit
    J = m.latent_jacobian(R, z, pts)  # [B, P, d]
    for b in range(2):
        f = lambda zz: torch.view_as_real(m.slice_half(R[b:b + 1], zz[None], points=pts)[0])
        ref = torch.autograd.functional.jacobian(f, z[b])  # [P, 2, d]
        torch.testing.assert_close(torch.view_as_real(J[b]).permute(0, 2, 1), ref, rtol=1e-4, atol=1e-5)


def test_rotation_correction_is_rodrigues() -> None:
    w = torch.tensor([[0.3, -0.2, 0.5], [1e-6, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    R = rotation_correction(w)
    ref = Rotation.from_rotvec(w.numpy()).as_matrix()
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-12)
    w0 = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    rotation_correction(w0)[0, 0, 1].backward()
    assert torch.isfinite(w0.grad).all() and w0.grad.abs().sum() > 0  # d R01 / d ω_z = -1


def test_encoders_give_a_latent_distribution_per_image() -> None:
    pts = fit_points(D, encoder_max_freq=0.5).encoder
    y = torch.randn(5, pts.numel(), dtype=torch.complex64)
    for enc in (MLPEncoder(pts.numel(), 3, hidden=16, layers=2), CNNEncoder(D, pts, 3, hidden=16, channels=4)):
        mu, logvar = enc(y)
        assert mu.shape == logvar.shape == (5, 3) and torch.isfinite(mu).all()


def test_cnn_encoder_sees_the_image_rebuilt_from_its_half_set_values() -> None:
    pts = fit_points(D).encoder  # the whole half set
    img = half_to_image(torch.randn(2, slice_points(D).n, dtype=torch.complex64), D)  # band-limited real images
    enc = CNNEncoder(D, pts, 2)
    torch.testing.assert_close(enc._image(image_to_half(img)[:, pts]) * D, img, rtol=1e-4, atol=1e-4)


def test_model_images_and_encoder_residual_follow_the_shared_forward_model() -> None:
    """Noise-free images rendered from ``V₀`` with the shared forward model (CTF, shifts) are reproduced
    exactly by a decoder whose network is zero, and the encoder's residual input is zero."""
    from cryoscape.imaging.forward import render
    from cryoscape.inference.vae import LatentModel, ParticleBatches, batch_loss
    from cryoscape.particles import ParticleSet

    apix, n = 3.0, 6
    f = torch.arange(D, dtype=torch.float32) - D // 2
    zz, yy, xx = torch.meshgrid(f, f, f, indexing="ij")
    vol = torch.exp(-((xx - 1) ** 2 + yy ** 2 + (zz + 2) ** 2) / 5)
    rng = np.random.default_rng(0)
    R = random_rotations(n, rng)
    shifts = rng.uniform(-4, 4, (n, 2))
    dfu = rng.uniform(8000, 20000, n)
    ctf = {"defocus_u_A": dfu, "defocus_v_A": dfu - 300, "defocus_angle_deg": rng.uniform(0, 180, n),
           "voltage_kV": np.full(n, 300.0), "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}
    imgs = render(FourierProjector(vol, 2.0), torch.as_tensor(R, dtype=torch.float32),
                  torch.as_tensor(shifts, dtype=torch.float32), {k: torch.as_tensor(v) for k, v in ctf.items()}, apix)
    ps = ParticleSet.from_arrays(imgs.numpy(), R, shifts, ctf=ctf, apix=apix)
    scale = 7.0
    decoder = build_decoder(decoder_spec(D, 2, hidden=8, layers=1, pe_dim=2, base=True))
    decoder.set_base(vol / scale)
    model = LatentModel(decoder, MLPEncoder(fit_points(D).encoder.numel(), 2, 8, 1, pose=True), n)
    data = ParticleBatches(ps, fit_points(D, 1.0, 1.0), scale, encoder_phase_flip=True, encoder_residual=True)
    batch = data.batch(np.arange(n))
    y_res, pose = data.encoder_input(decoder, batch)
    assert float(y_res.abs().max()) < 1e-4 * float(batch.y_enc.abs().max())
    torch.testing.assert_close(pose, batch.R[:, :2].reshape(n, 6))
    loss, parts = batch_loss(model, data, batch, beta=0.0, sample=False)
    assert parts["recon"] < 1e-9 * float((batch.y.abs() ** 2).mean())

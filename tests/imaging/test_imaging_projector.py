"""Fourier-slice projector: adjointness, accuracy against an exact NUFFT, autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import (
    backproject_images,
    render,
    FourierProjector,
    complete_channels,
    extract_slices,
    grid_correction,
    insert_half,
    insert_slices,
    insert_weights,
    padded_volume_ft,
    wiener_volume,
)
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.imaging._grid import slice_points


def _rots(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(Rotation.random(n, random_state=seed).as_matrix(), dtype=dtype)


def _blobs(D: int, centres_px, sigma_px: float, dtype=torch.float64) -> torch.Tensor:
    c = torch.arange(D, dtype=dtype) - D // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(D, D, D, dtype=dtype)
    for cx, cy, cz in centres_px:
        vol += torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma_px**2))
    return vol


def _cdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.conj() * b).sum()


@pytest.mark.parametrize("oversampling", [1.0, 2.0])
def test_adjoint_full_disc(oversampling: float) -> None:
    D, B = 32, 6
    g = torch.Generator().manual_seed(1)
    M = padded_volume_ft(torch.zeros(D, D, D, dtype=torch.float64), oversampling).shape[0]
    x = torch.complex(torch.randn(M, M, M, generator=g, dtype=torch.float64),
                      torch.randn(M, M, M, generator=g, dtype=torch.float64))
    y = torch.complex(torch.randn(B, D, D, generator=g, dtype=torch.float64),
                      torch.randn(B, D, D, generator=g, dtype=torch.float64))
    R = _rots(B, 2)
    Px = extract_slices(x, R, D, oversampling, hermitian=False)
    Pty = insert_slices(y, R, D, oversampling, hermitian=False)
    lhs, rhs = _cdot(Px, y), _cdot(x, Pty)
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


def test_adjoint_hermitian_half_plane() -> None:
    """Half-plane extraction/insertion equal the full versions on real data, and are adjoint."""
    D, B, s = 32, 5, 2.0
    g = torch.Generator().manual_seed(3)
    x = padded_volume_ft(torch.randn(D, D, D, generator=g, dtype=torch.float64), s)
    y = fftn_c(torch.randn(B, D, D, generator=g, dtype=torch.float64), 2)
    R = _rots(B, 4)
    Px_h = extract_slices(x, R, D, s, hermitian=True)
    Px_f = extract_slices(x, R, D, s, hermitian=False)
    assert torch.allclose(Px_h, Px_f, atol=1e-9 * Px_f.abs().max())
    Pty_h = insert_slices(y, R, D, s, hermitian=True)
    Pty_f = insert_slices(y, R, D, s, hermitian=False)
    assert torch.allclose(Pty_h, Pty_f, atol=1e-9 * Pty_f.abs().max())
    lhs, rhs = _cdot(Px_h, y), _cdot(x, Pty_h)
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    # real weights and the fused channels-first accumulator agree with the complex path
    w = y.abs() ** 2
    W_h = insert_weights(w, R, D, s)
    W_f = insert_weights(w, R, D, s, hermitian=False)
    assert torch.allclose(W_h, W_f, atol=1e-9 * W_f.abs().max())
    pts = slice_points(D, True)
    yh = y.reshape(B, -1)[:, pts.full_index]
    vals = torch.stack([yh.real, yh.imag, w.reshape(B, -1)[:, pts.full_index]], -1)
    acc = complete_channels(insert_half(vals, R, D, s))
    assert torch.allclose(torch.complex(acc[0], acc[1]), Pty_f, atol=1e-9 * Pty_f.abs().max())
    assert torch.allclose(acc[2], W_f, atol=1e-9 * W_f.abs().max())


def test_projection_matches_exact_nufft() -> None:
    finufft = pytest.importorskip("finufft")
    D, B = 64, 6
    rng = np.random.default_rng(0)
    vol = _blobs(D, rng.uniform(-6, 6, (5, 3)), 2.5)
    R = _rots(B, 1)
    pts = slice_points(D, half=False)
    k = torch.stack([pts.kx.double(), pts.ky.double()], -1)  # [P, 2] cycles per box
    q = torch.einsum("pi,bij->bpj", k, R[:, :2, :]).numpy()  # Rᵀ(kx, ky, 0), (x, y, z)
    om = 2 * np.pi * q / D
    # finufft's uniform modes run -D/2..D/2-1 on each axis = our centred voxel indices
    ref = finufft.nufft3d2(om[..., 2].ravel(), om[..., 1].ravel(), om[..., 0].ravel(),
                           vol.numpy().astype(np.complex128), isign=-1, eps=1e-12).reshape(B, -1)
    fp = FourierProjector(vol)
    got = fp.slice(R).reshape(B, -1)[:, pts.full_index].numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.01
    # outside the Nyquist circle the slice is zero
    out_mask = torch.ones(D * D, dtype=torch.bool)
    out_mask[pts.full_index] = False
    assert fp.slice(R).reshape(B, -1)[:, out_mask].abs().max() == 0
    # real space: the projection equals the inverse FT of the exact slice
    full = np.zeros((B, D * D), complex)
    full[:, pts.full_index] = ref
    ref_img = ifftn_c(torch.tensor(full).reshape(B, D, D), 2).real
    img = fp.project(R)
    assert ((img - ref_img).norm() / ref_img.norm()) < 0.01
    # float32 by default for arrays, batch dims preserved
    fp32 = FourierProjector(vol.numpy())
    out32 = fp32.project(R.numpy().reshape(2, 3, 3, 3))
    assert out32.dtype == torch.float32 and out32.shape == (2, 3, D, D)
    assert torch.allclose(out32.reshape(B, D, D).double(), img, atol=1e-4 * img.abs().max())


def test_identity_projection_is_sum_along_z() -> None:
    """R = I samples only grid points: the result is the sum along z of V / grid_correction."""
    D = 32
    vol = _blobs(D, [(2, -1, 3), (-3, 2, -2)], 2.0)
    fp = FourierProjector(vol)
    img = fp.project(torch.eye(3, dtype=torch.float64)[None])[0]
    corrected = (vol / grid_correction(D, 2.0, dtype=torch.float64)).sum(0)
    band = ifftn_c(fftn_c(corrected, 2) * _disc(D), 2).real
    assert torch.allclose(img, band, atol=1e-10 * band.abs().max())
    # and within 2 % of the plain sum for a compact object near the centre
    assert ((img - vol.sum(0)).norm() / vol.sum(0).norm()) < 0.02


def _disc(D: int) -> torch.Tensor:
    c = torch.arange(D) - D // 2
    return ((4 * (c[:, None] ** 2 + c[None, :] ** 2)) < D * D).to(torch.float64)


def test_autograd_through_slice() -> None:
    D = 16
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(D, D, D, generator=g, dtype=torch.float64, requires_grad=True)
    R = _rots(3, 5).requires_grad_(True)
    loss = FourierProjector(vol).slice(R).abs().pow(2).sum() + FourierProjector(vol).project(R).pow(2).sum()
    loss.backward()
    assert vol.grad is not None and torch.isfinite(vol.grad).all() and vol.grad.abs().sum() > 0
    assert R.grad is not None and torch.isfinite(R.grad).all()

    D = 8
    v = torch.randn(D, D, D, generator=g, dtype=torch.float64, requires_grad=True)
    Rs = _rots(2, 6)
    assert torch.autograd.gradcheck(lambda t: FourierProjector(t).project(Rs), (v,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_wiener_reconstruction_roundtrip() -> None:
    """Noise-free projections from many views backproject to the original volume."""
    D, s = 32, 2.0
    vol = _blobs(D, [(3, -2, 1), (-4, 3, -2), (0, 5, 4)], 2.0)
    fp = FourierProjector(vol)
    R = _rots(600, 7)
    # plain adjoint (insert_slices/insert_weights): D-spaced samples only
    slices = fp.slice(R)
    num = insert_slices(slices, R, D, s)
    den = insert_weights(torch.ones(D, D, dtype=torch.float64).expand(len(R), D, D), R, D, s)
    rec = wiener_volume(num, den, 1e-3, D, s)
    assert rec.shape == (D, D, D)
    assert ((rec - vol).norm() / vol.norm()) < 0.06
    # reconstruction backprojector with shifts and CTF (finely sampled low frequencies)
    apix = 4.0
    g = torch.Generator().manual_seed(0)
    shifts = (torch.rand(len(R), 2, generator=g, dtype=torch.float64) - 0.5) * 8
    ctf = dict(defocus_u_A=torch.full((len(R),), 15000.0, dtype=torch.float64),
               defocus_v_A=torch.full((len(R),), 13000.0, dtype=torch.float64),
               defocus_angle_deg=torch.full((len(R),), 30.0, dtype=torch.float64),
               voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    images = render(fp, R, shifts, ctf, apix)
    acc = None
    for a in range(0, len(R), 300):
        sub = {k: (v[a:a + 300] if isinstance(v, torch.Tensor) else v) for k, v in ctf.items()}
        acc = backproject_images(images[a:a + 300], R[a:a + 300], shifts[a:a + 300], sub, apix, s, out=acc)
    acc = complete_channels(acc)
    rec = wiener_volume(torch.complex(acc[0], acc[1]), acc[2], 1e-2, D, s)
    assert ((rec - vol).norm() / vol.norm()) < 0.04
    assert abs(float(rec.sum() / vol.sum()) - 1) < 0.06


@pytest.mark.parametrize("oversampling", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("regulariser", [0.3, [0.5, 0.2, 0.1, 0.05]])
@pytest.mark.parametrize("grid", ["M", "N"])
def test_wiener_volume_matches_a_full_grid_reference(full_grid_wiener, oversampling, regulariser, grid) -> None:
    """The half-grid inverse real FFT equals complex division and inverse FFT on the whole grid."""
    D = 16
    g = torch.Generator().manual_seed(11)
    num = padded_volume_ft(torch.randn(D, D, D, generator=g, dtype=torch.float64), oversampling)
    den = padded_volume_ft(_blobs(D, [(1, -2, 3)], 1.5), oversampling).abs() ** 2
    den[den < 1e-3 * den.max()] = 0  # with a zero regulariser these voxels give 0, not inf
    if grid == "N":
        num, den = num[:-1, :-1, :-1], den[:-1, :-1, :-1]
    for reg in (regulariser, 0.0):
        ours = wiener_volume(num, den, reg, D, oversampling)
        ref = full_grid_wiener(num, den, reg, D, oversampling)
        assert ours.shape == (D, D, D) and ours.dtype == torch.float64
        assert torch.isfinite(ours).all()
        assert (ours - ref).abs().max() < 1e-10 * ref.abs().max()
    # float32 accumulators with a per-shell tensor
    ours = wiener_volume(num.to(torch.complex64), den.float(), torch.tensor([0.4, 0.1]), D, oversampling)
    ref = full_grid_wiener(num, den, [0.4, 0.1], D, oversampling)
    assert ours.dtype == torch.float32
    assert (ours.double() - ref).abs().max() < 1e-5 * ref.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    D = 32
    vol = _blobs(D, [(3, -2, 1)], 2.0, dtype=torch.float32)
    R = _rots(4, 8, torch.float32)
    cpu = FourierProjector(vol).project(R)
    gpu = FourierProjector(vol.cuda()).project(R.cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4 * cpu.abs().max())


def test_stacked_extraction_at_a_subset_equals_one_volume_at_a_time() -> None:
    """``extract_slices_half_stack`` against ``extract_slices_half`` per volume, indexed afterwards; and its
    gradient against the sum of the single-volume gradients (autograd through the same samples)."""
    from cryoscape.imaging import extract_slices_half, extract_slices_half_stack

    D = 16
    gen = torch.Generator().manual_seed(4)
    fts = torch.stack([padded_volume_ft(torch.randn(D, D, D, generator=gen, dtype=torch.float64), 2.0)
                       for _ in range(3)])
    R = _rots(9, seed=6)
    points = torch.tensor([0, 5, 17, 40, 3, 90])
    ref = torch.stack([extract_slices_half(f, R, D, 2.0) for f in fts], dim=1)
    torch.testing.assert_close(extract_slices_half_stack(fts, R, D, 2.0), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(extract_slices_half_stack(fts, R, D, 2.0, points), ref[..., points],
                               rtol=1e-12, atol=1e-12)
    weights = torch.randn(9, 3, points.numel(), generator=gen, dtype=torch.complex128)
    a = fts.clone().requires_grad_(True)
    (extract_slices_half_stack(a, R, D, 2.0, points) * weights).real.sum().backward()
    b = fts.clone().requires_grad_(True)
    (torch.stack([extract_slices_half(f, R, D, 2.0) for f in b], dim=1)[..., points] * weights).real.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_band_ft_is_the_central_cube_of_the_padded_ft_and_slices_alike() -> None:
    """``padded_volume_ft_band`` (separable DFT matrices) against the FFT path, and slices read from it."""
    from cryoscape.imaging import extract_slices_half_stack
    from cryoscape.imaging.padding import padded_volume_ft_band

    D, L = 16, 6
    N = 2 * D
    gen = torch.Generator().manual_seed(8)
    vols = torch.randn(2, D, D, D, generator=gen, dtype=torch.float64)
    full = torch.stack([padded_volume_ft(v, 2.0) for v in vols])
    band = padded_volume_ft_band(vols, 2.0, L)
    centre = slice(N // 2 - L, N // 2 + L + 1)
    torch.testing.assert_close(band, full[:, centre, centre, centre], rtol=1e-10, atol=1e-9)
    pts = slice_points(D, True)
    inside = torch.nonzero(torch.sqrt(pts.kx ** 2 + pts.ky ** 2) * N / D <= L - 1).reshape(-1)
    R = _rots(5, seed=2)
    torch.testing.assert_close(extract_slices_half_stack(band, R, D, 2.0, inside, band=L),
                               extract_slices_half_stack(full, R, D, 2.0, inside), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="too narrow"):
        extract_slices_half_stack(band, R, D, 2.0, None, band=L)


def test_trainable_linear_slices_match_the_cached_full_ft_path() -> None:
    from cryoscape.models.linear import LinearHyperMolecule

    D = 16
    gen = torch.Generator().manual_seed(9)
    model = LinearHyperMolecule(torch.randn(D, D, D, generator=gen, dtype=torch.float64),
                                torch.randn(3, D, D, D, generator=gen, dtype=torch.float64), trainable=True)
    pts = slice_points(D, True)
    points = torch.nonzero(torch.sqrt(pts.kx ** 2 + pts.ky ** 2) < 2.5).reshape(-1)
    R, z = _rots(4, seed=3), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    trained = model.slice_half(R, z, points=points)
    assert trained.requires_grad and model._band(points) is not None
    with torch.no_grad():
        cached = model.slice_half(R, z, points=points)
    torch.testing.assert_close(trained.detach(), cached, rtol=1e-9, atol=1e-9)

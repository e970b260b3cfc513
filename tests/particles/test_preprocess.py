"""Fourier cropping/padding, background normalisation, contrast inversion, particle downsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c, ifftn_c, radial_shell_index
from cryoscape.geometry.masks import circle_mask
from cryoscape.particles import preprocess as P


def _band_limited(rng: np.random.Generator, shape: tuple[int, ...], D: int, ndim: int, max_shell: int) -> np.ndarray:
    W = fftn_c(torch.as_tensor(rng.standard_normal(shape)), ndim)
    W = W * (radial_shell_index(D, ndim) <= max_shell)
    return ifftn_c(W, ndim).real.numpy()


def _gaussian(D: int, sigma_px: float, ndim: int, centre_offset: float = 0.0) -> np.ndarray:
    c = np.arange(D) - D // 2 - centre_offset
    grids = np.meshgrid(*([c] * ndim), indexing="ij")
    return np.exp(-sum(g**2 for g in grids) / (2 * sigma_px**2))


def test_crop_then_pad_reproduces_band_limited_images() -> None:
    rng = np.random.default_rng(0)
    D, small = 64, 32
    imgs = _band_limited(rng, (5, D, D), D, 2, max_shell=small // 2 - 1)
    cropped = P.fourier_crop_images(imgs, small)
    assert cropped.shape == (5, small, small) and isinstance(cropped, np.ndarray)
    back = P.fourier_pad_images(cropped, D)
    np.testing.assert_allclose(back, imgs, atol=1e-10 * np.abs(imgs).max())
    # The cropped image samples the same function on a coarser grid: every other pixel.
    np.testing.assert_allclose(cropped, imgs[:, ::2, ::2], atol=1e-10 * np.abs(imgs).max())


def test_crop_volume_round_trip_and_centre() -> None:
    rng = np.random.default_rng(1)
    D, small = 32, 16
    vol = _band_limited(rng, (D, D, D), D, 3, max_shell=7)
    cropped = P.fourier_crop_volume(vol, small)
    assert cropped.shape == (small,) * 3
    np.testing.assert_allclose(P.fourier_pad_volume(cropped, D), vol, atol=1e-9)
    # Centre voxel D//2 maps to centre voxel small//2.
    assert cropped[small // 2, small // 2, small // 2] == pytest.approx(vol[D // 2, D // 2, D // 2])


@pytest.mark.parametrize("ndim", [2, 3])
def test_gaussian_blob_scale_preserved(ndim: int) -> None:
    D, small, sigma = 64, 32, 4.0
    blob = _gaussian(D, sigma, ndim).astype(np.float32)
    crop = P.fourier_crop_images(blob, small) if ndim == 2 else P.fourier_crop_volume(blob, small)
    assert crop.dtype == np.float32
    assert crop.max() == pytest.approx(1.0, rel=1e-3)
    assert np.unravel_index(np.argmax(crop), crop.shape) == (small // 2,) * ndim
    # Mean is kept exactly (the DC term); the integral scales with the pixel area/volume.
    assert crop.mean() == pytest.approx(blob.mean(), rel=1e-5)
    np.testing.assert_allclose(crop, _gaussian(small, sigma / 2, ndim), atol=1e-4)


def test_crop_torch_in_torch_out() -> None:
    x = torch.randn(3, 2, 32, 32)
    y = P.fourier_crop_images(x, 16)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (3, 2, 16, 16)


@pytest.mark.parametrize("new_D", [15, 32, 40, 0])
def test_crop_rejects_bad_boxes(new_D: int) -> None:
    with pytest.raises(InputError):
        P.fourier_crop_images(np.zeros((2, 32, 32)), new_D)


def test_crop_rejects_non_square() -> None:
    with pytest.raises(InputError):
        P.fourier_crop_images(np.zeros((2, 32, 30)), 16)


def test_normalise_background() -> None:
    rng = np.random.default_rng(2)
    D = 32
    imgs = 3.0 + 2.5 * rng.standard_normal((4, D, D))
    imgs += 10 * _gaussian(D, 3.0, 2)  # particle inside the circle
    out = P.normalise_background(imgs)
    outside = ~circle_mask(D).numpy()
    np.testing.assert_allclose(out[:, outside].mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out[:, outside].std(axis=1, ddof=1), 1.0, atol=1e-12)
    assert out[:, D // 2, D // 2].mean() > 3.0
    out_r = P.normalise_background(torch.as_tensor(imgs, dtype=torch.float32), radius_px=10)
    assert isinstance(out_r, torch.Tensor)
    outside10 = ~circle_mask(D, 10)
    assert abs(float(out_r[:, outside10].mean())) < 1e-5
    flat = P.normalise_background(np.full((D, D), 5.0))
    np.testing.assert_allclose(flat, 0.0)
    with pytest.raises(InputError):
        P.normalise_background(imgs, radius_px=100)


def test_invert_contrast() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    np.testing.assert_array_equal(P.invert_contrast(x), -x)
    assert torch.equal(P.invert_contrast(torch.ones(2, 2)), -torch.ones(2, 2))

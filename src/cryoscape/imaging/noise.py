"""Additive Gaussian noise at a stated signal-to-noise ratio.

SNR is defined as ``var(clean) / var(noise)``, both measured over the pixels
inside the particle's circle (radius ``radius_px``, default ``D // 2``, centre
``(D//2, D//2)``). By default one noise level is used for the whole batch:
``σ² = mean_b var_b(clean inside circle) / snr`` (a dataset has one noise level);
``per_image=True`` uses each image's own signal variance instead. For streaming
simulations, compute ``noise_std`` once with :func:`noise_std_for_snr` and pass it.

Coloured noise takes a power spectrum ``psd`` ``[D, D]`` on the centred grid
(DC at ``D//2``; only its shape matters). It is symmetrised (``psd(k)`` and
``psd(−k)`` averaged) and normalised to unit mean, so the noise is real,
stationary and has variance ``σ²`` at every pixel.
"""

from __future__ import annotations

import torch

__all__ = ["add_noise", "noise_std_for_snr", "circle_mask_2d", "masked_variance"]


def circle_mask_2d(D: int, radius_px: float | None = None, device=None) -> torch.Tensor:
    """Boolean ``[D, D]`` mask of pixels within ``radius_px`` (default ``D//2``) of ``(D//2, D//2)``."""
    r = D // 2 if radius_px is None else radius_px
    c = torch.arange(D, device=device, dtype=torch.float32) - D // 2
    return (c[:, None] ** 2 + c[None, :] ** 2) <= r * r


def masked_variance(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image variance over the pixels in ``mask``: ``[..., D, D]`` -> ``[...]``."""
    v = images[..., mask]
    return v.var(dim=-1, unbiased=False)


def noise_std_for_snr(clean: torch.Tensor, snr: float, radius_px: float | None = None) -> float:
    """Noise standard deviation giving ``snr`` for the mean signal variance of ``clean`` ``[B, D, D]``."""
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    mask = circle_mask_2d(clean.shape[-1], radius_px, clean.device)
    return float(torch.sqrt(masked_variance(clean, mask).mean() / snr))


def _coloured(white: torch.Tensor, psd: torch.Tensor) -> torch.Tensor:
    """Filter white noise ``[B, D, D]`` by ``sqrt(psd)`` (centred ``[D, D]``), unit-mean power."""
    p = torch.fft.ifftshift(psd.to(device=white.device, dtype=white.dtype), dim=(-2, -1))
    mirror = torch.roll(torch.flip(p, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # p(-k)
    p = 0.5 * (p + mirror)
    p = p.clamp(min=0)
    p = p / p.mean()
    ft = torch.fft.fft2(white) * torch.sqrt(p)
    return torch.fft.ifft2(ft).real


def add_noise(images: torch.Tensor, snr: float | None, radius_px: float | None = None,
              generator: torch.Generator | None = None, psd: torch.Tensor | None = None,
              noise_std: float | torch.Tensor | None = None, per_image: bool = False) -> torch.Tensor:
    """Return ``images + noise`` for clean images ``[B, D, D]``.

    Args:
        images: clean images ``[..., D, D]``.
        snr: target ``var(clean)/var(noise)`` inside the circle (ignored if ``noise_std``).
        radius_px: circle radius in pixels (default ``D // 2``).
        generator: torch RNG for reproducibility (its device must match ``images``).
        psd: optional centred ``[D, D]`` noise power spectrum shape (coloured noise).
        noise_std: explicit noise standard deviation (scalar or ``[...]`` per image).
        per_image: scale the noise to each image's own signal variance.
    """
    D = images.shape[-1]
    if noise_std is None:
        if snr is None or snr <= 0:
            raise ValueError(f"snr must be positive, got {snr}")
        mask = circle_mask_2d(D, radius_px, images.device)
        var = masked_variance(images, mask)
        if not per_image:
            var = var.mean()
        sigma = torch.sqrt(var / snr)
    else:
        sigma = torch.as_tensor(noise_std, dtype=images.dtype, device=images.device)
    if sigma.ndim:
        sigma = sigma[..., None, None]
    white = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    if psd is not None:
        white = _coloured(white.reshape(-1, D, D), psd).reshape(images.shape)
    return images + sigma * white

"""Positional encodings of 3D frequencies for the neural hyper-molecule (:mod:`cryoscape.models.neural`).

The MLP sees ``u = q / D`` (``|u| < 1/2`` inside the Nyquist sphere) through

* :class:`GeometricEncoding`: ``sin(ω_l u_j), cos(ω_l u_j)`` for each axis ``j``
  and ``L`` angular frequencies in geometric progression (survey Eqs. 9–10,
  where the powers-of-two series is the case ratio 2);
* :class:`GaussianEncoding`: random Fourier features ``sin(2π B u)``,
  ``cos(2π B u)`` with ``B`` ``[F, 3]`` drawn from ``N(0, σ²)`` once (seeded)
  and stored as a buffer, so a saved ``state_dict`` rebuilds the same map.

A feature ``sin(2π r u)`` is the Fourier kernel of a point ``r`` pixels from the
box centre, so frequencies are given as real-space distances in pixels
(``ω = 2π r``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GeometricEncoding", "GaussianEncoding", "ENCODINGS"]

ENCODINGS = ("geometric", "gaussian")


class GeometricEncoding(nn.Module):
    """``[sin(ω_l u_j), cos(ω_l u_j)]`` for ``j`` in x, y, z and ``L`` frequencies.

    Args:
        n_freqs: ``L``.
        min_px, max_px: real-space distances (pixels) of the lowest and highest
            frequency; ``ω_l = 2π r_l`` with ``r_l`` geometric from ``min_px``
            to ``max_px`` (``r_l = max_px`` when ``L = 1``).
    Input ``u`` ``[..., 3]`` (cycles per box divided by ``D``); output
    ``[..., 6 L]`` ordered (sin x-frequencies, sin y, sin z, cos x, cos y, cos z).
    """

    def __init__(self, n_freqs: int, min_px: float, max_px: float) -> None:
        super().__init__()
        if n_freqs < 1 or not 0 < min_px <= max_px:
            raise ValueError(f"need n_freqs >= 1 and 0 < min_px <= max_px; got {n_freqs}, {min_px}, {max_px}")
        if n_freqs == 1:
            radii = torch.tensor([float(max_px)], dtype=torch.float64)
        else:
            t = torch.arange(n_freqs, dtype=torch.float64) / (n_freqs - 1)
            radii = float(min_px) * (float(max_px) / float(min_px)) ** t
        self.register_buffer("omega", (2 * math.pi * radii).to(torch.float32))
        self.out_dim = 6 * n_freqs

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        arg = (u[..., :, None] * self.omega.to(u.dtype)).flatten(-2)  # [..., 3 L]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class GaussianEncoding(nn.Module):
    """Random Fourier features ``[sin(2π B u), cos(2π B u)]``, ``B`` ``[F, 3]`` ~ ``N(0, σ²)`` px.

    Args:
        n_features: ``F`` (output ``[..., 2F]``).
        sigma_px: standard deviation of the entries of ``B`` (pixels).
        seed: seeds ``B`` (a private generator: the global RNG is untouched).
    """

    def __init__(self, n_features: int, sigma_px: float, seed: int = 0) -> None:
        super().__init__()
        if n_features < 1 or not sigma_px > 0:
            raise ValueError(f"need n_features >= 1 and sigma_px > 0; got {n_features}, {sigma_px}")
        g = torch.Generator().manual_seed(int(seed))
        B = torch.randn(n_features, 3, generator=g, dtype=torch.float64) * float(sigma_px)
        self.register_buffer("B", (2 * math.pi * B).to(torch.float32))
        self.out_dim = 2 * n_features

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        arg = u @ self.B.to(u.dtype).T
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

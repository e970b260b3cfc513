"""Wiener-regularised division of backprojection sums, with the SSNR from half maps.

With numerator ``N(k) = Σ CTF_i X_i`` and weight ``W(k) = Σ CTF_i²`` on the
oversampled grid, the Wiener (MAP) estimate of the volume's transform under
white noise of variance ``σ²`` per Fourier pixel and a signal prior of
variance ``τ²(k)`` is

    V̂(k) = N(k) / (W(k) + σ²/τ²(k)).

The spectral signal-to-noise ratio of the reconstruction in a shell is
``SSNR(k) = τ²(k) ⟨W⟩_k / σ²`` (``⟨W⟩_k`` the shell mean of the weights), so
the regulariser is ``λ(k) = σ²/τ²(k) = ⟨W⟩_k / SSNR(k)``: it needs no noise
or signal model beyond the SSNR, which half maps measure. Two independent
half maps with Fourier shell correlation ``FSC(k)`` have
``SSNR_half = FSC / (1 − FSC)``; the map from all data has twice the weights
and ``SSNR_full = 2 FSC / (1 − FSC)`` (its FSC against a perfect reference is
``√(2FSC/(1+FSC))``, the usual full-map correction).

:func:`gold_standard` iterates: halves reconstructed with a tiny regulariser
(``λ = 10⁻³ ⟨W⟩_k``) give a first FSC; the SSNR from it sets ``λ(k)`` for each
half; the FSC between these Wiener-filtered halves is the reported
gold-standard FSC, and its full-data SSNR sets ``λ(k)`` of the full map.
Further rounds (``n_iterations > 1``) re-estimate the SSNR from the filtered
halves; on simulated data they change the 0.143 resolution by about 1 % and
the map error by less than 0.1 %, so one round is the default.

Volumes come from the regularised transform on the oversampled grid by
:func:`cryoscape.imaging.wiener.wiener_volume` (inverse real FFT of its
``kx >= 0`` half, cropping the central ``D³`` voxels and dividing by the
trilinear kernel's transform, the gridding correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from cryoscape.imaging._grid import padded_size
from cryoscape.imaging.wiener import half_shells
from cryoscape.imaging.wiener import wiener_volume as imaging_wiener_volume

__all__ = [
    "shell_mean_weight",
    "relative_regulariser",
    "ssnr_from_fsc",
    "regulariser_from_ssnr",
    "wiener_volume",
    "GoldStandard",
    "gold_standard",
]

#: Smallest SSNR used for a shell (FSC <= 0 gives this: the shell is all but zeroed).
MIN_SSNR = 1e-4
#: Largest FSC used when converting to SSNR (keeps λ finite when halves agree perfectly).
MAX_FSC = 0.99999


def shell_mean_weight(weights: torch.Tensor, box: int, oversampling: int) -> torch.Tensor:
    """Mean of Friedel-symmetric weights ``[M, M, M]`` (``M = N + 1``) over each shell ``0 .. D//2`` -> ``(D//2+1,)`` float64.

    Shell ``s`` is the band ``round(|k|·D) = s`` (as on the ``D³`` grid), over
    voxels inside the Nyquist sphere.
    """
    g = half_shells(box, oversampling, weights.device)
    N = padded_size(box, oversampling)
    w = (weights[:N, :N, N // 2 :].double() * g.plane_weight)[g.inside]
    sums = torch.zeros(box // 2 + 1, dtype=torch.float64, device=weights.device).index_add_(0, g.shell[g.inside], w)
    return sums / g.counts.clamp(min=1)


def relative_regulariser(weights: torch.Tensor, box: int, oversampling: int, fraction: float = 1e-3) -> torch.Tensor:
    """``λ(k) = fraction · ⟨W⟩_k`` (a nearly unregularised inverse for small ``fraction``), ``(D//2+1,)``."""
    return _floor(fraction * shell_mean_weight(weights, box, oversampling))


def _floor(lam: torch.Tensor) -> torch.Tensor:
    """Keep ``λ`` positive: at least ``1e-12`` of its largest value (or 1e-30)."""
    top = float(lam.max()) if lam.numel() else 0.0
    return lam.clamp(min=1e-12 * top if top > 0 else 1e-30)


def ssnr_from_fsc(fsc: np.ndarray, full: bool = False) -> np.ndarray:
    """Spectral SNR per shell from a half-map FSC, ``(n_shells,)`` float64.

    ``FSC/(1−FSC)`` for a half map, ``2·FSC/(1−FSC)`` for the map from both
    halves (``full=True``); FSC is clipped to ``[0, MAX_FSC]`` and the SSNR
    to at least :data:`MIN_SSNR`. Non-finite FSC values count as 0.
    """
    f = np.nan_to_num(np.asarray(fsc, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    f = np.clip(f, 0.0, MAX_FSC)
    ssnr = f / (1.0 - f)
    if full:
        ssnr = 2.0 * ssnr
    return np.maximum(ssnr, MIN_SSNR)


def regulariser_from_ssnr(mean_weight: torch.Tensor, ssnr: np.ndarray) -> torch.Tensor:
    """``λ(k) = ⟨W⟩_k / SSNR(k)`` per shell, ``(D//2+1,)`` float64 (see the module docstring).

    ``mean_weight`` is :func:`shell_mean_weight` of the weights being regularised.
    """
    s = torch.as_tensor(np.asarray(ssnr, dtype=np.float64), device=mean_weight.device)
    return _floor(mean_weight / s)


def wiener_volume(
    numerator: torch.Tensor,
    weights: torch.Tensor,
    regulariser: torch.Tensor | np.ndarray,
    box: int,
    oversampling: int,
) -> np.ndarray:
    """``V = F⁻¹[N / (W + λ(k))]`` cropped to ``[D, D, D]`` and gridding-corrected, float32 numpy.

    numerator ``[M, M, M]`` complex and weights ``[M, M, M]`` real on the
    centred oversampled grid (``M = N + 1``, ``N = oversampling · box``; see
    :mod:`cryoscape.reconstruct.backprojection`); regulariser ``λ`` per shell
    ``(D//2+1,)`` in the units of the weights. Frequencies beyond Nyquist
    (``|k| > D/2``) are set to 0. Computed by
    :func:`cryoscape.imaging.wiener.wiener_volume` in float32.
    """
    vol = imaging_wiener_volume(numerator, weights.to(torch.float32), regulariser, box, oversampling)
    return vol.to(torch.float32).cpu().numpy()


@dataclass
class GoldStandard:
    """Maps and curves from :func:`gold_standard`.

    half_a, half_b, full: ``[D, D, D]`` float32 volumes; fsc: half-map FSC
    ``(D//2+1,)`` between the final (Wiener-filtered) halves; ssnr_half and
    ssnr_full: the SSNR used for the last regularisation; fsc_history: the
    FSC after each pass (first: nearly unregularised halves).
    """

    half_a: np.ndarray
    half_b: np.ndarray
    full: np.ndarray
    fsc: np.ndarray
    ssnr_half: np.ndarray
    ssnr_full: np.ndarray
    fsc_history: list[np.ndarray]


def gold_standard(
    numerators: tuple[torch.Tensor, torch.Tensor],
    weights: tuple[torch.Tensor, torch.Tensor],
    box: int,
    oversampling: int,
    fsc_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_iterations: int = 1,
    initial_fraction: float = 1e-3,
) -> GoldStandard:
    """Half maps and full map with ``λ(k)`` from the half-map SSNR (see the module docstring).

    numerators/weights: the two half sets' sums ``[M, M, M]``; fsc_fn(a, b)
    returns the FSC ``(D//2+1,)`` of two ``[D, D, D]`` maps; n_iterations ≥ 1
    SSNR-regularised passes after the first, nearly unregularised one.
    """
    (na, nb), (wa, wb) = numerators, weights
    mean_a = shell_mean_weight(wa, box, oversampling)
    mean_b = shell_mean_weight(wb, box, oversampling)
    half_a = wiener_volume(na, wa, _floor(initial_fraction * mean_a), box, oversampling)
    half_b = wiener_volume(nb, wb, _floor(initial_fraction * mean_b), box, oversampling)
    fsc = np.asarray(fsc_fn(half_a, half_b), dtype=np.float64)
    history = [fsc]
    ssnr_half = ssnr_from_fsc(fsc)
    for _ in range(max(1, int(n_iterations))):
        ssnr_half = ssnr_from_fsc(fsc)
        half_a = wiener_volume(na, wa, regulariser_from_ssnr(mean_a, ssnr_half), box, oversampling)
        half_b = wiener_volume(nb, wb, regulariser_from_ssnr(mean_b, ssnr_half), box, oversampling)
        fsc = np.asarray(fsc_fn(half_a, half_b), dtype=np.float64)
        history.append(fsc)
    ssnr_full = ssnr_from_fsc(fsc, full=True)
    # the sums are additive: full-map weights and their shell means are those of the halves summed
    full = wiener_volume(na + nb, wa + wb, regulariser_from_ssnr(mean_a + mean_b, ssnr_full), box, oversampling)
    return GoldStandard(half_a, half_b, full, fsc, ssnr_half, ssnr_full, history)

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
half; the FSC between these halves is the reported gold-standard FSC, and its
full-data SSNR sets ``λ(k)`` of the full map. Further rounds (``n_iterations > 1``)
re-estimate the SSNR from the filtered halves.

Where the filter goes. The division happens on the oversampled grid, and the
volume is then cropped to the ``D³`` box and multiplied by a soft spherical
support (:func:`box_support`); both are real-space windows, so each output shell
mixes its neighbours. A filter whose level drops steeply with radius (the Wiener
gain where the SSNR falls to its floor) applied before them lets the strong
lower shells leak into the weak ones and swamp what the data hold there (FSC
against the truth falls to 0 beyond where the half-map FSC nears 0). So the
division is done at unit gain per shell (``λ`` only weighs the voxels of a shell
against each other: the MAP weighting, well measured voxels counting more), and
the filter's per-shell weights (:func:`filter_weights`) multiply the shells of
the finished ``D³`` map, where a per-shell scale cannot change any FSC. The
support removes the noise of the box corners (half the box's volume), which
nothing in the particle occupies.

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

from cryoscape.geometry.fourier import scale_shells
from cryoscape.imaging._grid import padded_size
from cryoscape.imaging.wiener import half_shells, shell_gain
from cryoscape.imaging.wiener import wiener_volume as imaging_wiener_volume

__all__ = [
    "shell_mean_weight",
    "relative_regulariser",
    "ssnr_from_fsc",
    "regulariser_from_ssnr",
    "wiener_volume",
    "FILTERS",
    "filter_weights",
    "box_support",
    "GoldStandard",
    "gold_standard",
]

#: The filters of a reconstruction: the Wiener (MAP) estimate, the FSC weighting, or none.
FILTERS = ("wiener", "fsc", "none")

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
    shell_weights: np.ndarray | None = None,
    support: np.ndarray | None = None,
    gain: np.ndarray | None = None,
) -> np.ndarray:
    """``V = F⁻¹[N / (W + λ(k))]`` cropped to ``[D, D, D]`` and gridding-corrected, float32 numpy.

    numerator ``[M, M, M]`` complex and weights ``[M, M, M]`` real on the
    centred oversampled grid (``M = N + 1``, ``N = oversampling · box``; see
    :mod:`cryoscape.reconstruct.backprojection`); regulariser ``λ`` per shell
    ``(D//2+1,)`` in the units of the weights. Frequencies beyond Nyquist
    (``|k| > D/2``) are set to 0. Computed by
    :func:`cryoscape.imaging.wiener.wiener_volume` in float32.

    With ``shell_weights`` ``(D//2+1,)`` the division is done at unit gain per shell,
    the volume is multiplied by the real-space ``support`` ``[D, D, D]`` (if given)
    and then each shell by its weight (see the module docstring: a filter applied
    last cannot leak into other shells through the crop or the support). ``gain``: the
    :func:`~cryoscape.imaging.wiener.shell_gain` of these weights and ``λ`` when the caller has it.
    """
    w = weights.to(torch.float32)
    if shell_weights is None and support is None:
        return imaging_wiener_volume(numerator, w, regulariser, box, oversampling).to(torch.float32).cpu().numpy()
    if gain is None:
        gain = shell_gain(w, regulariser, box, oversampling)
    else:
        gain = torch.as_tensor(np.asarray(gain, dtype=np.float64))
    vol = imaging_wiener_volume(numerator, w, regulariser, box, oversampling, shell_factor=1.0 / gain)
    if support is not None:
        vol = vol * torch.as_tensor(np.asarray(support), dtype=vol.dtype, device=vol.device)
    if shell_weights is not None:
        vol = scale_shells(vol, shell_weights)
    return vol.to(torch.float32).cpu().numpy()


def box_support(box: int, apix: float, diameter_A: float | None = None) -> np.ndarray | None:
    """The soft spherical support ``[D, D, D]`` float32 of a reconstruction, or None (``diameter_A`` 0).

    Diameter ``diameter_A`` Å (default and at most the box width ``D · apix``); the raised-cosine edge
    of ``max(3, D/16)`` px lies inside the diameter, so the support is 0 at the box faces.
    """
    from cryoscape.geometry.masks import soft_sphere_mask

    if diameter_A is not None and diameter_A <= 0:
        return None
    edge = max(3.0, box / 16.0)
    radius_px = min(box * apix if diameter_A is None else float(diameter_A), box * apix) / (2.0 * apix)
    return soft_sphere_mask(int(box), max(radius_px - edge, 0.0), edge).numpy()


def filter_weights(kind: str, ssnr: np.ndarray, gain: np.ndarray | None = None, full: bool = False) -> np.ndarray:
    """Per-shell weights ``(D//2+1,)`` float64 of the filter ``kind`` (see :data:`FILTERS`).

    ``"wiener"``: the mean Wiener gain ``gain`` of each shell (``SSNR / (1 + SSNR)`` where the
    weights are even); ``"fsc"``: the map's expected FSC against the truth, ``√FSC`` for a half
    map and ``√(2 FSC / (1 + FSC))`` for the full map (``full``), with ``FSC = SSNR_half / (1 +
    SSNR_half)``; ``"none"``: ones. ``ssnr`` is the SSNR of the map being filtered (half or full),
    floored at :data:`MIN_SSNR`, so no weight is 0 and no shell is cut.
    """
    s = np.maximum(np.asarray(ssnr, dtype=np.float64), MIN_SSNR)
    if kind == "none":
        return np.ones_like(s)
    if kind == "wiener":
        return np.asarray(gain, dtype=np.float64) if gain is not None else s / (1.0 + s)
    if kind == "fsc":
        half = s / 2.0 if full else s
        f = half / (1.0 + half)
        return np.sqrt(2.0 * f / (1.0 + f)) if full else np.sqrt(f)
    raise ValueError(f"unknown filter {kind!r}; choose from {', '.join(FILTERS)}")


@dataclass
class GoldStandard:
    """Maps and curves from :func:`gold_standard`.

    half_a, half_b, full: ``[D, D, D]`` float32 volumes; fsc: half-map FSC
    ``(D//2+1,)`` between the final halves; ssnr_half and ssnr_full: the SSNR
    used for the last regularisation; fsc_history: the FSC after each pass
    (first: nearly unregularised halves); filter: the filter applied
    (:data:`FILTERS`), with its per-shell weights of the half maps and of the full map.
    """

    half_a: np.ndarray
    half_b: np.ndarray
    full: np.ndarray
    fsc: np.ndarray
    ssnr_half: np.ndarray
    ssnr_full: np.ndarray
    fsc_history: list[np.ndarray]
    filter: str = "wiener"
    weights_half: np.ndarray | None = None
    weights_full: np.ndarray | None = None


def _filtered(num: torch.Tensor, den: torch.Tensor, lam: torch.Tensor, kind: str, ssnr: np.ndarray,
              box: int, oversampling: int, full: bool, support: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The map at unit gain per shell with ``λ``, times ``support``, then weighted by the filter ``kind``;
    and those weights."""
    gain = shell_gain(den.to(torch.float32), lam, box, oversampling).cpu().numpy()
    w = filter_weights(kind, ssnr, gain, full)
    return wiener_volume(num, den, lam, box, oversampling, shell_weights=w, support=support, gain=gain), w


def gold_standard(
    numerators: tuple[torch.Tensor, torch.Tensor],
    weights: tuple[torch.Tensor, torch.Tensor],
    box: int,
    oversampling: int,
    fsc_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_iterations: int = 1,
    initial_fraction: float = 1e-3,
    filter: str = "wiener",
    support: np.ndarray | None = None,
) -> GoldStandard:
    """Half maps and full map with ``λ(k)`` from the half-map SSNR (see the module docstring).

    numerators/weights: the two half sets' sums ``[M, M, M]``; fsc_fn(a, b)
    returns the FSC ``(D//2+1,)`` of two ``[D, D, D]`` maps; n_iterations ≥ 1
    SSNR-regularised passes after the first, nearly unregularised one; filter:
    ``"wiener"``, ``"fsc"`` or ``"none"`` (:data:`FILTERS`). The per-voxel weighting
    within a shell is the same for ``wiener`` and ``fsc`` (so are the FSC curves);
    ``none`` keeps the nearly unregularised inverse. support: real-space ``[D, D, D]``
    multiplying every map before the FSC and the filter (e.g. :func:`box_support`), or None.
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
    (na, nb), (wa, wb) = numerators, weights
    mean_a = shell_mean_weight(wa, box, oversampling)
    mean_b = shell_mean_weight(wb, box, oversampling)
    lam_a, lam_b = _floor(initial_fraction * mean_a), _floor(initial_fraction * mean_b)
    half_a = wiener_volume(na, wa, lam_a, box, oversampling, support=support)
    half_b = wiener_volume(nb, wb, lam_b, box, oversampling, support=support)
    fsc = np.asarray(fsc_fn(half_a, half_b), dtype=np.float64)
    history = [fsc]
    ssnr_half = ssnr_from_fsc(fsc)
    if filter == "none":
        ssnr_full = ssnr_from_fsc(fsc, full=True)
        lam = _floor(initial_fraction * (mean_a + mean_b))
        full = wiener_volume(na + nb, wa + wb, lam, box, oversampling, support=support)
        ones = np.ones(box // 2 + 1)
        return GoldStandard(half_a, half_b, full, fsc, ssnr_half, ssnr_full, history, filter, ones, ones)
    for _ in range(max(1, int(n_iterations))):
        ssnr_half = ssnr_from_fsc(fsc)
        lam_a, lam_b = regulariser_from_ssnr(mean_a, ssnr_half), regulariser_from_ssnr(mean_b, ssnr_half)
        half_a, w_half = _filtered(na, wa, lam_a, filter, ssnr_half, box, oversampling, False, support)
        half_b, _ = _filtered(nb, wb, lam_b, filter, ssnr_half, box, oversampling, False, support)
        fsc = np.asarray(fsc_fn(half_a, half_b), dtype=np.float64)
        history.append(fsc)
    ssnr_full = ssnr_from_fsc(fsc, full=True)
    # the sums are additive: full-map weights and their shell means are those of the halves summed
    lam = regulariser_from_ssnr(mean_a + mean_b, ssnr_full)
    full, w_full = _filtered(na + nb, wa + wb, lam, filter, ssnr_full, box, oversampling, True, support)
    return GoldStandard(half_a, half_b, full, fsc, ssnr_half, ssnr_full, history, filter, w_half, w_full)

"""Fourier shell correlation: curves, resolution, masked-FSC correction, output.

Shells follow :func:`cryoscape.geometry.fourier.radial_shell_index`: shell
``s`` holds the centred-grid frequencies with ``round(|k| · D) = s`` (``|k|``
in cycles/pixel), at frequency ``s / (D · apix)`` cycles/Å. Curves cover
shells ``0 .. D//2`` (DC to Nyquist), ``D//2 + 1`` values.

Inputs are volumes ``[D, D, D]`` (or images ``[D, D]``), numpy or torch; the
computation runs in float64 / complex128 and curves are numpy float64.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cryoscape.geometry.fourier import fftn_c, ifftn_c, radial_shell_index, shell_sum
from cryoscape.io.atomic import atomic_path

__all__ = [
    "fsc",
    "shell_frequencies",
    "resolution_at",
    "fsc_auc",
    "phase_randomise",
    "corrected_masked_fsc",
    "MaskedFSC",
    "write_fsc_table",
    "save_fsc_plot",
]


def _to_tensor64(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device="cpu", dtype=torch.complex128 if t.is_complex() else torch.float64)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.shape != b.shape:
        raise ValueError(f"FSC needs two maps of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (2, 3) or len(set(a.shape)) != 1 or a.shape[0] % 2:
        raise ValueError(f"FSC needs a cubic volume or square image with an even box; got {tuple(a.shape)}")
    return a.ndim


def _fsc_from_ft(A: torch.Tensor, B: torch.Tensor, ndim: int) -> np.ndarray:
    D = A.shape[-1]
    n = D // 2 + 1
    shells = radial_shell_index(D, ndim)
    num = shell_sum((A * B.conj()).real, shells, n)
    den = torch.sqrt(shell_sum(A.abs() ** 2, shells, n) * shell_sum(B.abs() ** 2, shells, n))
    out = torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
    return out.numpy()


def fsc(vol_a: Any, vol_b: Any, mask: Any = None) -> np.ndarray:
    """FSC of two maps per shell ``0 .. D//2`` -> ``(D//2 + 1,)`` float64.

    ``FSC(s) = Σ_s Re(A B*) / sqrt(Σ_s |A|² · Σ_s |B|²)`` with ``A``, ``B`` the
    centred FTs of ``vol_a · mask`` and ``vol_b · mask`` (``mask`` real-space,
    same shape, optional). Shells with no power give 0.
    """
    a, b = _to_tensor64(vol_a), _to_tensor64(vol_b)
    ndim = _check_pair(a, b)
    if mask is not None:
        m = _to_tensor64(mask)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} differs from the map shape {tuple(a.shape)}")
        a, b = a * m, b * m
    return _fsc_from_ft(fftn_c(a, ndim), fftn_c(b, ndim), ndim)


def shell_frequencies(D: int, apix: float) -> np.ndarray:
    """Frequency of each FSC shell ``0 .. D//2`` in cycles/Å: ``s / (D · apix)``."""
    return np.arange(D // 2 + 1, dtype=np.float64) / (D * apix)


def resolution_at(fsc_curve: Sequence[float] | np.ndarray, D: int, apix: float, threshold: float = 0.143) -> float:
    """Resolution in Å where the FSC first falls below ``threshold`` after shell 0.

    The crossing is interpolated linearly in frequency between the last shell
    at or above the threshold and the first shell below it; the result is
    ``1 / frequency``. If the curve never falls below the threshold, the
    Nyquist resolution ``2 · apix`` is returned. If shell 0 is already below
    the threshold and shell 1 too, the resolution of shell 1 (``D · apix``)
    is returned.
    """
    curve = np.asarray(fsc_curve, dtype=np.float64)
    freqs = shell_frequencies(D, apix)[: len(curve)]
    below = np.nonzero(curve[1:] < threshold)[0]
    if below.size == 0:
        return 2.0 * float(apix)
    i = int(below[0]) + 1
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    if c0 < threshold:
        return float(1.0 / f1)
    t = (c0 - threshold) / (c0 - c1)
    f = f0 + float(np.clip(t, 0.0, 1.0)) * (f1 - f0)
    return float(1.0 / f) if f > 0 else float("inf")


def fsc_auc(fsc_curve: Sequence[float] | np.ndarray) -> float:
    """Area under the FSC curve over frequency normalised to [0, 1] (1 = Nyquist), trapezoid rule.

    Shell ``s`` of ``n`` shells sits at ``s / (n - 1)``; a curve equal to 1
    everywhere has area 1.
    """
    curve = np.asarray(fsc_curve, dtype=np.float64)
    if curve.size < 2:
        raise ValueError("an FSC curve needs at least two shells")
    x = np.linspace(0.0, 1.0, curve.size)
    return float(np.sum(0.5 * (curve[1:] + curve[:-1]) * np.diff(x)))


def phase_randomise(vol: Any, from_shell: int, rng: np.random.Generator) -> torch.Tensor:
    """Randomise the Fourier phases of shells ``>= from_shell`` of a real map, keeping amplitudes.

    The random phases are those of the FT of real white noise, so they are
    Hermitian-symmetric and the result stays real. Returns float64 torch.
    """
    v = _to_tensor64(vol)
    ndim = v.ndim
    noise = torch.as_tensor(rng.standard_normal(tuple(v.shape)))
    N = fftn_c(noise, ndim)
    phase = N / N.abs().clamp(min=1e-300)
    shells = radial_shell_index(v.shape[-1], ndim)
    factor = torch.where(shells >= from_shell, phase, torch.ones_like(phase))
    return ifftn_c(fftn_c(v, ndim) * factor, ndim).real


@dataclass(frozen=True)
class MaskedFSC:
    """Curves of :func:`corrected_masked_fsc`, each ``(D//2 + 1,)`` over shells 0..Nyquist.

    ``corrected``: the mask-corrected FSC (use this one); ``masked``: FSC of the
    masked maps (FSC_t); ``unmasked``: FSC without mask; ``randomised``: FSC of
    the masked phase-randomised maps (FSC_n); ``randomise_from_shell``: first
    randomised shell; ``correct_from_shell``: first shell where the correction
    is applied.
    """

    corrected: np.ndarray
    masked: np.ndarray
    unmasked: np.ndarray
    randomised: np.ndarray
    randomise_from_shell: int
    correct_from_shell: int


def corrected_masked_fsc(
    half_a: Any,
    half_b: Any,
    mask: Any,
    randomise_from_fsc: float = 0.8,
    rng: np.random.Generator | None = None,
    guard_shells: int = 2,
) -> MaskedFSC:
    """Masked FSC corrected for mask-induced correlation by phase randomisation (Chen et al. 2013).

    The phases of both half maps are randomised (independently) beyond the
    shell ``s0`` where the unmasked FSC first falls below
    ``randomise_from_fsc``; FSC_n is the masked FSC of the randomised maps.
    For shells ``s >= s0 + guard_shells`` the corrected curve is
    ``(FSC_t - FSC_n) / (1 - FSC_n)``; below, it equals the masked FSC
    (FSC_t). ``guard_shells`` skips the shells next to ``s0``, where the mask
    leaks correlation from the unrandomised shells into FSC_n.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    unmasked = fsc(half_a, half_b)
    masked = fsc(half_a, half_b, mask)
    n = unmasked.size
    below = np.nonzero(unmasked[1:] < randomise_from_fsc)[0]
    s0 = int(below[0]) + 1 if below.size else n
    start = min(s0 + max(int(guard_shells), 0), n)
    if s0 >= n:
        return MaskedFSC(masked.copy(), masked, unmasked, masked.copy(), s0, start)
    rand_a = phase_randomise(half_a, s0, rng)
    rand_b = phase_randomise(half_b, s0, rng)
    randomised = fsc(rand_a, rand_b, mask)
    corrected = masked.copy()
    denom = 1.0 - randomised[start:]
    safe = np.abs(denom) > 1e-9
    corrected[start:] = np.where(safe, (masked[start:] - randomised[start:]) / np.where(safe, denom, 1.0), 0.0)
    return MaskedFSC(corrected, masked, unmasked, randomised, s0, start)


def write_fsc_table(
    path: str | os.PathLike,
    curves: Mapping[str, Sequence[float] | np.ndarray],
    D: int,
    apix: float,
    force: bool = False,
) -> Path:
    """Write FSC curves to ``path`` (atomically): ``.json`` as JSON, otherwise CSV text.

    Columns: ``shell``, ``frequency_invA`` (cycles/Å), ``resolution_A`` (``inf`` at
    shell 0) and one column per curve label. The JSON form holds ``D``,
    ``apix_A``, the same columns as lists and, per curve, the 0.143 and 0.5
    resolutions.
    """
    freqs = shell_frequencies(D, apix)
    res = np.divide(1.0, freqs, out=np.full_like(freqs, np.inf), where=freqs > 0)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in curves.items()}
    for k, v in arrays.items():
        if v.shape != freqs.shape:
            raise ValueError(f"curve {k!r} has {v.size} shells; expected {freqs.size} for box {D}")
    p = Path(path)
    if p.suffix.lower() == ".json":
        doc = {
            "D": int(D),
            "apix_A": float(apix),
            "shell": list(range(freqs.size)),
            "frequency_invA": freqs.tolist(),
            "curves": {k: v.tolist() for k, v in arrays.items()},
            "resolution_A": {
                k: {"0.143": resolution_at(v, D, apix, 0.143), "0.5": resolution_at(v, D, apix, 0.5)}
                for k, v in arrays.items()
            },
        }
        text = json.dumps(doc, indent=1)
    else:
        labels = [str(k).replace(",", "_") for k in arrays]
        lines = [",".join(["shell", "frequency_invA", "resolution_A", *labels])]
        for s in range(freqs.size):
            vals = [f"{arrays[k][s]:.6f}" for k in arrays]
            lines.append(",".join([str(s), f"{freqs[s]:.6g}", f"{res[s]:.4f}", *vals]))
        text = "\n".join(lines) + "\n"
    with atomic_path(p, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


def save_fsc_plot(
    path: str | os.PathLike,
    curves: Mapping[str, Sequence[float] | np.ndarray],
    D: int,
    apix: float,
    thresholds: Sequence[float] = (0.143, 0.5),
    title: str | None = None,
    force: bool = False,
) -> Path:
    """Plot FSC curves against frequency (cycles/Å) with threshold lines; save a PNG atomically.

    The legend gives each curve's resolution at the first threshold.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state, a faster import

    freqs = shell_frequencies(D, apix)
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    try:
        for label, curve in curves.items():
            c = np.asarray(curve, dtype=np.float64)
            note = f" ({resolution_at(c, D, apix, thresholds[0]):.2f} Å)" if thresholds else ""
            ax.plot(freqs[: c.size], c, label=f"{label}{note}")
        for t in thresholds:
            ax.axhline(t, color="grey", linestyle="--", linewidth=0.8)
            ax.text(0.01 * freqs[-1], t, f"{t:g}", va="bottom", ha="left", fontsize=8, color="grey")
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xlim(0.0, freqs[-1])
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("FSC")
        _add_resolution_axis(ax)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8)
        # fixed margins (room for both axes' labels and the title) instead of tight_layout's extra draw
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.80 if title else 0.86)
        p = Path(path)
        with atomic_path(p, force) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        fig.clear()
    return p


def _add_resolution_axis(ax: Any) -> None:
    """Label the top axis with the resolution (Å) of the bottom frequency ticks."""
    top = ax.twiny()
    lo, hi = ax.get_xlim()
    top.set_xlim(lo, hi)
    ticks = [t for t in ax.get_xticks() if lo < t <= hi and t > 0]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (Å)")

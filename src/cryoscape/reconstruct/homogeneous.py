"""Homogeneous gold-standard reconstruction: half maps, Wiener filter, FSC and the saved outputs.

:func:`reconstruct` streams the particles once into two half-set accumulators
(:func:`~cryoscape.reconstruct.stream.backproject`), filters the halves
and the full map with the half-map SSNR and measures the (masked, corrected)
FSC; :class:`Reconstruction` holds the result and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.reconstruct.masks import load_mask
from cryoscape.reconstruct.outputs import check_outputs
from cryoscape.reconstruct.stream import assign_half_sets, backproject, check_particle_weights

__all__ = ["FSC_THRESHOLD", "Reconstruction", "check_reconstruction_inputs", "reconstruct"]

#: FSC threshold for the reported resolution (gold standard).
FSC_THRESHOLD = 0.143


@dataclass
class Reconstruction:
    """A homogeneous reconstruction with gold-standard validation.

    volume, half_a, half_b: ``[D, D, D]`` float32 (``[z, y, x]``), the filtered
    full map and half maps; apix: Å/voxel; fsc: FSC between the
    half maps per shell ``0 .. D//2``; fsc_masked: the phase-randomisation
    corrected masked FSC; resolution_A / resolution_masked_A: where they cross
    0.143; shell_frequencies: cycles/Å per shell; n_particles: particles used
    (n_half: per half set; n_skipped: left out for NaN/Inf pixels); ssnr: the full-map SSNR per shell that
    set the regulariser; mask: the real-space mask of the masked FSC; filter: the filter applied
    (``wiener``, ``fsc`` or ``none``) with its per-shell weights of the half maps and the full map.
    """

    volume: np.ndarray
    half_a: np.ndarray
    half_b: np.ndarray
    apix: float
    fsc: np.ndarray
    fsc_masked: np.ndarray
    resolution_A: float
    resolution_masked_A: float
    shell_frequencies: np.ndarray
    n_particles: int
    n_half: tuple[int, int] = (0, 0)
    n_skipped: int = 0
    ssnr: np.ndarray | None = None
    mask: np.ndarray | None = None
    filter: str = "wiener"
    filter_weights_half: np.ndarray | None = None
    filter_weights_full: np.ndarray | None = None

    @property
    def box(self) -> int:
        """Box size ``D`` in voxels."""
        return int(self.volume.shape[0])

    def save(self, out_path: str | Path, force: bool = False, plot: Any = None) -> dict[str, Path]:
        """Write the maps and FSC curves next to ``out_path`` (see :func:`output_paths`).

        Every file is written atomically with voxel size :attr:`apix`; nothing
        is written if any output exists and ``force`` is false. The FSC table
        has columns shell, frequency (1/Å), resolution (Å), FSC unmasked, FSC
        masked (corrected). ``plot``: the function drawing the FSC plot, with the
        signature of :func:`cryoscape.validate.fsc.save_fsc_plot` (that one when
        None); it may instead return a function that finishes the plot, called once
        the maps are written (a :class:`cryoscape.validate.plot_worker.PlotWorker`'s
        ``submit_fsc_plot`` in the CLI draws while the maps are written). Returns the paths.
        """
        from cryoscape.io.mrc import write_mrc
        from cryoscape.validate.fsc import save_fsc_plot, write_fsc_table

        paths = check_outputs(out_path, force)
        labels = {"half maps, unmasked": self.fsc, "half maps, masked (corrected)": self.fsc_masked}
        drawn = (plot or save_fsc_plot)(paths["fsc_png"], labels, self.box, self.apix,
                                        thresholds=(FSC_THRESHOLD, 0.5), force=force)
        write_mrc(paths["volume"], self.volume, self.apix, force=force)
        write_mrc(paths["half1"], self.half_a, self.apix, force=force)
        write_mrc(paths["half2"], self.half_b, self.apix, force=force)
        curves = {"fsc_unmasked": self.fsc, "fsc_masked": self.fsc_masked}
        write_fsc_table(paths["fsc_txt"], curves, self.box, self.apix, force=force)
        write_fsc_table(paths["fsc_json"], curves, self.box, self.apix, force=force)
        write_fsc_table(paths["filter_txt"], self.filter_table(), self.box, self.apix, force=force)
        if callable(drawn):
            drawn()
        return paths

    def filter_table(self) -> dict[str, np.ndarray]:
        """The filter's per-shell weights (half maps, full map) and the full map's SSNR, for ``OUT_filter.txt``."""
        ones = np.ones(self.box // 2 + 1)
        pick = lambda w: ones if w is None else np.asarray(w, dtype=np.float64)
        ssnr = np.full_like(ones, np.nan) if self.ssnr is None else np.asarray(self.ssnr, dtype=np.float64)
        return {f"{self.filter}_weight_half": pick(self.filter_weights_half),
                f"{self.filter}_weight_full": pick(self.filter_weights_full), "ssnr_full": ssnr}


def reconstruct(
    particles,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    mask: str | Path | np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    oversampling: int = 2,
    n_iterations: int = 1,
    particle_weights: np.ndarray | None = None,
    skip_bad: bool = False,
    filter: str = "wiener",
    particle_diameter_A: float | None = None,
    lowpass_A: float | None = None,
) -> Reconstruction:
    """Reconstruct one map from particles with known poses (and CTF, when present).

    1. Stream the images once (:func:`backproject`) into two half-set
       accumulators (``particles.half_set``, e.g. ``_rlnRandomSubset``; random
       halves from ``seed`` where unknown).
    2. Divide with ``λ(k)`` from the half-map SSNR at unit gain per shell, then
       weight the shells of the halves and the full map by ``filter``
       (:func:`cryoscape.reconstruct.wiener.gold_standard`, ``n_iterations`` SSNR
       updates): ``"wiener"`` (default) the mean Wiener gain, the map closest to
       the truth in mean square; ``"fsc"`` the expected FSC against the truth
       (``√(2FSC/(1+FSC))``); ``"none"`` the nearly unregularised inverse, unweighted.
       Every map is multiplied by a soft sphere of ``particle_diameter_A`` Å
       (default: the box width; 0: none) before the FSC and the filter
       (:func:`cryoscape.reconstruct.wiener.box_support`). ``lowpass_A`` cuts the
       full map beyond that resolution (raised-cosine edge one shell wide); nothing
       is cut by radius otherwise.
    3. FSC between the filtered halves, its 0.143 resolution, and the masked
       FSC corrected by phase randomisation (``mask``: ``None`` for a soft
       sphere, an array or an MRC path).

    ``particle_weights`` (N,) optionally weights or (0) excludes particles;
    ``skip_bad`` leaves out images with NaN/Inf pixels instead of failing.
    """
    from cryoscape.reconstruct.wiener import gold_standard
    from cryoscape.validate.fsc import corrected_masked_fsc, fsc

    from cryoscape.reconstruct.wiener import box_support

    mask_arr = check_reconstruction_inputs(particles, mask, particle_weights, seed, filter, particle_diameter_A,
                                           lowpass_A)
    box = int(particles.box)
    sums = backproject(
        particles,
        particle_weights=particle_weights,
        half_sets=True,
        batch_size=batch_size,
        oversampling=oversampling,
        device=device,
        seed=seed,
        progress=progress,
        skip_bad=skip_bad,
    )
    if np.any(sums.n_particles < 1):
        raise InputError(f"{_name(particles)}: a half set is empty; reconstruction needs particles in both halves")
    gs = gold_standard(
        (sums.numerator[0], sums.numerator[1]),
        (sums.weights[0], sums.weights[1]),
        box,
        oversampling,
        fsc,
        n_iterations=n_iterations,
        filter=filter,
        support=box_support(box, float(particles.apix), particle_diameter_A),
    )
    if lowpass_A is not None:
        gs = lowpass_full_map(gs, box, float(particles.apix), lowpass_A)
    masked = corrected_masked_fsc(gs.half_a, gs.half_b, mask_arr, rng=np.random.default_rng(seed))
    return _result(gs, np.asarray(masked.corrected, dtype=np.float64), sums, float(particles.apix), mask_arr)


def _check_lengths(particle_diameter_A: float | None, lowpass_A: float | None, apix: float) -> None:
    """One-line errors for a negative particle diameter or a low-pass that is not a length at or above Nyquist."""
    if particle_diameter_A is not None and not particle_diameter_A >= 0:
        raise InputError(f"--particle-diameter {particle_diameter_A} Å must be 0 (no support) or positive")
    if lowpass_A is not None and not lowpass_A >= 2 * apix:
        raise InputError(f"--lowpass {lowpass_A} Å must be a resolution no finer than Nyquist ({2 * apix:.3g} Å "
                         f"at {apix:.4g} Å/px); give a longer length or leave it out")


def lowpass_full_map(gs: Any, box: int, apix: float, lowpass_A: float) -> Any:
    """``gs`` with its full map cut beyond ``lowpass_A`` Å: shell weights 1 up to that shell, a raised
    cosine over the next shell, 0 beyond (the weights are folded into ``gs.weights_full``)."""
    from dataclasses import replace

    from cryoscape.geometry.fourier import scale_shells

    s = np.arange(box // 2 + 1, dtype=np.float64)
    edge = np.clip(s - box * apix / lowpass_A, 0.0, 1.0)
    cut = 0.5 * (1.0 + np.cos(np.pi * edge))
    full = scale_shells(gs.full, cut).numpy().astype(np.float32)
    weights = cut if gs.weights_full is None else np.asarray(gs.weights_full) * cut
    return replace(gs, full=full, weights_full=weights)


def _name(particles: Any) -> str:
    return getattr(particles, "name", "the particle set")


def check_reconstruction_inputs(particles: Any, mask: str | Path | np.ndarray | None = None,
                                particle_weights: np.ndarray | None = None, seed: int = 0,
                                filter: str = "wiener", particle_diameter_A: float | None = None,
                                lowpass_A: float | None = None) -> np.ndarray:
    """Check everything :func:`reconstruct` needs before any image is read; return the mask ``[D, D, D]``.

    Raises :class:`~cryoscape.errors.InputError` for particles without poses, an
    unknown or mixed box or pixel size, missing image stacks, a mask of another
    box or voxel size, bad particle weights, an unknown filter, a negative particle
    diameter, a low-pass finer than Nyquist, or a half set with no particle.
    """
    from cryoscape.reconstruct.wiener import FILTERS

    if filter not in FILTERS:
        raise InputError(f"--filter {filter!r} is not one of {', '.join(FILTERS)}")
    particles.require_poses("reconstruction")
    box, apix = int(particles.box), float(particles.apix)
    _check_lengths(particle_diameter_A, lowpass_A, apix)
    mask_arr = load_mask(mask, box, apix)
    weights = check_particle_weights(particle_weights, len(particles))
    labels = assign_half_sets(getattr(particles, "half_set", None), len(particles), seed)
    used = labels if weights is None else labels[weights > 0]
    if np.any(np.bincount(used, minlength=2)[:2] < 1):
        raise InputError(f"{_name(particles)}: a half set is empty; reconstruction needs particles in both halves")
    if hasattr(particles, "check_images"):
        particles.check_images()
    return mask_arr


def _result(gs: Any, fsc_masked: np.ndarray, sums: Any, apix: float, mask_arr: np.ndarray) -> Reconstruction:
    """The :class:`Reconstruction` of the gold-standard filter output ``gs`` and the backprojection ``sums``."""
    from cryoscape.validate.fsc import resolution_at, shell_frequencies

    box = int(sums.box)
    return Reconstruction(
        volume=gs.full,
        half_a=gs.half_a,
        half_b=gs.half_b,
        apix=apix,
        fsc=gs.fsc,
        fsc_masked=fsc_masked,
        resolution_A=resolution_at(gs.fsc, box, apix, FSC_THRESHOLD),
        resolution_masked_A=resolution_at(fsc_masked, box, apix, FSC_THRESHOLD),
        shell_frequencies=shell_frequencies(box, apix),
        n_particles=int(sums.n_particles.sum()),
        n_half=(int(sums.n_particles[0]), int(sums.n_particles[1])),
        n_skipped=int(sums.n_skipped),
        ssnr=gs.ssnr_full,
        mask=mask_arr,
        filter=gs.filter,
        filter_weights_half=gs.weights_half,
        filter_weights_full=gs.weights_full,
    )

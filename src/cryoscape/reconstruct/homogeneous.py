"""Homogeneous gold-standard reconstruction: half maps, Wiener filter, FSC and the saved outputs.

:func:`reconstruct` streams the particles once into two half-set accumulators
(:func:`~cryoscape.reconstruct.stream.backproject`), Wiener-filters the halves
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

    volume, half_a, half_b: ``[D, D, D]`` float32 (``[z, y, x]``), the Wiener-
    filtered full map and half maps; apix: Å/voxel; fsc: FSC between the
    half maps per shell ``0 .. D//2``; fsc_masked: the phase-randomisation
    corrected masked FSC; resolution_A / resolution_masked_A: where they cross
    0.143; shell_frequencies: cycles/Å per shell; n_particles: particles used
    (n_half: per half set; n_skipped: left out for NaN/Inf pixels); ssnr: the full-map SSNR per shell used for the
    Wiener filter; mask: the real-space mask of the masked FSC.
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

    @property
    def box(self) -> int:
        """Box size ``D`` in voxels."""
        return int(self.volume.shape[0])

    def save(self, out_path: str | Path, force: bool = False) -> dict[str, Path]:
        """Write the maps and FSC curves next to ``out_path`` (see :func:`output_paths`).

        Every file is written atomically with voxel size :attr:`apix`; nothing
        is written if any output exists and ``force`` is false. The FSC table
        has columns shell, frequency (1/Å), resolution (Å), FSC unmasked, FSC
        masked (corrected). Returns the paths.
        """
        from cryoscape.io.mrc import write_mrc
        from cryoscape.validate.fsc import save_fsc_plot, write_fsc_table

        paths = check_outputs(out_path, force)
        write_mrc(paths["volume"], self.volume, self.apix, force=force)
        write_mrc(paths["half1"], self.half_a, self.apix, force=force)
        write_mrc(paths["half2"], self.half_b, self.apix, force=force)
        curves = {"fsc_unmasked": self.fsc, "fsc_masked": self.fsc_masked}
        write_fsc_table(paths["fsc_txt"], curves, self.box, self.apix, force=force)
        write_fsc_table(paths["fsc_json"], curves, self.box, self.apix, force=force)
        labels = {"half maps, unmasked": self.fsc, "half maps, masked (corrected)": self.fsc_masked}
        save_fsc_plot(paths["fsc_png"], labels, self.box, self.apix, thresholds=(FSC_THRESHOLD, 0.5), force=force)
        return paths


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
) -> Reconstruction:
    """Reconstruct one map from particles with known poses (and CTF, when present).

    1. Stream the images once (:func:`backproject`) into two half-set
       accumulators (``particles.half_set``, e.g. ``_rlnRandomSubset``; random
       halves from ``seed`` where unknown).
    2. Wiener-filter the halves and the full map with ``λ(k)`` from the
       half-map SSNR (:func:`cryoscape.reconstruct.wiener.gold_standard`,
       ``n_iterations`` SSNR updates).
    3. FSC between the filtered halves, its 0.143 resolution, and the masked
       FSC corrected by phase randomisation (``mask``: ``None`` for a soft
       sphere, an array or an MRC path).

    ``particle_weights`` (N,) optionally weights or (0) excludes particles;
    ``skip_bad`` leaves out images with NaN/Inf pixels instead of failing.
    """
    from cryoscape.reconstruct.wiener import gold_standard
    from cryoscape.validate.fsc import corrected_masked_fsc, fsc

    mask_arr = check_reconstruction_inputs(particles, mask, particle_weights, seed)
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
    )
    masked = corrected_masked_fsc(gs.half_a, gs.half_b, mask_arr, rng=np.random.default_rng(seed))
    return _result(gs, np.asarray(masked.corrected, dtype=np.float64), sums, float(particles.apix), mask_arr)


def _name(particles: Any) -> str:
    return getattr(particles, "name", "the particle set")


def check_reconstruction_inputs(particles: Any, mask: str | Path | np.ndarray | None = None,
                                particle_weights: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Check everything :func:`reconstruct` needs before any image is read; return the mask ``[D, D, D]``.

    Raises :class:`~cryoscape.errors.InputError` for particles without poses, an
    unknown or mixed box or pixel size, missing image stacks, a mask of another
    box or voxel size, bad particle weights, or a half set with no particle.
    """
    particles.require_poses("reconstruction")
    box, apix = int(particles.box), float(particles.apix)
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
    )

"""The consensus-reconstruction report: FSC, central slices, a particle montage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoscape.report.figures import central_slices, fsc_curves, particle_montage
from cryoscape.report.html import Section, write_report


def consensus_sections(
    reconstruction,
    particle_images: np.ndarray,
    truth_volume: np.ndarray | None = None,
    fsc_truth: np.ndarray | None = None,
    summary: list[tuple[str, str]] | None = None,
) -> list[Section]:
    """Report sections for a known-pose reconstruction.

    ``reconstruction`` is a :class:`cryoscape.reconstruct.Reconstruction`;
    ``particle_images`` a few particles ``[n, y, x]`` to show;
    ``truth_volume`` and ``fsc_truth`` the ground truth and the FSC of the map
    against it, where known (simulated data).
    """
    rec = reconstruction
    table = list(summary or [])
    table += [
        ("particles", f"{rec.n_particles}"),
        ("box, pixel size", f"{rec.volume.shape[0]} px, {rec.apix:.3f} Å/px"),
        ("resolution, FSC = 0.143 (unmasked)", f"{rec.resolution_A:.2f} Å"),
        ("resolution, FSC = 0.143 (masked, corrected)", f"{rec.resolution_masked_A:.2f} Å"),
    ]
    curves = {"half maps (unmasked)": rec.fsc, "half maps (masked, corrected)": rec.fsc_masked}
    if fsc_truth is not None:
        curves["map vs ground truth"] = fsc_truth
    volumes = {"consensus": rec.volume}
    if truth_volume is not None:
        volumes["ground truth"] = truth_volume
    return [
        Section("Summary", table=table),
        Section(
            "Fourier shell correlation",
            paragraphs=["Gold-standard FSC between independently reconstructed half maps; dashed lines at 0.143 and 0.5."],
            figures=[(fsc_curves(curves, rec.shell_frequencies), "FSC against spatial frequency")],
        ),
        Section("Central slices", figures=[(central_slices(volumes), "central sections through the maps")]),
        Section("Particles", figures=[(particle_montage(particle_images), "a sample of the particle images as stored")]),
    ]


def write_consensus_report(path: str | Path, title: str, sections: list[Section], force: bool = False) -> Path:
    """Write the report (self-contained HTML) atomically."""
    return write_report(path, title, sections, force)

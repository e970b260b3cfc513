"""The demonstration pipeline behind ``cryoscape demo``.

Simulates the built-in AdK closed→open dataset, reconstructs the consensus
map with known poses and CTF, compares it with the ground truth of the
middle conformation, and writes ``report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def run_demo(
    out_dir: str | Path,
    *,
    n_particles: int = 20000,
    box: int = 64,
    apix: float = 1.5,
    snr: float = 0.05,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; return the paths written and the resolution (Å)."""
    from cryoscape.reconstruct import reconstruct
    from cryoscape.report.consensus import consensus_sections, write_consensus_report
    from cryoscape.simulate import simulate_dataset
    from cryoscape.validate.fsc import fsc

    out = Path(out_dir)
    sim = simulate_dataset(
        "adk", n_particles=n_particles, box=box, apix=apix, snr=snr, seed=seed,
        out_dir=out / "sim", force=force, progress=progress,
    )
    particles = sim.particles()
    rec = reconstruct(particles, progress=progress)
    map_path = out / "consensus.mrc"
    rec.save(map_path, force=force)

    n_frames = int(np.max(sim.truth["conformation"])) + 1
    truth, _ = sim.ground_truth_volume(n_frames // 2)
    fsc_truth = fsc(rec.volume, truth)
    sections = consensus_sections(
        rec,
        particles.read_images(np.arange(min(24, len(particles)))),
        truth_volume=truth,
        fsc_truth=fsc_truth,
        summary=[
            ("dataset", f"AdK closed→open, {n_frames} conformations, SNR {snr:g}"),
            ("ground truth shown", f"middle conformation (frame {n_frames // 2})"),
        ],
    )
    report = write_consensus_report(out / "report.html", "cryoscape demo: AdK consensus reconstruction", sections, force)
    return {"star": sim.star_path, "map": map_path, "report": report, "resolution_A": rec.resolution_A}

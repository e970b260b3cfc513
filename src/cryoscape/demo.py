"""The demonstration pipeline behind ``cryoscape demo``.

Simulates the built-in AdK closed→open dataset, reconstructs the consensus
map with known poses and CTF, compares it with the ground truth of the
middle conformation, then fits the linear family (``pca``: mean, principal
volumes, per-particle coordinates; on images Fourier-cropped to
``pca_box``) and analyses its latent space against the true frame index, and
writes ``report.html`` (with the run's own ``run_pca/analysis/report.html``).
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
    heterogeneity: bool = True,
    pca_components: int = 4,
    pca_iterations: int = 8,
    pca_box: int = 32,
    drgn_epochs: int = 0,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; return the paths written and the resolution (Å).

    ``heterogeneity`` adds the ``pca`` fit (``pca_components`` principal volumes,
    ``pca_iterations`` EM iterations, images cropped to ``pca_box`` px when the
    box is larger) and its analysis; the result then has ``pca_run``,
    ``pca_report`` and ``spearman`` (|Spearman| of the first latent coordinate
    with the true frame). ``drgn_epochs > 0`` (``cryoscape demo --full``) also trains
    the neural hyper-molecule (``drgn``, VAE, 8-D latents) for that many epochs on the
    same cropped images and analyses it the same way (``drgn_run``, ``drgn_report``,
    ``drgn_spearman``).
    """
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
    result: dict[str, Any] = {"star": sim.star_path, "map": map_path, "resolution_A": rec.resolution_A}
    if heterogeneity:
        result.update(_heterogeneity(sim, out, pca_components, pca_iterations, pca_box, box, seed, force, progress))
        sections.append(_heterogeneity_section(result, out))
    if drgn_epochs > 0:
        result.update(_neural(result.get("pca_run"), sim, out, drgn_epochs, seed, force, progress))
        sections.append(_neural_section(result, out))
    result["report"] = write_consensus_report(out / "report.html", "cryoscape demo: AdK reconstruction and heterogeneity",
                                              sections, force)
    return result


def _heterogeneity(sim: Any, out: Path, components: int, iterations: int, pca_box: int, box: int, seed: int,
                   force: bool, progress: bool) -> dict[str, Any]:
    """Fit ``pca`` into ``out/run_pca`` and analyse it against the truth; paths and figures of merit."""
    from cryoscape.methods.pca import run_pca
    from cryoscape.validate.metrics import spearman_abs

    downsample = pca_box if box > pca_box else None
    fit = run_pca(sim.star_path, out / "run_pca", components, iterations, downsample=downsample, seed=seed,
                  force=force, progress=progress)
    analysis, report = _analyse(fit.run, sim, seed, force)
    first = spearman_abs(fit.result.latents[:, :1], np.asarray(sim.truth["coordinate"], dtype=np.float64))
    return {"pca_run": fit.run.path, "pca_report": report,
            "spearman": float(first), "spearman_pc1": analysis.spearman_pc1, "pca_elapsed_s": fit.elapsed_s,
            "eigenvalues": np.asarray(fit.result.eigenvalues).tolist()}


def _analyse(run: Any, sim: Any, seed: int, force: bool) -> tuple[Any, Path]:
    """``cryoscape analyze`` of a run against the simulation's truth: the analysis and its report.html."""
    from cryoscape.analysis.analysis_files import save_analysis
    from cryoscape.analysis.latent_analysis import AnalysisSettings
    from cryoscape.analysis.run_analysis import analyse_run
    from cryoscape.methods.registry import volume_function
    from cryoscape.report.run_report import REPORT_NAME, write_analysis_report

    analysis = analyse_run(run, AnalysisSettings(seed=seed), truth=sim.truth_path, volume_fn=volume_function(run.method))
    save_analysis(analysis, run.analysis_dir, force)
    write_analysis_report(analysis, run.analysis_dir, force)
    return analysis, run.analysis_dir / REPORT_NAME


def _heterogeneity_section(result: dict[str, Any], out: Path) -> Any:
    """The report section that summarises the ``pca`` fit and links to its own report."""
    from cryoscape.report.html import Section

    rel = Path(result["pca_report"]).resolve().relative_to(out.resolve())
    return Section(
        "Heterogeneity: principal volumes (pca)",
        paragraphs=[f"Probabilistic PCA of the particles with their known poses and CTF; the run folder is "
                    f"{Path(result['pca_run']).name}/ and its latent-space report is {rel}."],
        table=[("|Spearman|, first latent coordinate vs true frame", f"{result['spearman']:.3f}"),
               ("|Spearman|, PC1 of the latents vs true frame",
                "n/a" if result["spearman_pc1"] is None else f"{result['spearman_pc1']:.3f}"),
               ("latent variances (eigenvalues)", ", ".join(f"{v:.3g}" for v in result["eigenvalues"])),
               ("fit time", f"{result['pca_elapsed_s']:.0f} s")],
    )


def _neural(pca_run: Any, sim: Any, out: Path, epochs: int, seed: int, force: bool, progress: bool) -> dict[str, Any]:
    """Train ``drgn`` into ``out/run_drgn`` (on the pca run's cropped images when there are any) and analyse it."""
    from cryoscape.methods.drgn import run_drgn
    from cryoscape.validate.metrics import spearman_abs

    star = sim.star_path
    if pca_run is not None:
        cropped = sorted(Path(pca_run).glob("particles_box*.star"))
        star = cropped[0] if cropped else star
    fit = run_drgn(star, out / "run_drgn", latent_dim=8, epochs=epochs, seed=seed, force=force, progress=progress)
    _analyse(fit.run, sim, seed, force)
    rho = spearman_abs(fit.latents, np.asarray(sim.truth["coordinate"], dtype=np.float64))
    return {"drgn_run": fit.run.path, "drgn_report": fit.run.analysis_dir / "report.html",
            "drgn_spearman": float(rho), "drgn_elapsed_s": fit.elapsed_s}


def _neural_section(result: dict[str, Any], out: Path) -> Any:
    """The report section that summarises the ``drgn`` fit and links to its own report."""
    from cryoscape.report.html import Section

    rel = Path(result["drgn_report"]).resolve().relative_to(out.resolve())
    return Section(
        "Heterogeneity: neural hyper-molecule (drgn)",
        paragraphs=[f"A variational autoencoder over a Fourier-domain neural decoder, trained on the same "
                    f"particles; its latent-space report is {rel}."],
        table=[("|Spearman|, PC1 of the 8-D latents vs true frame", f"{result['drgn_spearman']:.3f}"),
               ("training time", f"{result['drgn_elapsed_s']:.0f} s")],
    )

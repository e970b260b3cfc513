"""Figures and the self-contained HTML report of a run's latent-space analysis.

:func:`analysis_figures` draws every figure of a
:class:`cryoscape.analysis.pipeline.LatentAnalysis`; :func:`write_analysis_report`
writes them as PNG files and embeds them in one ``report.html`` (base64, no
external files). Generated volumes are shown per series (cluster centres,
points along each trajectory) as central sections beside isosurface renders
(:mod:`cryoscape.report.isosurface`). :func:`traversal_figure` draws a graph
path on the embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cryoscape.analysis.pipeline import GeneratedVolume, LatentAnalysis, Traversal
from cryoscape.io.atomic import write_bytes_atomic
from cryoscape.report.figures import figure_png_bytes, learning_curves_figure
from cryoscape.report.html import Section, write_report
from cryoscape.report.isosurface import ENCLOSED_FRACTION, volume_views
from cryoscape.report.latent_figures import free_energy_figure, latent_scatter, outlier_histogram, trajectory_figure

REPORT_NAME = "report.html"
_MAX_VOLUMES_SHOWN = 8

Figures = dict[str, tuple[Figure, str]]
"""File stem → (figure, caption)."""


# ----------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------


def _scatter_figures(a: LatentAnalysis) -> Figures:
    """The embedding coloured by density, cluster and (when known) the true coordinate."""
    axes = a.axis_labels
    m = a.embedding_method.upper()
    figs: Figures = {
        "latent_density": (latent_scatter(a.embedding, a.log_density, "ln k-NN density", title=f"{m}: density",
                                          axis_labels=axes), f"{m} embedding coloured by the log k-NN latent density"),
        "latent_clusters": (latent_scatter(a.embedding, a.labels, "cluster", categorical=True,
                                           title=f"{m}: k-means clusters", axis_labels=axes),
                            f"{m} embedding coloured by k-means cluster (k = {a.centres.shape[0]})"),
    }
    if a.truth is not None:
        figs["latent_truth"] = (latent_scatter(a.embedding, a.truth, "true coordinate", categorical=False,
                                               title=f"{m}: ground truth", axis_labels=axes),
                                f"{m} embedding coloured by the true conformational coordinate")
    return figs


def _trajectory_figures(a: LatentAnalysis) -> Figures:
    """One figure per principal-component traversal."""
    figs: Figures = {}
    for key, traj in a.trajectories.items():
        line = a.on_embedding(traj.points)
        fig = trajectory_figure(a.embedding, line, a.log_density, "ln density", title=f"{key.upper()} traversal",
                                axis_labels=a.axis_labels)
        figs[f"trajectory_{key}"] = (fig, f"{len(traj.points)} points along {key.upper()} at the "
                                          f"{traj.percentiles[0]:.0f}th to {traj.percentiles[-1]:.0f}th percentiles")
    return figs


def _series(a: LatentAnalysis) -> dict[str, list[GeneratedVolume]]:
    """The generated volumes by series, in order: ``cluster`` (the centres), then one per trajectory (``pc1`` ...)."""
    series: dict[str, list[GeneratedVolume]] = {}
    for v in a.volumes:
        series.setdefault(v.name.rsplit("_", 1)[0], []).append(v)
    return series


def _shown(volumes: list[GeneratedVolume]) -> list[GeneratedVolume]:
    """At most :data:`_MAX_VOLUMES_SHOWN` of a series, evenly spaced, first and last kept."""
    if len(volumes) <= _MAX_VOLUMES_SHOWN:
        return volumes
    picks = np.unique(np.rint(np.linspace(0, len(volumes) - 1, _MAX_VOLUMES_SHOWN)).astype(int))
    return [volumes[i] for i in picks]


def _volume_figures(a: LatentAnalysis) -> Figures:
    """Per series, central sections and isosurfaces: ``volumes`` (cluster centres), ``volumes_<trajectory>``."""
    figs: Figures = {}
    for key, vols in _series(a).items():
        shown = _shown(vols)
        what = "cluster centres" if key == "cluster" else f"points along {key.upper()}"
        caption = (f"{len(shown)} of {len(vols)} volumes at the {what} ({shown[0].source}): central sections and "
                   f"the isosurface enclosing {100 * ENCLOSED_FRACTION:g}% of the box (one level for the series), "
                   "all seen from one direction")
        figs["volumes" if key == "cluster" else f"volumes_{key}"] = (
            volume_views({v.name: v.volume for v in shown}), caption)
    return figs


def analysis_figures(a: LatentAnalysis) -> Figures:
    """Every figure of the analysis, by file stem."""
    figs = _scatter_figures(a)
    if a.landscape is not None:
        figs["free_energy"] = (free_energy_figure(a.landscape, a.embedding, axis_labels=a.axis_labels),
                               "free energy −ln(p/p_max) in kT of the embedding (Boltzmann inversion of a KDE)")
    figs.update(_trajectory_figures(a))
    figs["outlier_scores"] = (outlier_histogram(a.outliers.score, threshold=a.settings.outlier_threshold),
                              f"outlier scores; {int(a.outliers.flagged(a.settings.outlier_threshold).sum())} "
                              f"particles above {a.settings.outlier_threshold:g}")
    figs.update(_volume_figures(a))
    if a.learning_curves:
        figs["learning_curve"] = (learning_curves_figure(a.learning_curves, a.learning_axis),
                                  f"learning curve{'s' if len(a.learning_curves) > 1 else ''} from the run's "
                                  f"metrics.json, per {a.learning_axis}")
    return figs


def traversal_figure(t: Traversal) -> Figure:
    """The graph path drawn over the embedding, start to end."""
    axes = ("UMAP 1", "UMAP 2") if t.embedding_method == "umap" else ("PC1", "PC2")
    title = f"path from particle {t.start} to {t.end}"
    return trajectory_figure(t.embedding, t.embedding[t.path.indices], title=title, axis_labels=axes)


def save_figure(fig: Figure, path: str | Path, force: bool = False) -> Path:
    """Write one figure as PNG atomically."""
    return write_bytes_atomic(path, figure_png_bytes(fig), force)


# ----------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table, or "-"."""
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _summary_section(a: LatentAnalysis) -> Section:
    """Run facts and headline numbers."""
    evr = ", ".join(f"{r:.3f}" for r in a.pca.explained_variance_ratio[:4])
    table = [
        ("run", str(a.run_info.get("run", "-"))),
        ("method", str(a.run_info.get("method", "-"))),
        ("particles", str(a.n_particles)),
        ("latent dimension", str(a.latents.shape[1])),
        ("embedding", a.embedding_method.upper()),
        ("PCA explained variance ratio", evr),
        ("k-means clusters", str(a.centres.shape[0])),
        (f"outliers (score > {a.settings.outlier_threshold:g})", str(int(a.outliers.flagged(a.settings.outlier_threshold).sum()))),
        ("outlier score from", "latent density" + ("" if a.outliers.error_z is None else
                                                   " and the fit of each image to the consensus map")),
    ]
    if a.fit_correlation is not None:
        table.append(("fit to the consensus map (median correlation)", _fmt(float(np.median(a.fit_correlation)))))
    if a.truth is not None:
        table.append(("|Spearman| PC1 vs truth", _fmt(a.spearman_pc1)))
        if a.knn_preservation is not None:
            table.append(("k-NN preservation (chance)", f"{_fmt(a.knn_preservation[0])} ({_fmt(a.knn_preservation[1])})"))
    return Section("Summary", paragraphs=list(a.notes), table=table)


def _cluster_section(a: LatentAnalysis, figs: Figures) -> Section:
    """Particle counts per cluster, the particle at each centre and its volume."""
    vols = {v.name for v in a.volumes}
    rows = []
    for j, count in enumerate(a.cluster_counts):
        name = f"cluster_{j:03d}"
        vol = f", volume volumes/{name}.mrc" if name in vols else ""
        rows.append((f"cluster {j}", f"{int(count)} particles ({100.0 * count / a.n_particles:.1f}%), "
                                     f"centre particle {int(a.centre_particles[j])}{vol}"))
    return Section("Clusters", table=rows, figures=[figs["latent_clusters"]])


def analysis_sections(a: LatentAnalysis, figs: Figures) -> list[Section]:
    """The report's sections, in order."""
    latent = [figs[n] for n in ("latent_density", "latent_truth") if n in figs]
    sections = [_summary_section(a), Section("Latent space", figures=latent), _cluster_section(a, figs)]
    if "free_energy" in figs:
        sections.append(Section("Free-energy landscape", paragraphs=[
            "Assumes the particle populations reflect thermal equilibrium; the energy is only as meaningful "
            "as distances in the embedding."], figures=[figs["free_energy"]]))
    trajectories = [k for k in figs if k.startswith("trajectory_")]
    sections.append(Section("Trajectories", figures=[figs[n] for k in trajectories
                                                     for n in (k, "volumes_" + k.removeprefix("trajectory_")) if n in figs]))
    sections.append(Section("Outliers", figures=[figs["outlier_scores"]]))
    if "learning_curve" in figs:
        sections.append(Section("Learning curve", figures=[figs["learning_curve"]]))
    if "volumes" in figs:
        sections.append(Section("Volumes at the cluster centres", figures=[figs["volumes"]]))
    return sections


def write_analysis_report(a: LatentAnalysis, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write every figure as ``out_dir/<name>.png`` and the self-contained ``out_dir/report.html``."""
    out = Path(out_dir)
    figs = analysis_figures(a)
    paths = [save_figure(fig, out / f"{name}.png", force) for name, (fig, _) in figs.items()]
    title = f"Latent-space analysis: {a.run_info.get('run', 'run')}"
    paths.append(write_report(out / REPORT_NAME, title, analysis_sections(a, figs), force))
    return paths

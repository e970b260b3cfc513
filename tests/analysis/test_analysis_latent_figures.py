"""Latent-space figures render to non-blank PNGs."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from cryoscape.analysis.landscape import free_energy_landscape
from cryoscape.analysis.latent import kmeans, pca_embedding
from cryoscape.analysis.outliers import outlier_scores
from cryoscape.analysis.trajectory import graph_path
from cryoscape.report.figures import figure_png_bytes, save_png
from cryoscape.report.latent_figures import (
    free_energy_figure,
    latent_scatter,
    outlier_histogram,
    trajectory_figure,
)


def _assert_png(fig) -> None:
    data = figure_png_bytes(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(io.BytesIO(data))
    assert pixels[..., :3].std() > 0.02  # not blank


def _latents() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.vstack([rng.standard_normal((200, 4)), 2.5 + rng.standard_normal((200, 4)), 20 + rng.standard_normal((5, 4))])


def test_all_latent_figures_render(tmp_path):
    Z = _latents()
    emb, _, _ = pca_embedding(Z)
    labels, _ = kmeans(Z, 3, seed=0)
    land = free_energy_landscape(emb, grid_size=40)
    scores = outlier_scores(Z).score
    path = graph_path(Z, 0, 250, k=10)
    junk = np.r_[np.zeros(400, bool), np.ones(5, bool)]
    figs = [
        latent_scatter(emb, land.particle_density, label="density"),
        latent_scatter(emb, labels, label="cluster", title="k-means"),
        latent_scatter(emb),
        free_energy_figure(land, emb),
        trajectory_figure(emb, emb[path.indices], values=labels, label="cluster"),
        outlier_histogram(scores, junk, threshold=3.0),
        outlier_histogram(scores),
    ]
    for fig in figs:
        _assert_png(fig)
    out = save_png(figs[0], tmp_path / "scatter.png")
    assert out.stat().st_size > 1000

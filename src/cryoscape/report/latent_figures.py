"""Figures of latent spaces: scatter, free-energy landscape, trajectories, outlier scores.

Every function takes a 2-D embedding ``N×2`` (e.g. from PCA or UMAP) or
scores, and returns a matplotlib ``Figure`` on an Agg canvas from
:func:`cryoscape.report.figures.new_figure`; write it with
:func:`cryoscape.report.figures.save_png`. Large particle sets are drawn from
a fixed random subset of ``max_points`` (seed 0) so figures stay small.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cryoscape.analysis.landscape import FreeEnergyLandscape
from cryoscape.errors import InputError
from cryoscape.report.figures import new_figure

_MAX_CATEGORIES = 20


def _subset(n: int, max_points: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` particles (seed 0)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=max_points, replace=False))


def _as_xy(embedding: Any) -> np.ndarray:
    """The embedding as a float ``N×2`` array."""
    xy = np.asarray(embedding, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"figures need a 2-D embedding (N×2); got shape {xy.shape}")
    return xy


def _is_categorical(values: np.ndarray, categorical: bool | None) -> bool:
    """Integer/boolean values with few distinct levels are drawn as categories."""
    if categorical is not None:
        return categorical
    kinds = np.issubdtype(values.dtype, np.integer) or values.dtype == bool
    return bool(kinds and np.unique(values).size <= _MAX_CATEGORIES)


def _scatter(
    fig: Figure, ax: Axes, xy: np.ndarray, values: np.ndarray | None, categorical: bool | None,
    label: str, max_points: int,
) -> None:
    """Draw particles on ``ax``, coloured by ``values`` with a legend or colourbar."""
    idx = _subset(xy.shape[0], max_points)
    size = float(np.clip(2000.0 / max(idx.size, 1), 1.0, 12.0))
    if values is None:
        ax.scatter(xy[idx, 0], xy[idx, 1], s=size, c="tab:blue", alpha=0.6, lw=0, rasterized=True)
        return
    if _is_categorical(values, categorical):
        levels = np.unique(values)
        colours = _category_colours(levels.size)
        for level, colour in zip(levels, colours):
            sel = idx[values[idx] == level]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=colour, alpha=0.7, lw=0, label=f"{label} {level}", rasterized=True)
        ax.legend(fontsize=7, markerscale=max(1.0, 12.0 / size) ** 0.5, loc="best", frameon=False)
        return
    order = idx[np.argsort(values[idx])]  # high values drawn last, on top
    sc = ax.scatter(xy[order, 0], xy[order, 1], s=size, c=values[order], cmap="viridis", lw=0, rasterized=True)
    fig.colorbar(sc, ax=ax, label=label)


def _category_colours(n: int) -> list[Any]:
    """``n`` distinguishable colours (tab10, tab20 beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _decorate(ax: Axes, title: str | None, axis_labels: Sequence[str]) -> None:
    """Axis labels and title."""
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if title:
        ax.set_title(title, fontsize=10)


def latent_scatter(
    embedding: Any,
    values: Any | None = None,
    label: str = "value",
    categorical: bool | None = None,
    title: str | None = None,
    axis_labels: Sequence[str] = ("component 1", "component 2"),
    max_points: int = 50000,
) -> Figure:
    """Particles on a 2-D embedding, coloured by ``values`` (N,).

    Integer or boolean values with at most 20 levels (e.g. cluster or true
    class labels) get a legend; other values (e.g. density) a colourbar.
    ``categorical`` forces either choice.
    """
    xy = _as_xy(embedding)
    vals = None if values is None else np.asarray(values).reshape(-1)
    if vals is not None and vals.size != xy.shape[0]:
        raise InputError(f"values must have one entry per particle ({xy.shape[0]}); got {vals.size}")
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    _scatter(fig, ax, xy, vals, categorical, label, max_points)
    _decorate(ax, title, axis_labels)
    fig.tight_layout()
    return fig


def free_energy_figure(
    landscape: FreeEnergyLandscape,
    embedding: Any | None = None,
    max_kT: float | None = None,
    n_levels: int = 12,
    title: str | None = "free energy",
    axis_labels: Sequence[str] = ("component 1", "component 2"),
    max_points: int = 5000,
) -> Figure:
    """Filled contours of the free energy (kT) with the particles overlaid.

    ``max_kT`` caps the colour scale (default: the 99th percentile of the
    grid values, so empty corners do not wash out the basins).
    """
    G = landscape.free_energy
    top = float(np.percentile(G, 99)) if max_kT is None else float(max_kT)
    top = top if top > 0 else 1.0
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    cs = ax.contourf(landscape.x, landscape.y, np.minimum(G, top), levels=np.linspace(0.0, top, n_levels + 1), cmap="magma_r")
    fig.colorbar(cs, ax=ax, label="G (kT)", format="%.1f")
    if embedding is not None:
        xy = _as_xy(embedding)
        idx = _subset(xy.shape[0], max_points)
        ax.scatter(xy[idx, 0], xy[idx, 1], s=1.5, c="k", alpha=0.25, lw=0, rasterized=True)
    mx, my = landscape.minimum
    ax.plot([mx], [my], marker="x", color="cyan", ms=8, mew=2, label="minimum")
    ax.legend(fontsize=7, loc="best", frameon=False)
    _decorate(ax, title, axis_labels)
    fig.tight_layout()
    return fig


def trajectory_figure(
    embedding: Any,
    path: Any,
    values: Any | None = None,
    label: str = "value",
    title: str | None = "trajectory",
    axis_labels: Sequence[str] = ("component 1", "component 2"),
    max_points: int = 20000,
) -> Figure:
    """A path (m×2, in embedding coordinates) drawn over the particles, start to end.

    For a graph path use ``embedding[path.indices]``; for a PC traversal on a
    PCA embedding, the points' PC coordinates.
    """
    xy = _as_xy(embedding)
    line = _as_xy(path)
    vals = None if values is None else np.asarray(values).reshape(-1)
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    _scatter(fig, ax, xy, vals, None, label, max_points)
    ax.plot(line[:, 0], line[:, 1], "-", color="crimson", lw=2)
    ax.scatter(line[:, 0], line[:, 1], s=14, c=np.arange(line.shape[0]), cmap="autumn", zorder=3, edgecolors="k", linewidths=0.4)
    ax.annotate("start", line[0], fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.annotate("end", line[-1], fontsize=8, xytext=(4, 4), textcoords="offset points")
    _decorate(ax, title, axis_labels)
    fig.tight_layout()
    return fig


def outlier_histogram(
    scores: Any,
    labels: Any | None = None,
    threshold: float | None = None,
    bins: int = 60,
    title: str | None = "outlier score",
) -> Figure:
    """Histogram of junk scores; with ``labels`` (True = junk), one histogram per class.

    A vertical line marks ``threshold`` when given.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    edges = np.histogram_bin_edges(s, bins=bins)
    fig = new_figure(5.5, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.hist(s, bins=edges, color="tab:blue", alpha=0.8)
    else:
        y = np.asarray(labels).reshape(-1).astype(bool)
        if y.size != s.size:
            raise InputError(f"labels must have one entry per score ({s.size}); got {y.size}")
        ax.hist(s[~y], bins=edges, color="tab:blue", alpha=0.6, label=f"inliers ({int((~y).sum())})")
        ax.hist(s[y], bins=edges, color="tab:red", alpha=0.6, label=f"junk ({int(y.sum())})")
        ax.legend(fontsize=8, frameon=False)
    if threshold is not None:
        ax.axvline(float(threshold), color="k", ls="--", lw=1)
    ax.set_xlabel("score (higher = more likely junk)")
    ax.set_ylabel("particles")
    ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig

"""Figures for reports: central slices, particle montages, FSC curves, learning curves.

Every function returns a matplotlib ``Figure`` built with the non-interactive
Agg canvas (no display needed); :func:`save_png` writes one atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cryoscape.io.atomic import atomic_path


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure attached to an Agg canvas (thread-safe, no pyplot state)."""
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def central_slices(volumes: Mapping[str, np.ndarray]) -> Figure:
    """Central z, y and x sections of each volume ``[z, y, x]``, one row per volume."""
    names = list(volumes)
    fig = new_figure(7.5, 2.5 * len(names))
    for row, name in enumerate(names):
        vol = np.asarray(volumes[name], dtype=np.float32)
        c = vol.shape[0] // 2
        sections = {"z = centre (x→, y↑)": vol[c], "y = centre (x→, z↑)": vol[:, c, :], "x = centre (y→, z↑)": vol[:, :, c]}
        for col, (label, img) in enumerate(sections.items()):
            ax = fig.add_subplot(len(names), 3, 3 * row + col + 1)
            ax.imshow(img, cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {label}" if col == 0 else label, fontsize=8)
    fig.tight_layout()
    return fig


def particle_montage(images: np.ndarray, columns: int = 8, title: str | None = None) -> Figure:
    """A grid of particle images ``[n, y, x]`` (each scaled to its own range)."""
    images = np.asarray(images, dtype=np.float32)
    n = images.shape[0]
    rows = max(1, int(np.ceil(n / columns)))
    fig = new_figure(1.1 * columns, 1.1 * rows + (0.3 if title else 0.0))
    for i in range(n):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(images[i], cmap="gray", origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fsc_curves(
    curves: Mapping[str, np.ndarray],
    frequencies_per_A: np.ndarray,
    thresholds: Sequence[float] = (0.143, 0.5),
) -> Figure:
    """FSC against spatial frequency (1/Å), with horizontal threshold lines."""
    fig = new_figure(5.5, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for label, values in curves.items():
        ax.plot(frequencies_per_A, np.asarray(values), label=label)
    for t in thresholds:
        ax.axhline(t, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: At most this many learning curves are drawn (one panel each).
MAX_LEARNING_CURVES = 6


def learning_curves_figure(curves: Mapping[str, np.ndarray], axis: str = "iteration") -> Figure:
    """One panel per curve (at most :data:`MAX_LEARNING_CURVES`): value against iteration/epoch ``1 .. n``.

    A curve whose values are all positive and span more than a factor 100 is
    drawn on a logarithmic y axis.
    """
    names = list(curves)[:MAX_LEARNING_CURVES]
    if not names:
        raise ValueError("no learning curve to draw")
    cols = min(len(names), 3)
    rows = int(np.ceil(len(names) / cols))
    fig = new_figure(3.4 * cols, 2.8 * rows)
    for j, name in enumerate(names):
        y = np.asarray(curves[name], dtype=np.float64)
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.plot(np.arange(1, y.size + 1), y, marker="o" if y.size <= 30 else None, ms=3, lw=1.2)
        if np.all(y > 0) and y.max() > 100 * y.min():
            ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def figure_png_bytes(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, force: bool = False) -> Path:
    """Write a figure as PNG, atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(figure_png_bytes(fig))
    return Path(path)

"""Isosurface renders of volumes: the level rule, the mesh, the image, and their place in the run report."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.report.isosurface import (
    ENCLOSED_FRACTION,
    isosurface_figure,
    isosurface_level,
    isosurface_mesh,
    volume_views,
)


def _ball(D: int, radius: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0), width: float = 1.0) -> np.ndarray:
    """A soft ball ``[z, y, x]``: 1 inside, 0 outside, a logistic edge of ``width`` voxels at ``radius`` (value 0.5)."""
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    return (1.0 / (1.0 + np.exp((r - radius) / width))).astype(np.float32)


def _rgb(fig) -> np.ndarray:
    """The figure drawn on its Agg canvas, as float RGB in [0, 1]."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0


def test_level_encloses_the_fraction_of_the_box():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((20, 20, 20))
    for f in (0.01, ENCLOSED_FRACTION, 0.3):
        assert abs(np.mean(vol > isosurface_level(vol, f)) - f) < 1.5 / vol.size
    ball = _ball(32, 6.0)
    assert 0.0 < isosurface_level(ball, 0.01) < 1.0
    # a ball filling 3.5 % of the box: a level enclosing 5 % lies on its outer edge, below 0.5
    inside = 4 / 3 * np.pi * 6.0 ** 3 / 32 ** 3
    assert inside < 0.05 and isosurface_level(ball, 0.05) < 0.5 < isosurface_level(ball, inside / 2)
    with pytest.raises(ValueError, match="enclosed_fraction"):
        isosurface_level(vol, 1.0)


def test_one_level_for_a_series_pools_its_maps():
    a, b = _ball(24, 4.0), 2.0 * _ball(24, 4.0, centre=(5.0, 0.0, 0.0))
    pooled = isosurface_level([a, b], 0.05)
    both = np.concatenate([a.ravel(), b.ravel()])
    assert abs(np.mean(both > pooled) - 0.05) < 2e-3  # up to one shell of equal values (the balls are symmetric)
    # a map that only moves keeps the level of the unmoved one
    assert isosurface_level([a, _ball(24, 4.0, centre=(0.0, 3.0, 0.0))], 0.02) == pytest.approx(
        isosurface_level(a, 0.02), abs=1e-3)


def test_mesh_of_a_ball_lies_on_its_radius():
    D, radius = 32, 7.0
    verts, faces = isosurface_mesh(_ball(D, radius, centre=(2.0, -1.0, 0.0)), 0.5)
    assert faces.shape[1] == 3 and faces.shape[0] > 100
    r = np.linalg.norm(verts - np.array([D // 2 + 2.0, D // 2 - 1.0, D // 2]), axis=1)  # (x, y, z) order
    assert abs(r.mean() - radius) < 0.1 and r.std() < 0.1
    assert isosurface_mesh(_ball(D, radius), 2.0)[1].shape == (0, 3)  # above the map: no surface


def test_small_detached_specks_are_hidden():
    vol = _ball(32, 6.0)
    vol[2, 2, 2] = vol[29, 3, 28] = 1.0  # two one-voxel specks far from the ball
    verts, _ = isosurface_mesh(vol, 0.5)
    r = np.linalg.norm(verts - 16.0, axis=1)
    assert r.max() < 7.0  # only the ball's surface
    twin = np.maximum(_ball(32, 5.0, centre=(-8.0, 0.0, 0.0)), _ball(32, 5.0, centre=(8.0, 0.0, 0.0)))
    verts, _ = isosurface_mesh(twin, 0.5)  # two equal pieces: both kept
    assert (verts[:, 0] < 16).any() and (verts[:, 0] > 16).any()


def test_render_of_a_ball_is_a_lit_surface():
    img = _rgb(isosurface_figure(_ball(32, 8.0)))
    surface = (img[..., 2] - img[..., 0]) > 0.1  # the light-blue surface against white and grey lines
    assert surface.mean() > 0.02
    ys, xs = np.nonzero(surface)
    h, w = surface.shape
    assert abs(ys.mean() / h - 0.5) < 0.15 and abs(xs.mean() / w - 0.5) < 0.15  # a centred ball
    shade = img[surface].sum(axis=1)
    assert shade.max() - shade.min() > 0.3  # shaded, not flat
    empty = _rgb(isosurface_figure(_ball(32, 8.0), level=5.0))
    assert ((empty[..., 2] - empty[..., 0]) > 0.1).mean() == 0.0


def test_volume_views_rows_of_sections_and_surface():
    vols = {f"pc1_{i:02d}": _ball(24, 4.0, centre=(-6.0 + 6 * i, 0.0, 0.0)) for i in range(3)}
    fig = volume_views(vols)
    axes = fig.get_axes()
    assert len(axes) == 4 * 3
    surfaces = [ax for ax in axes if ax.name == "3d"]
    assert len(surfaces) == 3 and all(len(ax.collections) == 1 for ax in surfaces)
    assert len({(ax.elev, ax.azim) for ax in surfaces}) == 1  # one view for the series
    with pytest.raises(ValueError, match="no volume"):
        volume_views({})


def test_run_report_shows_volumes_per_series(tmp_path):
    from cryoscape.analysis.pipeline import AnalysisSettings, GeneratedVolume, analyse_latents
    from cryoscape.report.run_report import analysis_figures, analysis_sections

    rng = np.random.default_rng(0)
    t = rng.random(200)
    a = analyse_latents(np.stack([t, t ** 2], axis=1) + 0.05 * rng.standard_normal((200, 2)),
                        AnalysisSettings(n_clusters=2, n_points=3))
    a.volumes = [GeneratedVolume(f"cluster_{j:03d}", np.zeros(2), _ball(16, 3.0), 2.0, "model") for j in range(2)]
    a.volumes += [GeneratedVolume(f"pc1_{j:02d}", np.zeros(2), _ball(16, 3.0, centre=(j - 1.0, 0, 0)), 2.0, "model")
                  for j in range(3)]
    figs = analysis_figures(a)
    assert "volumes" in figs and "volumes_pc1" in figs and "volumes_pc2" not in figs
    assert "cluster centres" in figs["volumes"][1] and "points along PC1" in figs["volumes_pc1"][1]
    sections = {s.title: s for s in analysis_sections(a, figs)}
    trajectory_captions = [c for _, c in sections["Trajectories"].figures]
    assert trajectory_captions.index(figs["volumes_pc1"][1]) == trajectory_captions.index(figs["trajectory_pc1"][1]) + 1
    assert sections["Volumes at the cluster centres"].figures == [figs["volumes"]]

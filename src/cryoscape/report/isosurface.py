"""Isosurface renders of density maps, shown beside their central sections in reports.

A map is drawn as a map viewer such as ChimeraX shows it: the surface at one
density level (:func:`isosurface_level`), meshed with scikit-image's
``marching_cubes`` and drawn with matplotlib's ``Poly3DCollection`` under one
fixed light from one fixed view (:data:`VIEW`). All maps of a series (the
cluster centres, the points along one trajectory) share the level and the
view, so a change from frame to frame is a change of the map.

Axes follow the maps' ``[z, y, x]`` layout: the render's x, y and z axes are
the map's last, middle and first index, as in the central sections.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cryoscape.report.figures import new_figure

#: Fraction of the box (of all boxes of a series, pooled) that the surface encloses by default.
ENCLOSED_FRACTION = 0.05
#: The one view of every render: (elevation, azimuth) in degrees, matplotlib's convention.
VIEW = (20.0, -60.0)
#: The light, as (elevation, azimuth) in degrees: above and to the left of the viewer.
LIGHT = (55.0, -25.0)
#: Surface colour (RGB), a light blue as map viewers use.
SURFACE_RGB = (0.70, 0.72, 0.95)
#: Magnification of the 3-D axes (matplotlib pads them generously); the whole box stays in view.
ZOOM = 1.15
#: Pieces of the surface holding fewer voxels than this fraction of the largest piece are hidden ("dust").
DUST_FRACTION = 0.02
#: Maps larger than this are meshed every ``ceil(D / MAX_MESH_BOX)`` voxels (marching cubes ``step_size``).
MAX_MESH_BOX = 64

__all__ = ["ENCLOSED_FRACTION", "VIEW", "isosurface_level", "isosurface_mesh", "draw_isosurface",
           "isosurface_figure", "volume_views"]


def isosurface_level(volumes: np.ndarray | Sequence[np.ndarray], enclosed_fraction: float = ENCLOSED_FRACTION) -> float:
    """The density level whose surface encloses ``enclosed_fraction`` of the box.

    That is the ``1 - enclosed_fraction`` quantile of the voxel values: the
    voxels above it fill that fraction of the box. Given several maps (a
    series), their voxels are pooled, so one level serves all of them and a
    map whose density moves keeps the same level. 0.05 suits a molecule in a
    box about twice its diameter (a sphere of diameter d fills 6.5 % of a box
    2d wide).
    """
    if not 0.0 < enclosed_fraction < 1.0:
        raise ValueError(f"enclosed_fraction must lie in (0, 1); got {enclosed_fraction}")
    maps = [volumes] if isinstance(volumes, np.ndarray) else list(volumes)
    if not maps:
        raise ValueError("no map to choose an isosurface level from")
    values = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in maps])
    return float(np.quantile(values[np.isfinite(values)], 1.0 - enclosed_fraction))


def _without_dust(vol: np.ndarray, level: float) -> np.ndarray:
    """``vol`` with the voxels of small detached pieces above ``level`` lowered to its minimum.

    Pieces are 26-connected sets of voxels above the level; those smaller than
    :data:`DUST_FRACTION` of the largest are noise specks, which a map viewer hides.
    Voxels below the level are untouched, so the kept pieces' surfaces do not change.
    """
    from scipy import ndimage

    labels, n = ndimage.label(vol > level, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return vol
    sizes = np.bincount(labels.ravel())[1:]
    dust = np.flatnonzero(sizes < DUST_FRACTION * sizes.max()) + 1
    out = vol.copy()
    out[np.isin(labels, dust)] = vol.min()
    return out


def isosurface_mesh(volume: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` as (x, y, z) voxel coordinates and triangles ``(F, 3)`` of the surface at ``level``.

    Small detached pieces are left out (:func:`_without_dust`). Empty arrays
    when the level lies outside the map's range (no surface).
    """
    from skimage.measure import marching_cubes

    vol = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    if not vol.min() < level < vol.max():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    vol = _without_dust(vol, level)
    step = max(1, int(np.ceil(max(vol.shape) / MAX_MESH_BOX)))
    verts, faces, _, _ = marching_cubes(vol, level=level, step_size=step, allow_degenerate=False)
    return verts[:, ::-1].astype(np.float64), faces.astype(np.int64)


def _unit(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """The unit vector of a direction given as (elevation, azimuth) in degrees."""
    e, a = np.radians(elevation_deg), np.radians(azimuth_deg)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def _face_colours(triangles: np.ndarray) -> np.ndarray:
    """RGBA per triangle ``(F, 3, 3)``: ambient 0.3 plus diffuse 0.7 |n·l| (two-sided Lambert)."""
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    shade = 0.3 + 0.7 * np.abs(normals @ _unit(*LIGHT))
    rgba = np.ones((triangles.shape[0], 4))
    rgba[:, :3] = np.clip(shade[:, None] * np.asarray(SURFACE_RGB)[None, :], 0.0, 1.0)
    return rgba


def _box_edges(ax, shape: tuple[int, int, int]) -> None:
    """The 12 edges of the map's box as thin grey lines: a fixed frame that shows where the density sits."""
    nz, ny, nx = (n - 1 for n in shape)
    corners = np.array([[x, y, z] for z in (0, nz) for y in (0, ny) for x in (0, nx)], dtype=np.float64)
    for i in range(8):
        for j in range(i + 1, 8):
            if np.count_nonzero(corners[i] != corners[j]) == 1:
                ax.plot(*zip(corners[i], corners[j]), color="0.75", lw=0.5)


def draw_isosurface(ax, volume: np.ndarray, level: float) -> int:
    """Draw the surface of ``volume [z, y, x]`` at ``level`` on a 3-D axes, seen from :data:`VIEW`; return the triangle count."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    verts, faces = isosurface_mesh(volume, level)
    if faces.shape[0]:
        triangles = verts[faces]
        ax.add_collection3d(Poly3DCollection(triangles, facecolors=_face_colours(triangles), edgecolors="none"))
    nz, ny, nx = np.asarray(volume).shape
    _box_edges(ax, (nz, ny, nx))
    ax.set_xlim(0, nx - 1)
    ax.set_ylim(0, ny - 1)
    ax.set_zlim(0, nz - 1)
    ax.set_box_aspect((nx, ny, nz), zoom=ZOOM)
    ax.view_init(elev=VIEW[0], azim=VIEW[1])
    ax.set_axis_off()
    return int(faces.shape[0])


def isosurface_figure(volume: np.ndarray, level: float | None = None, size_in: float = 2.4) -> Figure:
    """One map's surface at ``level`` (default: :func:`isosurface_level` of the map) on a small square figure."""
    fig = new_figure(size_in, size_in)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    draw_isosurface(ax, volume, isosurface_level(volume) if level is None else level)
    fig.subplots_adjust(0, 0, 1, 1)
    return fig


def _slice_panels(fig: Figure, rows: int, row: int, name: str, vol: np.ndarray) -> None:
    """The central z, y and x sections of ``vol`` in the first three panels of ``row``."""
    c = [n // 2 for n in vol.shape]
    sections = {"z = centre": vol[c[0]], "y = centre": vol[:, c[1], :], "x = centre": vol[:, :, c[2]]}
    for col, (label, img) in enumerate(sections.items()):
        ax = fig.add_subplot(rows, 4, 4 * row + col + 1)
        ax.imshow(img, cmap="gray", origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}: {label}" if col == 0 else label, fontsize=7)


def volume_views(volumes: Mapping[str, np.ndarray], level: float | None = None) -> Figure:
    """One row per map ``[z, y, x]``: its central z, y and x sections, then its isosurface.

    Every surface of the figure is drawn at one ``level`` (default:
    :func:`isosurface_level` of all the maps pooled) from :data:`VIEW`.
    """
    names = list(volumes)
    if not names:
        raise ValueError("no volume to draw")
    maps = [np.asarray(volumes[n], dtype=np.float32) for n in names]
    shared = isosurface_level(maps) if level is None else float(level)
    fig = new_figure(6.4, 1.7 * len(names))
    for row, (name, vol) in enumerate(zip(names, maps)):
        _slice_panels(fig, len(names), row, name, vol)
        ax = fig.add_subplot(len(names), 4, 4 * row + 4, projection="3d")
        draw_isosurface(ax, vol, shared)
        ax.set_title("isosurface", fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1.0 - 0.25 / len(names), wspace=0.05, hspace=0.25)
    return fig

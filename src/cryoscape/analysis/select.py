"""Particle selection and export.

Select particles by cluster label, by a region of a 2D embedding, by a score
(e.g. an outlier score) or from an index file, and write the selection as

- a RELION ``.star`` subset (every original column and the optics table kept;
  image paths written for RELION's project folder, see :func:`project_image_names`),
- a cryoSPARC ``.cs`` subset (the selected rows of the source ``.cs``),
- a cryoDRGN index file ``.pkl`` (a pickled 1-D int64 ``np.ndarray``),
- a plain ``.txt`` (one index per line) or ``.npy`` (int64) index list.

Indices are 0-based positions in the particle set, as cryoDRGN uses them.
Every ``select_*`` function returns sorted, unique int64 indices.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io import cryodrgn as _drgn
from cryoscape.io import star as _star
from cryoscape.io.atomic import atomic_path, check_output_path, write_text_atomic
from cryoscape.particles.image_source import StackImageSource
from cryoscape.particles.particle_set import ParticleSet

if TYPE_CHECKING:
    from matplotlib.path import Path as MplPath

__all__ = [
    "select_by_cluster",
    "select_by_region",
    "select_by_score",
    "read_index_file",
    "invert_selection",
    "export_selection",
    "project_image_names",
    "INDEX_SUFFIXES",
    "EXPORT_SUFFIXES",
]

#: File types :func:`read_index_file` accepts.
INDEX_SUFFIXES: tuple[str, ...] = (".txt", ".csv", ".npy", ".pkl")
#: File types :func:`export_selection` writes.
EXPORT_SUFFIXES: tuple[str, ...] = (".star", ".cs", ".pkl", ".txt", ".npy")

_TOKEN_SPLIT = re.compile(r"[,\s]+")


# ------------------------------------------------------------------ selection
def select_by_cluster(labels: np.ndarray, clusters: int | Sequence[int]) -> np.ndarray:
    """Indices of the particles whose label ``labels (N,)`` is one of ``clusters``."""
    lab = np.asarray(labels).reshape(-1)
    wanted = np.atleast_1d(np.asarray(clusters))
    if wanted.size == 0:
        raise InputError("no cluster given; name at least one cluster to select")
    missing = np.setdiff1d(wanted, lab)
    if missing.size == wanted.size:
        raise InputError(f"none of the clusters {wanted.tolist()} occurs in the labels; pick from {np.unique(lab).tolist()}")
    return np.flatnonzero(np.isin(lab, wanted)).astype(np.int64)


def _region_path(region: Sequence[float] | np.ndarray) -> "MplPath":
    """A ``matplotlib.path.Path`` for a box ``(xmin, xmax, ymin, ymax)`` or a polygon ``(M,2)``, M ≥ 3."""
    from matplotlib.path import Path as MplPath  # noqa: F811 - imported here to keep matplotlib off the import path

    reg = np.asarray(region, dtype=np.float64)
    if reg.shape == (4,):
        xmin, xmax, ymin, ymax = reg
        if not (xmin < xmax and ymin < ymax):
            raise InputError(f"box {reg.tolist()} is empty; give (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax")
        reg = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]])
    if reg.ndim != 2 or reg.shape[1] != 2 or reg.shape[0] < 3 or not np.all(np.isfinite(reg)):
        raise InputError(
            f"region of shape {reg.shape} is neither a box (xmin, xmax, ymin, ymax) nor a polygon of ≥ 3 finite (x, y) vertices;"
            " give one of those"
        )
    return MplPath(reg, closed=False)


def select_by_region(embedding: np.ndarray, region: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the particles whose 2D embedding point ``(N,2)`` lies in ``region``.

    ``region``: a box ``(xmin, xmax, ymin, ymax)`` or polygon vertices ``(M,2)``
    (closed automatically). Points exactly on the boundary may fall either side.
    """
    emb = np.asarray(embedding, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[1] != 2:
        raise InputError(f"embedding has shape {emb.shape}, expected (N,2); reduce the latent space to 2D first")
    inside = _region_path(region).contains_points(emb)
    return np.flatnonzero(inside & np.all(np.isfinite(emb), axis=1)).astype(np.int64)


def select_by_score(
    scores: np.ndarray,
    threshold: float | None = None,
    top_fraction: float | None = None,
    keep: Literal["below", "above"] = "below",
) -> np.ndarray:
    """Indices of the particles kept by a score ``(N,)``.

    Give exactly one of ``threshold`` (keep ``score <= threshold`` with
    ``keep="below"``, ``score >= threshold`` with ``keep="above"``) or
    ``top_fraction`` in (0, 1] (keep that fraction of the particles, rounded to
    the nearest count, from the low end with ``"below"``, the high end with
    ``"above"``; ties broken by particle order). For an outlier score,
    ``keep="below"`` keeps the inliers. NaN scores are refused.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if keep not in ("below", "above"):
        raise InputError(f"keep={keep!r} is not understood; pass keep='below' or keep='above'")
    if (threshold is None) == (top_fraction is None):
        raise InputError("select_by_score needs exactly one of threshold or top_fraction; pass one of them")
    if np.isnan(s).any():
        raise InputError(f"{int(np.isnan(s).sum())} of {s.size} scores are NaN; recompute the scores or drop those particles first")
    if threshold is not None:
        mask = s <= threshold if keep == "below" else s >= threshold
        return np.flatnonzero(mask).astype(np.int64)
    return _top_fraction(s, float(top_fraction), keep)  # type: ignore[arg-type]


def _top_fraction(s: np.ndarray, fraction: float, keep: str) -> np.ndarray:
    """Sorted indices of the ``round(fraction * N)`` lowest (``"below"``) or highest (``"above"``) scores."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"top_fraction={fraction} is outside (0, 1]; give the fraction of particles to keep")
    k = int(np.floor(fraction * s.size + 0.5))
    order = np.argsort(s if keep == "below" else -s, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


def invert_selection(indices: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """The sorted indices in ``range(n)`` that are not in ``indices``."""
    idx = _check_indices(np.asarray(indices), n, "the selection", unique=False)
    return np.setdiff1d(np.arange(int(n), dtype=np.int64), idx)


# ----------------------------------------------------------------- index files
def _check_indices(arr: np.ndarray, n: int | None, where: str, unique: bool = True) -> np.ndarray:
    """Validate a 1-D array of 0-based particle indices (integral, in range, no repeats); return int64."""
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise InputError(f"{where}: indices have shape {arr.shape}, expected a 1-D list; give one index per particle")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise InputError(f"{where}: indices must be whole numbers, got {arr.dtype} values; give 0-based integer indices")
    idx = arr.astype(np.int64)
    if idx.size and idx.min() < 0:
        raise InputError(f"{where}: index {int(idx.min())} is negative; give 0-based indices from 0")
    if n is not None and idx.size and idx.max() >= n:
        raise InputError(f"{where}: index {int(idx.max())} is out of range for {n} particles; give 0-based indices below {n}")
    if unique and np.unique(idx).size != idx.size:
        raise InputError(f"{where}: some indices are repeated; list each particle once")
    return idx


def _read_text_indices(p: Path) -> np.ndarray:
    """Integers from a text file: one per line, or separated by commas and/or whitespace."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"index file {p} is not a text file; pass one integer per line or comma-separated") from exc
    tokens = [t for t in _TOKEN_SPLIT.split(text) if t]
    return np.asarray([_parse_index_token(tok, p) for tok in tokens], dtype=np.int64)


def _parse_index_token(tok: str, p: Path) -> int:
    """One index from text: an integer, or a whole number written as a float (``12.0``)."""
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        value = float(tok)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value == round(value)):
        raise InputError(f"index file {p}: {tok[:30]!r} is not an integer; list 0-based integer indices only")
    return int(value)


def _read_npy_indices(p: Path) -> np.ndarray:
    """The array of an ``.npy`` file, loaded without pickle."""
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # not .npy at all, object arrays, truncated files
        raise InputError(f"index file {p} is not a plain numeric .npy array; save a 1-D integer array with numpy.save") from exc


def read_index_file(path: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """Read 0-based particle indices (int64, in file order) from ``.txt``/``.csv``, ``.npy`` or cryoDRGN ``.pkl``.

    ``n``: the number of particles; when given, every index must be below it.
    Indices must be non-negative whole numbers, each listed once. A boolean
    ``.npy`` mask of length ``n`` is accepted as the set of its true entries.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in INDEX_SUFFIXES:
        raise InputError(f"index file {p}: unknown type {suffix or '(none)'!r}; pass a {', '.join(INDEX_SUFFIXES)} file")
    if not p.is_file():
        raise InputError(f"index file {p} not found; check the path")
    if suffix == ".pkl":
        arr = _drgn.read_index_pkl(p)
    elif suffix == ".npy":
        arr = _read_npy_indices(p)
        if arr.dtype == bool and arr.ndim == 1 and n is not None and arr.size == n:
            arr = np.flatnonzero(arr)
    else:
        arr = _read_text_indices(p)
    return _check_indices(arr, n, f"index file {p}")


# ---------------------------------------------------------------------- export
def _project_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it (as given, else after following links); absolute otherwise."""
    plain = Path(os.path.abspath(path))
    if plain.is_relative_to(Path(os.path.abspath(root))):
        return plain.relative_to(os.path.abspath(root)).as_posix()
    real = plain.resolve()
    if real.is_relative_to(root.resolve()):
        return real.relative_to(root.resolve()).as_posix()
    return str(real)


def project_image_names(images: StackImageSource, project_dir: str | os.PathLike | None = None) -> list[str]:
    """RELION ``index@path`` image names (1-based frame) as RELION resolves them from its project folder.

    RELION opens the stacks named in a STAR relative to the folder it runs in
    (the project folder), wherever the STAR itself lies. So a stack below
    ``project_dir`` (default: the current folder) is written relative to it,
    e.g. ``000012@Extract/job007/Movies/mic_001.mrcs``; any other stack by its
    absolute path, so the name resolves from every folder.
    """
    root = Path(os.getcwd() if project_dir is None else project_dir)
    written = [_project_path(p, root) for p in images.paths]
    return [f"{int(fr) + 1:06d}@{written[int(f)]}" for f, fr in zip(images.file_index, images.frame_index)]


def _other_star_blocks(particles: ParticleSet) -> dict | None:
    """The source STAR's extra data blocks (not optics or particles), kept when writing the subset."""
    source = getattr(particles, "_source", None)
    return source.other_blocks if source is not None and source.kind == "star" else None


def _write_star(sub: ParticleSet, out: Path, project_dir: str | os.PathLike | None, force: bool) -> Path:
    """Write the subset as a RELION ≥ 3.1 STAR with image names from :func:`project_image_names`."""
    optics, rows = sub.star_tables()
    if isinstance(sub.images, StackImageSource):
        rows["rlnImageName"] = project_image_names(sub.images, project_dir)
    if "rlnImageSize" not in optics.columns:
        warnings.warn(f"{out}: box size unknown (stacks not found), so the optics table has no _rlnImageSize", stacklevel=3)
    return _star.write_star(out, optics, rows, force=force, other_blocks=_other_star_blocks(sub))


def _write_npy(path: Path, idx: np.ndarray, force: bool) -> Path:
    """Write ``idx`` as an int64 ``.npy`` atomically."""
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, idx.astype(np.int64), allow_pickle=False)
    return path


def _write_txt(path: Path, idx: np.ndarray, force: bool) -> Path:
    """Write one index per line atomically."""
    return write_text_atomic(path, "".join(f"{int(i)}\n" for i in idx), force)


def export_selection(
    particles: ParticleSet, indices: np.ndarray | Sequence[int], out_path: str | os.PathLike, force: bool = False,
    project_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the selected particles (in the order given) to ``out_path``; the type follows the suffix.

    ``.star``: RELION subset keeping every original column and the optics
    table, image paths relative to the RELION project folder ``project_dir``
    (default: the current folder) for stacks below it and absolute for the
    others (:func:`project_image_names`); ``.cs``: the selected rows of the source ``.cs`` (the set must come
    from one); ``.pkl``: cryoDRGN index file; ``.txt``: one index per line;
    ``.npy``: int64 array. Written atomically; an existing file is refused
    unless ``force``. Returns the output path.
    """
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InputError(f"cannot export to {out}: unknown type {suffix or '(none)'!r}; use one of {', '.join(EXPORT_SUFFIXES)}")
    idx = _check_indices(np.asarray(indices), particles.n, "the selection")
    if idx.size == 0:
        raise InputError(f"cannot export to {out}: the selection is empty; select at least one particle")
    if suffix == ".cs" and particles.source_kind != "cs":
        raise InputError(
            f"cannot export to {out}: {particles.name} was not read from a cryoSPARC .cs file; export to .star instead"
        )
    check_output_path(out, force)
    if suffix == ".star":
        return Path(_write_star(particles[idx], out, project_dir, force))
    if suffix == ".cs":
        return Path(particles[idx].write_cs(out, force=force))
    if suffix == ".pkl":
        return _drgn.write_index_pkl(out, idx, force)
    if suffix == ".npy":
        return _write_npy(out, idx, force)
    return _write_txt(out, idx, force)

"""Ground-truth metrics for heterogeneity methods (survey §9.5; CryoBench definitions).

Volume metrics compare a method's generated volumes with the true volumes of a
simulated dataset by the Fourier shell correlation
(:func:`cryoscape.validate.fsc.fsc`) and its area under the curve
(:func:`cryoscape.validate.fsc.fsc_auc`: trapezoid rule over frequency
normalised to [0, 1], shell 0 = DC, last shell = Nyquist; identical maps give
1, independent maps about 0). Volumes are ``[D, D, D]`` ``[z, y, x]`` with an
even box and the centre at voxel ``D//2``; numpy or torch.

Latent metrics compare latent coordinates with the true conformational
coordinate: the absolute Spearman rank correlation (for a 1D truth) and the
preservation of k-nearest-neighbour sets (for any truth).

Masks: ``mask=None`` uses :func:`default_fsc_mask` (a soft sphere of radius
``0.4·D`` px), ``mask=False`` uses no mask, an array ``[D, D, D]`` is used as
given (real-space weights multiplying both maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cryoscape.validate.fsc import fsc, fsc_auc, resolution_at

__all__ = [
    "FSCResult",
    "SampledFSC",
    "NeighbourOverlap",
    "default_fsc_mask",
    "evenly_spaced_indices",
    "ground_truth_volume_fn",
    "fsc_result",
    "fsc_at_indices",
    "per_image_fsc_auc",
    "per_conformation_fsc",
    "first_principal_component",
    "spearman_abs",
    "knn_preservation",
    "knn_overlap",
]

VolumeFn = Callable[[int], Any]
"""``f(index) -> [D, D, D]`` volume (numpy or torch)."""


@dataclass(frozen=True)
class FSCResult:
    """One FSC comparison.

    ``curve``: FSC per shell ``0 .. D//2`` (DC to Nyquist), float64;
    ``auc``: its area (:func:`~cryoscape.validate.fsc.fsc_auc`);
    ``resolution_A``: where the curve first falls below 0.5, in Å
    (NaN when no pixel size was given).
    """

    curve: np.ndarray
    auc: float
    resolution_A: float


@dataclass(frozen=True)
class SampledFSC:
    """FSC of volumes generated at sampled particles.

    ``indices`` ``(n,)``: particle indices (0-based, in the particle order
    of the latents); ``curves`` ``(n, D//2 + 1)``; ``auc`` ``(n,)``;
    ``resolution_A`` ``(n,)`` at FSC = 0.5 (NaN without ``apix``);
    ``conformations`` ``(n,)`` true conformation of each sample, or None
    where the comparison is not with a ground truth.
    """

    indices: np.ndarray
    curves: np.ndarray
    auc: np.ndarray
    resolution_A: np.ndarray
    conformations: np.ndarray | None = None

    @property
    def mean(self) -> float:
        """Mean AUC over the samples."""
        return float(np.mean(self.auc))

    @property
    def std(self) -> float:
        """Standard deviation of the AUC over the samples (population, ``ddof=0``)."""
        return float(np.std(self.auc))


@dataclass(frozen=True)
class NeighbourOverlap:
    """Agreement of k-nearest-neighbour sets between a reference and another space.

    ``value``: mean over the queries of ``per_query``; ``per_query`` ``(q,)``:
    fraction of the query's ``k`` nearest neighbours in the other space that
    are neighbours in the reference space; ``chance``: expected ``value`` for
    a random assignment of points (``k / (N − 1)`` without distance ties);
    ``query_indices`` ``(q,)``; ``k``.
    """

    value: float
    chance: float
    per_query: np.ndarray
    query_indices: np.ndarray
    k: int


# ---------------------------------------------------------------- volumes


def default_fsc_mask(D: int) -> np.ndarray:
    """Soft sphere ``[D, D, D]`` float32 centred on voxel ``D//2``.

    Radius ``min(0.4·D, D/2 − edge − 1)`` px with a raised-cosine edge of
    ``max(3, D/16)`` px, so the mask reaches 0 inside the box.
    """
    from cryoscape.geometry.masks import default_volume_mask

    return default_volume_mask(D).numpy()


def _resolve_mask(mask: Any, D: int) -> Any:
    if mask is None:
        return default_fsc_mask(D)
    if mask is False:
        return None
    return mask


def fsc_result(vol: Any, ref: Any, mask: Any = None, apix: float | None = None) -> FSCResult:
    """FSC of ``vol`` against ``ref`` inside ``mask`` (see module doc) as an :class:`FSCResult`."""
    D = int(np.shape(ref)[-1])
    curve = fsc(vol, ref, _resolve_mask(mask, D))
    res = float("nan") if apix is None else resolution_at(curve, D, float(apix), 0.5)
    return FSCResult(curve=curve, auc=fsc_auc(curve), resolution_A=res)


def evenly_spaced_indices(n_items: int, n_samples: int, seed: int | None = None) -> np.ndarray:
    """``n_samples`` sorted distinct indices into ``0 .. n_items − 1``.

    ``seed=None``: evenly spaced, ``round(linspace(0, n_items − 1, n_samples))``
    (first and last item included); an integer seed: a uniform random sample
    without replacement. All items when ``n_samples >= n_items``.
    """
    if n_items <= 0 or n_samples <= 0:
        raise ValueError(f"need n_items > 0 and n_samples > 0; got {n_items}, {n_samples}")
    if n_samples >= n_items:
        return np.arange(n_items)
    if seed is None:
        return np.unique(np.round(np.linspace(0, n_items - 1, n_samples)).astype(np.int64))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=n_samples, replace=False)).astype(np.int64)


def ground_truth_volume_fn(truth: Any, box: int | None = None, apix: float | None = None) -> VolumeFn:
    """``conformation -> true volume [D, D, D]`` for a simulated dataset's ``truth.npz`` (read once).

    Wraps :func:`cryoscape.simulate.ground_truth.ground_truth_volume`;
    ``box`` (px) and ``apix`` (Å/px) default to the simulation's grid.
    """
    from cryoscape.simulate.ground_truth import ground_truth_volume, load_truth

    data = load_truth(truth)
    return lambda c: ground_truth_volume(data, int(c), box=box, apix=apix)[0]


def fsc_at_indices(
    volume_fn: VolumeFn,
    reference_fn: Callable[[int], Any],
    indices: Sequence[int] | np.ndarray,
    mask: Any = None,
    apix: float | None = None,
) -> SampledFSC:
    """FSC of ``volume_fn(i)`` against ``reference_fn(i)`` for each index ``i`` (mask: see module doc)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    results = [fsc_result(volume_fn(int(i)), reference_fn(int(i)), mask, apix) for i in idx]
    return _collect(idx, results)


def _collect(idx: np.ndarray, results: list[FSCResult], conformations: np.ndarray | None = None) -> SampledFSC:
    if not results:
        raise ValueError("no samples to compare")
    return SampledFSC(
        indices=idx,
        curves=np.stack([r.curve for r in results]),
        auc=np.array([r.auc for r in results]),
        resolution_A=np.array([r.resolution_A for r in results]),
        conformations=conformations,
    )


def _cached(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    cache: dict[int, Any] = {}

    def get(c: int) -> Any:
        if c not in cache:
            cache[c] = fn(c)
        return cache[c]

    return get


def per_image_fsc_auc(
    volume_fn: VolumeFn,
    true_volume_fn: Callable[[int], Any],
    conformations: Sequence[int] | np.ndarray,
    n_samples: int = 100,
    mask: Any = None,
    apix: float | None = None,
    seed: int | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
) -> SampledFSC:
    """Per-image FSC-AUC of generated volumes against their true conformations.

    Definition: choose ``n_samples`` particles (``indices`` if given, else
    :func:`evenly_spaced_indices` over the ``N = len(conformations)``
    particles in the given order: evenly spaced for ``seed=None``, random
    otherwise). For each chosen particle ``i`` the method's volume
    ``volume_fn(i)`` (generated at particle ``i``'s latent) is compared with
    ``true_volume_fn(conformations[i])`` by the FSC inside ``mask`` (module
    doc; default soft sphere), and the FSC's area up to Nyquist is taken
    (:func:`~cryoscape.validate.fsc.fsc_auc`, 1 = perfect). The summary is
    ``result.mean ± result.std`` over the samples; the per-sample values are
    ``result.auc``. True volumes are computed once per conformation.

    ``apix`` (Å/px) only adds each sample's resolution at FSC = 0.5.
    """
    conf = np.asarray(conformations).reshape(-1)
    idx = evenly_spaced_indices(conf.size, n_samples, seed) if indices is None else np.asarray(indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= conf.size):
        raise ValueError(f"particle indices must lie in 0 .. {conf.size - 1}")
    truth = _cached(true_volume_fn)
    results = [fsc_result(volume_fn(int(i)), truth(int(conf[i])), mask, apix) for i in idx]
    return _collect(idx, results, conformations=conf[idx])


def per_conformation_fsc(
    volumes_by_conformation: Mapping[int, Any],
    true_volume_fn: Callable[[int], Any],
    mask: Any = None,
    apix: float | None = None,
) -> dict[int, FSCResult]:
    """FSC (curve, AUC, 0.5 resolution) of each conformation's volume against its true volume.

    ``volumes_by_conformation`` maps a true conformation index to a volume
    ``[D, D, D]`` (e.g. generated at the mean latent of that conformation's
    particles, or a reconstruction from them); mask: see the module doc.
    """
    return {int(c): fsc_result(v, true_volume_fn(int(c)), mask, apix) for c, v in volumes_by_conformation.items()}


# ---------------------------------------------------------------- latents


def as_point_array(x: Any, name: str) -> np.ndarray:
    """``(N,)`` or ``(N, d)`` finite values as float64 ``(N, d)``, ``N >= 2``; ``name`` labels errors."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be (N,) or (N, d) with N >= 2; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


def first_principal_component(latents: Any) -> np.ndarray:
    """Projection ``(N,)`` of centred ``latents`` ``(N, d)`` on their first principal axis.

    Sign convention: the axis's loading of largest magnitude is positive
    (ties: the first such), so the result does not depend on the SVD's sign.
    A 1D input is returned centred.
    """
    z = as_point_array(latents, "latents")
    z = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    axis = vt[0]
    axis = axis * (1.0 if axis[int(np.argmax(np.abs(axis)))] >= 0 else -1.0)
    return z @ axis


def spearman_abs(latents: Any, truth_1d: Any) -> float:
    """``|ρ|``, Spearman's rank correlation between a latent and a 1D true coordinate.

    ``latents``: ``(N,)`` or ``(N, d)``; for ``d > 1`` its
    :func:`first_principal_component` is used. ``truth_1d``: ``(N,)``.
    Ties get average ranks (:func:`scipy.stats.spearmanr`). 1 means the
    latent orders the particles as the truth does (either direction); NaN
    when either input is constant.
    """
    z = as_point_array(latents, "latents")
    t = np.asarray(truth_1d, dtype=np.float64).reshape(-1)
    if t.size != z.shape[0]:
        raise ValueError(f"latents have {z.shape[0]} rows but the truth has {t.size}")
    from scipy.stats import spearmanr

    x = z[:, 0] if z.shape[1] == 1 else first_principal_component(z)
    return float(abs(spearmanr(x, t).statistic))


def _neighbours(points: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(q, k)`` of each query point's ``k`` nearest other points (itself excluded)."""
    from scipy.spatial import cKDTree

    _, nn = cKDTree(points).query(points[queries], k=k + 1)
    self_last = np.argsort(nn == queries[:, None], axis=1, kind="stable")
    return np.take_along_axis(nn, self_last, axis=1)[:, :k]


def _tie_radius(points: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance ``(q,)`` from each query to its ``k``-th nearest other point, widened by a rounding tolerance."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(points).query(points[queries], k=k + 1)
    return dist[:, -1] * (1.0 + 1e-9) + 1e-12


def _overlap_with_ties(ref: np.ndarray, queries: np.ndarray, nn_other: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Per-query fraction of ``nn_other`` within the ``k``-th-neighbour radius in ``ref``, and its chance level."""
    from scipy.spatial import cKDTree

    radius = _tie_radius(ref, queries, k)
    d = np.linalg.norm(ref[nn_other] - ref[queries][:, None, :], axis=-1)
    per_query = (d <= radius[:, None]).mean(axis=1)
    members = cKDTree(ref).query_ball_point(ref[queries], radius, return_length=True) - 1
    return per_query, float(np.mean(members) / (ref.shape[0] - 1))


def knn_overlap(
    reference: Any,
    other: Any,
    k: int = 10,
    n_query: int | None = None,
    seed: int = 0,
    tie_aware: bool = False,
) -> NeighbourOverlap:
    """Mean fraction of each point's ``k`` nearest neighbours in ``other`` that are also neighbours in ``reference``.

    Both ``(N,)`` or ``(N, d)`` with rows for the same particles; Euclidean
    distances in each space's own units (scale the columns first where they
    differ). A point is not its own neighbour. Queries: all points, or
    ``n_query`` drawn at random (``seed``).

    ``tie_aware=False``: the reference neighbours are the ``k`` nearest (ties
    broken arbitrarily); the value equals ``|A ∩ B| / k`` and chance is
    ``k / (N − 1)``. ``tie_aware=True``: the reference neighbours are all
    points at most as far as the ``k``-th nearest (for a truth with repeated
    values, e.g. discrete conformations); chance is then
    ``mean(m_q) / (N − 1)`` with ``m_q`` the size of query ``q``'s set.
    """
    ref, oth = as_point_array(reference, "reference"), as_point_array(other, "other")
    n = ref.shape[0]
    if oth.shape[0] != n:
        raise ValueError(f"the two spaces have {n} and {oth.shape[0]} rows; they must list the same particles")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in 1 .. N - 1 = {n - 1}; got {k}")
    queries = np.arange(n) if n_query is None or n_query >= n else np.sort(
        np.random.default_rng(seed).choice(n, size=int(n_query), replace=False))
    nn_other = _neighbours(oth, queries, k)
    if tie_aware:
        per_query, chance = _overlap_with_ties(ref, queries, nn_other, k)
    else:
        nn_ref = _neighbours(ref, queries, k)
        per_query = (nn_other[:, :, None] == nn_ref[:, None, :]).any(axis=-1).mean(axis=1)
        chance = k / (n - 1)
    return NeighbourOverlap(float(per_query.mean()), chance, per_query, queries, int(k))


def knn_preservation(
    latents: Any,
    truth: Any,
    k: int = 10,
    n_query: int | None = None,
    seed: int = 0,
    tie_aware: bool = True,
) -> NeighbourOverlap:
    """k-NN preservation: how many of each particle's ``k`` latent neighbours are true neighbours.

    ``latents`` ``(N, d)`` and ``truth`` ``(N,)`` or ``(N, k_t)`` (e.g. the
    true coordinate in [0, 1] or the conformation index) for the same
    particles. Value: mean over the queries of
    ``|kNN_latent(i) ∩ kNN_truth(i)| / k`` (1 = all neighbourhoods kept,
    ``result.chance`` ≈ ``k / (N − 1)`` for an unrelated latent). Ties in the
    truth are handled as in :func:`knn_overlap` with ``tie_aware=True``
    (the default here, since true coordinates often repeat).
    """
    return knn_overlap(truth, latents, k=k, n_query=n_query, seed=seed, tie_aware=tie_aware)

"""The benchmark runner: fit methods on a benchmark dataset and score them against its ground truth.

:func:`run_benchmark` builds (or reuses) a dataset of :data:`cryoscape.bench.DATASETS`,
runs each requested method into ``out/<dataset>/<method>/`` (a run directory)
and computes, per method:

``per_image_fsc_auc``
    the CryoBench per-image FSC: ``n_samples`` (100) evenly spaced particles
    (junk excluded); the method's volume at each one's latent (its model's
    volume hook, :func:`cryoscape.methods.model_volume`) against the true
    volume of that particle's conformation, FSC inside the default soft
    sphere (:func:`cryoscape.validate.metrics.default_fsc_mask`), area to
    Nyquist; mean ± std over the samples.
``spearman_abs``
    ``|ρ|`` between the first principal component of the latents and the true
    coordinate. For a 2-D truth (``adk-2d``) one value per truth axis
    (``spearman_abs_axes``) and their maximum as the headline.
``knn_preservation``
    k-NN preservation of the latents against the true coordinate
    (:func:`cryoscape.validate.metrics.knn_preservation`, k = 10) with its chance level.
``outlier_roc_auc``
    ``adk-junk`` only: ROC AUC of :func:`cryoscape.analysis.outliers.outlier_scores`
    against the truth's ``is_junk``, from the method's latents (density) and
    the method-independent fit of every image to the consensus map
    (:func:`cryoscape.analysis.outliers.consensus_fit_correlations`),
    combined as ``cryoscape analyze`` does (the larger robust z-score).
``curve_spearman_abs``
    where the run holds a latent curve (``curve_coordinate.npy``; ``pca``: each
    particle's place along the latent curve, :mod:`cryoscape.analysis.latent_curve`),
    ``|ρ|`` between it and the true coordinate (the largest over a 2-D truth's axes).
``wall_s``
    seconds the method took.

Two references are scored on the same sampled particles:

``consensus``
    one reconstruction from all particles: the lower reference, what ignoring
    heterogeneity gives. On ``adk-junk`` its outlier ROC AUC is that of the
    fit to the consensus map alone (no latents).
``oracle``
    for each sample, the Wiener-filtered reconstruction with the true poses
    from the particles whose true coordinate lies within a window around the
    sample's (frames ``±w`` on a path, a ``(2w + 1)²`` block of cells on a
    grid), with ``w`` the candidate with the best mean per-image FSC AUC
    predicted from the true volumes (bias) and the consensus half-map SSNR
    (noise); see :mod:`cryoscape.bench.oracle`. The chosen ``w`` and the
    predictions are in ``results.json`` under ``oracle``.

Particles of one conformation are split alternately into the two half sets,
so every window with two or more particles has both halves; a sample with an
empty half set has no oracle map (NaN, counted in ``n_missing``).

Methods come from a registry (:data:`METHODS`): ``name -> callable(dataset,
out_dir, progress, **options) -> run dir``. ``pca`` is registered here. A
method needing another program (cryoDRGN, RECOVAR, ...) is added with
:func:`register_method` and an ``available`` check; it is listed but refused
with a one-line error where its environment is missing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from cryoscape.errors import InputError, OutputExistsError

__all__ = [
    "MethodRunner",
    "BenchMethod",
    "METHODS",
    "register_method",
    "check_methods",
    "ScoreSummary",
    "MethodResult",
    "BenchmarkResult",
    "run_benchmark",
    "default_cache_dir",
    "RESULTS_JSON",
    "RESULTS_MD",
    "RESULTS_HTML",
]

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_HTML = "results.html"
N_SAMPLES = 100
KNN_K = 10
PCA_COMPONENTS = 4


class MethodRunner(Protocol):
    """``(dataset, out_dir, progress, **options) -> run directory path`` of one method."""

    def __call__(self, dataset: Any, out_dir: Path, progress: bool, **options: Any) -> Path: ...


@dataclass(frozen=True)
class BenchMethod:
    """A method the runner can fit.

    ``run``: the :class:`MethodRunner`; ``description``: one line for listings;
    ``available``: None (always available) or a check returning None when the
    method can run here, else a one-line reason (e.g. "cryodrgn is not installed").
    """

    name: str
    run: MethodRunner
    description: str = ""
    available: Callable[[], str | None] | None = None

    def unavailable_reason(self) -> str | None:
        """None when the method can run in this environment, else why not."""
        return None if self.available is None else self.available()


#: Registry of benchmarkable methods: name -> :class:`BenchMethod`.
METHODS: dict[str, BenchMethod] = {}


def register_method(name: str, run: MethodRunner, description: str = "",
                    available: Callable[[], str | None] | None = None) -> None:
    """Add (or replace) a method of the benchmark.

    External programs (cryoDRGN, RECOVAR) register a runner that calls the
    program and writes a cryoscape run directory (``config.yaml``,
    ``latents.npy`` and a volume hook for the per-image FSC) plus an
    ``available`` check (e.g. ``shutil.which("cryodrgn")``) so they run only
    where their environment exists.
    """
    METHODS[name] = BenchMethod(name, run, description, available)


def check_methods(names: Sequence[str]) -> list[str]:
    """The requested method names, validated; one-line :class:`InputError` otherwise."""
    if not names:
        raise InputError(f"no method given; choose from: {', '.join(METHODS)}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise InputError(f"unknown method {unknown[0]!r}; available: {', '.join(METHODS)}")
    for n in names:
        reason = METHODS[n].unavailable_reason()
        if reason:
            raise InputError(f"method {n!r} cannot run here: {reason}")
    return list(dict.fromkeys(names))


def _run_pca(dataset: Any, out_dir: Path, progress: bool, **options: Any) -> Path:
    """``pca`` with its defaults (``PCA_COMPONENTS`` components, 12 EM iterations) unless ``options`` say otherwise."""
    from cryoscape.methods.pca import run_pca

    kw: dict[str, Any] = {"components": PCA_COMPONENTS, **options}
    return run_pca(dataset.star_path, out_dir, force=True, progress=progress, **kw).run.path


register_method("pca", _run_pca, "probabilistic PCA by EM (mean + principal volumes)")

DRGN_ZDIM = 8


def _run_drgn(dataset: Any, out_dir: Path, progress: bool, **options: Any) -> Path:
    """``drgn`` (amortised VAE, ``DRGN_ZDIM`` latents, the recipe's defaults) unless ``options`` say otherwise."""
    from cryoscape.methods.drgn import run_drgn

    kw: dict[str, Any] = {"zdim": DRGN_ZDIM, **options}
    return run_drgn(dataset.star_path, out_dir, force=True, progress=progress, **kw).run.path


register_method("drgn", _run_drgn, "neural hyper-molecule (MLP decoder) with a VAE encoder or explicit latents")


# ----------------------------------------------------------------------------- results


@dataclass
class ScoreSummary:
    """Per-image FSC AUCs at the sampled particles: ``values`` ``(n,)`` (NaN where missing) and the mean FSC curve."""

    values: np.ndarray
    mean_curve: np.ndarray

    @property
    def mean(self) -> float:
        """Mean AUC over the samples that have a value."""
        v = self.values[np.isfinite(self.values)]
        return float(v.mean()) if v.size else float("nan")

    @property
    def std(self) -> float:
        """Standard deviation (``ddof=0``) over the samples that have a value."""
        v = self.values[np.isfinite(self.values)]
        return float(v.std()) if v.size else float("nan")

    @property
    def n_missing(self) -> int:
        """Samples without a value."""
        return int(np.sum(~np.isfinite(self.values)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"mean": _num(self.mean), "std": _num(self.std), "n_missing": self.n_missing,
                "values": [_num(v) for v in self.values], "mean_fsc": [_num(v) for v in self.mean_curve]}


@dataclass
class MethodResult:
    """Scores of one method (or reference) on a dataset; latent scores are None for references."""

    name: str
    per_image: ScoreSummary
    run_dir: Path | None = None
    wall_s: float | None = None
    spearman_abs: float | None = None
    spearman_abs_axes: dict[str, float] | None = None
    knn_preservation: float | None = None
    knn_chance: float | None = None
    outlier_roc_auc: float | None = None
    curve_spearman_abs: float | None = None  # of the run's curve_coordinate.npy, where it writes one
    details: dict[str, Any] | None = None  # reference-specific facts, e.g. the oracle's window

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores."""
        extra = {} if self.details is None else {self.name: self.details}
        return {**extra, "name": self.name, "run_dir": None if self.run_dir is None else str(self.run_dir),
                "wall_s": _num(self.wall_s), "per_image_fsc_auc": self.per_image.to_dict(),
                "spearman_abs": _num(self.spearman_abs),
                "spearman_abs_axes": None if self.spearman_abs_axes is None else
                {k: _num(v) for k, v in self.spearman_abs_axes.items()},
                "knn_preservation": _num(self.knn_preservation), "knn_chance": _num(self.knn_chance),
                "knn_k": KNN_K, "outlier_roc_auc": _num(self.outlier_roc_auc),
                "curve_spearman_abs": _num(self.curve_spearman_abs)}


@dataclass
class BenchmarkResult:
    """Everything one benchmark run measured (see the module docstring)."""

    dataset: str
    out_dir: Path
    n_particles: int
    box: int
    apix: float
    sample_indices: np.ndarray
    sample_conformations: np.ndarray
    methods: list[MethodResult]
    references: list[MethodResult]
    dataset_build_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document written to ``results.json``."""
        from cryoscape import __version__

        return {"dataset": self.dataset, "n_particles": self.n_particles, "box": self.box, "apix": self.apix,
                "cryoscape_version": __version__, "dataset_build_s": _num(self.dataset_build_s),
                "n_samples": int(self.sample_indices.size),
                "sample_indices": self.sample_indices.tolist(),
                "sample_conformations": self.sample_conformations.tolist(),
                "methods": [m.to_dict() for m in self.methods],
                "references": [r.to_dict() for r in self.references]}


def _num(x: float | None) -> float | None:
    """A float for JSON: None stays None, NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


# ----------------------------------------------------------------------------- set-up


def default_cache_dir() -> Path:
    """``$CRYOSCAPE_BENCH_CACHE``, else ``~/.cache/cryoscape/bench`` (read at call time)."""
    env = os.environ.get("CRYOSCAPE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cryoscape" / "bench"


def _check_output(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} already holds files; pass --force to overwrite or choose another -o")


def _dataset(name: str, cache_dir: Path, n_particles: int | None, box: int | None, force: bool,
             progress: bool) -> Any:
    """Build or reuse the dataset; with ``force`` a cache built with other settings is rebuilt."""
    from cryoscape.bench.datasets import build_dataset

    try:
        return build_dataset(name, cache_dir, n_particles, box, force=False, progress=progress)
    except OutputExistsError:
        if not force:
            raise
        return build_dataset(name, cache_dir, n_particles, box, force=True, progress=progress)


def _particles(dataset: Any) -> Any:
    """The dataset's particle set with half sets alternating within each true conformation."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(dataset.star_path)
    ps.half_set = _alternating_halves(np.asarray(dataset.truth["conformation"]))
    return ps


def _alternating_halves(conformation: np.ndarray) -> np.ndarray:
    """``(N,)`` int8 half-set labels 0, 1, 0, ... in particle order within each conformation."""
    halves = np.zeros(conformation.size, dtype=np.int8)
    for c in np.unique(conformation):
        idx = np.flatnonzero(conformation == c)
        halves[idx] = np.arange(idx.size) % 2
    return halves


def sample_particles(truth: Mapping[str, np.ndarray], n_samples: int = N_SAMPLES) -> np.ndarray:
    """Indices of ``n_samples`` evenly spaced true particles (junk, with conformation −1, left out)."""
    from cryoscape.validate.metrics import evenly_spaced_indices

    real = np.flatnonzero(np.asarray(truth["conformation"]) >= 0)
    return real[evenly_spaced_indices(real.size, n_samples)]


# ----------------------------------------------------------------------------- scores


def _fsc_scores(volume_fn: Callable[[int], np.ndarray | None], true_fn: Callable[[int], np.ndarray],
                indices: np.ndarray, conformation: np.ndarray) -> ScoreSummary:
    """Per-image FSC AUC of ``volume_fn(i)`` against the true volume of ``conformation[i]``.

    ``volume_fn`` may return None (no volume for that sample: NaN).
    """
    from cryoscape.validate.metrics import fsc_result

    aucs, curves = [], []
    for i in indices:
        vol = volume_fn(int(i))
        if vol is None:
            aucs.append(np.nan)
            continue
        r = fsc_result(vol, true_fn(int(conformation[i])))
        aucs.append(r.auc)
        curves.append(r.curve)
    mean_curve = np.mean(curves, axis=0) if curves else np.zeros(0)
    return ScoreSummary(np.asarray(aucs, dtype=np.float64), mean_curve)


def _true_volume_fn(dataset: Any) -> Callable[[int], np.ndarray]:
    """``conformation -> true volume`` on the dataset's grid, each computed once."""
    cache: dict[int, np.ndarray] = {}

    def get(c: int) -> np.ndarray:
        if c not in cache:
            cache[c] = dataset.true_volume(int(c))[0]
        return cache[c]

    return get


def _latent_scores(latents: np.ndarray, truth: Mapping[str, np.ndarray], result: MethodResult,
                   fit_errors: np.ndarray | None = None) -> None:
    """Fill ``result``'s Spearman, kNN and (junk) outlier scores from the latents (and the fit errors)."""
    from cryoscape.validate.metrics import knn_preservation, spearman_abs

    real, coord = _true_axes(truth)
    z = np.asarray(latents, dtype=np.float64)[real]
    names = _axis_names(truth, coord.shape[1])
    axes = {n: spearman_abs(z, coord[:, a]) for a, n in enumerate(names)}
    result.spearman_abs = max(axes.values())
    result.spearman_abs_axes = axes if len(axes) > 1 else None
    knn = knn_preservation(z, coord, k=KNN_K)
    result.knn_preservation, result.knn_chance = knn.value, knn.chance
    if "is_junk" in truth:
        from cryoscape.analysis.outliers import outlier_scores, roc_auc

        result.outlier_roc_auc = roc_auc(outlier_scores(latents, errors=fit_errors).score, truth["is_junk"])


def _axis_names(truth: Mapping[str, np.ndarray], n_axes: int) -> list[str]:
    """Names of the truth's coordinate axes (``coordinate_names`` where stored)."""
    if "coordinate_names" in truth and len(truth["coordinate_names"]) == n_axes:
        return [str(n) for n in truth["coordinate_names"]]
    return ["coordinate"] if n_axes == 1 else [f"axis_{a + 1}" for a in range(n_axes)]


def _score_method(name: str, run_path: Path, wall_s: float, dataset: Any, indices: np.ndarray,
                  true_fn: Callable[[int], np.ndarray], fit_errors: np.ndarray | None = None) -> MethodResult:
    """All scores of one fitted method (``fit_errors``: the consensus-fit errors for the outlier score)."""
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods import model_volume

    run = RunDirectory.open(run_path)
    latents = np.asarray(run.read_latents()[0], dtype=np.float64)
    conf = np.asarray(dataset.truth["conformation"])
    per_image = _fsc_scores(lambda i: model_volume(run, latents[i]), true_fn, indices, conf)
    result = MethodResult(name, per_image, run_dir=run_path, wall_s=wall_s)
    _latent_scores(latents, dataset.truth, result, fit_errors)
    result.curve_spearman_abs = _curve_score(run, dataset.truth)
    return result


def _true_axes(truth: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(real particles (N,) bool, their true coordinates [n_real, axes])`` (junk excluded)."""
    real = np.asarray(truth["conformation"]) >= 0
    coord = np.asarray(truth["coordinate"], dtype=np.float64)[real]
    return real, coord[:, None] if coord.ndim == 1 else coord


def _curve_score(run: Any, truth: Mapping[str, np.ndarray]) -> float | None:
    """|Spearman| of the run's latent-curve coordinate against the truth (the largest over its axes),
    or None where the run has no curve."""
    from cryoscape.validate.metrics import spearman_abs

    if not run.has_curve():
        return None
    real, coord = _true_axes(truth)
    s = np.asarray(run.read_curve()[1], dtype=np.float64)[real]
    return max(spearman_abs(s, coord[:, a]) for a in range(coord.shape[1]))


@dataclass
class _Consensus:
    """The consensus reconstruction, its wall time and (junk datasets) the fit of every image to it."""

    reconstruction: Any
    wall_s: float
    fit_errors: np.ndarray | None = None


def _consensus(particles: Any, dataset: Any, say: Callable[[str], None]) -> _Consensus:
    """Reconstruct from all particles; on junk datasets also the fit of every image to that map."""
    from cryoscape.reconstruct import reconstruct

    t0 = time.perf_counter()
    rec = reconstruct(particles, progress=False)
    result = _Consensus(rec, time.perf_counter() - t0)
    if "is_junk" in dataset.truth:
        from cryoscape.analysis.outliers import consensus_fit_correlations, fit_errors

        say("fit of every image to the consensus map (outlier scores)")
        result.fit_errors = fit_errors(consensus_fit_correlations(particles, rec))
    return result


def _consensus_result(cons: _Consensus, dataset: Any, indices: np.ndarray,
                      true_fn: Callable[[int], np.ndarray]) -> MethodResult:
    """The consensus reference: its per-image FSC AUC and (junk) the ROC AUC of the fit errors alone."""
    conf = np.asarray(dataset.truth["conformation"])
    volume = cons.reconstruction.volume
    result = MethodResult("consensus", _fsc_scores(lambda i: volume, true_fn, indices, conf), wall_s=cons.wall_s)
    if cons.fit_errors is not None:
        from cryoscape.analysis.outliers import roc_auc

        result.outlier_roc_auc = roc_auc(cons.fit_errors, dataset.truth["is_junk"])
    return result


def _oracle_result(particles: Any, dataset: Any, indices: np.ndarray, true_fn: Callable[[int], np.ndarray],
                   consensus: Any, say: Callable[[str], None] = lambda _m: None) -> MethodResult:
    """The true-neighbour oracle (:mod:`cryoscape.bench.oracle`) at the sampled particles."""
    from cryoscape.bench.oracle import (WindowReconstructor, choose_window, conformation_positions,
                                        neighbour_conformations, visit_order)

    t0 = time.perf_counter()
    truth = dataset.truth
    conf = np.asarray(truth["conformation"])
    choice = choose_window(truth, true_fn, conf[indices], consensus.fsc_masked, float(np.mean(consensus.n_half)))
    say(f"oracle window ±{choice.half_width} {choice.unit} (predicted in {time.perf_counter() - t0:.1f} s)")
    positions = conformation_positions(truth)
    windows = WindowReconstructor(particles, conf)
    maps: dict[int, np.ndarray | None] = {}
    for c in visit_order(positions, conf[indices]):
        windows.move_to(neighbour_conformations(positions, int(c), choice.half_width))
        maps[int(c)] = windows.volume()
    result = MethodResult("oracle", _fsc_scores(lambda i: maps[int(conf[i])], true_fn, indices, conf))
    result.wall_s = time.perf_counter() - t0
    members = [np.isin(conf, neighbour_conformations(positions, int(c), choice.half_width)).sum()
               for c in maps]
    result.details = {**choice.to_dict(), "mean_particles": float(np.mean(members)),
                      "images_read": int(windows.images_read)}
    return result


# ----------------------------------------------------------------------------- the runner


def run_benchmark(
    dataset: str,
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    n_particles: int | None = None,
    box: int | None = None,
    n_samples: int = N_SAMPLES,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Fit ``methods`` on benchmark ``dataset`` and write ``out_dir/results.{json,md,html}``.

    Args:
        dataset: a key of :data:`cryoscape.bench.DATASETS`.
        methods: keys of :data:`METHODS` (unknown or unavailable: one-line :class:`InputError`).
        out_dir: results folder; runs go to ``out_dir/<dataset>/<method>/``. A
            non-empty folder is refused (:class:`OutputExistsError`) unless ``force``.
        cache_dir: dataset cache (default :func:`default_cache_dir`).
        n_particles, box: dataset size overrides (px; the field of view is kept).
        n_samples: particles sampled for the per-image FSC.
        method_options: extra keyword arguments per method, e.g. ``{"pca": {"iterations": 3}}``.
        force: overwrite ``out_dir``; rebuild a cached dataset made with other settings.
        progress: progress bars. log: called with one line per step (e.g. ``print``).

    Returns:
        The :class:`BenchmarkResult` (also in ``results.json``).
    """
    say = log or (lambda _msg: None)
    from cryoscape.bench.datasets import get_spec

    names = check_methods(methods)
    get_spec(dataset)
    if n_samples < 1:
        raise InputError(f"the number of sampled particles must be at least 1; got {n_samples}")
    out = Path(out_dir).expanduser()
    _check_output(out, force)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    t0 = time.perf_counter()
    data = _dataset(dataset, cache, n_particles, box, force, progress)
    build_s = time.perf_counter() - t0
    say(f"dataset {data.name}: {data.spec.n_particles} particles, box {data.spec.box} px "
        f"({'built' if data.built else 'reused'} in {data.out_dir})")
    indices = sample_particles(data.truth, n_samples)
    true_fn = _true_volume_fn(data)
    fitted = [_fit(n, data, out, (method_options or {}).get(n, {}), progress, say) for n in names]
    say("references: consensus map")
    particles = _particles(data)
    cons = _consensus(particles, data, say)
    say(f"consensus map in {cons.wall_s:.1f} s; scoring the methods")
    t0 = time.perf_counter()
    results = [_score_method(n, path, wall, data, indices, true_fn, cons.fit_errors) for n, path, wall in fitted]
    say(f"methods scored in {time.perf_counter() - t0:.1f} s; references: true-neighbour oracle")
    refs = [_consensus_result(cons, data, indices, true_fn),
            _oracle_result(particles, data, indices, true_fn, cons.reconstruction, say)]
    say(f"oracle in {refs[1].wall_s:.1f} s")
    res = BenchmarkResult(data.name, out, int(data.spec.n_particles), int(data.spec.box), float(data.spec.apix),
                          indices, np.asarray(data.truth["conformation"])[indices], results, refs, build_s)
    from cryoscape.bench.report import write_results

    res.files = write_results(res, force=True)
    return res


def _fit(name: str, data: Any, out: Path, options: Mapping[str, Any], progress: bool,
         say: Callable[[str], None]) -> tuple[str, Path, float]:
    """Run one method into ``out/<dataset>/<method>``: its name, run directory and wall time (s)."""
    say(f"method {name}: fitting")
    t0 = time.perf_counter()
    run_path = Path(METHODS[name].run(data, out / data.name / name, progress, **dict(options)))
    wall = time.perf_counter() - t0
    say(f"method {name}: fitted in {wall:.1f} s")
    return name, run_path, wall


from cryoscape.bench import peers as _peers  # noqa: E402,F401  registers the peer programs (cryodrgn, recovar)

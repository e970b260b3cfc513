"""The benchmark runner: fit methods on a benchmark dataset and score them against its ground truth.

:func:`run_benchmark` builds (or reuses) a dataset of :data:`cryoscape.bench.DATASETS`,
runs each requested method into ``out/<dataset>/<method>/`` (a run directory)
and computes, per method:

``per_image_fsc_auc``
    the CryoBench per-image FSC: ``n_samples`` (100) evenly spaced particles
    (junk excluded); the method's volume at each one's latent (the volume function of its runs,
    :func:`cryoscape.bench.method_table.method_volume_function`) against the true
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

Methods come from :data:`METHODS` (:mod:`cryoscape.bench.method_table`):
every method of :data:`cryoscape.methods.registry.METHODS` by name, then the
peer programs (cryoDRGN, RECOVAR; :mod:`cryoscape.bench.peers`), listed but
refused with a one-line error where their environment is missing. ``grid``
runs every runnable (representation, inference) pair; the pairs that cannot
run are listed with their reason in ``results.json`` (``skipped_pairs``) and
``results.md``.

This module holds the run loop; the pieces live in
:mod:`~cryoscape.bench.sampling` (sampled particles, half sets, true volumes),
:mod:`~cryoscape.bench.scoring` (a method's scores),
:mod:`~cryoscape.bench.references` (consensus and oracle) and
:mod:`~cryoscape.bench.results` (the result objects); their names are
importable from here too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cryoscape.bench.method_table import (
    GRID,
    METHODS,
    BenchMethod,
    MethodRunner,
    check_methods,
    grid_methods,
    method_volume_function,
    register_method,
)
from cryoscape.bench.references import _Consensus, _consensus, _consensus_result, _oracle_result
from cryoscape.bench.results import (
    KNN_K,
    RESULTS_HTML,
    RESULTS_JSON,
    RESULTS_MD,
    BenchmarkResult,
    MethodResult,
    ScoreSummary,
    SkippedPair,
    _num,
)
from cryoscape.bench.sampling import N_SAMPLES, _alternating_halves, _particles, _true_volume_fn, sample_particles
from cryoscape.bench.scoring import (
    VolumeFn,
    _axis_names,
    _curve_score,
    _fsc_scores,
    _latent_scores,
    _score_method,
    _true_axes,
)
from cryoscape.errors import InputError, OutputExistsError

# private helpers of the split-out modules stay importable from here (tests, benchmarks/ scripts)
_REEXPORTS = (_Consensus, _alternating_halves, _axis_names, _curve_score, _latent_scores, _true_axes, _num,
              _fsc_scores)

__all__ = [
    "MethodRunner",
    "BenchMethod",
    "METHODS",
    "GRID",
    "register_method",
    "check_methods",
    "grid_methods",
    "ScoreSummary",
    "MethodResult",
    "SkippedPair",
    "BenchmarkResult",
    "run_benchmark",
    "sample_particles",
    "default_cache_dir",
    "RESULTS_JSON",
    "RESULTS_MD",
    "RESULTS_HTML",
    "N_SAMPLES",
    "KNN_K",
]


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
        methods: keys of :data:`METHODS`, or ``grid`` for every runnable (representation, inference)
            pair (unknown or unavailable: one-line :class:`InputError`).
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
    names, skipped = _checked_request(dataset, methods, n_samples, say)
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
    results, refs = _score_all(fitted, data, indices, true_fn, say)
    res = BenchmarkResult(data.name, out, int(data.spec.n_particles), int(data.spec.box), float(data.spec.apix),
                          indices, np.asarray(data.truth["conformation"])[indices], results, refs, build_s,
                          skipped=skipped)
    from cryoscape.bench.report import write_results

    res.files = write_results(res, force=True)
    return res


def _checked_request(dataset: str, methods: Sequence[str], n_samples: int,
                     say: Callable[[str], None]) -> tuple[list[str], list[SkippedPair]]:
    """The method names to fit (``grid`` expanded) and the grid's pairs that cannot run; one-line errors."""
    from cryoscape.bench.datasets import get_spec

    names = check_methods(methods)
    get_spec(dataset)
    if n_samples < 1:
        raise InputError(f"the number of sampled particles must be at least 1; got {n_samples}")
    skipped = grid_methods()[1] if GRID in methods else []
    for p in skipped:
        say(f"pair {p.representation} x {p.inference}: {p.reason}")
    return names, skipped


def _score_all(fitted: Sequence[tuple[str, Path, float]], data: Any, indices: np.ndarray,
               true_fn: Callable[[int], np.ndarray], say: Callable[[str], None]
               ) -> tuple[list[MethodResult], list[MethodResult]]:
    """Scores of the fitted methods and of the two references (consensus, oracle)."""
    say("references: consensus map")
    particles = _particles(data)
    cons = _consensus(particles, data, say)
    say(f"consensus map in {cons.wall_s:.1f} s; scoring the methods")
    t0 = time.perf_counter()
    results = [_score_method(n, path, wall, data, indices, true_fn, _volume_fn(n, path), cons.fit_errors)
               for n, path, wall in fitted]
    say(f"methods scored in {time.perf_counter() - t0:.1f} s; references: true-neighbour oracle")
    refs = [_consensus_result(cons, data, indices, true_fn),
            _oracle_result(particles, data, indices, true_fn, cons.reconstruction, say)]
    say(f"oracle in {refs[1].wall_s:.1f} s")
    return results, refs


def _volume_fn(name: str, run_path: Path) -> VolumeFn:
    """The volume function of the run of method ``name`` in ``run_path`` (by the method its config records)."""
    from cryoscape.io.run_dir import RunDirectory

    return method_volume_function(name, RunDirectory.open(run_path).method)


def _fit(name: str, data: Any, out: Path, options: Mapping[str, Any], progress: bool,
         say: Callable[[str], None]) -> tuple[str, Path, float]:
    """Run one method into ``out/<dataset>/<method>``: its name, run directory and wall time (s)."""
    say(f"method {name}: fitting")
    t0 = time.perf_counter()
    run_path = Path(METHODS[name].run(data, out / data.name / name, progress, **dict(options)))
    wall = time.perf_counter() - t0
    say(f"method {name}: fitted in {wall:.1f} s")
    return name, run_path, wall


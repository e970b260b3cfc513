"""The two references scored beside the methods: the consensus map and the true-neighbour oracle.

``consensus``
    one reconstruction from all particles: the lower reference, what ignoring
    heterogeneity gives. On junk datasets its outlier ROC AUC is that of the
    fit of every image to the consensus map alone (no latents).
``oracle``
    for each sample, the Wiener-filtered reconstruction with the true poses
    from the particles whose true coordinate lies within a window around the
    sample's (:mod:`cryoscape.bench.oracle`, which also chooses the window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cryoscape.bench.results import MethodResult
from cryoscape.bench.scoring import _fsc_scores

__all__: list[str] = []


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

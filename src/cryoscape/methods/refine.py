"""``refine``: poses of every particle by expectation-maximisation over SO(3) x shifts, from an initial map.

Each iteration streams the images once. Per image (survey §2.1; RELION's
auto-refine in outline): the E-step scores candidate poses against the current
map of the particle's own half set (gold standard: the two halves are refined
independently from the same low-passed start) with the pose-search scheme of
:mod:`cryoscape.inference.pose_search`, on the frequencies the maps resolve
(frequency marching: shells up to the half maps' FSC 0.143 resolution plus
:data:`MARGIN_SHELLS`, never shrinking, and growing by at most ``march_factor``
per pass when that is set: no limit by default, which did better on the 6 000
AdK images of ``benchmarks/bench_refine.py`` (median error 17.8° against 22.0°
with 1.5); the first pass up to the initial low-pass); the M-step backprojects every image at its :data:`TOP_POSES` most
probable poses weighted by their posteriors (the marginal over poses) into the
half-set accumulators, and each half is Wiener-filtered from the FSC of the two
(:func:`cryoscape.reconstruct.wiener.gold_standard`), as ``cryoscape reconstruct``
does. The noise per shell is the mean residual power at the best poses.

Schedule: one global search over the level-``global_level`` SO(3) grid
(:func:`cryoscape.geometry.so3_grid.so3_grid`; level 2: 4 608 rotations, 15°) and
the origins on a 1 px grid within ``max_shift_px``, then local searches around
each particle's pose: the rotations of a 3 x 3 x 3 cube of axis-angle steps of
``local_steps_deg`` and origins ±1 step of half a pixel (then less) around the
current ones, the steps shrinking as listed.

The final map, its half maps, FSC files and plot are those of ``cryoscape
reconstruct`` run on the refined poses (:func:`cryoscape.reconstruct.reconstruct`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from cryoscape.imaging import image_to_half
from cryoscape.imaging._grid import half_points_subset, slice_points
from cryoscape.imaging.forward import transfer_at
from cryoscape.inference.pose_search import (global_search, local_rotations, local_search,
                                             search_points, shift_grid_A)
from cryoscape.reconstruct.accumulate import Backprojector
from cryoscape.reconstruct.stream import assign_half_sets, ctf_columns
from cryoscape.reconstruct.wiener import box_support, gold_standard
from cryoscape.validate.fsc import fsc as fsc_curve

__all__ = ["RefineSettings", "RefineResult", "refine_poses", "MARGIN_SHELLS"]

#: Shells searched beyond the half maps' FSC 0.143 resolution.
MARGIN_SHELLS = 3
#: Posterior weights below this are not backprojected.
MIN_WEIGHT = 1e-3


@dataclass
class RefineSettings:
    """The refinement's settings (Å, degrees, pixels as named)."""

    initial_lowpass_A: float = 30.0
    global_level: int = 2
    global_iterations: int = 3
    max_shift_px: float = 3.0
    march_factor: float = float("inf")
    local_steps_deg: tuple[float, ...] = (7.5, 3.75, 1.875, 0.94)
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"


@dataclass
class RefineResult:
    """Refined ``rotations [N, 3, 3]``, ``origins_A [N, 2]``, ``confidence [N]`` (the best pose's posterior),
    the half-set labels used, and one dict per iteration in ``history``."""

    rotations: np.ndarray
    origins_A: np.ndarray
    confidence: np.ndarray
    half_sets: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


def refine_poses(particles: Any, initial: torch.Tensor, settings: RefineSettings, make_model: Callable[[Any], Any],
                 progress: bool = False, log: Callable[[str], None] | None = None) -> RefineResult:
    """Refine the poses of ``particles`` from the map ``initial [D, D, D]`` (module docstring).

    ``make_model(volume)`` builds the representation of one map (its ``slice_half(R, None, points)`` is what
    the search uses) — passed in, so that this driver names no concrete model.
    """
    say = log or (lambda _m: None)
    s, dev = settings, torch.device(settings.device)
    N, D, apix = len(particles), int(particles.box), float(particles.apix)
    halves = assign_half_sets(getattr(particles, "half_set", None), N, s.seed)
    start = _lowpass(initial, D, apix, s.initial_lowpass_A)
    models = [make_model(start), make_model(start)]
    given = s.global_iterations == 0 and getattr(particles, "rotations", None) is not None
    rot = np.array(particles.rotations, dtype=np.float64) if given else np.tile(np.eye(3), (N, 1, 1))
    org = (np.zeros((N, 2)) if not given or particles.shifts_A is None
           else np.array(particles.shifts_A, dtype=np.float64))
    conf = np.zeros(N)
    kmax = min(D // 2 - 1, D * apix / s.initial_lowpass_A + 1)
    noise = _image_power(particles, D, dev, s.batch_size)
    schedule = [("global", 0.0)] * int(s.global_iterations) + [("local", float(st)) for st in s.local_steps_deg]
    history = []
    for it, (kind, step) in enumerate(schedule, start=1):
        t0 = time.perf_counter()
        prev = rot.copy()
        sums, noise_new = _one_pass(particles, models, halves, rot, org, conf, noise, kmax, kind, step, s, dev,
                                    progress, f"refine {it}/{len(schedule)}")
        noise = torch.where(noise_new > 0, noise_new, noise)
        gs = gold_standard((sums.numerator[0], sums.numerator[1]), (sums.weights[0], sums.weights[1]), D, 2,
                           fsc_curve, filter="wiener", support=box_support(D, apix, None))
        models = [make_model(torch.as_tensor(gs.half_a)), make_model(torch.as_tensor(gs.half_b))]
        r143 = _first_below(np.asarray(gs.fsc), 0.143)
        e_res = D * apix / kmax
        kmax = max(kmax, min(D // 2 - 1, r143 + MARGIN_SHELLS, s.march_factor * kmax))
        moved = _angle_deg(prev, rot) if it > 1 else None
        entry = {"iteration": it, "search": kind, "step_deg": step or None, "e_step_resolution_A": round(e_res, 2),
                 "resolution_A": round(D * apix / max(r143, 1), 2), "mean_confidence": round(float(conf.mean()), 4),
                 "median_change_deg": None if moved is None else round(float(np.median(moved)), 3),
                 "seconds": round(time.perf_counter() - t0, 1)}
        history.append(entry)
        say(f"iteration {it} ({kind}{'' if kind == 'global' else f', step {step:g}°'}): E-step to {e_res:.1f} Å, "
            f"half-map FSC 0.143 at {entry['resolution_A']:.2f} Å, mean pose confidence {entry['mean_confidence']:.3f}"
            + ("" if moved is None else f", median change {entry['median_change_deg']:.2f}°"))
    return RefineResult(rot, org, conf, halves, history)


def _one_pass(particles, models, halves, rot, org, conf, noise, kmax, kind, step, s, dev, progress, desc):
    """One E- and M-step pass; ``rot``, ``org``, ``conf`` updated in place. Returns the sums and the noise."""
    from cryoscape.geometry.so3_grid import so3_grid

    D, apix = int(particles.box), float(particles.apix)
    pts = search_points(D, kmax, dev)
    sub = half_points_subset(D, pts, dev)
    shells = _shells(D, dev)
    h = 2.0 * slice_points(D, True, dev).insert_weight.to(torch.float32)
    w = (h / noise.clamp(min=1e-30)[shells].to(torch.float32))[pts]
    bp = Backprojector(D, apix, 2, 2, dev)
    resid = torch.zeros(D // 2, dtype=torch.float64, device=dev)
    count = torch.zeros(D // 2, dtype=torch.float64, device=dev)
    ctf_all = ctf_columns(particles) if bool(particles.has_ctf) else None
    if kind == "global":
        grid = torch.as_tensor(so3_grid(s.global_level), dtype=torch.float32, device=dev)
        origins = torch.as_tensor(shift_grid_A(s.max_shift_px, 1.0, apix), dtype=torch.float32, device=dev)
        slices = [m.slice_half(grid, None, pts) for m in models]
    else:
        offsets_np, vectors_np = local_rotations(step, vectors=True)
        offsets = torch.as_tensor(offsets_np, dtype=torch.float32, device=dev)
        vectors = torch.as_tensor(vectors_np, dtype=torch.float32, device=dev)
        sh = min(0.5, step / 7.5) * apix
        shift_off = torch.as_tensor(shift_grid_A(1.5, 1.0, 1.0) * sh, dtype=torch.float32, device=dev)
    bar = _bar(len(particles), progress, desc)
    for idx, images in particles.iter_batches(s.batch_size):
        idx = np.asarray(idx)
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=dev)
        y_all = image_to_half(x)
        y = y_all[:, pts]
        cb = None if ctf_all is None else {k: v[idx] for k, v in ctf_all.items()}
        ctf = None if cb is None else transfer_at(sub, apix, None, cb, torch.float32)[0]
        for half in (0, 1):
            rows = np.flatnonzero(halves[idx] == half)
            if rows.size == 0:
                continue
            r_t = torch.as_tensor(rows, device=dev)
            c_h = None if ctf is None else ctf[r_t]
            if kind == "global":
                hits = global_search(models[half], grid, origins, y[r_t], c_h, w, pts, apix, slices=slices[half])
            else:
                hits = local_search(models[half], torch.as_tensor(rot[idx[rows]], dtype=torch.float32, device=dev),
                                    torch.as_tensor(org[idx[rows]], dtype=torch.float32, device=dev), offsets,
                                    shift_off, y[r_t], c_h, w, pts, apix, offset_vectors=vectors)
            rot[idx[rows]] = hits.rotations.double().cpu().numpy()
            org[idx[rows]] = hits.origins_A.double().cpu().numpy()
            conf[idx[rows]] = hits.confidence.double().cpu().numpy()
            _noise_terms(models[half], hits, y_all[r_t], None if cb is None else {k: v[rows] for k, v in cb.items()},
                         D, apix, h, shells, resid, count)
            _insert(bp, images[rows], hits, None if cb is None else {k: v[rows] for k, v in cb.items()}, half)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return bp.sums(), resid / count.clamp(min=1.0)


def _insert(bp: Backprojector, images: np.ndarray, hits: Any, ctf: dict | None, half: int) -> None:
    """Backproject each image at its top poses with their posterior weights (small ones dropped)."""
    wts = hits.top_weights.cpu().numpy()
    b, n = wts.shape
    keep = wts.reshape(-1) >= MIN_WEIGHT
    img_rows = np.repeat(np.arange(b), n)[keep]
    R = hits.top_rotations.reshape(-1, 3, 3).cpu().numpy()[keep]
    o = hits.top_origins_A.reshape(-1, 2).cpu().numpy()[keep]
    bp.insert(images[img_rows], R, o, None if ctf is None else {k: np.asarray(v)[img_rows] for k, v in ctf.items()},
              np.full(img_rows.size, half), wts.reshape(-1)[keep])


def _noise_terms(model, hits, y_all, ctf, D, apix, h, shells, resid, count) -> None:
    """Add the residual power per shell of each image at its best pose (with its scale) to ``resid``."""
    pred = model.slice_half(hits.rotations, None, None)  # [b, P]
    c, ph = transfer_at(slice_points(D, True, y_all.device), apix, hits.origins_A, ctf, torch.float32)
    if ph is not None:
        pred = pred * ph
    if c is not None:
        pred = pred * c
    diff = y_all - hits.scale[:, None] * pred
    power = (h * (diff.real ** 2 + diff.imag ** 2)).double()
    resid.index_add_(0, shells, power.sum(0))
    count.index_add_(0, shells, h.double().expand_as(power).sum(0))


def _image_power(particles: Any, D: int, dev: torch.device, batch: int, limit: int = 2000) -> torch.Tensor:
    """Mean power per shell of the first ``limit`` images: the starting noise (noise dominates it)."""
    shells = _shells(D, dev)
    h = 2.0 * slice_points(D, True, dev).insert_weight.to(torch.float64)
    tot = torch.zeros(D // 2, dtype=torch.float64, device=dev)
    cnt = torch.zeros(D // 2, dtype=torch.float64, device=dev)
    for idx, images in particles.iter_batches(batch):
        y = image_to_half(torch.as_tensor(np.asarray(images), dtype=torch.float32, device=dev))
        tot.index_add_(0, shells, (h * (y.real ** 2 + y.imag ** 2)).sum(0))
        cnt.index_add_(0, shells, h * len(idx))
        if int(np.max(idx)) + 1 >= limit:
            break
    return tot / cnt.clamp(min=1.0)


def _shells(D: int, dev: torch.device) -> torch.Tensor:
    pts = slice_points(D, True, dev)
    return torch.round(torch.sqrt(pts.kx.double() ** 2 + pts.ky.double() ** 2)).to(torch.int64).clamp(max=D // 2 - 1)


def _lowpass(vol: torch.Tensor, D: int, apix: float, lowpass_A: float) -> torch.Tensor:
    """``vol`` with shells beyond ``lowpass_A`` removed (raised-cosine edge two shells wide)."""
    from cryoscape.geometry.fourier import scale_shells

    sh = np.arange(D // 2 + 1, dtype=np.float64)
    edge = np.clip((sh - D * apix / lowpass_A) / 2.0, 0.0, 1.0)
    return scale_shells(torch.as_tensor(vol, dtype=torch.float32), 0.5 * (1.0 + np.cos(np.pi * edge))).float()


def _first_below(curve: np.ndarray, threshold: float) -> int:
    """The last shell before ``curve`` first drops below ``threshold`` (from shell 1)."""
    below = np.flatnonzero(curve[1:] < threshold)
    return int(below[0]) if below.size else int(curve.size - 1)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from cryoscape.geometry.rotations import geodesic_distance_deg

    return geodesic_distance_deg(a, b)


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)

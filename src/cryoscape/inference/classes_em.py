"""3D classification by expectation–maximisation over class posteriors (survey §2.2, Eq. 4), known poses.

Model
-----
Particle ``i`` is a copy of one of ``K`` maps, class ``k`` with prior weight
``π_k``, imaged as ``y_i = A_i V_k + ε_i`` with the shared forward model
``A_i = CTF_i ∘ shift_i ∘ slice(R_i)`` (:mod:`cryoscape.imaging`) at the
particle's given pose, and Gaussian noise, white within each frequency shell,
of variance ``s²(shell)`` per Fourier coefficient. Sums over frequencies run
over the in-circle half set with Hermitian weights (1 at DC, 2 elsewhere), i.e.
over the whole disc.

E-step: ``log p(y_i | k) = −½ Σ_p h_p |y_ip − (A_i V_k)_p|² / s²_p`` up to a constant,
the posterior ``r_ik ∝ π_k p(y_i | k)`` (normalised with log-sum-exp). The sum runs
over the shells the classes resolve: first up to ``initial_resolution_A`` (20 Å),
then up to the last shell before the worst class's half-map FSC falls below 0.5
(never shrinking), as RELION widens its E-step with the resolution: frequencies
the maps do not yet resolve carry their noise, common to every particle, into
the assignments.

M-step, in the same pass over the images: each class's map is the weighted
backprojection of its particles (weights ``r_ik``; weights below
:data:`MIN_WEIGHT` are dropped, the "significant weights" of RELION) into two
half-set accumulators, divided and Wiener-filtered from the FSC of its own
halves exactly as ``cryoscape reconstruct`` does
(:func:`cryoscape.reconstruct.wiener.gold_standard`): so every class has half
maps and an FSC. ``π_k`` is the mean posterior and ``s²`` per shell the
posterior-weighted mean residual power. The maps used in an iteration's E-step
are those of the previous M-step.

Start: every particle is given a class at random (seeded), the first M-step
makes the maps from those random subsets (each nearly the consensus, with its
own noise and its own share of each state), and ``s²`` starts as the mean
image power per shell (noise dominates it at realistic SNR). EM stops after
``iterations`` passes or when fewer than ``tolerance`` of the particles change
their most likely class.

The scheme needs of its representation only ``n_classes``, ``box``, ``apix``,
``oversampling``, ``class_slices(R)`` ``[B, K, P]`` and ``set_volumes([K, D, D, D])``
(:class:`cryoscape.models.discrete.DiscreteVolumes` has them); it imports no
concrete model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from cryoscape.imaging import image_to_half
from cryoscape.imaging._grid import slice_points
from cryoscape.imaging.forward import transfer_half
from cryoscape.reconstruct.accumulate import Backprojector
from cryoscape.reconstruct.stream import assign_half_sets, ctf_columns
from cryoscape.reconstruct.wiener import box_support, gold_standard
from cryoscape.validate.fsc import fsc as fsc_curve

__all__ = ["MIN_WEIGHT", "ClassesResult", "fit_classes", "class_log_likelihoods", "shell_index"]

#: Posterior weights below this are not backprojected.
MIN_WEIGHT = 1e-3


@dataclass
class ClassesResult:
    """What :func:`fit_classes` found.

    posteriors ``[N, K]`` float32 (rows sum to 1); labels ``[N]`` int64 (the most likely class);
    volumes ``[K, D, D, D]`` (filtered full maps), half_maps ``[K, 2, D, D, D]``, fsc ``[K, D//2+1]``
    (between each class's halves); pi ``[K]`` prior weights; noise ``[D//2]`` per-shell variance per
    Fourier coefficient; history: one dict per iteration (sizes, changed fraction, log-likelihood, seconds).
    """

    posteriors: np.ndarray
    labels: np.ndarray
    volumes: np.ndarray
    half_maps: np.ndarray
    fsc: np.ndarray
    pi: np.ndarray
    noise: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


def shell_index(D: int, device=None) -> torch.Tensor:
    """Shell ``round(|k|)`` (cycles per box) of every half-set point, int64 ``[P]`` (``0 .. D//2 - 1``)."""
    pts = slice_points(D, True, device)
    r = torch.sqrt(pts.kx.double() ** 2 + pts.ky.double() ** 2)
    return torch.round(r).to(torch.int64).clamp(max=D // 2 - 1)


def class_log_likelihoods(y: torch.Tensor, predicted: torch.Tensor, inv_noise: torch.Tensor,
                          h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(y_i | k)`` up to a constant, ``[B, K]``, and the residual power ``h |y − F_k|²`` ``[B, K, P]``.

    y ``[B, P]`` observed half-set FT values, predicted ``[B, K, P]`` (``A_i V_k``), inv_noise ``[P]``
    ``1 / s²`` per point, h ``[P]`` Hermitian weights.
    """
    diff = y[:, None, :] - predicted
    power = h * (diff.real ** 2 + diff.imag ** 2)
    return -0.5 * (power * inv_noise).sum(-1), power


def _posteriors(loglik: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """``r_ik ∝ π_k exp(loglik_ik)``, ``[B, K]`` (log-sum-exp normalised)."""
    logp = loglik + torch.log(pi.clamp(min=1e-12))[None]
    return torch.softmax(logp, dim=1)


def fit_classes(model: Any, particles: Any, *, iterations: int = 20, batch_size: int = 512, seed: int = 0,
                tolerance: float = 0.002, initial_resolution_A: float = 20.0, device: str | torch.device = "cpu",
                progress: bool = False, log: Callable[[str], None] | None = None) -> ClassesResult:
    """Fit the ``K = model.n_classes`` maps of ``model`` to ``particles`` (known poses) by EM (module docstring).

    ``particles``: a :class:`~cryoscape.particles.ParticleSet` with poses (and CTF when present); its
    half-set labels (``_rlnRandomSubset``) are kept, random halves drawn from ``seed`` elsewhere.
    ``model`` is updated in place to the final maps.
    """
    say = log or (lambda _m: None)
    N, D, K = len(particles), int(model.box), int(model.n_classes)
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    halves = assign_half_sets(getattr(particles, "half_set", None), N, seed)
    post = np.zeros((N, K), dtype=np.float32)
    post[np.arange(N), rng.integers(0, K, N)] = 1.0  # the random start: one class per particle
    labels = post.argmax(1)
    pi = torch.full((K,), 1.0 / K, dtype=torch.float64)
    noise: torch.Tensor | None = None
    shells = shell_index(D, dev)
    history: list[dict[str, Any]] = []
    gs_list: list[Any] = []
    limit = max(1, int(D * float(model.apix) / float(initial_resolution_A)))
    for it in range(int(iterations) + 1):  # pass 0: maps from the random start, no E-step
        t0 = time.perf_counter()
        stats = _one_pass(model, particles, post, halves, pi, noise, shells, it > 0, batch_size, dev, progress,
                          f"classes {it}/{iterations}", limit)
        gs_list = _m_step(model, stats["sums"], gs_list)
        limit = max(limit, _well_measured_shell(gs_list))
        noise = stats["noise"]
        pi = torch.as_tensor(post.mean(0), dtype=torch.float64).clamp(min=1e-6)
        pi = pi / pi.sum()
        new_labels = post.argmax(1)
        changed = float(np.mean(new_labels != labels)) if it > 0 else 1.0
        labels = new_labels
        sizes = np.bincount(labels, minlength=K).tolist()
        entry = {"iteration": it, "sizes": sizes, "changed": changed, "log_likelihood": stats["loglik"],
                 "e_step_limit_A": D * float(model.apix) / limit if it > 0 else None,
                 "seconds": time.perf_counter() - t0}
        history.append(entry)
        say(f"iteration {it}: class sizes {sizes}, {100 * changed:.2f} % changed class"
            + (f", mean log-likelihood {stats['loglik']:.2f}" if it > 0 else " (random start)"))
        if it > 1 and changed < tolerance:
            say(f"converged: fewer than {100 * tolerance:g} % of the particles changed class")
            break
    vols = np.stack([g.full for g in gs_list])
    halves_maps = np.stack([np.stack([g.half_a, g.half_b]) for g in gs_list])
    fscs = np.stack([np.asarray(g.fsc, dtype=np.float64) for g in gs_list])
    return ClassesResult(post, labels.astype(np.int64), vols, halves_maps, fscs, pi.numpy(),
                         noise.cpu().numpy(), history)


def _one_pass(model: Any, particles: Any, post: np.ndarray, halves: np.ndarray, pi: torch.Tensor,
              noise: torch.Tensor | None, shells: torch.Tensor, e_step: bool, batch_size: int,
              device: torch.device, progress: bool, desc: str, limit: int) -> dict[str, Any]:
    """One pass over the images: (with ``e_step``) new posteriors from the shells up to ``limit`` into
    ``post`` in place; every class's weighted half-set sums; the per-shell noise; the mean log-likelihood."""
    D, K, apix = int(model.box), int(model.n_classes), float(model.apix)
    bps = [Backprojector(D, apix, int(model.oversampling), 2, device) for _ in range(K)]
    n_sh = D // 2
    h = 2.0 * slice_points(D, True, device).insert_weight.to(torch.float64)
    count = torch.zeros(n_sh, dtype=torch.float64, device=device).index_add_(0, shells, h)
    resid = torch.zeros(n_sh, dtype=torch.float64, device=device)
    inv_noise = None if noise is None else (1.0 / noise.clamp(min=1e-30))[shells]
    band = (shells <= limit).to(torch.float64)
    rotations = np.asarray(particles.rotations)
    shifts = None if getattr(particles, "shifts_A", None) is None else np.asarray(particles.shifts_A)
    ctf = ctf_columns(particles) if bool(particles.has_ctf) else None
    total_ll, n_seen = 0.0, 0
    bar = _bar(len(particles), progress, desc)
    for idx, images in particles.iter_batches(batch_size):
        idx = np.asarray(idx)
        R = torch.as_tensor(rotations[idx], dtype=torch.float32, device=device)
        sh = None if shifts is None else shifts[idx]
        cb = None if ctf is None else {k: v[idx] for k, v in ctf.items()}
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=device)
        y = image_to_half(x).to(torch.complex128)
        if e_step or noise is None:
            T_ctf, T_ph = transfer_half(D, apix, sh, cb, device, torch.float32)
        if e_step:
            F = model.class_slices(R).to(torch.complex128)
            T = torch.ones_like(y)
            if T_ph is not None:
                T = T * T_ph
            if T_ctf is not None:
                T = T * T_ctf
            ll, power = class_log_likelihoods(y, F * T[:, None, :], inv_noise * band, h)
            r = _posteriors(ll, pi.to(device))
            post[idx] = r.cpu().numpy().astype(np.float32)
            total_ll += float(torch.logsumexp(ll + torch.log(pi.to(device).clamp(min=1e-12))[None], 1).sum())
            resid.index_add_(0, shells, (power * r[:, :, None]).sum((0, 1)))
        else:  # the first pass: the image power per shell stands for the noise
            resid.index_add_(0, shells, (h * (y.real ** 2 + y.imag ** 2)).sum(0))
        n_seen += len(idx)
        for k in range(K):
            w = post[idx, k]
            keep = np.flatnonzero(w >= MIN_WEIGHT)
            if keep.size:
                bps[k].insert(images[keep], rotations[idx[keep]], None if sh is None else sh[keep],
                              None if cb is None else {c: v[keep] for c, v in cb.items()}, halves[idx[keep]],
                              w[keep])
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    noise_new = resid / (count * max(n_seen, 1))
    return {"sums": [bp.sums() for bp in bps], "noise": noise_new.clamp(min=1e-30),
            "loglik": total_ll / max(n_seen, 1)}


def _well_measured_shell(gs_list: list[Any]) -> int:
    """The last shell before the FSC of the worst-measured class first falls below 0.5 (0 if at once)."""
    worst = np.min(np.stack([np.asarray(g.fsc, dtype=np.float64) for g in gs_list]), axis=0)
    below = np.flatnonzero(worst[1:] < 0.5)
    return int(below[0]) if below.size else int(worst.size - 1)


def _m_step(model: Any, sums: list[Any], previous: list[Any]) -> list[Any]:
    """Each class's gold-standard filtered maps from its sums; a class left (nearly) empty keeps its maps."""
    D, apix = int(model.box), float(model.apix)
    support = box_support(D, apix, None)
    out = []
    for k, s in enumerate(sums):
        if np.any(s.weight_sum < 1.0) and previous:
            out.append(previous[k])
            continue
        out.append(gold_standard((s.numerator[0], s.numerator[1]), (s.weights[0], s.weights[1]), D,
                                 int(model.oversampling), fsc_curve, filter="wiener", support=support))
    model.set_volumes(torch.as_tensor(np.stack([g.full for g in out])))
    return out


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)

"""The benchmark's true-label oracle: reconstructions from each particle's true neighbours.

For a sampled particle whose true conformation is ``c``, the oracle map is the
usual Wiener-regularised gold-standard reconstruction
(:func:`cryoscape.reconstruct.gold_standard`, the same as
:func:`cryoscape.reconstruct.reconstruct`) from the true poses and CTFs of
every particle whose *true coordinate* lies in a window around ``c``'s:

* a path dataset (``adk-1d``, ``adk-junk``): the frames ``f`` with
  ``|f − c| ≤ w`` (``w`` in frames);
* a grid dataset (``adk-2d``): the cells ``(a', b')`` with
  ``max(|a' − a|, |b' − b|) ≤ w`` (``w`` in grid steps), a square of
  ``(2w + 1)²`` cells clipped at the edges.

Junk (conformation −1) is never a neighbour.

Choosing ``w`` is a bias–variance trade: a narrow window averages little
motion but few particles (noise), a wide one the reverse. The oracle may know
the truth, so ``w`` is the candidate (:data:`PATH_WINDOWS`,
:data:`GRID_WINDOWS`) with the highest *predicted* mean per-image FSC AUC,
predicted per shell from

* the bias: the FSC, inside the metric's mask, between the particle-count
  weighted mean of the true volumes in the window and the true volume of the
  centre;
* the noise: a reconstruction from ``n`` particles has spectral SNR
  ``S(k) = n · p(k) · P_V̄(k) / P_M(k)``, with ``p(k)`` the per-particle SSNR
  the consensus half maps measure inside the same mask (``FSC/(1 − FSC)``
  over the half-set size) for their signal, the mean ``M`` of all true
  volumes, and ``P`` the masked shell power; its FSC with any fixed map is
  scaled by ``√(S / (1 + S))``:

      FSC_pred(k) = FSC(V̄_w, V_c)(k) · √(S(k) / (1 + S(k)))

and the AUC of that curve (:func:`choose_window`). The prediction uses the
true volumes and the measured noise only, never the oracle maps, so the score
reported for the chosen window is a measurement, not the prediction. The
prediction is only used to rank the windows: it ignores, e.g., uneven view
coverage and the Wiener filter, and tends to overestimate the AUC by a few
hundredths while ranking the windows as the measurements do. The predicted
mean of every candidate is kept in the results.

The maps are made by :class:`WindowReconstructor`, which moves one pair of
half-set accumulators from window to window, adding the particles that
enter and subtracting (weight −1) those that leave, so each image is read
about twice per benchmark instead of once per sampled particle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cryoscape.errors import InputError

__all__ = [
    "PATH_WINDOWS",
    "GRID_WINDOWS",
    "OracleChoice",
    "conformation_positions",
    "window_unit",
    "neighbour_conformations",
    "candidate_windows",
    "particle_ssnr",
    "predicted_fsc",
    "choose_window",
    "WindowReconstructor",
    "visit_order",
]

#: Candidate half-widths (frames) for path datasets.
PATH_WINDOWS: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
#: Candidate half-widths (grid steps) for grid datasets.
GRID_WINDOWS: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
#: At most this many distinct sampled conformations enter the window prediction.
MAX_PREDICTION_TARGETS = 16


@dataclass
class OracleChoice:
    """The chosen half-width and the prediction behind it.

    ``half_width``: in ``unit`` ("frames" or "grid steps"); ``predicted``:
    candidate half-width → predicted mean per-image FSC AUC;
    ``targets``: the conformations the prediction averaged over.
    """

    half_width: int
    unit: str
    predicted: dict[int, float] = field(default_factory=dict)
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"half_width": int(self.half_width), "unit": self.unit,
                "predicted_auc": {str(k): float(v) for k, v in self.predicted.items()},
                "prediction_targets": [int(t) for t in self.targets]}


# ----------------------------------------------------------------------------- neighbourhoods


def conformation_positions(truth: Mapping[str, Any]) -> np.ndarray:
    """Integer lattice position of every conformation, ``(C, k)`` int64.

    Grid datasets (``cell_grid`` in the truth): the cell's ``(a, b)``; path
    datasets: the frame index (``k = 1``), with ``C`` = ``n_frames`` (else
    one more than the largest conformation).
    """
    if "cell_grid" in truth:
        return np.asarray(truth["cell_grid"], dtype=np.int64).reshape(-1, 2)
    conf = np.asarray(truth["conformation"])
    n = int(truth["n_frames"]) if "n_frames" in truth else int(conf.max()) + 1
    return np.arange(n, dtype=np.int64)[:, None]


def window_unit(truth: Mapping[str, Any]) -> str:
    """``"grid steps"`` for grid datasets, else ``"frames"``."""
    return "grid steps" if "cell_grid" in truth else "frames"


def candidate_windows(positions: np.ndarray) -> tuple[int, ...]:
    """The candidates of :data:`PATH_WINDOWS` / :data:`GRID_WINDOWS` narrower than the lattice."""
    extent = int((positions.max(axis=0) - positions.min(axis=0)).max())
    base = GRID_WINDOWS if positions.shape[1] > 1 else PATH_WINDOWS
    return tuple(w for w in base if w < max(extent, 1))


def neighbour_conformations(positions: np.ndarray, centre: int, half_width: int) -> np.ndarray:
    """Conformations whose position is within Chebyshev distance ``half_width`` of ``centre``'s (sorted)."""
    if half_width < 0:
        raise InputError(f"the oracle window half-width must be non-negative; got {half_width}")
    d = np.abs(positions - positions[int(centre)]).max(axis=1)
    return np.flatnonzero(d <= half_width)


def visit_order(positions: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """``targets`` (distinct conformations) ordered so consecutive windows overlap most.

    Paths: by frame. Grids: row by row, alternating the direction of the
    second coordinate (a "snake"), so each step moves one cell.
    """
    t = np.unique(np.asarray(targets, dtype=np.int64))
    p = positions[t]
    if p.shape[1] == 1:
        return t[np.argsort(p[:, 0], kind="stable")]
    second = np.where(p[:, 0] % 2 == 0, p[:, 1], -p[:, 1])
    return t[np.lexsort((second, p[:, 0]))]


# ----------------------------------------------------------------------------- choosing the window


def particle_ssnr(half_map_fsc: np.ndarray, n_per_half: float) -> np.ndarray:
    """Per-particle spectral SNR per shell, ``FSC/(1 − FSC) / n_per_half`` (FSC clipped to [0, 0.999])."""
    if n_per_half <= 0:
        raise InputError("the per-particle SSNR needs a reconstruction with particles in each half set")
    f = np.clip(np.nan_to_num(np.asarray(half_map_fsc, dtype=np.float64)), 0.0, 0.999)
    return f / (1.0 - f) / float(n_per_half)


def predicted_fsc(bias_fsc: np.ndarray, ssnr: np.ndarray) -> np.ndarray:
    """``FSC(V̄, V) · √(S/(1+S))``: expected FSC against ``V`` of a map of ``V̄`` with spectral SNR ``S`` per shell."""
    s = np.clip(np.asarray(ssnr, dtype=np.float64), 0.0, None)
    return np.asarray(bias_fsc, dtype=np.float64) * np.sqrt(s / (1.0 + s))


def _prediction_targets(targets: np.ndarray) -> np.ndarray:
    """At most :data:`MAX_PREDICTION_TARGETS` evenly spread distinct conformations of ``targets``."""
    t = np.unique(targets)
    if t.size <= MAX_PREDICTION_TARGETS:
        return t
    return t[np.unique(np.round(np.linspace(0, t.size - 1, MAX_PREDICTION_TARGETS)).astype(np.int64))]


class _Shells:
    """Masked centred FTs (single precision: only used to rank windows) and their shell sums ``0 .. D//2``."""

    def __init__(self, D: int, mask: Any) -> None:
        import torch

        from cryoscape.geometry.fourier import radial_shell_index
        from cryoscape.validate.metrics import default_fsc_mask

        m = default_fsc_mask(D) if mask is None else (np.ones((D,) * 3) if mask is False else mask)
        self.mask = torch.as_tensor(np.asarray(m, dtype=np.float32))
        self.index = radial_shell_index(D, 3)
        self.n = D // 2 + 1

    def ft(self, vol: np.ndarray) -> Any:
        """Centred FT of ``mask · vol``."""
        import torch

        from cryoscape.geometry.fourier import fftn_c

        return fftn_c(torch.as_tensor(np.asarray(vol, dtype=np.float32)) * self.mask, 3)

    def sum(self, values: Any) -> np.ndarray:
        """Shell sums of a real grid, float64."""
        from cryoscape.geometry.fourier import shell_sum

        return shell_sum(values, self.index, self.n).double().numpy()

    def power(self, A: Any) -> np.ndarray:
        """``Σ_shell |A|²``."""
        return self.sum(A.real ** 2 + A.imag ** 2)

    def fsc(self, A: Any, B: Any, power_a: np.ndarray, power_b: np.ndarray) -> np.ndarray:
        """FSC of two masked FTs with their shell powers (0 where a shell has no power), as :func:`cryoscape.validate.fsc.fsc`."""
        den = np.sqrt(power_a * power_b)
        num = self.sum(A.real * B.real + A.imag * B.imag)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def choose_window(
    truth: Mapping[str, Any],
    true_fn: Callable[[int], np.ndarray],
    targets: np.ndarray,
    consensus_fsc: np.ndarray,
    n_per_half: float,
    mask: Any = None,
) -> OracleChoice:
    """The half-width with the highest predicted mean per-image FSC AUC.

    ``true_fn(c)``: conformation ``c``'s true volume ``[D, D, D]``;
    ``targets``: the sampled particles' conformations; ``consensus_fsc``: the
    consensus half maps' FSC inside ``mask`` (the metric's mask; None: the
    default soft sphere), from ``n_per_half`` particles per half.

    Per shell ``k``, the consensus measures the per-particle SSNR of the mean
    of all true volumes ``M``: ``p(k) = FSC/(1 − FSC)/n_half``. A map from the
    ``n`` particles of a window, whose signal is the count-weighted mean ``V̄``
    of the window's true volumes, has ``S(k) = n p(k) P_V̄(k) / P_M(k)``
    (``P``: masked shell power), and its expected FSC with the centre's true
    volume ``V`` is :func:`predicted_fsc` of ``FSC(V̄, V)`` and ``S``; its
    area is the predicted AUC. Ties go to the narrower window.
    """
    from cryoscape.validate.fsc import fsc_auc

    positions = conformation_positions(truth)
    conf = np.asarray(truth["conformation"])
    counts = np.bincount(conf[conf >= 0], minlength=positions.shape[0]).astype(np.float64)
    chosen = _prediction_targets(np.asarray(targets, dtype=np.int64))
    first = np.asarray(true_fn(int(chosen[0])))
    volumes = np.stack([np.asarray(true_fn(c), dtype=np.float32).reshape(-1) for c in range(positions.shape[0])])
    shells = _Shells(first.shape[-1], mask)
    per_particle = particle_ssnr(consensus_fsc, n_per_half) / np.maximum(
        shells.power(shells.ft((counts @ volumes / counts.sum()).reshape(first.shape))), 1e-300)
    centres = {int(c): shells.ft(true_fn(int(c))) for c in chosen}
    centre_power = {c: shells.power(B) for c, B in centres.items()}
    predicted: dict[int, float] = {}
    for w in candidate_windows(positions):
        aucs = []
        for c in chosen:
            members = neighbour_conformations(positions, int(c), w)
            n = counts[members].sum()
            if n < 2:
                aucs.append(0.0)
                continue
            A = shells.ft((counts[members] @ volumes[members] / n).reshape(first.shape))
            power = shells.power(A)
            bias = shells.fsc(A, centres[int(c)], power, centre_power[int(c)])
            aucs.append(fsc_auc(predicted_fsc(bias, n * per_particle * power)))
        predicted[w] = float(np.mean(aucs))
    best = max(predicted, key=lambda w: (predicted[w], -w))
    return OracleChoice(best, window_unit(truth), predicted, chosen)


# ----------------------------------------------------------------------------- the maps


class WindowReconstructor:
    """Gold-standard maps from the particles of a changing set of conformations.

    ``particles``: a :class:`~cryoscape.particles.ParticleSet` with poses (and
    CTF); ``conformation (N,)``: each particle's true conformation (−1 for
    junk, never used); the half sets are ``particles.half_set`` (0/1).
    :meth:`move_to` changes the set of conformations, inserting the particles
    that enter and subtracting those that leave (or starting afresh when
    fewer particles stay than leave); :meth:`volume` gives the map of the
    current set.
    """

    def __init__(self, particles: Any, conformation: np.ndarray, batch_size: int = 1024,
                 oversampling: int = 2, device: str = "cpu") -> None:
        particles.require_poses("the oracle reconstruction")
        halves = np.asarray(particles.half_set, dtype=np.int64)
        if halves.shape != (len(particles),) or np.any((halves < 0) | (halves > 1)):
            raise InputError("the oracle needs every particle in half set 0 or 1")
        self.particles = particles
        self.conformation = np.asarray(conformation, dtype=np.int64).reshape(-1)
        if self.conformation.size != len(particles):
            raise InputError(f"{self.conformation.size} conformations for {len(particles)} particles")
        self.halves = halves
        self.batch_size = int(batch_size)
        self.oversampling = int(oversampling)
        self.device = device
        self.members: set[int] = set()
        self.counts = np.zeros(2, dtype=np.int64)
        self.images_read = 0
        self._ctf = particles.ctf_table() if particles.has_ctf else None
        self._reset()

    def _reset(self) -> None:
        from cryoscape.reconstruct import Backprojector

        self._bp = Backprojector(int(self.particles.box), float(self.particles.apix), self.oversampling, 2,
                                 self.device)
        self.members = set()
        self.counts[:] = 0

    def _indices(self, conformations: set[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.conformation, np.fromiter(conformations, dtype=np.int64)))

    def _insert(self, idx: np.ndarray, sign: float) -> None:
        """Insert the particles ``idx`` with weight ``sign`` (+1 or −1)."""
        p = self.particles
        for orig, images in p.iter_batches(self.batch_size, idx):  # orig: indices into the whole set
            ctf = None if self._ctf is None else {k: v[orig] for k, v in self._ctf.items()}
            shifts = None if p.shifts_A is None else p.shifts_A[orig]
            self._bp.insert(images, p.rotations[orig], shifts, ctf, self.halves[orig],
                            np.full(len(orig), sign))
            self.images_read += len(orig)
        self.counts += int(sign) * np.bincount(self.halves[idx], minlength=2)

    def move_to(self, conformations: Sequence[int] | np.ndarray) -> None:
        """Make the current set exactly ``conformations``."""
        target = {int(c) for c in np.asarray(conformations).reshape(-1) if int(c) >= 0}
        leave, enter = self.members - target, target - self.members
        n_leave = self._indices(leave).size if leave else 0
        n_stay = self._indices(self.members & target).size if self.members & target else 0
        if n_leave > n_stay:
            self._reset()
            leave, enter = set(), target
        if leave:
            self._insert(self._indices(leave), -1.0)
        if enter:
            self._insert(self._indices(enter), 1.0)
        self.members = target

    def volume(self) -> np.ndarray | None:
        """The Wiener-filtered full map ``[D, D, D]`` of the current set, or None when a half set is empty."""
        from cryoscape.reconstruct import gold_standard
        from cryoscape.reconstruct.wiener import box_support
        from cryoscape.validate.fsc import fsc

        if np.any(self.counts < 1):
            return None
        s = self._bp.sums()
        gs = gold_standard((s.numerator[0], s.numerator[1]), (s.weights[0], s.weights[1]), s.box,
                           s.oversampling, fsc, support=box_support(s.box, float(self.particles.apix)))
        return gs.full

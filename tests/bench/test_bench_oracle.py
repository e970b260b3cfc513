"""The benchmark's true-neighbour oracle: windows, the window choice, the sliding reconstruction, and the metric's sanity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cryoscape.bench import DATASETS, build_dataset
from cryoscape.bench import runner
from cryoscape.bench.oracle import (
    WindowReconstructor,
    choose_window,
    conformation_positions,
    neighbour_conformations,
    predicted_fsc,
    visit_order,
)
from cryoscape.errors import InputError
from cryoscape.reconstruct import reconstruct

N, BOX = 300, 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """A tiny adk-1d."""
    return build_dataset("adk-1d", tmp_path_factory.mktemp("oracle"), n_particles=N, box=BOX, progress=False)


def test_neighbours_on_a_path_and_a_grid() -> None:
    path = conformation_positions({"conformation": np.array([0, 5, 9]), "n_frames": np.int64(10)})
    assert path.shape == (10, 1)
    assert neighbour_conformations(path, 0, 2).tolist() == [0, 1, 2]
    assert neighbour_conformations(path, 5, 1).tolist() == [4, 5, 6]
    assert neighbour_conformations(path, 7, 0).tolist() == [7]
    grid = np.stack(np.divmod(np.arange(16), 4), axis=-1)  # 4 × 4 cells, c = a·4 + b
    grid_truth = {"conformation": np.arange(16), "cell_grid": grid}
    assert np.array_equal(conformation_positions(grid_truth), grid)
    assert neighbour_conformations(grid, 5, 1).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # (1, 1) ± 1
    assert neighbour_conformations(grid, 0, 1).tolist() == [0, 1, 4, 5]  # clipped at the corner
    with pytest.raises(InputError, match="non-negative"):
        neighbour_conformations(grid, 0, -1)


def test_visit_order_moves_one_step_at_a_time_on_a_grid() -> None:
    grid = np.stack(np.divmod(np.arange(9), 3), axis=-1)
    order = visit_order(grid, [8, 0, 3, 4, 5, 1, 2, 6, 7, 4])
    assert order.tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]  # a snake, each distinct cell once
    steps = np.abs(np.diff(grid[order], axis=0)).sum(axis=1)
    assert np.all(steps == 1)
    assert visit_order(np.arange(5)[:, None], [4, 1, 1, 3]).tolist() == [1, 3, 4]


def test_predicted_fsc_is_the_noise_scaled_bias() -> None:
    bias = np.array([1.0, 0.8, 0.5])
    np.testing.assert_allclose(predicted_fsc(bias, np.array([1e12, 1e12, 1e12])), bias, rtol=1e-9)
    np.testing.assert_allclose(predicted_fsc(bias, np.zeros(3)), 0.0)
    np.testing.assert_allclose(predicted_fsc(bias, np.array([1.0, 3.0, 0.25])),
                               bias * np.sqrt([0.5, 0.75, 0.2]), rtol=1e-12)


def test_prediction_fsc_is_the_metric_fsc() -> None:
    from cryoscape.bench.oracle import _Shells
    from cryoscape.validate.metrics import fsc_result

    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 16, 16))
    b = a + 2.0 * rng.standard_normal((16, 16, 16))
    shells = _Shells(16, None)
    A, B = shells.ft(a), shells.ft(b)
    ours = shells.fsc(A, B, shells.power(A), shells.power(B))
    np.testing.assert_allclose(ours, fsc_result(a, b).curve, atol=1e-5)


def _moving_blob_truth(n_frames: int = 20, D: int = 16):
    """Frames of a Gaussian blob moving along x by 0.25 px per frame, 10 particles per frame."""
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")

    def vol(f: int) -> np.ndarray:
        return np.exp(-((x - 0.25 * (f - n_frames / 2)) ** 2 + y ** 2 + z ** 2) / (2 * 1.5 ** 2))

    truth = {"conformation": np.repeat(np.arange(n_frames), 10), "n_frames": np.int64(n_frames)}
    return truth, vol, D


def test_window_choice_trades_motion_against_noise() -> None:
    truth, vol, D = _moving_blob_truth()
    targets = np.array([3, 10, 16])
    fsc = np.full(D // 2 + 1, 0.999)
    choices = [choose_window(truth, vol, targets, fsc, n_half) for n_half in (1e-3, 1e2, 1e4, 1e6)]
    widths = [c.half_width for c in choices]
    assert widths[0] == 0 and choices[0].unit == "frames"  # no noise: averaging only blurs
    assert widths == sorted(widths) and widths[-1] >= 4  # noisier: wider
    clean = [choices[0].predicted[w] for w in sorted(choices[0].predicted)]
    assert all(a >= b - 1e-12 for a, b in zip(clean, clean[1:])) and len(clean) > 3


def test_sliding_windows_match_weighted_reconstructions(dataset) -> None:
    particles = runner._particles(dataset)
    conf = np.asarray(dataset.truth["conformation"])
    positions = conformation_positions(dataset.truth)
    windows = WindowReconstructor(particles, conf)
    for centre, w in ((20, 3), (22, 3), (60, 1), (61, 5)):  # subtract, then restart, then subtract again
        members = neighbour_conformations(positions, centre, w)
        windows.move_to(members)
        ours = windows.volume()
        weights = np.isin(conf, members).astype(np.float64)
        ref = reconstruct(particles, particle_weights=weights, progress=False).volume
        assert ours is not None
        np.testing.assert_allclose(ours, ref, atol=2e-4 * np.abs(ref).max())
        assert windows.counts.sum() == weights.sum()
    assert windows.images_read < 3 * N


def test_empty_half_gives_no_map(dataset) -> None:
    particles = runner._particles(dataset)
    conf = np.asarray(dataset.truth["conformation"])
    single = int(np.flatnonzero(np.bincount(conf) == 1)[0]) if np.any(np.bincount(conf) == 1) else None
    windows = WindowReconstructor(particles, conf)
    windows.move_to([])
    assert windows.volume() is None
    if single is not None:
        windows.move_to([single])
        assert windows.volume() is None


def test_oracle_beats_consensus_when_the_data_resolve_the_motion(tmp_path: Path, monkeypatch) -> None:
    # Sanity of the per-image FSC AUC: with enough signal to see the motion, the map from each
    # particle's true neighbours is closer to its true volume than one map from all particles.
    # (At the benchmarks' SNR of 0.05 the same holds only with thousands of particles.)
    spec = dataclasses.replace(DATASETS["adk-1d"], name="adk-1d-test-snr10", snr=10.0)
    monkeypatch.setitem(DATASETS, spec.name, spec)
    data = build_dataset(spec.name, tmp_path, n_particles=600, box=32, progress=False)
    particles = runner._particles(data)
    indices = runner.sample_particles(data.truth, 40)
    true_fn = runner._true_volume_fn(data)
    cons = runner._consensus(particles, data, lambda _m: None)
    consensus = runner._consensus_result(cons, data, indices, true_fn)
    oracle = runner._oracle_result(particles, data, indices, true_fn, cons.reconstruction)
    assert oracle.per_image.n_missing == 0
    assert oracle.per_image.mean > consensus.per_image.mean + 0.01
    assert 0 < oracle.details["half_width"] < 48 and oracle.details["unit"] == "frames"

"""Outlier scores rank planted junk high; roc_auc matches a brute-force pair count."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscape.analysis.outliers import outlier_scores, robust_zscore, roc_auc
from cryoscape.errors import InputError


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inliers = np.vstack([rng.standard_normal((250, 4)), np.array([4.0, 0, 0, 0]) + rng.standard_normal((250, 4))])
    directions = rng.standard_normal((20, 4))
    far = 2.0 + directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(8, 10, (20, 1))
    Z = np.vstack([inliers, far])
    return Z, np.r_[np.zeros(500, bool), np.ones(20, bool)]


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (pos.size * neg.size)


def test_far_points_score_high():
    Z, junk = planted()
    result = outlier_scores(Z, k=10)
    assert roc_auc(result.score, junk) > 0.95
    assert result.error_z is None and result.flagged(3.0)[junk].mean() > 0.8


def test_errors_find_junk_hidden_in_dense_regions():
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((400, 3))
    junk = np.zeros(400, bool)
    junk[rng.choice(400, 20, replace=False)] = True
    errors = rng.normal(1.0, 0.1, 400) + 1.0 * junk
    assert roc_auc(outlier_scores(Z).score, junk) < 0.75
    assert roc_auc(outlier_scores(Z, errors=errors).score, junk) > 0.95
    with pytest.raises(InputError, match="one per particle"):
        outlier_scores(Z, errors=errors[:10])


def test_combining_rules():
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((300, 2))
    errors = rng.standard_normal(300)
    both = outlier_scores(Z, errors=errors)
    np.testing.assert_array_equal(both.score, np.maximum(both.density_z, both.error_z))
    mean = outlier_scores(Z, errors=errors, combine="mean", error_weight=3.0)
    np.testing.assert_allclose(mean.score, (mean.density_z + 3.0 * mean.error_z) / 4.0)
    with pytest.raises(InputError, match="'max' or 'mean'"):
        outlier_scores(Z, errors=errors, combine="sum")


def test_an_uninformative_density_costs_the_maximum_less_than_the_mean():
    rng = np.random.default_rng(6)
    Z = rng.standard_normal((1000, 3))  # junk sits among the particles: the density says nothing
    junk = rng.random(1000) < 0.1
    errors = rng.standard_normal(1000) + 3.0 * junk
    by_max = roc_auc(outlier_scores(Z, errors=errors).score, junk)
    by_mean = roc_auc(outlier_scores(Z, errors=errors, combine="mean").score, junk)
    assert roc_auc(errors, junk) > by_max > by_mean + 0.01 and by_max > 0.93


def test_random_scores_have_auc_one_half():
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.3
    assert abs(roc_auc(rng.random(4000), labels) - 0.5) < 0.03


def test_auc_equals_pair_count_with_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.35, 0.8, 0.1, 0.9, 0.4])
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1], bool)
    assert np.isclose(roc_auc(scores, labels), brute_force_auc(scores, labels))
    assert roc_auc([1, 2, 3], [0, 0, 1]) == 1.0 and roc_auc([3, 2, 1], [0, 0, 1]) == 0.0
    with pytest.raises(InputError, match="positive and one negative"):
        roc_auc([1, 2], [1, 1])


def test_robust_zscore():
    z = robust_zscore([1.0, 2.0, 3.0, 4.0, 100.0])
    assert z[2] == 0.0 and z[-1] > 50
    assert np.all(robust_zscore([2.0, 2.0, 2.0]) == 0)


# ---------------------------------------------------------------- fit of each image to a map


def _atom_dataset(tmp_path, snr: float, n: int = 40):
    from cryoscape.simulate import simulate_dataset

    return simulate_dataset("adk", n_particles=n, box=32, apix=3.0, snr=snr, conformations="30",
                            out_dir=tmp_path / f"sim_{snr}", progress=False, seed=4)


def test_projection_correlation_of_exact_projections_is_one(tmp_path):
    # images: exact real-space projections of Gaussian atoms with CTF and shifts (the simulator);
    # prediction: Fourier slices of the rasterised volume (the forward model) — two independent routes
    from cryoscape.analysis.outliers import projection_correlations
    from cryoscape.particles import ParticleSet

    sim = _atom_dataset(tmp_path, float("inf"))
    particles = ParticleSet.from_file(sim.star_path)
    assert np.abs(particles.shifts_A).max() > 1.0 and particles.has_ctf  # shifts and CTF are exercised
    r = projection_correlations(particles, sim.ground_truth_volume(30)[0])
    assert r.shape == (40,) and r.min() > 0.97
    wrong = projection_correlations(particles, np.flip(sim.ground_truth_volume(30)[0], axis=2).copy())
    assert np.median(wrong) < np.median(r) - 0.1  # the pose matters


def test_projection_correlation_is_the_masked_pearson_coefficient():
    import torch

    from cryoscape.analysis.outliers import projection_correlations
    from cryoscape.imaging import FourierProjector, render
    from cryoscape.imaging.noise import circle_mask_2d
    from cryoscape.particles import ParticleSet

    rng = np.random.default_rng(5)
    D = 16
    vol = rng.standard_normal((D, D, D)).astype(np.float32)
    rot = np.stack([np.eye(3)] * 3)
    images = rng.standard_normal((3, D, D)).astype(np.float32)
    images[2] = 7.0  # constant: correlation 0
    ps = ParticleSet.from_arrays(images, rot, apix=2.0)
    r = projection_correlations(ps, vol, radius_px=6)
    pred = render(FourierProjector(torch.as_tensor(vol)), torch.as_tensor(rot).float(), apix=2.0).numpy()
    mask = circle_mask_2d(D, 6).numpy()
    for i in range(2):
        assert r[i] == pytest.approx(np.corrcoef(images[i][mask], pred[i][mask])[0, 1], abs=1e-6)
    assert r[2] == 0.0
    with pytest.raises(InputError, match="one map index"):
        projection_correlations(ps, np.stack([vol, vol]), which=[0, 1, 2])


def test_consensus_fit_separates_junk(tmp_path):
    from cryoscape.analysis.outliers import consensus_fit_correlations, fit_errors
    from cryoscape.bench import build_dataset
    from cryoscape.particles import ParticleSet

    data = build_dataset("adk-junk", tmp_path, n_particles=400, box=32, progress=False)
    r = consensus_fit_correlations(ParticleSet.from_file(data.star_path))
    kind, junk = data.truth["junk_kind"], data.truth["is_junk"]
    assert abs(np.mean(r[kind == 1])) < 0.02 and abs(np.mean(r[kind == 2])) < 0.03  # noise, decoys: ~0
    assert np.mean(r[kind == 0]) > 0.05
    assert roc_auc(fit_errors(r), junk) > 0.8
    assert roc_auc(fit_errors(r)[kind != 2], junk[kind != 2]) > 0.9  # pure noise is the easier kind

"""Ground-truth metrics with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.validate import metrics as M

D = 24


def _noise_volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((D, D, D))


def test_identical_volumes_give_auc_one():
    conf = np.repeat(np.arange(5), 40)  # 200 particles, 5 conformations
    calls: list[int] = []

    def truth(c: int) -> np.ndarray:
        calls.append(c)
        return _noise_volume(c)

    res = M.per_image_fsc_auc(lambda i: _noise_volume(int(conf[i])), truth, conf, n_samples=20, apix=2.0)
    assert res.auc.shape == (20,) and res.curves.shape == (20, D // 2 + 1)
    np.testing.assert_allclose(res.auc, 1.0, atol=1e-12)
    assert res.mean == pytest.approx(1.0) and res.std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(res.resolution_A, 2 * 2.0)  # never below 0.5: Nyquist
    assert sorted(calls) == sorted(set(calls))  # each true volume computed once
    np.testing.assert_array_equal(res.conformations, conf[res.indices])


def test_torch_volumes_and_no_mask():
    res = M.per_image_fsc_auc(lambda i: torch.as_tensor(_noise_volume(1)), lambda c: _noise_volume(1),
                              np.zeros(3, int), n_samples=3, mask=False)
    np.testing.assert_allclose(res.auc, 1.0, atol=1e-12)


def test_independent_noise_gives_auc_near_zero():
    # Independent white noise: each shell's FSC has mean 0 and std ≈ 1/sqrt(n_s/2)
    # over its n_s ≈ 4πs² Fourier voxels (fewer effective ones under the mask);
    # the DC shell alone is ±1 and weighs 1/(2·12) in the AUC. Per sample the
    # AUC std is ≈ 0.07 at D = 24, so 0.35 is a 5σ bound; the mean of 30
    # independent samples has std ≈ 0.013, bounded at 0.06.
    conf = np.arange(30)
    res = M.per_image_fsc_auc(lambda i: _noise_volume(1000 + i), _noise_volume, conf, n_samples=30)
    assert np.all(np.abs(res.auc) < 0.35)
    assert abs(res.mean) < 0.06


def test_sample_indices_even_and_random():
    np.testing.assert_array_equal(M.evenly_spaced_indices(11, 3), [0, 5, 10])
    np.testing.assert_array_equal(M.evenly_spaced_indices(4, 10), np.arange(4))
    r = M.evenly_spaced_indices(1000, 100, seed=3)
    assert r.size == 100 and np.all(np.diff(r) > 0)
    np.testing.assert_array_equal(r, M.evenly_spaced_indices(1000, 100, seed=3))


def test_per_conformation_fsc():
    vols = {0: _noise_volume(0), 1: _noise_volume(99)}
    out = M.per_conformation_fsc(vols, _noise_volume, apix=1.5)
    assert out[0].auc == pytest.approx(1.0)
    assert out[0].curve.shape == (D // 2 + 1,)
    assert abs(out[1].auc) < 0.35
    assert out[1].resolution_A > 2 * 1.5


def test_ground_truth_volume_fn_reads_volume_truth():
    vol = _noise_volume(5).astype(np.float32)
    fn = M.ground_truth_volume_fn({"kind": "volume", "n_frames": 1, "volume": vol, "box": D, "apix": 1.0})
    np.testing.assert_array_equal(fn(0), vol)


def test_spearman_abs_monotone_and_reversed():
    rng = np.random.default_rng(0)
    t = rng.uniform(size=300)
    assert M.spearman_abs(np.exp(3 * t), t) == pytest.approx(1.0)
    assert M.spearman_abs(-t ** 3, t) == pytest.approx(1.0)
    # (N, d): the first principal component carries the monotone signal
    lat = np.stack([10 * t, 0.01 * rng.standard_normal(300)], axis=1)
    assert M.spearman_abs(lat, t) > 0.99
    assert M.spearman_abs(rng.standard_normal(300), t) < 0.2


def test_first_principal_component_sign_is_fixed():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((200, 3)) * [5.0, 1.0, 0.5]
    pc = M.first_principal_component(z)
    assert np.corrcoef(pc, z[:, 0])[0, 1] > 0.95
    np.testing.assert_allclose(M.first_principal_component(-z), -pc)  # the axis flips, the loading stays positive


def test_knn_preservation_identity_and_permutation():
    rng = np.random.default_rng(2)
    truth = rng.uniform(size=(500, 2))
    ident = M.knn_preservation(truth, truth, k=10)
    assert ident.value == pytest.approx(1.0)
    assert ident.chance == pytest.approx(10 / 499)
    # a random permutation: the overlap count per query is hypergeometric with
    # mean k²/(N−1) = 0.2 and std ≈ 0.44, so the mean fraction over 500 queries
    # has std ≈ 0.003; 0.015 is a 5σ bound.
    perm = M.knn_preservation(truth[rng.permutation(500)], truth, k=10)
    assert abs(perm.value - perm.chance) < 0.015
    # a smooth invertible map of the truth keeps most neighbourhoods
    assert M.knn_preservation(np.exp(truth), truth, k=10).value > 0.8


def test_knn_preservation_with_discrete_truth_and_queries():
    rng = np.random.default_rng(3)
    conf = np.repeat(np.arange(10), 50)  # 500 particles, heavy ties
    lat = conf[:, None] + 0.1 * rng.standard_normal((500, 2))
    res = M.knn_preservation(lat, conf, k=10, n_query=100, seed=1)
    assert res.per_query.shape == (100,) and res.value == pytest.approx(1.0)
    assert res.chance == pytest.approx(49 / 499)  # the whole conformation is a neighbour
    shuffled = M.knn_preservation(lat[rng.permutation(500)], conf, k=10)
    assert abs(shuffled.value - shuffled.chance) < 0.03


def test_knn_rejects_bad_input():
    with pytest.raises(ValueError):
        M.knn_preservation(np.zeros((5, 2)), np.zeros(6))
    with pytest.raises(ValueError):
        M.knn_preservation(np.zeros((5, 2)), np.zeros(5), k=5)

"""PCA, k-means, nearest particles, k-NN density and the optional UMAP on latents with known answers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cryoscape.analysis.latent import (
    kmeans,
    knn_log_density,
    nearest_particle_to_centres,
    pca_embedding,
    umap_embedding,
)
from cryoscape.errors import InputError


def three_blobs(n_per: int = 100, d: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, d))
    centres[0, 0], centres[1, 1], centres[2, 2] = 10.0, 10.0, -10.0
    truth = np.repeat(np.arange(3), n_per)
    Z = centres[truth] + 0.5 * rng.standard_normal((3 * n_per, d))
    perm = rng.permutation(truth.size)
    return Z[perm], truth[perm]


def test_pca_recovers_a_line():
    rng = np.random.default_rng(0)
    direction = np.array([1.0, -2.0, 3.0, 0.5])
    direction /= np.linalg.norm(direction)
    t = rng.uniform(-5, 5, 400)
    Z = 7.0 + t[:, None] * direction + 1e-4 * rng.standard_normal((400, 4))
    emb, comps, ratio = pca_embedding(Z, n_components=2)
    assert emb.shape == (400, 2) and comps.shape == (2, 4)
    assert ratio[0] > 0.999999 and ratio.sum() <= 1.0 + 1e-12
    assert np.allclose(comps[0], direction, atol=1e-4)  # sign: largest loading positive
    assert np.allclose(np.abs(np.corrcoef(emb[:, 0], t)[0, 1]), 1.0, atol=1e-8)
    assert abs(emb[:, 0].mean()) < 1e-9


def test_pca_components_orthonormal_and_clipped_to_d():
    Z = np.random.default_rng(2).standard_normal((50, 3)) * [3.0, 2.0, 1.0]
    _, comps, ratio = pca_embedding(Z, n_components=5)
    assert comps.shape == (3, 3)
    assert np.allclose(comps @ comps.T, np.eye(3), atol=1e-10)
    assert np.isclose(ratio.sum(), 1.0) and np.all(np.diff(ratio) <= 0)


def test_kmeans_recovers_blobs_and_is_deterministic():
    Z, truth = three_blobs()
    labels, centres = kmeans(Z, 3, seed=5)
    table = np.zeros((3, 3), dtype=int)
    np.add.at(table, (truth, labels), 1)
    assert np.all(np.sort(table, axis=1)[:, :2] == 0)  # each true class in one cluster
    assert sorted(table.max(axis=1).tolist()) == [100, 100, 100] and len(set(table.argmax(axis=1))) == 3
    again, centres_again = kmeans(Z, 3, seed=5)
    assert np.array_equal(labels, again) and np.array_equal(centres, centres_again)
    for j in range(3):
        assert np.allclose(centres[j], Z[labels == j].mean(axis=0))


def test_kmeans_k_equal_n_and_bad_k():
    Z = np.array([[0.0], [1.0], [5.0], [9.0]])
    labels, centres = kmeans(Z, 4, seed=0)
    assert len(set(labels.tolist())) == 4
    assert np.allclose(np.sort(centres[:, 0]), Z[:, 0])
    with pytest.raises(InputError, match="k must be"):
        kmeans(Z, 5)


def test_nearest_particle_matches_brute_force():
    Z, _ = three_blobs()
    _, centres = kmeans(Z, 3, seed=0)
    idx = nearest_particle_to_centres(Z, centres)
    brute = np.argmin(((Z[:, None, :] - centres[None]) ** 2).sum(-1), axis=0)
    assert np.array_equal(idx, brute)
    assert nearest_particle_to_centres(Z, Z[17]).tolist() == [17]
    with pytest.raises(InputError, match="centres"):
        nearest_particle_to_centres(Z, np.zeros((2, 3)))


def test_knn_density_of_uniform_square():
    rng = np.random.default_rng(0)
    Z = rng.uniform(0, 1, (4000, 2))
    inner = np.all((Z > 0.2) & (Z < 0.8), axis=1)
    rho = np.exp(knn_log_density(Z, k=20))
    assert abs(np.median(rho[inner]) - 1.0) < 0.1  # density of a unit square is 1


def test_latents_must_be_finite():
    with pytest.raises(InputError, match="NaN"):
        pca_embedding(np.array([[0.0, np.nan], [1.0, 2.0]]))


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_without_umap_learn_says_how_to_install():
    with pytest.raises(InputError, match="pip install umap-learn"):
        umap_embedding(np.zeros((10, 3)))

"""Pose search: the score is the likelihood maximised over the scale; noise-free images give back their poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscape.geometry.rotations import geodesic_distance_deg
from cryoscape.geometry.so3_grid import so3_grid
from cryoscape.imaging._grid import half_points_subset
from cryoscape.imaging.forward import transfer_at
from cryoscape.inference.pose_search import (global_search, local_rotations, local_search, pose_scores,
                                             search_points, shift_grid_A)
from cryoscape.models.discrete import DiscreteVolumes

D, APIX = 16, 3.0


def _blob_volume() -> torch.Tensor:
    """An asymmetric volume: three Gaussian blobs of different sizes."""
    z, y, x = torch.meshgrid(*[torch.arange(D, dtype=torch.float32) - D // 2] * 3, indexing="ij")
    vol = torch.zeros(D, D, D)
    for (cz, cy, cx), s, a in (((0, 0, 0), 2.5, 1.0), ((3, -2, 1), 1.5, 0.8), ((-1, 3, -3), 1.2, 0.6)):
        vol += a * torch.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    return vol


def _images(model, R, origins, pts, ctf_params):
    sub = half_points_subset(D, pts)
    ctf, ph = transfer_at(sub, APIX, origins, ctf_params, torch.float32)
    return model.slice_half(R, None, pts) * ph * ctf, ctf


def _ctf(n: int) -> dict:
    return {"defocus_u_A": np.full(n, 8000.0), "defocus_v_A": np.full(n, 7500.0), "defocus_angle_deg": np.zeros(n),
            "voltage_kV": np.full(n, 300.0), "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}


def test_the_score_is_the_log_likelihood_at_the_best_scale() -> None:
    cross = torch.tensor([3.0, -1.0, 0.5])
    norm = torch.tensor([2.0, 1.0, 4.0])
    score, scale = pose_scores(cross, norm)
    for c, n, s, a in zip(cross, norm, score, scale):
        grid = torch.linspace(0, 5, 50001)
        best = (grid * c - 0.5 * grid ** 2 * n).max()  # log-likelihood up to a constant, a >= 0
        assert float(s) == pytest.approx(float(best), abs=1e-6)
        assert float(a) == pytest.approx(max(float(c), 0.0) / float(n), abs=1e-6)


def test_global_search_finds_the_grid_pose_of_noise_free_images() -> None:
    model = DiscreteVolumes(_blob_volume()[None], APIX)
    grid = torch.as_tensor(so3_grid(1), dtype=torch.float32)
    origins = torch.as_tensor(shift_grid_A(2.0, 1.0, APIX), dtype=torch.float32)
    pick, shift = torch.tensor([5, 100, 333, 571]), torch.tensor([0, 3, 7, 12])
    pts = search_points(D, D // 2 - 1)
    y, ctf = _images(model, grid[pick], origins[shift], pts, _ctf(4))
    hits = global_search(model, grid, origins, 0.7 * y, ctf, torch.ones(pts.numel()), pts, APIX, chunk=3)
    assert np.allclose(geodesic_distance_deg(hits.rotations.numpy(), grid[pick].numpy()), 0.0, atol=1e-3)
    assert torch.allclose(hits.origins_A, origins[shift])
    assert torch.allclose(hits.scale, torch.full((4,), 0.7), atol=1e-4)
    assert hits.top_weights.shape == (4, 5) and torch.allclose(hits.top_weights.sum(1), torch.ones(4))


def test_local_search_moves_to_the_neighbouring_pose() -> None:
    model = DiscreteVolumes(_blob_volume()[None], APIX)
    offsets = torch.as_tensor(local_rotations(4.0), dtype=torch.float32)
    assert offsets.shape == (27, 3, 3) and torch.allclose(offsets[0], torch.eye(3))
    centres = torch.as_tensor(so3_grid(0)[[2, 17, 40]], dtype=torch.float32)
    truth = centres @ offsets[torch.tensor([4, 0, 26])]
    steps = torch.as_tensor(shift_grid_A(1.5, 1.0, 1.0) * 0.5, dtype=torch.float32)
    start_o = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 0.5]])
    true_o = start_o + steps[torch.tensor([1, 0, 8])]
    pts = search_points(D, D // 2 - 1)
    y, ctf = _images(model, truth, true_o, pts, _ctf(3))
    hits = local_search(model, centres, start_o, offsets, steps, y, ctf, torch.ones(pts.numel()), pts, APIX)
    assert np.allclose(geodesic_distance_deg(hits.rotations.numpy(), truth.numpy()), 0.0, atol=1e-3)
    assert torch.allclose(hits.origins_A, true_o, atol=1e-6)
    assert bool((hits.confidence > 0.5).all())
    # the posterior mean: on noise-free images the posterior sits on the true candidate, so the mean is it
    _, vectors = local_rotations(4.0, vectors=True)
    mean = local_search(model, centres, start_o, offsets, steps, y, ctf, torch.ones(pts.numel()), pts, APIX,
                        offset_vectors=torch.as_tensor(vectors, dtype=torch.float32))
    assert np.allclose(geodesic_distance_deg(mean.rotations.numpy(), truth.numpy()), 0.0, atol=1e-2)
    assert torch.allclose(mean.origins_A, true_o, atol=1e-4)


def test_the_posterior_mean_lies_between_two_equally_likely_candidates() -> None:
    """Two candidates with equal scores: the mean pose is half-way (the rotation of half the offset)."""
    from cryoscape.inference.pose_search import _posterior_mean_hits

    offsets, vectors = local_rotations(6.0, vectors=True)
    J = offsets.shape[0]
    score = torch.full((1, J, 1), -1e9)
    score[0, 0, 0] = score[0, 1, 0] = 0.0  # the identity and the first face neighbour
    R = torch.as_tensor(offsets, dtype=torch.float32)[None].expand(1, J, 3, 3).reshape(-1, 3, 3)
    hits = _posterior_mean_hits(score, torch.ones_like(score), torch.eye(3)[None], torch.zeros(1, 2),
                                torch.as_tensor(vectors, dtype=torch.float32), torch.zeros(1, 2), R, torch.zeros(1, 2))
    assert geodesic_distance_deg(hits.rotations.numpy()[0], np.eye(3)) == pytest.approx(3.0, abs=1e-3)
    assert float(hits.confidence[0]) == pytest.approx(0.5, abs=1e-6)

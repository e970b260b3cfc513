"""The solvent mask derived from a map: shape, range, growth and softness in Å."""

from __future__ import annotations

import pytest
import torch

from cryoscape.geometry.masks import radius_grid, solvent_mask

D, APIX = 48, 2.0


def _ball(radius_px: float, centre_shift: int = 0) -> torch.Tensor:
    r = radius_grid(D, 3)
    if centre_shift:
        r = torch.roll(r, centre_shift, dims=2)
    return (r <= radius_px).to(torch.float64)


def test_mask_of_a_ball_is_the_grown_ball_with_a_raised_cosine_edge():
    m = solvent_mask(_ball(6.0), APIX, lowpass_A=4.0, threshold=0.5, dilate_A=4.0, edge_A=6.0)
    assert m.dtype == torch.float32 and m.shape == (D, D, D)
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    r = radius_grid(D, 3)
    # the low-passed ball crosses 0.5 near its radius (6 px = 12 Å): 1 out to about 12 + 4 Å, 0 beyond 12 + 4 + 6 Å
    assert float(m[r <= 7.0].min()) == pytest.approx(1.0)
    assert float(m[r >= 12.5].max()) == pytest.approx(0.0, abs=1e-6)
    edge = m[(r > 8.6) & (r < 10.4)]
    assert 0.05 < float(edge.mean()) < 0.95  # soft in between
    # radial profile decreases monotonically
    prof = [float(m[(r >= a) & (r < a + 1)].mean()) for a in range(0, 14)]
    assert all(b <= a + 1e-6 for a, b in zip(prof, prof[1:]))


def test_only_the_largest_region_is_kept():
    vol = _ball(6.0) + (radius_grid(D, 3) - 0).roll(14, dims=0).le(2.0).to(torch.float64)
    m = solvent_mask(vol, APIX, lowpass_A=2.0, threshold=0.5, dilate_A=0.0, edge_A=2.0)
    small_centre = (D // 2 + 14) % D, D // 2, D // 2
    assert float(m[small_centre]) == 0.0
    assert float(m[D // 2, D // 2, D // 2]) == 1.0


def test_mask_stays_inside_the_box_and_refuses_an_empty_map():
    m = solvent_mask(_ball(20.0), APIX, lowpass_A=4.0, dilate_A=8.0, edge_A=8.0)
    faces = torch.cat([m[0].ravel(), m[-1].ravel(), m[:, 0].ravel(), m[:, -1].ravel(), m[:, :, 0].ravel(),
                       m[:, :, -1].ravel()])
    assert float(faces.max()) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        solvent_mask(torch.zeros(D, D, D), APIX, threshold=1.0)

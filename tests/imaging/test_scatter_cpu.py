"""The compiled CPU trilinear scatter against the torch scatter, across threads, dtypes and grids."""

from __future__ import annotations

import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import insert_half, scatter_cpu
from cryoscape.imaging._grid import SlicePoints, padded_size, slice_points
from cryoscape.imaging.insertion import _scatter_torch


def _rots(n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(Rotation.random(n, random_state=seed).as_matrix(), dtype=dtype)


def _fractional_points(D: int, n: int, seed: int) -> SlicePoints:
    """``n`` points with fractional frequencies filling the disc up to just inside ``D/2``."""
    base = slice_points(D, True)
    g = torch.Generator().manual_seed(seed)
    r = (D / 2 - 1e-3) * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    phi = torch.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r[:4] = D / 2 - 1e-6  # points on the edge exercise the clamped corners
    return SlicePoints(D=D, half=True, kx=r * torch.cos(phi), ky=r * torch.sin(phi),
                       full_index=base.full_index[:0], neg_index=base.neg_index[:0],
                       rfft_index=base.rfft_index[:0], rfft_mirror_src=base.rfft_mirror_src[:0],
                       rfft_mirror_dst=base.rfft_mirror_dst[:0], checker=torch.ones(n),
                       insert_weight=torch.ones(n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("oversampling", [1.0, 2.0, 3.0])
def test_compiled_scatter_equals_the_torch_scatter(dtype: torch.dtype, oversampling: float) -> None:
    D, B, C = 16, 7, 3
    N = padded_size(D, oversampling)
    for pts in (slice_points(D, True), _fractional_points(D, 300, 1)):
        vals = torch.randn(B, pts.n, C, generator=torch.Generator().manual_seed(2), dtype=dtype)
        R = _rots(B, 3, dtype)
        ours = torch.zeros(C, N + 1, N + 1, N + 1, dtype=dtype)
        assert scatter_cpu.usable(ours, vals, R)
        scatter_cpu.scatter_trilinear(ours, R, pts.kx, pts.ky, vals, D, N)
        ref = _scatter_torch(torch.zeros_like(ours), R, pts, vals, D, N)
        tol = (1e-5 if dtype == torch.float32 else 1e-12) * float(ref.abs().max())
        assert torch.allclose(ours, ref, rtol=0, atol=tol)
        assert float(ref.abs().sum()) > 0


def test_the_result_does_not_depend_on_the_thread_count() -> None:
    """Each voxel is written by one task in image order, so any thread count gives the same bits."""
    D, B = 16, 9
    N = padded_size(D, 2.0)
    pts = slice_points(D, True)
    vals = torch.randn(B, pts.n, 2, generator=torch.Generator().manual_seed(4))
    R = _rots(B, 5, torch.float32)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = torch.zeros(2, N + 1, N + 1, N + 1)
            outs.append(scatter_cpu.scatter_trilinear(out, R, pts.kx, pts.ky, vals, D, N))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_insert_half_keeps_autograd_on_the_torch_path() -> None:
    D = 8
    pts = slice_points(D, True)
    vals = torch.randn(2, pts.n, 1, dtype=torch.float64, requires_grad=True)
    R = _rots(2, 6, torch.float64)
    out = insert_half(vals, R, D, 2.0)
    probe = torch.randn_like(out)
    (out * probe).sum().backward()
    # the gradient of <probe, Pᵀ v> with respect to v is the trilinear gather of the probe
    with torch.no_grad():
        fwd = insert_half(vals.detach(), R, D, 2.0)
        assert torch.allclose(out.detach(), fwd, atol=1e-12)
        eps = torch.zeros_like(vals)
        eps[1, 5, 0] = 1.0
        delta = (insert_half(eps, R, D, 2.0) * probe).sum()
    assert torch.isclose(vals.grad[1, 5, 0], delta, atol=1e-10)


def test_bad_accumulators_are_refused() -> None:
    D = 8
    N = padded_size(D, 2.0)
    pts = slice_points(D, True)
    vals = torch.randn(1, pts.n, 3)
    R = _rots(1, 7, torch.float32)
    with pytest.raises(ValueError, match="accumulator"):
        scatter_cpu.scatter_trilinear(torch.zeros(3, N, N, N), R, pts.kx, pts.ky, vals, D, N)
    with pytest.raises(ValueError, match="accumulator"):
        scatter_cpu.scatter_trilinear(torch.zeros(3, N + 1, N + 1, N + 1, dtype=torch.float64),
                                      R, pts.kx, pts.ky, vals, D, N)
    with pytest.raises(ValueError, match="values"):
        scatter_cpu.scatter_trilinear(torch.zeros(2, N + 1, N + 1, N + 1), R, pts.kx, pts.ky, vals, D, N)

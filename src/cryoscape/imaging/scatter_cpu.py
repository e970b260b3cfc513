"""Compiled CPU kernel of the trilinear scatter, the backprojection hot path.

:func:`scatter_trilinear` does on the CPU what :func:`.insertion.insert_half`
does with torch ops: every (image, point) pair ``Rᵀ (kx, ky, 0)``, scaled to
padded index units, spreads its ``C`` channel values over the 8 surrounding
voxels of the symmetric ``M³`` grid with trilinear weights (the same corner
convention and clamping as :func:`.interpolation._trilinear`). The torch
version materialises the corner indices and weights of every pair in memory;
this one computes them in registers in one pass, several times faster on a few
cores. Both are tested against each other and against the dense adjoint.

Threads write without races and without private copies of the grid: the ``M``
z-planes are cut into slabs, one per task, and each task visits every point
but writes only the corners that fall in its own slab (a point whose two
z-planes straddle a slab boundary is written half by each task). Slabs are
thin (a few MB, :func:`_n_tasks`), more of them than threads, so that what one
thread writes stays in cache; a task skips whole runs of points (rows of one
``ky`` with increasing ``kx``, along which the grid ``z`` is monotone) whose
``z`` range misses its slab, so the extra tasks cost little.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

__all__ = ["scatter_ctf_weighted", "scatter_trilinear", "usable"]


@lru_cache(maxsize=1)
def _kernel():
    """The compiled kernel (compiled on first use, cached on disk by numba, a required dependency)."""
    try:
        import numba  # noqa: F401
    except ImportError as exc:  # a broken installation, not a choice: say how to mend it
        raise ImportError("cryoscape needs numba for its CPU backprojection; reinstall with "
                          "`pip install -e .` (or `pip install numba`)") from exc
    from ._scatter_kernel import scatter

    return scatter


def usable(out: torch.Tensor, values: torch.Tensor, rotations: torch.Tensor) -> bool:
    """Whether :func:`scatter_trilinear` applies: CPU, no autograd, contiguous ``out`` of ``values``' dtype."""
    return (out.device.type == values.device.type == rotations.device.type == "cpu" and out.is_contiguous()
            and out.dtype in (torch.float32, torch.float64) and values.dtype == out.dtype
            and not (values.requires_grad or rotations.requires_grad or out.requires_grad))


def scatter_trilinear(out: torch.Tensor, rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor,
                      values: torch.Tensor, D: int, N: int) -> torch.Tensor:
    """Add the trilinear scatter of ``values`` into ``out`` in place (CPU tensors only).

    Args:
        out: contiguous accumulator ``[C, M, M, M]`` (float32 or float64), ``M = N + 1``.
        rotations: ``[B, 3, 3]`` (volume -> particle frame; the point is ``Rᵀ (kx, ky, 0)``).
        kx, ky: ``[P]`` frequencies in cycles per box ``D`` (may be fractional).
        values: real ``[B, P, C]`` in ``out``'s dtype, already times any per-point weight.
        D, N: image box and padded box (padded index ``q N / D + N / 2``).
    Returns:
        ``out``.
    """
    C = _check_out(out, N, values, rotations)
    B, P = int(values.shape[0]), int(values.shape[1])
    if values.shape != (B, P, C):
        raise ValueError(f"values must be [B, P, {C}], got {tuple(values.shape)}")
    vals = np.ascontiguousarray(values.detach().numpy())
    dummy = np.zeros((1, 1, 1), dtype=vals.dtype)
    return _launch(out, rotations, kx, ky, D, N, B, P, vals, dummy, dummy[0], dummy[0, 0], dummy[0, 0], 0)


def scatter_ctf_weighted(out: torch.Tensor, rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor,
                         y: torch.Tensor, ctf: torch.Tensor | None, image_weights: torch.Tensor | None,
                         point_weights: torch.Tensor, D: int, N: int) -> torch.Tensor:
    """Add the backprojection of CTF-weighted image values into the channels of ``out`` in place.

    Scatters, with the geometry of :func:`scatter_trilinear`, the three channels
    ``(Re y · c · g, Im y · c · g, c² · g)`` with ``c = ctf[i, j]`` (1 when ``ctf`` is
    None) and ``g = image_weights[i] · point_weights[j]``, computing them in the
    kernel instead of in memory.

    Args:
        out: contiguous ``[3, M, M, M]`` accumulator (float32 or float64).
        y: complex ``[B, P]`` image FT values (already shift-corrected), of ``out``'s real dtype.
        ctf: real ``[B, P]`` or None. image_weights: ``[B]`` or None (1). point_weights: ``[P]``.
    Returns:
        ``out``.
    """
    real = torch.view_as_real(y.resolve_conj())
    if _check_out(out, N, real, rotations) != 3:
        raise ValueError(f"the CTF-weighted scatter fills 3 channels; out has {out.shape[0]}")
    B, P = int(y.shape[0]), int(y.shape[1])
    as_np = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=real.numpy().dtype)
    yv = np.ascontiguousarray(real.detach().numpy())
    if yv.shape != (B, P, 2) or point_weights.shape != (P,):
        raise ValueError(f"y must be [B, P] and point_weights [P]; got {tuple(y.shape)}, "
                         f"{tuple(point_weights.shape)}")
    cv = np.zeros((1, 1), yv.dtype) if ctf is None else as_np(ctf.expand(B, P))
    wv = np.ones(B, yv.dtype) if image_weights is None else as_np(image_weights.reshape(B))
    dummy = np.zeros((1, 1, 1), dtype=yv.dtype)
    return _launch(out, rotations, kx, ky, D, N, B, P, dummy, yv, cv, wv, as_np(point_weights),
                   1 if ctf is None else 2)


def _check_out(out: torch.Tensor, N: int, values: torch.Tensor, rotations: torch.Tensor) -> int:
    """The channel count of ``out``, after checking it is a usable ``[C, N+1, N+1, N+1]`` accumulator."""
    C, M = int(out.shape[0]), int(out.shape[1])
    if out.shape != (C, M, M, M) or M != N + 1 or not usable(out, values, rotations):
        raise ValueError(f"out must be a contiguous CPU [C, {N + 1}, {N + 1}, {N + 1}] accumulator"
                         " in the values' dtype")
    return C


def _launch(out, rotations, kx, ky, D: int, N: int, B: int, P: int, vals, y, ctf, img_w, pt_w,
            mode: int) -> torch.Tensor:
    """Run the kernel on ``out`` with the thread count of torch (one slab per task)."""
    if B == 0 or P == 0:
        return out
    C, M = int(out.shape[0]), N + 1
    rot = np.ascontiguousarray(rotations.detach().reshape(B, 3, 3).numpy(), dtype=np.float64)
    kxn = np.ascontiguousarray(kx.detach().cpu().numpy(), dtype=np.float64)
    kyn = np.ascontiguousarray(ky.detach().cpu().numpy(), dtype=np.float64)
    kernel = _kernel()
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    tasks = _n_tasks(M, C, out.element_size(), threads)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel(out.view(C, M * M * M).numpy(), M, tasks, rot, kxn, kyn, _runs(kxn, kyn), vals, y, ctf,
               img_w, pt_w, mode, N / D, N / 2)
    finally:
        numba.set_num_threads(before)
    return out


#: Bytes of grid one task writes (its slab, all channels): small enough to stay in cache.
_SLAB_BYTES = 3 << 20


def _n_tasks(M: int, C: int, itemsize: int, threads: int) -> int:
    """Number of z-slabs: at least one per thread, each about :data:`_SLAB_BYTES` and >= 4 planes thick."""
    planes = max(4, _SLAB_BYTES // max(1, C * M * M * itemsize))
    return max(1, min(M - 1, max(threads, -(-(M - 1) // planes))))


def _runs(kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of points (equal ``ky``, non-decreasing ``kx``), with ``P`` appended.

    Along such a run a slice's grid ``z`` is monotone, which lets the kernel skip a
    run by its two ends. Any point order is valid (at worst every point is a run).
    """
    new = np.ones(kx.shape[0], dtype=bool)
    new[1:] = (ky[1:] != ky[:-1]) | (kx[1:] < kx[:-1])
    return np.append(np.flatnonzero(new), kx.shape[0]).astype(np.int64)

"""Shared test fixtures: the path to ``../shared`` and deterministic seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "cryodrgn"


@pytest.fixture
def fixtures_dir() -> Path:
    """``../shared/fixtures/cryodrgn``; skips where the shared folder is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"third-party fixtures not found at {FIXTURES} (they sit beside the project checkout in CI)")
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def _full_grid_wiener(num: torch.Tensor, den: torch.Tensor, regulariser, D: int, oversampling: float) -> torch.Tensor:
    """Wiener volume by complex division on the whole ``N³`` padded grid, float64 ``[D, D, D]``.

    ``num``/``den``: centred ``[M, M, M]`` or ``[N, N, N]``; regulariser: scalar or per-shell
    table indexed by ``round(|q|)`` (``q`` in cycles per box ``D``), last value beyond it.
    """
    from cryoscape.imaging import grid_correction
    from cryoscape.imaging._grid import padded_size

    N = padded_size(D, oversampling)
    num = num[:N, :N, :N].to(torch.complex128)
    den = den[:N, :N, :N].to(torch.float64)
    q = (torch.arange(N, dtype=torch.float64) - N // 2) * (D / N)
    r = torch.sqrt(q[:, None, None] ** 2 + q[None, :, None] ** 2 + q[None, None, :] ** 2)
    tab = torch.as_tensor(np.asarray(regulariser, dtype=np.float64)).reshape(-1)
    total = den + tab[torch.round(r).long().clamp(max=tab.numel() - 1)]
    keep = (r <= D / 2) & (total != 0)
    ft = torch.where(keep, num / torch.where(keep, total, 1.0), 0)
    vol = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(ft))).real
    a = N // 2 - D // 2
    vol = vol[a:a + D, a:a + D, a:a + D]
    return vol / grid_correction(D, oversampling, dtype=torch.float64)


@pytest.fixture
def full_grid_wiener():
    """The straightforward full-grid Wiener volume (see :func:`_full_grid_wiener`), for comparisons."""
    return _full_grid_wiener

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

"""``.npy`` arrays written atomically and read without pickles, and the latent shape checks of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = ["as_float32", "save_npy", "load_float_npy", "check_latent_shapes"]


def as_float32(x: Any) -> np.ndarray:
    """numpy or torch array as a contiguous float32 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def save_npy(path: str | Path, array: np.ndarray, force: bool = True) -> Path:
    """``np.save`` atomically without pickles; an existing file is replaced only with ``force``."""
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return Path(path)


def load_float_npy(path: Path, what: str) -> np.ndarray:
    """``np.load`` without pickles as float32, with one-line errors naming ``what`` the file should hold."""
    if not path.is_file():
        raise InputError(f"{path} not found: the run has no {what} yet; finish or resume the fit")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path} holds pickled objects or is not a .npy array; it was not written by cryoscape") from exc
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path} holds {array.dtype} values, expected float {what}")
    return array.astype(np.float32, copy=False)


def check_latent_shapes(
    mean: np.ndarray,
    var: np.ndarray | None,
    cov: np.ndarray | None,
    n: int | None,
    error: type[Exception],
    what: str,
) -> None:
    """Check mean ``[N, d]``, var ``[N, d]``, cov ``[N, d, d]`` and N against the run; raise ``error``."""
    if mean.ndim != 2:
        raise error(f"{what}: latent means must be [N, d], got shape {mean.shape}")
    if n is not None and mean.shape[0] != n:
        raise error(f"{what}: {mean.shape[0]} latent rows but the run has {n} particles")
    N, d = mean.shape
    if var is not None and var.shape != (N, d):
        raise error(f"{what}: latent variances have shape {var.shape}, expected {(N, d)}")
    if cov is not None and cov.shape != (N, d, d):
        raise error(f"{what}: latent covariances have shape {cov.shape}, expected {(N, d, d)}")

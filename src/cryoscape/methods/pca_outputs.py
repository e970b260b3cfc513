"""Outputs of a ``pca`` fit: latents, contrasts, weights, metrics and maps in the run folder, and the
removal of an earlier fit's files (``--force``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.io.run_dir import CURVE_COORDINATE, CURVE_COORDINATE_SD, CURVE_POINTS
from cryoscape.methods.pca_settings import (CONTRAST, MASK_MAP, MEAN_MAP, SPECTRAL_COORDINATES, SPECTRAL_MEAN,
                                            component_map_name)

__all__ = ["save_npy", "clear_outputs", "write_maps", "metrics", "write_outputs"]


def save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically without pickles (overwrites)."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def clear_outputs(root: Path) -> None:
    """Remove the maps and cropped images of an earlier fit in ``root`` (``--force`` may change K or the box)."""
    stale = [root / MEAN_MAP, root / CONTRAST, root / MASK_MAP, *root.glob("consensus*"),
             root / SPECTRAL_COORDINATES, root / SPECTRAL_MEAN, root / CURVE_COORDINATE,
             root / CURVE_COORDINATE_SD, root / CURVE_POINTS, *root.glob("spectral_volume_*.mrc"),
             *root.glob("component_*.mrc"), *root.glob("particles_box*.star"), *root.glob("particles_box*.mrcs")]
    for p in stale:
        p.unlink(missing_ok=True)


def write_maps(root: Path, model: Any, apix: float) -> list[Path]:
    """``mean.mrc`` and ``component_XX.mrc`` with the fit's voxel size."""
    from cryoscape.io.mrc import write_mrc

    paths = [write_mrc(root / MEAN_MAP, model.mean.cpu().numpy(), apix, force=True)]
    for k, comp in enumerate(model.components.cpu().numpy(), start=1):
        paths.append(write_mrc(root / component_map_name(k), comp, apix, force=True))
    return paths


def metrics(result: Any, elapsed_s: float) -> dict[str, Any]:
    """Scalar summaries for ``metrics.json``."""
    return {
        "eigenvalues": np.asarray(result.eigenvalues, dtype=np.float64),
        "sigma2": float(result.sigma2),
        "objective": [float(v) for v in result.objective],
        "contrast_mean": float(np.mean(result.contrast)),
        "contrast_std": float(np.std(result.contrast)),
        "contrast_prior_std": float(result.contrast_prior_std),
        "latent_prior_covariance": None if result.latent_prior_covariance is None else
        np.asarray(result.latent_prior_covariance, dtype=np.float64),
        "n_iterations": len(result.objective),
        "elapsed_s": float(elapsed_s),
        **_fsc_metrics(result),
    }


def _fsc_metrics(result: Any) -> dict[str, Any]:
    """The last M-step's half-set FSC (mean, then each component in the EM frame) and its 0.143 resolutions."""
    curves = getattr(result, "half_set_fsc", None)
    if curves is None:
        return {}
    from cryoscape.validate.fsc import resolution_at

    D = (curves.shape[1] - 1) * 2
    return {"half_set_fsc": np.asarray(curves, dtype=np.float64),
            "half_set_resolution_A": [float(resolution_at(c, D, float(result.apix))) for c in curves]}


def write_outputs(run: Any, result: Any, elapsed_s: float) -> list[Path]:
    """Latents, contrast, weights, metrics and maps into the run folder."""
    from cryoscape.io.run_dir import LATENTS, LATENTS_COV, METRICS

    run.write_latents(result.latents, cov=result.latent_covariances)
    files = [run.path / LATENTS, run.path / LATENTS_COV,
             save_npy(run.path / CONTRAST, np.asarray(result.contrast, dtype=np.float32)),
             run.save_weights(result.model.state_dict())]
    run.write_metrics(metrics(result, elapsed_s), merge=False)
    files.append(run.path / METRICS)
    return files + write_maps(run.path, result.model, float(result.apix))

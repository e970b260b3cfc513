"""After a ``pca`` fit: diffusion-map coordinates of the latents (in the prior's frame), the spectral
volumes regressed on them, and the latent curve through the posteriors started from the first coordinate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.io.run_dir import CURVE_COORDINATE, CURVE_COORDINATE_SD, CURVE_POINTS
from cryoscape.methods.pca_outputs import save_npy
from cryoscape.methods.pca_settings import SPECTRAL_COORDINATES, SPECTRAL_MEAN, PCASettings, spectral_map_name

__all__ = ["spectral", "prior_whitened", "curve"]


def spectral(run: Any, ps: Any, result: Any, s: PCASettings, mask: Any) -> tuple[list[Path], dict[str, Any]]:
    """Diffusion-map coordinates of the latents and the spectral volumes regressed on them (Moscovich et al. 2020)."""
    if s.spectral_components < 1 or len(ps) <= max(s.spectral_neighbors, s.spectral_components + 2):
        return [], {}
    from cryoscape.analysis.spectral import diffusion_map, spectral_volumes
    from cryoscape.io.mrc import write_mrc

    with run.log(f"diffusion map ({s.spectral_components} coordinates) and spectral volumes"):
        dm = diffusion_map(prior_whitened(result.latents, result.latent_prior_covariance), s.spectral_components,
                           n_neighbors=s.spectral_neighbors, bandwidth_scale=s.spectral_bandwidth_scale)
        sv = spectral_volumes(ps, dm.coordinates, ridge=s.ridge, resolution_limit_A=s.resolution_limit_A, mask=mask,
                              use_ctf=s.use_ctf, oversampling=s.oversampling, batch_size=s.batch_size,
                              device=s.device)
    apix = float(result.apix)
    files = [save_npy(run.path / SPECTRAL_COORDINATES, dm.coordinates.astype(np.float32)),
             write_mrc(run.path / SPECTRAL_MEAN, sv.mean, apix, force=True)]
    files += [write_mrc(run.path / spectral_map_name(j), v, apix, force=True)
              for j, v in enumerate(sv.volumes, start=1)]
    info = {"diffusion_eigenvalues": np.asarray(dm.eigenvalues, dtype=np.float64),
            "diffusion_epsilon": float(dm.epsilon),
            "diffusion_landmarks": None if dm.landmarks is None else int(dm.landmarks.size)}
    curve_files, curve_info = curve(run, result, s, dm.coordinates[:, 0])
    return files + curve_files, {**info, **curve_info}


def prior_whitened(latents: np.ndarray, prior_covariance: np.ndarray | None) -> np.ndarray:
    """Latents ``z P^{-1/2}`` in which the fit's prior ``N(0, P)`` is ``N(0, I)`` (the EM's own frame up to a rotation).

    The output frame orders the components by their variance in volume space, where components with
    high-resolution content can outweigh the motion; in the prior's frame every direction counts by its
    latent variance relative to the prior (adk-1d at SNR 0.01, latents from every frequency: first principal
    component |Spearman| 0.108 in the output frame, 0.780 whitened; from frequencies to 8 Å: 0.782 in the
    output frame). ``prior_covariance`` None returns the latents as float64.
    """
    z = np.asarray(latents, dtype=np.float64)
    if prior_covariance is None:
        return z
    w, V = np.linalg.eigh(np.asarray(prior_covariance, dtype=np.float64))
    return z @ (V / np.sqrt(np.maximum(w, np.finfo(float).tiny * w.max()))[None, :]) @ V.T


def curve(run: Any, result: Any, s: PCASettings, start: np.ndarray) -> tuple[list[Path], dict[str, Any]]:
    """The latent curve through the posteriors (:mod:`cryoscape.analysis.latent_curve`) and each particle's place on it."""
    if s.curve_basis < 1:
        return [], {}
    from cryoscape.analysis.latent_curve import fit_latent_curve

    with run.log(f"latent curve ({s.curve_basis} spline coefficients) from the first spectral coordinate"):
        curve = fit_latent_curve(result.latents, result.latent_covariances, result.latent_prior_covariance,
                                 init=start, n_basis=s.curve_basis)
    files = [save_npy(run.path / CURVE_COORDINATE, curve.coordinate.astype(np.float32)),
             save_npy(run.path / CURVE_COORDINATE_SD, curve.coordinate_sd.astype(np.float32)),
             save_npy(run.path / CURVE_POINTS, curve.points.astype(np.float32))]
    return files, {"curve_log_likelihood": [float(v) for v in curve.log_likelihood],
                   "curve_iterations": len(curve.log_likelihood)}

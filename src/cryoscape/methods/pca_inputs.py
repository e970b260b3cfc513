"""Inputs of a ``pca`` fit: the particles, the fit's box and pixel size, the run folder's config and
checkpoint, the images at the fit box, the mask, and EM's starting components.

Every user error here is a one-line :class:`~cryoscape.errors.InputError` raised before the EM starts.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods.pca_settings import CONSENSUS_MAP, MASK_CHOICES, MASK_MAP, PCASettings

__all__ = ["load_particles", "target_geometry", "resume_state", "refuse_existing", "flat_config",
           "prepare_images", "fit_mask", "initial_components"]


def load_particles(particles_path: str | os.PathLike, datadir: str | os.PathLike | None, latent_dim: int) -> Any:
    """The posed particle set, with the one-line errors a user can fix."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    ps.require_poses("cryoscape fit pca")
    if len(ps) <= latent_dim:
        raise InputError(f"{particles_path} has {len(ps)} particles for {latent_dim} components; "
                         "use fewer --components than particles")
    return ps


def target_geometry(ps: Any, downsample: int | None) -> tuple[int, float]:
    """Box (px) and pixel size (Å) the fit runs at."""
    box, apix = int(ps.box), float(ps.apix)
    if downsample is None or downsample == box:
        return box, apix
    if downsample > box:
        raise InputError(f"--downsample {downsample} is larger than the particle box {box}; choose an even box below {box}")
    return int(downsample), apix * box / downsample


def resume_state(run: Any, iterations: int) -> dict[str, Any]:
    """The newest checkpoint of ``run``; one-line error when there is none or it already has ``iterations``."""
    saved = run.load_checkpoint()
    done = int(saved.get("iteration", saved["epoch"]))
    if done >= iterations:
        raise InputError(f"{run.path} already has {done} EM iterations; ask for more with --iterations "
                         f"(e.g. {done + 10}) to continue, or --force to start over")
    run.log(f"resuming after iteration {done}")
    return saved


def refuse_existing(root: Path, force: bool) -> None:
    """A non-empty output folder is refused unless ``force`` (before any work)."""
    from cryoscape.errors import OutputExistsError

    if not force and root.is_dir() and any(root.iterdir()):
        raise OutputExistsError(f"{root} is not empty; pass --force to overwrite it or choose another output folder")


def flat_config(ps: Any, particles_path: str | os.PathLike, datadir: str | os.PathLike | None,
                 s: PCASettings, box: int, apix: float, run_root: Path) -> dict[str, Any]:
    """The flat config for :meth:`RunDirectory.create` (data keys plus every hyper-parameter)."""
    source = str(Path(particles_path).expanduser().resolve())
    params = asdict(s)
    params["mask"] = s.mask if s.mask in MASK_CHOICES else str(Path(s.mask).expanduser().resolve())
    if s.downsample is None or box == int(ps.box):
        return {"particles": source, "datadir": datadir, "n_particles": len(ps), "box": box, "apix": apix, **params}
    return {"particles": run_root / f"particles_box{box}.star", "datadir": None, "n_particles": len(ps),
            "box": box, "apix": apix, "source_particles": source,
            "source_datadir": None if datadir is None else str(Path(datadir).expanduser().resolve()),
            "source_box": int(ps.box), "source_apix": float(ps.apix), **params}


def prepare_images(run: Any, ps: Any, box: int, s: PCASettings, progress: bool) -> Any:
    """The particle set at the fit box: ``ps`` itself, or a Fourier-cropped copy written into the run."""
    if box == int(ps.box):
        return ps
    from cryoscape.particles.preprocess import downsample_particles

    with run.log(f"Fourier-cropping {len(ps)} images from {ps.box} to {box} px"):
        return downsample_particles(ps, box, run.path, force=True, batch_size=max(s.batch_size, 256),
                                    progress=progress, stack_name=f"particles_box{box}.mrcs",
                                    star_name=f"particles_box{box}.star")


def _mask_at(mask: str | None, box: int, apix: float) -> Any:
    """The mask for the fit box: the path as is, or a Fourier-cropped copy of a larger mask (clipped to [0, 1])."""
    if mask is None:
        return None
    from cryoscape.io.mrc import read_mrc
    from cryoscape.particles.preprocess import fourier_crop_volume

    data, mask_apix = read_mrc(mask)
    if data.ndim != 3 or data.shape[0] <= box:
        return mask  # load_mask checks box and voxel size
    scaled = mask_apix * data.shape[0] / box
    if mask_apix > 0 and abs(scaled - apix) > 0.01 * apix:
        raise InputError(f"{mask} has voxel size {mask_apix:g} Å, which does not match the particles; resample the mask")
    return np.clip(fourier_crop_volume(data, box), 0.0, 1.0).astype(np.float32)


def fit_mask(run: Any, ps: Any, mask: str, box: int, apix: float, resume: bool, progress: bool
              ) -> tuple[Any, np.ndarray | None]:
    """The mask of the fit: the user's (cropped to the box), the sphere (None), or the solvent mask of the consensus.

    With ``"auto"`` the consensus map and ``mask.mrc`` are written into the run; a
    resumed run reads its ``mask.mrc`` back so that it continues with the same mask.
    Returns ``(mask, consensus volume or None)``.
    """
    from cryoscape.io.mrc import read_mrc, write_mrc

    if mask == "sphere":
        return None, None
    if mask != "auto":
        return _mask_at(mask, box, apix), None
    path = run.path / MASK_MAP
    if resume and path.is_file():
        return read_mrc(path)[0], None
    from cryoscape.geometry.masks import solvent_mask
    from cryoscape.reconstruct import reconstruct

    with run.log("consensus map (half sets, Wiener filter from their FSC) and its solvent mask"):
        rec = reconstruct(ps, progress=progress)
        rec.save(run.path / CONSENSUS_MAP, force=True)
        soft = solvent_mask(rec.volume, apix).numpy()
        write_mrc(path, soft, apix, force=True)
    run.log(f"consensus resolution {rec.resolution_A:.3g} Å at FSC 0.143; mask covers {float(soft.mean()):.1%} of the box")
    return soft, np.asarray(rec.volume, dtype=np.float32)


def initial_components(ps: Any, s: PCASettings, mask: Any, consensus: np.ndarray | None, progress: bool,
                        run: Any) -> tuple[np.ndarray | None, dict[str, Any]]:
    """EM's starting components ``sqrt(λ_k) u_k`` from the low-resolution covariance (or None for a random start)."""
    if s.init == "random":
        return None, {}
    from cryoscape.inference.covariance import estimate_covariance

    apix = float(ps.apix)
    res = max(s.init_resolution_A, 2.5 * apix)  # stay inside Nyquist on small boxes
    if consensus is None:
        from cryoscape.reconstruct.backprojection import backproject

        sums = backproject(ps, half_sets=False, use_ctf=s.use_ctf, batch_size=max(s.batch_size, 256),
                           oversampling=s.oversampling, device=s.device, progress=False)
        consensus = np.asarray(sums.volume(0, regulariser=s.ridge), dtype=np.float32)
    with run.log(f"covariance at {res:.3g} Å: the starting principal volumes"):
        cov = estimate_covariance(ps, consensus, latent_dim=s.latent_dim, resolution_A=res, mask=mask,
                                  use_ctf=s.use_ctf, batch_size=max(s.batch_size, 256), progress=progress,
                                  device=s.device)
    evals = np.clip(np.asarray(cov.eigenvalues, dtype=np.float64), 0.0, None)
    comps = np.zeros((s.latent_dim,) + tuple(cov.components.shape[1:]), dtype=np.float32)
    k = min(s.latent_dim, cov.components.shape[0])
    comps[:k] = cov.components[:k] * np.sqrt(evals[:k])[:, None, None, None]
    info = {"covariance_eigenvalues": evals, "covariance_resolution_A": res,
            "covariance_noise_var": float(cov.noise_var)}
    return comps, info

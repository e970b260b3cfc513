"""The ``pca`` recipe: probabilistic PCA of posed particles (survey §5).

Representation: the linear hyper-molecule ``V(b) = X0 + Σ_k b_k X_k``
(:class:`cryoscape.models.linear.LinearHyperMolecule`). Inference: EM
(:func:`cryoscape.inference.ppca_em.fit_ppca`). This module adds the defaults,
the input checks and the run directory.

Run directory (see :mod:`cryoscape.io.run_dir`)::

    run/
      config.yaml        method "pca", the particle file, every hyper-parameter
      latents.npy        [N, K] float32 posterior means, particle order
      latents_cov.npy    [N, K, K] float32 posterior covariances
      contrast.npy       [N] float32 per-particle contrast (mean 1)
      weights.pt         LinearHyperMolecule.state_dict() (load with weights_only=True)
      metrics.json       eigenvalues, sigma2, objective per iteration, timings
      mean.mrc           X0, with the voxel size of the fit
      component_01.mrc   X_1 .. X_K (orthonormal inside the mask), same voxel size
      consensus.mrc      with mask "auto": the consensus map, Wiener-filtered from the half-set FSC
                         (consensus_half1/2.mrc, consensus_fsc.*), from which mask.mrc is derived
      mask.mrc           the soft mask confining the components
      spectral_coordinates.npy  [N, J] diffusion-map coordinates of the latents in the prior's frame
                                (:func:`prior_whitened`; Moscovich et al. 2020)
      spectral_mean.mrc, spectral_volume_01.mrc ...  the spectral volumes regressed on them
      curve_coordinate.npy      [N] position of each particle along the latent curve, in [0, 1]
                                (:mod:`cryoscape.analysis.latent_curve`, started from the first
                                spectral coordinate), curve_coordinate_sd.npy its posterior spread,
                                curve_points.npy [M, K] the curve's latent points (for ``volume --z``)
      log.txt
      particles_box<D>.star/.mrcs   only with ``downsample``: the images fitted

Downsampling: with ``downsample=D`` the images are Fourier-cropped once into
the run folder (:func:`cryoscape.particles.preprocess.downsample_particles`),
and that STAR file becomes the run's particle file. The model, the latents and
any later local reconstruction (``cryoscape volume --near-particle``) then
share one box and pixel size; the original file is kept in
``params.source_particles``. A mask given at the original box is
Fourier-cropped to ``D`` and clipped to ``[0, 1]``.

Mask: ``"auto"`` (default) reconstructs the consensus map from half sets with
the Wiener filter of their FSC and derives a soft solvent mask from it
(:func:`cryoscape.geometry.masks.solvent_mask`: 15 Å low-pass, 10 % of the
maximum, grown 3 Å, 6 Å soft edge); ``"sphere"`` uses the default soft sphere;
anything else is an MRC path.

Resuming: the EM state (volumes, noise variance, contrasts, posteriors,
objective) is saved after every iteration as ``checkpoints/epoch_XXXX.pt``
(the last two kept; loaded with ``weights_only=True``). ``resume=True``
continues from the newest one with the saved settings (only ``iterations``,
``device`` and the batch size may change) and gives the same result as an
uninterrupted fit; a killed fit loses at most one iteration.

Volumes at latent points for ``analyze``, ``traverse``, ``compare`` and
``volume`` come from :func:`pca_volume`, registered as the volume hook of the
method ``pca`` when :mod:`cryoscape.methods` is imported.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.run_dir import CURVE_COORDINATE, CURVE_COORDINATE_SD, CURVE_POINTS

__all__ = [
    "METHOD",
    "MEAN_MAP",
    "PCASettings",
    "PCARun",
    "component_map_name",
    "run_pca",
    "load_model",
    "pca_volume",
    "prior_whitened",
]

METHOD = "pca"
MASK_CHOICES = ("auto", "sphere")
INIT_CHOICES = ("covariance", "random")
SPECTRAL_COORDINATES = "spectral_coordinates.npy"
SPECTRAL_MEAN = "spectral_mean.mrc"
MASK_MAP = "mask.mrc"
CONSENSUS_MAP = "consensus.mrc"
MEAN_MAP = "mean.mrc"
CONTRAST = "contrast.npy"


def spectral_map_name(j: int) -> str:
    """File name of spectral volume ``j`` (1-based): ``spectral_volume_01.mrc``."""
    return f"spectral_volume_{int(j):02d}.mrc"


def component_map_name(k: int) -> str:
    """File name of principal volume ``k`` (1-based): ``component_01.mrc``."""
    return f"component_{int(k):02d}.mrc"


#: Default resolution (Å) up to which the latents are inferred. On ``adk-1d`` (20 000 × 64², 1.5 Å/px)
#: inferring them from every frequency gave per-image AUC 0.547 / 0.428 and latent-curve |Spearman|
#: 0.951 / 0.791 at SNR 0.05 / 0.01; from frequencies to 8 Å, 0.570 / 0.465 and 0.951 / 0.803. The
#: principal volumes there carry reproducible high-resolution variation that is not low-rank, and read
#: at high resolution it pulls each particle's coordinates away from the motion. 8 Å was the one value
#: tried inside the fit (a post-hoc E-step with a fitted model at SNR 0.01: 5 / 8 / 12 Å gave
#: 0.798 / 0.802 / 0.793, every frequency 0.789), so it is a choice made on that benchmark.
LATENT_RESOLUTION_A = 8.0


@dataclass
class PCASettings:
    """Hyper-parameters of a ``pca`` fit (all stored in ``config.yaml``).

    components: ``K``; iterations: EM passes over the images; mask: ``"auto"``
    (solvent mask from the consensus map), ``"sphere"`` or a soft-mask MRC path;
    resolution_limit_A: ignore frequencies finer than this (Å) or None;
    downsample: Fourier-crop the images to this even box first, or None;
    init: ``"covariance"`` (start EM from the top principal volumes of the
    low-resolution covariance estimate, :func:`cryoscape.inference.covariance.estimate_covariance`,
    at ``init_resolution_A`` Å) or ``"random"`` (seeded smooth random volumes);
    seed: seeds the random start; spectral_components: diffusion-map coordinates
    of the latents and spectral volumes (0: none), spectral_neighbors: their graph
    degree, spectral_bandwidth_scale: their kernel width relative to the median
    squared distance to the ``spectral_neighbors``-th neighbour (a narrow kernel cuts
    the noisy latent cloud into islands whose indicator functions become the first
    coordinates); curve_basis: spline coefficients of the latent curve fitted to the
    posteriors from the first spectral coordinate (0: none); ridge, estimate_contrast,
    contrast_warmup, use_ctf, oversampling: see :func:`~cryoscape.inference.ppca_em.fit_ppca`;
    batch_size: images per batch; device: ``"cpu"`` or ``"cuda"``; fsc_filter: filter the
    mean and each component by its half-set FSC in every M-step (else the ridge alone);
    cross_halves: with the filter, each half set's posteriors from the other half's model;
    latent_resolution_A: infer the latents from frequencies up to this resolution (Å)
    only, the volumes from all (None: all for both; default :data:`LATENT_RESOLUTION_A`).
    """

    components: int
    iterations: int = 12
    mask: str = "auto"
    resolution_limit_A: float | None = None
    downsample: int | None = None
    seed: int = 0
    init: str = "covariance"
    init_resolution_A: float = 15.0
    spectral_components: int = 2
    spectral_neighbors: int = 30
    spectral_bandwidth_scale: float = 4.0
    curve_basis: int = 5
    ridge: float = 1e-2
    estimate_contrast: bool = True
    contrast_warmup: int = 3
    use_ctf: bool = True
    oversampling: int = 2
    batch_size: int = 256
    device: str = "cpu"
    fsc_filter: bool = True
    cross_halves: bool = True
    latent_resolution_A: float | None = LATENT_RESOLUTION_A

    def check(self) -> None:
        """One-line :class:`InputError` for impossible values (before any work)."""
        if self.components < 1:
            raise InputError(f"--components is {self.components}; give at least 1")
        if self.iterations < 1:
            raise InputError(f"--iterations is {self.iterations}; run at least 1")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.resolution_limit_A is not None and not self.resolution_limit_A > 0:
            raise InputError(f"--resolution-limit must be a positive length in Å; got {self.resolution_limit_A}")
        if self.latent_resolution_A is not None and not self.latent_resolution_A > 0:
            raise InputError(f"--latent-resolution must be a positive length in Å (0: every frequency); "
                             f"got {self.latent_resolution_A}")
        if self.downsample is not None and (self.downsample < 8 or self.downsample % 2):
            raise InputError(f"--downsample {self.downsample} must be an even box of at least 8 px")
        if self.init not in INIT_CHOICES:
            raise InputError(f"--init {self.init!r} is not one of {', '.join(INIT_CHOICES)}")
        if not self.init_resolution_A > 0:
            raise InputError(f"--init-resolution must be a positive length in Å; got {self.init_resolution_A}")
        if self.spectral_components < 0 or self.spectral_neighbors < 2:
            raise InputError("--spectral-components must be 0 or more and --spectral-neighbors at least 2")
        if not self.spectral_bandwidth_scale > 0:
            raise InputError(f"the spectral bandwidth scale must be positive; got {self.spectral_bandwidth_scale}")
        if self.curve_basis != 0 and self.curve_basis < 4:
            raise InputError(f"--curve-basis is {self.curve_basis}; give 0 (no curve) or at least 4")
        if self.mask not in MASK_CHOICES and not Path(self.mask).expanduser().is_file():
            raise InputError(f"--mask {self.mask}: no such file; give a mask MRC, 'auto' or 'sphere'")


@dataclass
class PCARun:
    """What :func:`run_pca` produced: the run folder, the fit and the files written."""

    run: Any  # RunDirectory
    result: Any  # PPCAResult
    files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0


# ---------------------------------------------------------------- inputs
def _load_particles(particles_path: str | os.PathLike, datadir: str | os.PathLike | None, n_components: int) -> Any:
    """The posed particle set, with the one-line errors a user can fix."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    ps.require_poses("cryoscape fit pca")
    if len(ps) <= n_components:
        raise InputError(f"{particles_path} has {len(ps)} particles for {n_components} components; "
                         "use fewer --components than particles")
    return ps


def _target_geometry(ps: Any, downsample: int | None) -> tuple[int, float]:
    """Box (px) and pixel size (Å) the fit runs at."""
    box, apix = int(ps.box), float(ps.apix)
    if downsample is None or downsample == box:
        return box, apix
    if downsample > box:
        raise InputError(f"--downsample {downsample} is larger than the particle box {box}; choose an even box below {box}")
    return int(downsample), apix * box / downsample


def _resume_state(run: Any, iterations: int) -> dict[str, Any]:
    """The newest checkpoint of ``run``; one-line error when there is none or it already has ``iterations``."""
    saved = run.load_checkpoint()
    done = int(saved.get("iteration", saved["epoch"]))
    if done >= iterations:
        raise InputError(f"{run.path} already has {done} EM iterations; ask for more with --iterations "
                         f"(e.g. {done + 10}) to continue, or --force to start over")
    run.log(f"resuming after iteration {done}")
    return saved


def _refuse_existing(root: Path, force: bool) -> None:
    """A non-empty output folder is refused unless ``force`` (before any work)."""
    from cryoscape.errors import OutputExistsError

    if not force and root.is_dir() and any(root.iterdir()):
        raise OutputExistsError(f"{root} is not empty; pass --force to overwrite it or choose another output folder")


def _flat_config(ps: Any, particles_path: str | os.PathLike, datadir: str | os.PathLike | None,
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


def _fit_mask(run: Any, ps: Any, mask: str, box: int, apix: float, resume: bool, progress: bool
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


def _initial_components(ps: Any, s: PCASettings, mask: Any, consensus: np.ndarray | None, progress: bool,
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
        cov = estimate_covariance(ps, consensus, n_components=s.components, resolution_A=res, mask=mask,
                                  use_ctf=s.use_ctf, batch_size=max(s.batch_size, 256), progress=progress,
                                  device=s.device)
    evals = np.clip(np.asarray(cov.eigenvalues, dtype=np.float64), 0.0, None)
    comps = np.zeros((s.components,) + tuple(cov.components.shape[1:]), dtype=np.float32)
    k = min(s.components, cov.components.shape[0])
    comps[:k] = cov.components[:k] * np.sqrt(evals[:k])[:, None, None, None]
    info = {"covariance_eigenvalues": evals, "covariance_resolution_A": res,
            "covariance_noise_var": float(cov.noise_var)}
    return comps, info


def _spectral(run: Any, ps: Any, result: Any, s: PCASettings, mask: Any) -> tuple[list[Path], dict[str, Any]]:
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
    files = [_save_npy(run.path / SPECTRAL_COORDINATES, dm.coordinates.astype(np.float32)),
             write_mrc(run.path / SPECTRAL_MEAN, sv.mean, apix, force=True)]
    files += [write_mrc(run.path / spectral_map_name(j), v, apix, force=True)
              for j, v in enumerate(sv.volumes, start=1)]
    info = {"diffusion_eigenvalues": np.asarray(dm.eigenvalues, dtype=np.float64),
            "diffusion_epsilon": float(dm.epsilon),
            "diffusion_landmarks": None if dm.landmarks is None else int(dm.landmarks.size)}
    curve_files, curve_info = _curve(run, result, s, dm.coordinates[:, 0])
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


def _curve(run: Any, result: Any, s: PCASettings, start: np.ndarray) -> tuple[list[Path], dict[str, Any]]:
    """The latent curve through the posteriors (:mod:`cryoscape.analysis.latent_curve`) and each particle's place on it."""
    if s.curve_basis < 1:
        return [], {}
    from cryoscape.analysis.latent_curve import fit_latent_curve

    with run.log(f"latent curve ({s.curve_basis} spline coefficients) from the first spectral coordinate"):
        curve = fit_latent_curve(result.latents, result.latent_covariances, result.latent_prior_covariance,
                                 init=start, n_basis=s.curve_basis)
    files = [_save_npy(run.path / CURVE_COORDINATE, curve.coordinate.astype(np.float32)),
             _save_npy(run.path / CURVE_COORDINATE_SD, curve.coordinate_sd.astype(np.float32)),
             _save_npy(run.path / CURVE_POINTS, curve.points.astype(np.float32))]
    return files, {"curve_log_likelihood": [float(v) for v in curve.log_likelihood],
                   "curve_iterations": len(curve.log_likelihood)}


# ---------------------------------------------------------------- outputs
def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically without pickles (overwrites)."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def _clear_outputs(root: Path) -> None:
    """Remove the maps and cropped images of an earlier fit in ``root`` (``--force`` may change K or the box)."""
    stale = [root / MEAN_MAP, root / CONTRAST, root / MASK_MAP, *root.glob("consensus*"),
             root / SPECTRAL_COORDINATES, root / SPECTRAL_MEAN, root / CURVE_COORDINATE,
             root / CURVE_COORDINATE_SD, root / CURVE_POINTS, *root.glob("spectral_volume_*.mrc"),
             *root.glob("component_*.mrc"), *root.glob("particles_box*.star"), *root.glob("particles_box*.mrcs")]
    for p in stale:
        p.unlink(missing_ok=True)


def _write_maps(root: Path, model: Any, apix: float) -> list[Path]:
    """``mean.mrc`` and ``component_XX.mrc`` with the fit's voxel size."""
    from cryoscape.io.mrc import write_mrc

    paths = [write_mrc(root / MEAN_MAP, model.mean.cpu().numpy(), apix, force=True)]
    for k, comp in enumerate(model.components.cpu().numpy(), start=1):
        paths.append(write_mrc(root / component_map_name(k), comp, apix, force=True))
    return paths


def _metrics(result: Any, elapsed_s: float) -> dict[str, Any]:
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


def _write_outputs(run: Any, result: Any, elapsed_s: float) -> list[Path]:
    """Latents, contrast, weights, metrics and maps into the run folder."""
    from cryoscape.io.run_dir import LATENTS, LATENTS_COV, METRICS

    run.write_latents(result.latents, cov=result.latent_covariances)
    files = [run.path / LATENTS, run.path / LATENTS_COV,
             _save_npy(run.path / CONTRAST, np.asarray(result.contrast, dtype=np.float32)),
             run.save_weights(result.model.state_dict())]
    run.write_metrics(_metrics(result, elapsed_s), merge=False)
    files.append(run.path / METRICS)
    return files + _write_maps(run.path, result.model, float(result.apix))


# ---------------------------------------------------------------- the recipe
def run_pca(
    particles_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    components: int,
    iterations: int = 12,
    *,
    mask: str | None = "auto",
    resolution_limit_A: float | None = None,
    downsample: int | None = None,
    datadir: str | os.PathLike | None = None,
    seed: int = 0,
    init: str = "covariance",
    spectral_components: int = 2,
    curve_basis: int = 5,
    batch_size: int = 256,
    device: str = "cpu",
    fsc_filter: bool = True,
    cross_halves: bool = True,
    latent_resolution_A: float | None = LATENT_RESOLUTION_A,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> PCARun:
    """Fit probabilistic PCA to a posed particle file and write the run folder ``out_dir``.

    Args:
        particles_path: STAR / .cs file with poses (and CTF, used when present).
        out_dir: run folder; refused when not empty unless ``force``.
        components: number of principal volumes ``K`` (fewer than the particles).
        iterations: EM iterations. mask: ``"auto"`` (default; None means the same),
            ``"sphere"`` or a soft-mask MRC path (see the module docstring).
        resolution_limit_A: ignore frequencies finer than this (Å).
        downsample: Fourier-crop the images to this even box first (see the module docstring).
        datadir: folder of the particle stacks if the file's paths do not resolve.
        seed: seeds the random start. init: ``"covariance"`` or ``"random"`` start of EM.
        spectral_components: diffusion-map coordinates of the latents (and spectral
            volumes) to write, 0 for none. curve_basis: spline coefficients of the
            latent curve (0: none; needs spectral coordinates). batch_size, device: how to compute.
        fsc_filter: filter the mean and each component by its half-set FSC in
            every M-step (default; False: the ridge alone). cross_halves: with the
            filter, take each half set's posteriors from the other half's model (default).
        latent_resolution_A: infer the latents from frequencies up to this resolution (Å)
            only; the volumes use every frequency (None: the latents too). Default
            :data:`LATENT_RESOLUTION_A`.
        force: overwrite an earlier run in ``out_dir``. resume: continue the run in
            ``out_dir`` from its newest checkpoint (see the module docstring).
        progress: progress bars.
    Returns:
        :class:`PCARun` with the run folder, the :class:`~cryoscape.inference.ppca_em.PPCAResult`
        and the files written.
    """
    from cryoscape.inference.ppca_em import fit_ppca
    from cryoscape.io.run_dir import RunDirectory

    s = PCASettings(components, iterations, "auto" if mask is None else str(mask), resolution_limit_A, downsample,
                    seed, init=init, spectral_components=spectral_components, curve_basis=curve_basis,
                    batch_size=batch_size, device=device, fsc_filter=fsc_filter, cross_halves=cross_halves,
                    latent_resolution_A=latent_resolution_A)
    s.check()
    root = Path(out_dir).expanduser()
    if force and resume:
        raise InputError(f"{root}: pass either --force (start over) or --resume (continue), not both")
    if not resume:
        _refuse_existing(root, force)
    elif not root.is_dir():
        raise InputError(f"{root} does not exist, so there is nothing to resume; drop --resume to start a new fit")
    ps = _load_particles(particles_path, datadir, components)
    box, apix = _target_geometry(ps, downsample)
    config = _flat_config(ps, particles_path, datadir, s, box, apix, root.resolve())
    run = RunDirectory.create(root, METHOD, config, force=force, resume=resume)
    start_state = _resume_state(run, iterations) if resume else None
    if not resume:
        _clear_outputs(run.path)
    ps = _prepare_images(run, ps, box, s, progress) if not resume else run.particles()
    run.log(f"particles: {len(ps)} from {particles_path}, box {box} px, {apix:.4g} Å/px")
    start = time.perf_counter()
    fit_mask, consensus = _fit_mask(run, ps, s.mask, box, apix, resume, progress)
    init, extra = (None, {}) if resume else _initial_components(ps, s, fit_mask, consensus, progress, run)
    checkpoint = lambda done, state: run.save_checkpoint(done, state)
    with run.log(f"PPCA EM: K = {components}, {iterations} iterations"):
        result = fit_ppca(ps, components, iterations, mask=fit_mask,
                          resolution_limit_A=resolution_limit_A, seed=seed, progress=progress, ridge=s.ridge,
                          estimate_contrast=s.estimate_contrast, contrast_warmup=s.contrast_warmup,
                          use_ctf=s.use_ctf, batch_size=batch_size, oversampling=s.oversampling, device=device,
                          initial_components=init, start_state=start_state, fsc_filter=s.fsc_filter,
                          cross_halves=s.cross_halves, latent_resolution_A=s.latent_resolution_A,
                          on_iteration=checkpoint)
    elapsed = time.perf_counter() - start
    if resume:
        extra = {k: v for k, v in run.read_metrics().items() if k.startswith("covariance_")}
    files = _write_outputs(run, result, elapsed)
    spectral_files, spectral_info = _spectral(run, ps, result, s, fit_mask)
    run.write_metrics({**extra, **spectral_info}, merge=True)
    files += spectral_files
    run.log(f"eigenvalues {np.round(result.eigenvalues, 4).tolist()}, sigma2 {result.sigma2:.4g}, "
            f"objective {result.objective[-1]:.6g}")
    res_A = run.read_metrics().get("half_set_resolution_A")
    if res_A:
        run.log("half-set FSC 0.143 resolution (Å): mean " + f"{res_A[0]:.3g}, components (EM frame) "
                + ", ".join(f"{r:.3g}" for r in res_A[1:]))
    return PCARun(run, result, files, elapsed)


def _prepare_images(run: Any, ps: Any, box: int, s: PCASettings, progress: bool) -> Any:
    """The particle set at the fit box: ``ps`` itself, or a Fourier-cropped copy written into the run."""
    if box == int(ps.box):
        return ps
    from cryoscape.particles.preprocess import downsample_particles

    with run.log(f"Fourier-cropping {len(ps)} images from {ps.box} to {box} px"):
        return downsample_particles(ps, box, run.path, force=True, batch_size=max(s.batch_size, 256),
                                    progress=progress, stack_name=f"particles_box{box}.mrcs",
                                    star_name=f"particles_box{box}.star")


# ---------------------------------------------------------------- the model hook
_MODELS: dict[tuple[str, int], Any] = {}


def load_model(run: Any) -> Any:
    """The fitted :class:`~cryoscape.models.linear.LinearHyperMolecule` of a ``pca`` run.

    ``weights.pt`` is read with ``weights_only=True``; the last model read is
    kept until the file changes, so many volumes from one run read it once.
    """
    import torch

    from cryoscape.io.run_dir import WEIGHTS
    from cryoscape.models.linear import LinearHyperMolecule

    path = run.path / WEIGHTS
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else -1)
    if key not in _MODELS:
        state = run.load_weights()  # one-line error when the fit has not finished
        _MODELS.clear()
        _MODELS[key] = LinearHyperMolecule.from_state_dict(state).to(dtype=torch.float32)
    return _MODELS[key]


def pca_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """``X0 + Σ_k z_k X_k`` ``[D, D, D]`` float32 at the run's box and voxel size, for latent ``z (K,)``."""
    model = load_model(run)
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.size != model.K:
        raise InputError(f"the latent point has {z.size} coordinates but the pca run {run.path} has "
                         f"{model.K} components; give one per component")
    return model.volume(z).cpu().numpy().astype(np.float32)


def _register() -> None:
    """Make ``pca`` runs produce volumes from their model in analyze/traverse/compare/volume."""
    from cryoscape.analysis.pipeline import register_volume_hook

    register_volume_hook(METHOD, pca_volume)


_register()

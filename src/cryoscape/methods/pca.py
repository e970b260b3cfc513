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

Layout: the settings and file names are in :mod:`.pca_settings`, the inputs
(particles, mask, starting components) in :mod:`.pca_inputs`, the run folder's
outputs in :mod:`.pca_outputs`, the spectral coordinates and the latent curve in
:mod:`.pca_spectral`, the model hook in :mod:`.pca_model`; this module runs the
fit and re-exports their public names.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods.pca_inputs import (fit_mask, flat_config, initial_components, load_particles,
                                          prepare_images, refuse_existing, resume_state, target_geometry)
from cryoscape.methods.pca_model import load_model, pca_volume
from cryoscape.methods.pca_outputs import clear_outputs, write_outputs
from cryoscape.methods.pca_settings import (CONTRAST, LATENT_RESOLUTION_A, MEAN_MAP, METHOD, PCARun, PCASettings,
                                            component_map_name, spectral_map_name)
from cryoscape.methods.pca_spectral import prior_whitened, spectral
from cryoscape.models.linear import LinearHyperMolecule

__all__ = [
    "METHOD",
    "MEAN_MAP",
    "CONTRAST",
    "LATENT_RESOLUTION_A",
    "PCASettings",
    "PCARun",
    "component_map_name",
    "spectral_map_name",
    "run_pca",
    "load_model",
    "pca_volume",
    "prior_whitened",
]


def run_pca(
    particles_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    latent_dim: int,
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
        latent_dim: number of principal volumes ``K`` (``--components``; fewer than the particles).
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
    s = PCASettings(latent_dim, iterations, "auto" if mask is None else str(mask), resolution_limit_A, downsample,
                    seed, init=init, spectral_components=spectral_components, curve_basis=curve_basis,
                    batch_size=batch_size, device=device, fsc_filter=fsc_filter, cross_halves=cross_halves,
                    latent_resolution_A=latent_resolution_A)
    s.check()
    run, ps, (box, apix), start_state = _open_run(particles_path, out_dir, datadir, s, force, resume, progress)
    start = time.perf_counter()
    mask_volume, consensus = fit_mask(run, ps, s.mask, box, apix, resume, progress)
    init, extra = (None, {}) if resume else initial_components(ps, s, mask_volume, consensus, progress, run)
    template = LinearHyperMolecule.empty(box, s.latent_dim, apix=apix, oversampling=s.oversampling)
    result = _fit(run, ps, template, s, mask_volume, init, start_state, progress)
    elapsed = time.perf_counter() - start
    if resume:
        extra = {k: v for k, v in run.read_metrics().items() if k.startswith("covariance_")}
    files = write_outputs(run, result, elapsed)
    spectral_files, spectral_info = spectral(run, ps, result, s, mask_volume)
    run.write_metrics({**extra, **spectral_info}, merge=True)
    _log_summary(run, result)
    return PCARun(run, result, files + spectral_files, elapsed)


def _open_run(particles_path: str | os.PathLike, out_dir: str | os.PathLike, datadir: str | os.PathLike | None,
              s: PCASettings, force: bool, resume: bool, progress: bool
              ) -> tuple[Any, Any, tuple[int, float], dict[str, Any] | None]:
    """The run folder (created, or reopened to resume), the particles at the fit box, that box and pixel size,
    and the checkpoint to resume (None for a new fit)."""
    from cryoscape.io.run_dir import RunDirectory

    root = Path(out_dir).expanduser()
    if force and resume:
        raise InputError(f"{root}: pass either --force (start over) or --resume (continue), not both")
    if not resume:
        refuse_existing(root, force)
    elif not root.is_dir():
        raise InputError(f"{root} does not exist, so there is nothing to resume; drop --resume to start a new fit")
    ps = load_particles(particles_path, datadir, s.latent_dim)
    box, apix = target_geometry(ps, s.downsample)
    config = flat_config(ps, particles_path, datadir, s, box, apix, root.resolve())
    run = RunDirectory.create(root, METHOD, config, force=force, resume=resume)
    start_state = resume_state(run, s.iterations) if resume else None
    if not resume:
        clear_outputs(run.path)
    if resume:
        from cryoscape.analysis.run_particles import run_particles

        ps = run_particles(run)
    else:
        ps = prepare_images(run, ps, box, s, progress)
    run.log(f"particles: {len(ps)} from {particles_path}, box {box} px, {apix:.4g} Å/px")
    return run, ps, (box, apix), start_state


def _fit(run: Any, ps: Any, template: LinearHyperMolecule, s: PCASettings, mask: Any, init: np.ndarray | None,
         start_state: dict[str, Any] | None, progress: bool) -> Any:
    """EM of ``template``'s kind (zero volumes at the fit box) on ``ps``, checkpointed every iteration."""
    from cryoscape.inference.ppca_em import fit_ppca

    checkpoint = lambda done, state: run.save_checkpoint(done, state)
    with run.log(f"PPCA EM: {s.latent_dim} principal volumes, {s.iterations} iterations"):
        return fit_ppca(ps, template, s.iterations, mask=mask, resolution_limit_A=s.resolution_limit_A, seed=s.seed,
                        progress=progress, ridge=s.ridge, estimate_contrast=s.estimate_contrast,
                        contrast_warmup=s.contrast_warmup, use_ctf=s.use_ctf, batch_size=s.batch_size,
                        device=s.device, initial_components=init, start_state=start_state,
                        fsc_filter=s.fsc_filter, cross_halves=s.cross_halves,
                        latent_resolution_A=s.latent_resolution_A, on_iteration=checkpoint)


def _log_summary(run: Any, result: Any) -> None:
    """Eigenvalues, noise, objective and the half-set resolutions into the run's log."""
    run.log(f"eigenvalues {np.round(result.eigenvalues, 4).tolist()}, sigma2 {result.sigma2:.4g}, "
            f"objective {result.objective[-1]:.6g}")
    res_A = run.read_metrics().get("half_set_resolution_A")
    if res_A:
        run.log("half-set FSC 0.143 resolution (Å): mean " + f"{res_A[0]:.3g}, components (EM frame) "
                + ", ".join(f"{r:.3g}" for r in res_A[1:]))

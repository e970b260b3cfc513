"""Settings of the ``pca`` method: its name, the run folder's file names, :class:`PCASettings` (every
hyper-parameter, checked before any work) and :class:`PCARun` (what a fit produced)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryoscape.errors import InputError

__all__ = ["METHOD", "MASK_CHOICES", "INIT_CHOICES", "SPECTRAL_COORDINATES", "SPECTRAL_MEAN", "MASK_MAP",
           "CONSENSUS_MAP", "MEAN_MAP", "CONTRAST", "LATENT_RESOLUTION_A", "spectral_map_name",
           "component_map_name", "PCASettings", "PCARun"]

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

    latent_dim: the number of principal volumes ``K`` (``--components``); iterations: EM passes over the images; mask: ``"auto"``
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

    latent_dim: int
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
        if self.latent_dim < 1:
            raise InputError(f"the latent dimension (--components, --latent-dim) is {self.latent_dim}; give at least 1")
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

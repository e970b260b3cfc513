"""Simulated particle datasets with ground truth.

:func:`simulate_dataset` makes a RELION-style particle set from a density
model and records everything that went into each image:

``out_dir/particles.mrcs``
    float32 image stack ``[N, D, D]`` (voxel size in the header), written batch
    by batch so memory does not grow with N.
``out_dir/particles.star``
    RELION 3.1 STAR with an optics table: image names ``i@particles.mrcs``,
    Euler angles, ``_rlnOriginXAngst/YAngst``, defocus U/V/angle, phase
    shift, B-factor and ``_rlnRandomSubset`` (1/2, random halves).
``out_dir/truth.npz``
    per-particle ground truth and the model needed to rebuild every
    conformation's volume (see :func:`cryoscape.simulate.ground_truth_volume`).
``out_dir/simulation.json``
    the configuration, conventions and output file names.

Image formation (the package's forward model, survey Eq. 1) for particle i
with rotation ``R_i``, origin ``o_i`` (RELION sign) and CTF ``C_i``::

    FT(image_i) = C_i(k) · exp(+2πi k·o_i) · FT(projection of R_i · V)(k)
    image_i     = real(IFT(...)) + noise

that is, the centred projection translated by ``−o_i``; translating the
image by ``+o_i`` centres it again, as in RELION. ``C_i`` is RELION's CTF
(``CTF(0) = +Q``) and the projection is of a positive density, so the
protein is white on a dark background, as RELION stores extracted particles.
Projections of atomic models are exact real-space projections of Gaussian
atoms (:func:`cryoscape.imaging.project_atoms`); a volume input is projected
by Fourier slicing (:class:`cryoscape.imaging.FourierProjector`). The CTF and
the shift are applied in Fourier space on the D×D grid.

Random draws (all from ``seed``, one independent stream per quantity, so
e.g. giving poses does not change the defocus values):

* conformations: uniform over the frames, over a given subset, or with given
  weights; the continuous coordinate of frame f is ``f/(F−1)``;
* rotations: Haar-uniform on SO(3) unless given;
* origins: uniform in a disc of radius ``shift_max_px`` pixels;
* defocus: mean defocus uniform in ``[defocus_min_um, defocus_max_um]``;
  astigmatism ``dfU − dfV`` uniform in ``[0, astigmatism_max_um]``
  (default 0.05 µm = 500 Å, so ``dfU ≥ dfV``), angle uniform in [0°, 180°);
* half sets: a random permutation split into two equal halves;
* noise: white Gaussian with ONE standard deviation for the whole dataset,
  ``σ² = s̄ / snr``, where ``s̄`` is the mean over the first
  ``min(N, 256)`` clean images of the variance of the clean, CTF-modulated
  image inside the particle circle (radius: the model's extent plus two atom
  widths, at most D/2). Each image's own SNR scatters around ``snr`` as its
  view and defocus change, as in real data.

The same seed and batch size give a byte-identical stack.

Layout: the density source in :mod:`.sources`, the random draws in
:mod:`.draws`, image rendering and the stack writer in :mod:`.render`, and
the STAR, truth, volume and config files in :mod:`.outputs`; this module
holds :func:`simulate_dataset` and :class:`SimulationResult`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io.atomic import write_text_atomic
from cryoscape.io.star import write_star
from cryoscape.simulate.draws import (
    _draw,
    _frame_probabilities,
    _resolve_n,
    _streams,
    parse_conformations,
    read_poses,
    read_weights,
)
from cryoscape.simulate.outputs import (
    CONFIG_NAME,
    STACK_NAME,
    STAR_NAME,
    TRUTH_NAME,
    VOLUMES_DIR,
    _config_dict,
    _describe,
    _output_paths,
    _save_npz,
    _star_tables,
    _truth_arrays,
    _write_volumes,
)
from cryoscape.simulate.render import ATOM_CHUNK, PILOT_SIZE, _Imager, _noise_level, _render_stack
from cryoscape.simulate.sources import _VolumeSource, _build_source, _particle_radius_px
from cryoscape.simulate.structures import DEFAULT_ATOM_SIGMA_A, DEFAULT_MIN_SIGMA_PX, AtomicStructure

__all__ = [
    "ATOM_CHUNK",
    "CONFIG_NAME",
    "PILOT_SIZE",
    "STACK_NAME",
    "STAR_NAME",
    "TRUTH_NAME",
    "VOLUMES_DIR",
    "SimulationResult",
    "parse_conformations",
    "read_poses",
    "read_weights",
    "simulate_dataset",
]


@dataclass
class SimulationResult:
    """Paths of a simulated dataset and its ground truth.

    Attributes:
        out_dir: the output folder.
        star_path, stack_path, truth_path, config_path: the files written.
        volume_paths: ground-truth volumes written with ``write_volumes=True``.
        truth: the contents of ``truth.npz`` (numpy arrays).
        elapsed_s: wall time of the simulation in seconds.
    """

    out_dir: Path
    star_path: Path
    stack_path: Path
    truth_path: Path
    config_path: Path
    truth: dict[str, np.ndarray]
    volume_paths: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def n_particles(self) -> int:
        """Number of simulated particles."""
        return int(len(self.truth["conformation"]))

    def ground_truth_volume(self, conformation: int = 0) -> tuple[np.ndarray, float]:
        """Volume ``[D, D, D]`` float32 of one conformation (frame index) and its apix (Å)."""
        from cryoscape.simulate.ground_truth import ground_truth_volume

        return ground_truth_volume(self.truth, conformation)

    def particles(self) -> Any:
        """The simulated particles as a :class:`cryoscape.particles.ParticleSet`."""
        from cryoscape.particles import ParticleSet

        return ParticleSet.from_file(self.star_path)

    def __repr__(self) -> str:
        return (f"SimulationResult({self.n_particles} particles in {self.out_dir}, "
                f"box {int(self.truth['box'])} px, {float(self.truth['apix']):g} Å/px, "
                f"snr {float(self.truth['snr']):g})")


def simulate_dataset(
    structure: str | Path | AtomicStructure | None = None,
    *,
    volume: str | Path | np.ndarray | None = None,
    n_particles: int | None = 1000,
    box: int | None = None,
    apix: float | None = None,
    snr: float = 0.1,
    defocus_min_um: float = 1.0,
    defocus_max_um: float = 2.5,
    astigmatism_max_um: float = 0.05,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    bfactor_A2: float = 0.0,
    poses: str | Path | np.ndarray | None = None,
    shift_max_px: float = 2.0,
    conformations: str | Sequence[int] | None = None,
    conformation_weights: str | Path | Sequence[float] | np.ndarray | None = None,
    align_residues: str | Sequence[tuple[int, int]] | None = None,
    centre: str = "mean",
    atom_sigma_A: float = DEFAULT_ATOM_SIGMA_A,
    min_sigma_px: float = DEFAULT_MIN_SIGMA_PX,
    seed: int = 0,
    out_dir: str | Path = "simulation",
    force: bool = False,
    batch_size: int = 256,
    write_volumes: bool = False,
    progress: bool = True,
) -> SimulationResult:
    """Simulate a particle dataset with ground truth (see the module docstring).

    Args:
        structure: "adk" (built-in AdK closed→open trajectory), a trajectory
            ``.npz``, a ``.pdb``/``.cif`` model, or an :class:`AtomicStructure`.
        volume: instead of ``structure``, an MRC path or a ``[D, D, D]`` array.
        n_particles: number of images (default: the number of poses if given).
        box: image size D in px, even (default 64; a volume's own size).
        apix: pixel size in Å/px (default 1.5; a volume's header value).
        snr: signal-to-noise ratio (variance ratio inside the particle circle);
            ``float("inf")`` for clean images.
        defocus_min_um, defocus_max_um: range of the mean defocus (µm, underfocus > 0).
        astigmatism_max_um: largest ``dfU − dfV`` (µm).
        voltage_kV, cs_mm, amplitude_contrast, bfactor_A2: microscope and CTF envelope.
        poses: rotations to use instead of random ones: (N, 3, 3) array, a .npy
            of matrices or (N, 3) RELION angles, or a STAR file with angles.
        shift_max_px: radius in px of the disc the origins are drawn from.
        conformations: subset of frames to draw from uniformly ("0,97", "0-10").
        conformation_weights: one weight per frame (array, .npy or text file).
        align_residues: residue ranges to superpose frames on ("1-29,60-121"),
            "all", or None for the structure's default (AdK: CORE C-alphas).
        centre: common centring of the frames: "mean" over frames or "first".
        atom_sigma_A, min_sigma_px: atom width ``max(atom_sigma_A, min_sigma_px·apix)``.
        seed: seed of every random draw.
        out_dir: output folder (created).
        force: overwrite existing outputs.
        batch_size: particles per batch.
        write_volumes: also write ``truth_volumes/conformation_XXX.mrc`` for
            every frame that can be drawn.
        progress: show a progress bar.

    Returns:
        A :class:`SimulationResult` with the output paths and the ground truth.
    """
    t0 = time.perf_counter()
    source, box, apix = _build_source(structure, volume, box, apix, align_residues, centre, atom_sigma_A,
                                      min_sigma_px)
    rotations = read_poses(poses) if poses is not None else None
    n = _resolve_n(n_particles, rotations)
    _check_options(snr, defocus_min_um, defocus_max_um, astigmatism_max_um, shift_max_px, batch_size,
                   amplitude_contrast, voltage_kV)
    probs = _frame_probabilities(source.n_frames, conformations, conformation_weights)
    out = Path(out_dir)
    paths = _output_paths(out, probs if write_volumes else None, force)

    rng = _streams(seed)
    draws = _draw(n, rng, probs, rotations, shift_max_px, apix, defocus_min_um, defocus_max_um, astigmatism_max_um)
    imager = _Imager(source, box, apix, voltage_kV, cs_mm, amplitude_contrast, bfactor_A2)
    radius_px = _particle_radius_px(source, box, apix)
    signal_var, noise_std = _noise_level(imager, draws, n, snr, radius_px)
    _render_stack(paths["stack"], imager, draws, batch_size, noise_std, rng["noise"], progress, force)

    truth = _truth_arrays(source, draws, probs, box, apix, snr, signal_var, noise_std, radius_px, seed,
                          voltage_kV, cs_mm, amplitude_contrast, bfactor_A2)
    _save_npz(paths["truth"], truth, force)
    optics, particles = _star_tables(draws, n, box, apix, voltage_kV, cs_mm, amplitude_contrast, bfactor_A2)
    write_star(paths["star"], optics, particles, force)
    volume_paths = _write_volumes(truth, out, probs, force) if write_volumes else []
    settings = dict(
        source="volume" if isinstance(source, _VolumeSource) else "atoms",
        structure=_describe(structure), volume=_describe(volume), n_particles=n, box=box, apix=apix, snr=snr,
        defocus_min_um=defocus_min_um, defocus_max_um=defocus_max_um, astigmatism_max_um=astigmatism_max_um,
        voltage_kV=voltage_kV, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast, bfactor_A2=bfactor_A2,
        poses=_describe(poses), shift_max_px=shift_max_px, conformations=_describe(conformations),
        conformation_weights=_describe(conformation_weights), align_residues=_describe(align_residues),
        centre=centre, atom_sigma_A=atom_sigma_A, min_sigma_px=min_sigma_px, seed=seed, batch_size=batch_size,
        noise_std=noise_std, signal_variance=signal_var, particle_radius_px=radius_px,
        alignment=getattr(source, "align_description", None),
    )
    write_text_atomic(paths["config"], json.dumps(_config_dict(settings), indent=2) + "\n", force)
    return SimulationResult(out, paths["star"], paths["stack"], paths["truth"], paths["config"], truth,
                            volume_paths, time.perf_counter() - t0)


def _check_options(snr: float, dmin: float, dmax: float, astig: float, shift_max_px: float, batch_size: int,
                   q: float, kv: float) -> None:
    if not (snr > 0) or math.isnan(snr):
        raise InputError(f"--snr {snr} must be positive (or 'inf' for clean images)")
    if not (0 <= dmin <= dmax):
        raise InputError(f"defocus range {dmin}..{dmax} µm must satisfy 0 <= min <= max")
    if astig < 0 or shift_max_px < 0:
        raise InputError("astigmatism and --shift-max must be non-negative")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if not (0 <= q < 1) or kv <= 0:
        raise InputError("amplitude contrast must be in [0, 1) and the voltage positive")

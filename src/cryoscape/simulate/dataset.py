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
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.geometry.rotations import euler_relion_to_matrix, matrix_to_euler_relion, random_rotations
from cryoscape.imaging import FourierProjector, add_noise, compute_ctf, phase_shift, project_atoms
from cryoscape.imaging.noise import circle_mask_2d, masked_variance
from cryoscape.io.atomic import atomic_path, check_output_path, write_text_atomic
from cryoscape.io.star import write_star
from cryoscape.simulate.structures import (
    DEFAULT_ATOM_SIGMA_A,
    DEFAULT_MIN_SIGMA_PX,
    AtomicStructure,
    load_structure,
)
from cryoscape.simulate.trajectory import prepare_trajectory

STACK_NAME = "particles.mrcs"
STAR_NAME = "particles.star"
TRUTH_NAME = "truth.npz"
CONFIG_NAME = "simulation.json"
VOLUMES_DIR = "truth_volumes"
PILOT_SIZE = 256
#: images per project_atoms chunk: small enough that its work arrays are reused, not re-mapped
ATOM_CHUNK = 32
_STREAMS = ("conformations", "rotations", "shifts", "ctf", "halves", "noise")


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


# ----------------------------------------------------------------------------- sources


@dataclass
class _AtomSource:
    frames_A: np.ndarray  # (F, A, 3) float32, centred
    amplitudes: np.ndarray  # (A,) float32
    sigma_A: np.ndarray  # (A,) float32
    elements: np.ndarray
    resid: np.ndarray
    atom_names: np.ndarray
    name: str
    align_description: str
    translation_A: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.frames_A.shape[0])

    def extent_A(self) -> float:
        return float(np.linalg.norm(self.frames_A, axis=-1).max() + 2.0 * self.sigma_A.max())


@dataclass
class _VolumeSource:
    volume: np.ndarray  # [D, D, D] float32
    name: str
    n_frames: int = 1

    def extent_A(self, apix: float) -> float:
        vol = self.volume
        D = vol.shape[0]
        thr = 0.05 * float(np.abs(vol).max())
        idx = np.argwhere(np.abs(vol) > thr)
        if len(idx) == 0:
            return D / 2 * apix
        return float(np.linalg.norm(idx - D // 2, axis=-1).max() + 2.0) * apix


def _atom_source(structure: str | Path | AtomicStructure, apix: float, align_residues: Any,
                 centre: str, atom_sigma_A: float, min_sigma_px: float) -> _AtomSource:
    st = structure if isinstance(structure, AtomicStructure) else load_structure(structure)
    prepared = prepare_trajectory(st, align_residues=align_residues, centre=centre)  # type: ignore[arg-type]
    return _AtomSource(
        frames_A=prepared.frames_A,
        amplitudes=st.amplitudes(),
        sigma_A=st.sigmas_A(apix, atom_sigma_A, min_sigma_px),
        elements=np.asarray(st.elements).astype(str),
        resid=np.asarray(st.resid, dtype=np.int64),
        atom_names=np.asarray(st.atom_names).astype(str),
        name=st.name,
        align_description=prepared.align_description,
        translation_A=prepared.translation_A,
    )


def _volume_source(volume: str | Path | np.ndarray, box: int | None, apix: float | None
                   ) -> tuple[_VolumeSource, int, float]:
    if isinstance(volume, (str, Path)):
        from cryoscape.io.mrc import read_mrc

        data, header_apix = read_mrc(volume)
        name, what = Path(volume).stem, str(volume)
    else:
        data, header_apix, name, what = np.asarray(volume, dtype=np.float32), 0.0, "volume", "volume array"
    if data.ndim != 3 or len(set(data.shape)) != 1 or data.shape[0] % 2:
        raise InputError(f"{what}: need a cubic volume with an even box, got shape {data.shape}; resample it first")
    D = int(data.shape[0])
    if box is not None and int(box) != D:
        raise InputError(f"{what}: the volume box is {D} px but box {box} was asked for; "
                         "omit --box or resample the map (cryoscape downsample)")
    if apix is None:
        if not header_apix > 0:
            raise InputError(f"{what}: no pixel size is known for the volume; pass --apix")
        apix = header_apix
    elif header_apix > 0 and abs(header_apix - apix) > 1e-3 * apix:
        raise InputError(f"{what}: header pixel size {header_apix:g} Å differs from --apix {apix:g}; "
                         "omit --apix or resample the map")
    return _VolumeSource(np.ascontiguousarray(data, dtype=np.float32), name), D, float(apix)


# ----------------------------------------------------------------------------- draws


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def parse_conformations(text: str | Sequence[int] | None, n_frames: int) -> np.ndarray | None:
    """Frame subset from "0,97" or "0-10,50" (inclusive ranges) or a sequence of ints."""
    if text is None:
        return None
    if isinstance(text, str):
        frames: list[int] = []
        for part in text.split(","):
            part = part.strip()
            try:
                if "-" in part[1:]:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    frames.extend(range(lo, hi + 1))
                else:
                    frames.append(int(part))
            except ValueError:
                raise InputError(f"cannot read conformations {text!r}; write frame indices like 0,97 or 0-10") from None
    else:
        frames = [int(v) for v in text]
    arr = np.unique(np.asarray(frames, dtype=np.int64))
    if arr.size == 0 or arr.min() < 0 or arr.max() >= n_frames:
        raise InputError(f"conformations {text!r} must be frame indices in 0..{n_frames - 1}")
    return arr


def read_weights(path: str | Path, n_frames: int) -> np.ndarray:
    """Conformation weights from a .npy or text file (one non-negative number per frame)."""
    p = Path(path)
    try:
        w = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read conformation weights ({exc}); give one number per frame") from None
    return _check_weights(np.asarray(w, dtype=np.float64).ravel(), n_frames, str(p))


def _check_weights(w: np.ndarray, n_frames: int, what: str) -> np.ndarray:
    if w.shape != (n_frames,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"{what}: conformation weights need {n_frames} non-negative numbers with a positive sum")
    return w / w.sum()


def _frame_probabilities(n_frames: int, conformations: Any, weights: Any) -> np.ndarray:
    if conformations is not None and weights is not None:
        raise InputError("give either conformations or conformation weights, not both")
    if weights is not None:
        if isinstance(weights, (str, Path)):
            return read_weights(weights, n_frames)
        return _check_weights(np.asarray(weights, dtype=np.float64).ravel(), n_frames, "conformation weights")
    p = np.zeros(n_frames)
    subset = parse_conformations(conformations, n_frames)
    p[np.arange(n_frames) if subset is None else subset] = 1.0
    return p / p.sum()


def read_poses(poses: str | Path | np.ndarray) -> np.ndarray:
    """Rotations (N, 3, 3) from a STAR file (RELION angles), a .npy of matrices or of RELION Euler angles (N, 3)."""
    if isinstance(poses, (str, Path)):
        p = Path(poses)
        if p.suffix.lower() == ".star":
            from cryoscape.io.star import read_star

            df = read_star(p).particles
            cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
            if not all(c in df.columns for c in cols):
                raise InputError(f"{p}: no _rlnAngleRot/Tilt/Psi columns; give a STAR file with angles")
            arr = euler_relion_to_matrix(df[cols].to_numpy(dtype=np.float64))
        elif p.suffix.lower() == ".npy":
            try:
                arr = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"{p}: cannot read poses ({exc}); give a .npy of rotation matrices") from None
        else:
            raise InputError(f"{p}: poses must be a .star or .npy file")
        what = str(p)
    else:
        arr, what = np.asarray(poses), "poses"
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 3:
        arr = euler_relion_to_matrix(arr)
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise InputError(f"{what}: poses must be (N, 3, 3) rotation matrices or (N, 3) RELION angles, got {arr.shape}")
    err = np.abs(arr @ arr.transpose(0, 2, 1) - np.eye(3)).max() if len(arr) else 0.0
    if err > 1e-4 or np.any(np.linalg.det(arr) < 0):
        raise InputError(f"{what}: matrices are not proper rotations; check the pose file")
    return arr


@dataclass
class _Draws:
    conformation: np.ndarray  # (N,) int64
    rotations: np.ndarray  # (N, 3, 3)
    shifts_A: np.ndarray  # (N, 2) origins, RELION sign
    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    half_set: np.ndarray  # (N,) int8 0/1


def _draw(n: int, rng: dict[str, np.random.Generator], probs: np.ndarray, rotations: np.ndarray | None,
          shift_max_px: float, apix: float, defocus_min_um: float, defocus_max_um: float,
          astigmatism_max_um: float) -> _Draws:
    conf = rng["conformations"].choice(len(probs), size=n, p=probs).astype(np.int64)
    rots = random_rotations(n, rng["rotations"]) if rotations is None else rotations[:n]
    r = shift_max_px * np.sqrt(rng["shifts"].uniform(size=n))
    phi = rng["shifts"].uniform(0.0, 2 * np.pi, size=n)
    shifts_A = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1) * apix
    ctf = rng["ctf"]
    mean_df = ctf.uniform(defocus_min_um, defocus_max_um, size=n) * 1e4
    astig = ctf.uniform(0.0, astigmatism_max_um, size=n) * 1e4
    angle = ctf.uniform(0.0, 180.0, size=n)
    half = np.zeros(n, dtype=np.int8)
    half[rng["halves"].permutation(n)[n // 2:]] = 1
    return _Draws(conf, np.asarray(rots, dtype=np.float64), shifts_A, mean_df + astig / 2, mean_df - astig / 2,
                  angle, half)


# ----------------------------------------------------------------------------- imaging


class _Imager:
    """Clean, CTF-modulated, shifted images for batches of particles (torch float32)."""

    def __init__(self, source: _AtomSource | _VolumeSource, box: int, apix: float, voltage_kV: float,
                 cs_mm: float, amplitude_contrast: float, bfactor_A2: float) -> None:
        self.source, self.D, self.apix = source, int(box), float(apix)
        self.voltage_kV, self.cs_mm, self.Q, self.B = voltage_kV, cs_mm, amplitude_contrast, bfactor_A2
        if isinstance(source, _VolumeSource):
            self.projector = FourierProjector(torch.as_tensor(source.volume))
        else:
            self.frames = torch.as_tensor(source.frames_A)
            self.amplitudes = torch.as_tensor(source.amplitudes)
            self.sigma = torch.as_tensor(source.sigma_A)

    def projection_ft(self, idx: np.ndarray, d: _Draws) -> torch.Tensor:
        """Centred FT of the projections, complex [B, D, D]."""
        rot = torch.as_tensor(d.rotations[idx], dtype=torch.float32)
        if isinstance(self.source, _VolumeSource):
            return self.projector.slice(rot)
        coords = self.frames[torch.as_tensor(d.conformation[idx])]
        proj = project_atoms(coords, self.amplitudes, self.sigma, rot, self.D, self.apix, batch_size=ATOM_CHUNK)
        return fftn_c(proj, 2)

    def images(self, idx: np.ndarray, d: _Draws) -> torch.Tensor:
        """Clean observed images real [B, D, D]: IFT(CTF · shift(−origin) · projection FT)."""
        n = len(idx)
        f32 = dict(dtype=torch.float32)
        ctf = compute_ctf(
            self.D, self.apix,
            torch.as_tensor(d.defocus_u_A[idx], **f32), torch.as_tensor(d.defocus_v_A[idx], **f32),
            torch.as_tensor(d.defocus_angle_deg[idx], **f32), torch.full((n,), self.voltage_kV, **f32),
            torch.full((n,), self.cs_mm, **f32), torch.full((n,), self.Q, **f32),
            torch.zeros(n, **f32), torch.full((n,), self.B, **f32),
        )
        shift = phase_shift(self.D, torch.as_tensor(-d.shifts_A[idx], **f32), self.apix)
        ft = self.projection_ft(idx, d) * shift * ctf
        return ifftn_c(ft, 2).real.to(torch.float32)


def _batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


# ----------------------------------------------------------------------------- writers


class _StackWriter:
    """Write a float32 MRC image stack batch by batch with plain file writes.

    The header is made by :mod:`mrcfile`; pixel data are written at their
    offsets, so memory use does not grow with the number of images. Header
    statistics are accumulated per batch and stored on :meth:`close`.
    """

    def __init__(self, path: Path, n: int, box: int, apix: float) -> None:
        self.path = path
        with mrcfile.new_mmap(str(path), shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = float(apix)
            mrc.header.origin = (0.0, 0.0, 0.0)
            # a fixed label instead of mrcfile's timestamp keeps stacks byte-identical for a seed
            mrc.header.label[0] = b"cryoscape simulate"
            mrc.header.nlabl = 1
            self.dtype = mrc.data.dtype
            self.offset = int(mrc.header.nbytes) + int(mrc.header.nsymbt)
        self.image_bytes = box * box * self.dtype.itemsize
        self.fh = open(path, "r+b")
        self.count = 0
        self.lo, self.hi, self.s1, self.s2 = np.inf, -np.inf, 0.0, 0.0

    def write(self, idx: np.ndarray, images: np.ndarray) -> None:
        """Write images ``[b, D, D]`` for consecutive particle indices ``idx``."""
        self.fh.seek(self.offset + int(idx[0]) * self.image_bytes)
        self.fh.write(np.ascontiguousarray(images, dtype=self.dtype).tobytes())
        x = images.astype(np.float64)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.s1 += float(x.sum())
        self.s2 += float((x * x).sum())
        self.count += x.size

    def close(self) -> None:
        """Close the file and store min, max, mean and rms in the header."""
        self.fh.close()
        mean = self.s1 / max(self.count, 1)
        with mrcfile.mmap(str(self.path), mode="r+") as mrc:
            h = mrc.header
            h.dmin, h.dmax, h.dmean = self.lo, self.hi, mean
            h.rms = math.sqrt(max(self.s2 / max(self.count, 1) - mean * mean, 0.0))


def _star_tables(d: _Draws, n: int, box: int, apix: float, voltage_kV: float, cs_mm: float,
                 amplitude_contrast: float, bfactor_A2: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnAmplitudeContrast": [amplitude_contrast],
        "rlnSphericalAberration": [cs_mm],
        "rlnVoltage": [voltage_kV],
        "rlnImagePixelSize": [apix],
        "rlnImageSize": [box],
        "rlnImageDimensionality": [2],
    })
    euler = matrix_to_euler_relion(d.rotations)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{STACK_NAME}" for i in range(n)],
        "rlnAngleRot": euler[:, 0],
        "rlnAngleTilt": euler[:, 1],
        "rlnAnglePsi": euler[:, 2],
        "rlnOriginXAngst": d.shifts_A[:, 0],
        "rlnOriginYAngst": d.shifts_A[:, 1],
        "rlnDefocusU": d.defocus_u_A,
        "rlnDefocusV": d.defocus_v_A,
        "rlnDefocusAngle": d.defocus_angle_deg,
        "rlnPhaseShift": np.zeros(n),
        "rlnCtfBfactor": np.full(n, bfactor_A2, dtype=np.float64),
        "rlnOpticsGroup": np.ones(n, dtype=np.int64),
        "rlnRandomSubset": d.half_set.astype(np.int64) + 1,
    })
    return optics, particles


def _save_npz(path: Path, arrays: dict[str, Any], force: bool) -> None:
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


# ----------------------------------------------------------------------------- main entry


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


def _build_source(structure: Any, volume: Any, box: int | None, apix: float | None, align_residues: Any,
                  centre: str, atom_sigma_A: float, min_sigma_px: float
                  ) -> tuple[_AtomSource | _VolumeSource, int, float]:
    if (structure is None) == (volume is None):
        raise InputError("give exactly one of a structure (--structure) or a volume (--volume)")
    if volume is not None:
        vsource, box, apix = _volume_source(volume, box, apix)
        _check_numbers(box, apix)
        return vsource, box, apix
    box = 64 if box is None else int(box)
    apix = 1.5 if apix is None else float(apix)
    _check_numbers(box, apix)
    return _atom_source(structure, apix, align_residues, centre, atom_sigma_A, min_sigma_px), box, apix


def _output_paths(out: Path, probs: np.ndarray | None, force: bool) -> dict[str, Path]:
    """Output file paths; refuses existing ones (and existing volumes when ``probs`` is given) unless ``force``."""
    paths = {k: out / v for k, v in (("star", STAR_NAME), ("stack", STACK_NAME), ("truth", TRUTH_NAME),
                                     ("config", CONFIG_NAME))}
    for p in paths.values():
        check_output_path(p, force)
    if probs is not None:
        for f in np.flatnonzero(probs > 0):
            check_output_path(_volume_path(out, int(f)), force)
    return paths


def _particle_radius_px(source: _AtomSource | _VolumeSource, box: int, apix: float) -> float:
    """Radius of the particle circle used for the SNR: the model's extent, at most D/2."""
    extent_A = source.extent_A() if isinstance(source, _AtomSource) else source.extent_A(apix)
    if extent_A > box // 2 * apix:
        warnings.warn(f"the model reaches {extent_A:.0f} Å from the centre but the box half-width is "
                      f"{box // 2 * apix:.0f} Å; increase --box or --apix", stacklevel=3)
    return float(min(box // 2, math.ceil(extent_A / apix)))


def _render_stack(path: Path, imager: _Imager, draws: _Draws, batch_size: int, noise_std: float,
                  noise_rng: np.random.Generator, progress: bool, force: bool) -> None:
    """Render every particle batch by batch (clean image + white noise) into the MRC stack."""
    n = len(draws.conformation)
    gen = torch.Generator().manual_seed(int(noise_rng.integers(0, 2**63 - 1)))
    with torch.inference_mode(), atomic_path(path, force) as tmp:
        writer = _StackWriter(tmp, n, imager.D, imager.apix)
        try:
            for idx in _progress(_batches(n, batch_size), n, progress):
                img = imager.images(idx, draws)
                if noise_std > 0:
                    img = add_noise(img, None, generator=gen, noise_std=noise_std)
                writer.write(idx, img.numpy())
        finally:
            writer.close()


def _describe(value: Any) -> Any:
    """JSON-friendly description of an argument (arrays and objects by kind)."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, AtomicStructure):
        return value.source
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return list(value)
    return type(value).__name__


def _check_numbers(box: int, apix: float) -> None:
    if int(box) != box or box < 8 or box % 2:
        raise InputError(f"box {box} must be an even number of pixels >= 8")
    if not (apix > 0 and math.isfinite(apix)):
        raise InputError(f"pixel size {apix} Å must be positive")


def _resolve_n(n_particles: int | None, rotations: np.ndarray | None) -> int:
    if n_particles is None:
        if rotations is None:
            raise InputError("give the number of particles (--n-particles) or poses (--poses)")
        return len(rotations)
    n = int(n_particles)
    if n < 1:
        raise InputError(f"--n-particles {n_particles} must be at least 1")
    if rotations is not None and len(rotations) < n:
        raise InputError(f"only {len(rotations)} poses for {n} particles; lower --n-particles or give more poses")
    return n


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


def _noise_level(imager: _Imager, d: _Draws, n: int, snr: float, radius_px: float) -> tuple[float, float]:
    """Mean clean-signal variance inside the particle circle (first images) and the noise std."""
    with torch.inference_mode():
        img = imager.images(np.arange(min(n, PILOT_SIZE)), d)
    signal_var = float(masked_variance(img, circle_mask_2d(imager.D, radius_px)).mean())
    noise_std = 0.0 if math.isinf(snr) else math.sqrt(signal_var / snr)
    return signal_var, noise_std


def _progress(it: Iterator[np.ndarray], n: int, enabled: bool) -> Iterator[np.ndarray]:
    if not enabled:
        yield from it
        return
    from tqdm.auto import tqdm

    with tqdm(total=n, unit="img", desc="simulate") as bar:
        for idx in it:
            yield idx
            bar.update(len(idx))


def _truth_arrays(source: _AtomSource | _VolumeSource, d: _Draws, probs: np.ndarray, box: int, apix: float,
                  snr: float, signal_var: float, noise_std: float, radius_px: float, seed: int,
                  voltage_kV: float, cs_mm: float, q: float, bfactor_A2: float) -> dict[str, np.ndarray]:
    n = len(d.conformation)
    F = source.n_frames
    t: dict[str, Any] = {
        "conformation": d.conformation,
        "coordinate": d.conformation / (F - 1) if F > 1 else np.zeros(n),
        "rotations": d.rotations,
        "euler_deg": matrix_to_euler_relion(d.rotations),
        "shifts_A": d.shifts_A,
        "defocus_u_A": d.defocus_u_A,
        "defocus_v_A": d.defocus_v_A,
        "defocus_angle_deg": d.defocus_angle_deg,
        "voltage_kV": np.full(n, voltage_kV),
        "cs_mm": np.full(n, cs_mm),
        "amplitude_contrast": np.full(n, q),
        "phase_shift_deg": np.zeros(n),
        "bfactor_A2": np.full(n, bfactor_A2, dtype=np.float64),
        "half_set": d.half_set,
        "frame_probabilities": probs,
        "n_frames": np.int64(F),
        "snr": np.float64(snr),
        "signal_variance": np.float64(signal_var),
        "noise_std": np.float64(noise_std),
        "particle_radius_px": np.float64(radius_px),
        "seed": np.int64(seed),
        "box": np.int64(box),
        "apix": np.float64(apix),
    }
    if isinstance(source, _VolumeSource):
        t.update(kind=np.str_("volume"), volume=source.volume)
    else:
        t.update(kind=np.str_("atoms"), frames_A=source.frames_A, amplitudes=source.amplitudes,
                 sigma_A=source.sigma_A, elements=source.elements, resid=source.resid,
                 atom_names=source.atom_names, translation_A=source.translation_A,
                 alignment=np.str_(source.align_description), name=np.str_(source.name))
    return {k: np.asarray(v) for k, v in t.items()}


def _write_volumes(truth: dict[str, np.ndarray], out: Path, probs: np.ndarray, force: bool) -> list[Path]:
    from cryoscape.io.mrc import write_mrc
    from cryoscape.simulate.ground_truth import ground_truth_volume

    paths = []
    for f in np.flatnonzero(probs > 0):
        vol, apix = ground_truth_volume(truth, int(f))
        paths.append(write_mrc(_volume_path(out, int(f)), vol, apix, force=force))
    return paths


def _volume_path(out: Path, frame: int) -> Path:
    return out / VOLUMES_DIR / f"conformation_{frame:03d}.mrc"


def _config_dict(settings: dict[str, Any]) -> dict[str, Any]:
    from cryoscape import __version__

    cfg: dict[str, Any] = {"cryoscape_version": __version__, "command": "simulate"}
    cfg.update(settings)
    cfg["snr"] = "inf" if math.isinf(float(cfg["snr"])) else float(cfg["snr"])
    cfg["outputs"] = {"stack": STACK_NAME, "star": STAR_NAME, "truth": TRUTH_NAME}
    cfg["conventions"] = {
        "image": "FT(image) = CTF * exp(+2 pi i k.origin) * FT(projection); protein white; RELION CTF sign",
        "origin": "_rlnOriginXAngst/YAngst, RELION sign: image content moved by -origin",
        "rotation": "R maps volume coordinates into the particle frame (RELION Euler ZYZ)",
        "noise": "white Gaussian, one std for the dataset: std^2 = mean clean variance inside the circle / snr",
    }
    return cfg

"""The files of a simulated dataset: their names, the STAR tables, ``truth.npz``, volumes and the config.

See :mod:`cryoscape.simulate.dataset` for what each file holds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.geometry.rotations import matrix_to_euler_relion
from cryoscape.io.atomic import atomic_path, check_output_path
from cryoscape.simulate.draws import _Draws
from cryoscape.simulate.sources import _AtomSource, _VolumeSource
from cryoscape.simulate.structures import AtomicStructure

STACK_NAME = "particles.mrcs"
STAR_NAME = "particles.star"
TRUTH_NAME = "truth.npz"
CONFIG_NAME = "simulation.json"
VOLUMES_DIR = "truth_volumes"


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


def _output_paths(out: Path, probs: np.ndarray | None, force: bool) -> dict[str, Path]:
    """Output file paths; refuses existing ones (and existing volumes when ``probs`` is given) unless ``force``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} is a file; choose another --out")
    paths = {k: out / v for k, v in (("star", STAR_NAME), ("stack", STACK_NAME), ("truth", TRUTH_NAME),
                                     ("config", CONFIG_NAME))}
    for p in paths.values():
        check_output_path(p, force)
    if probs is not None:
        for f in np.flatnonzero(probs > 0):
            check_output_path(_volume_path(out, int(f)), force)
    return paths


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

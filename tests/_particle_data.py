"""A small two-stack RELION 3.1 particle set written for the particle and command-line tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryoscape.io.mrc import write_mrc
from cryoscape.io.star import write_star

D, APIX = 16, 2.0


def make_dataset(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Two stacks (6 + 4 images of 16²) and a RELION 3.1 STAR listing them interleaved.

    Returns (star path, images in STAR order [10,16,16], angles (10,3))."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, D, D)).astype(np.float32)
    b = rng.normal(size=(4, D, D)).astype(np.float32)
    (tmp_path / "Extract").mkdir()
    write_mrc(tmp_path / "Extract" / "a.mrcs", a, APIX)
    write_mrc(tmp_path / "Extract" / "b.mrcs", b, APIX)
    order = [("a", 2), ("b", 0), ("a", 0), ("a", 1), ("b", 3), ("a", 5), ("b", 1), ("a", 3), ("a", 4), ("b", 2)]
    images = np.stack([(a if s == "a" else b)[i] for s, i in order])
    angles = rng.uniform([-180, 0, -180], [180, 180, 180], size=(10, 3))
    parts = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@Extract/{s}.mrcs" for s, i in order],
            "rlnAngleRot": angles[:, 0],
            "rlnAngleTilt": angles[:, 1],
            "rlnAnglePsi": angles[:, 2],
            "rlnOriginXAngst": rng.uniform(-5, 5, 10),
            "rlnOriginYAngst": rng.uniform(-5, 5, 10),
            "rlnDefocusU": rng.uniform(1e4, 2e4, 10),
            "rlnDefocusV": rng.uniform(1e4, 2e4, 10),
            "rlnDefocusAngle": rng.uniform(-90, 90, 10),
            "rlnPhaseShift": np.zeros(10),
            "rlnCtfBfactor": np.full(10, 5.0),
            "rlnRandomSubset": [1, 2] * 5,
            "rlnOpticsGroup": np.ones(10, int),
            "rlnCustomScore": np.arange(10) * 0.5,
            "rlnMicrographName": [f"mic{i % 3}.mrc" for i in range(10)],
        }
    )
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnAmplitudeContrast": [0.07],
            "rlnSphericalAberration": [2.7],
            "rlnVoltage": [300.0],
            "rlnImagePixelSize": [APIX],
            "rlnImageSize": [D],
            "rlnImageDimensionality": [2],
            "rlnBeamTiltX": [0.1],
        }
    )
    star = write_star(tmp_path / "particles.star", optics, parts)
    return star, images, angles


def two_state_adk(folder: Path, n_particles: int, seed: int) -> Path:
    """A tiny simulated set of the two AdK end states (frames 0 and 97), box 16 at 8 Å/px, SNR 1, written to
    ``folder``; returns its STAR path (for the fast gradient-fit tests)."""
    from cryoscape.simulate import simulate_dataset

    simulate_dataset("adk", n_particles=n_particles, box=16, apix=8.0, snr=1.0, conformations="0,97",
                     out_dir=folder, progress=False, seed=seed)
    return folder / "particles.star"

"""What a simulation images: Gaussian atoms of a (trajectory of) atomic model(s), or a density map.

:func:`_build_source` checks the box and pixel size and returns an
:class:`_AtomSource` (frames of atom coordinates, superposed and centred, with
per-atom amplitudes and widths) or a :class:`_VolumeSource` (a cubic map);
:func:`_particle_radius_px` gives the radius of the circle used for the SNR.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.simulate.structures import AtomicStructure, load_structure
from cryoscape.simulate.trajectory import prepare_trajectory


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


def _particle_radius_px(source: _AtomSource | _VolumeSource, box: int, apix: float) -> float:
    """Radius of the particle circle used for the SNR: the model's extent, at most D/2."""
    extent_A = source.extent_A() if isinstance(source, _AtomSource) else source.extent_A(apix)
    if extent_A > box // 2 * apix:
        warnings.warn(f"the model reaches {extent_A:.0f} Å from the centre but the box half-width is "
                      f"{box // 2 * apix:.0f} Å; increase --box or --apix", stacklevel=3)
    return float(min(box // 2, math.ceil(extent_A / apix)))


def _check_numbers(box: int, apix: float) -> None:
    if int(box) != box or box < 8 or box % 2:
        raise InputError(f"box {box} must be an even number of pixels >= 8")
    if not (apix > 0 and math.isfinite(apix)):
        raise InputError(f"pixel size {apix} Å must be positive")

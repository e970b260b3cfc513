"""Writing a particle set back out: RELION STAR (with optics groups), cryoSPARC ``.cs``, cryoDRGN pickles.

:class:`ParticleWriters` is a mixin of :class:`~cryoscape.particles.ParticleSet`
(it uses the set's fields, ``box``, ``apix``, ``has_ctf``, the ``require_*``
checks and the kept source rows ``_source``). Columns of the source file that
the set does not own are written back unchanged.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.io import cryodrgn as _drgn
from cryoscape.io import cryosparc as _cs
from cryoscape.io import star as _star
from cryoscape.particles.columns import _ANGLE_COLS, _OPTICS_ONLY_COLS, euler_to_matrix, matrix_to_euler
from cryoscape.particles.image_source import StackImageSource

__all__ = ["ParticleWriters"]


class ParticleWriters:
    """STAR, ``.cs`` and cryoDRGN export for a particle set (mixin; see the module docstring)."""

    def star_tables(self, relative_to: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The RELION ≥ 3.1 ``(optics, particles)`` tables this set writes (original columns kept)."""
        n = self.n
        src = self._source if self._source is not None and self._source.kind == "star" else None
        rows = src.table.copy() if src is not None else pd.DataFrame(index=pd.RangeIndex(n))
        src_optics = src.optics if src is not None else None
        groups, optics = self._optics_groups(src_optics)
        rows = rows.drop(columns=[c for c in _OPTICS_ONLY_COLS if c in rows.columns])
        # image names
        if isinstance(self.images, StackImageSource):
            rows["rlnImageName"] = self.images.image_names(relative_to)
        elif "rlnImageName" not in rows.columns:
            warnings.warn(f"{self.name}: images are not in a stack file, so the STAR has no _rlnImageName", stacklevel=3)
        # poses
        if self.rotations is not None:
            keep = src is not None and all(c in rows.columns for c in _ANGLE_COLS)
            if keep:
                orig = euler_to_matrix(rows[list(_ANGLE_COLS)].to_numpy(np.float64))
                keep = bool(np.allclose(orig, self.rotations, atol=1e-9))
            if not keep:
                ang = matrix_to_euler(self.rotations)
                for j, c in enumerate(_ANGLE_COLS):
                    rows[c] = ang[:, j]
        if self.shifts_A is not None:
            rows["rlnOriginXAngst"] = self.shifts_A[:, 0]
            rows["rlnOriginYAngst"] = self.shifts_A[:, 1]
        if self.has_ctf:
            rows["rlnDefocusU"] = self.defocus_u_A  # type: ignore[attr-defined]
            rows["rlnDefocusV"] = self.defocus_v_A  # type: ignore[attr-defined]
            rows["rlnDefocusAngle"] = self.defocus_angle_deg  # type: ignore[attr-defined]
            if "rlnPhaseShift" in rows.columns or np.any(self.phase_shift_deg != 0):  # type: ignore[attr-defined]
                rows["rlnPhaseShift"] = self.phase_shift_deg  # type: ignore[attr-defined]
            if "rlnCtfBfactor" in rows.columns or np.any(self.bfactor_A2 != 0):  # type: ignore[attr-defined]
                rows["rlnCtfBfactor"] = self.bfactor_A2  # type: ignore[attr-defined]
        if np.any(self.half_set >= 0) or "rlnRandomSubset" in rows.columns:
            if np.all(self.half_set >= 0):
                rows["rlnRandomSubset"] = self.half_set.astype(np.int64) + 1
            else:
                rows["rlnRandomSubset"] = np.where(self.half_set >= 0, self.half_set.astype(np.int64) + 1, 0)
        rows["rlnOpticsGroup"] = groups
        return optics, rows

    def _optics_groups(self, src_optics: pd.DataFrame | None) -> tuple[np.ndarray, pd.DataFrame]:
        """Assign RELION optics groups so that pixel size, box, kV, Cs and Q are constant within each."""
        try:
            box = np.full(self.n, self.box) if self.n else self.box_per_particle
        except InputError:
            box = self.box_per_particle
        key = {"g": self.optics_group, "apix": np.round(self.apix_per_particle, 6), "box": box}
        if self.has_ctf:
            key.update(
                kv=np.round(self.voltage_kV, 4),  # type: ignore[attr-defined]
                cs=np.round(self.cs_mm, 6),  # type: ignore[attr-defined]
                q=np.round(self.amplitude_contrast, 6),  # type: ignore[attr-defined]
            )
        kdf = pd.DataFrame(key)
        codes = kdf.groupby(list(key), sort=True, dropna=False).ngroup().to_numpy()
        consistent = len(np.unique(codes)) == len(np.unique(self.optics_group))
        groups = self.optics_group.copy() if consistent else codes + 1
        src_rows = {}
        if src_optics is not None and "rlnOpticsGroup" in src_optics.columns:
            src_rows = {int(r["rlnOpticsGroup"]): r for _, r in src_optics.iterrows()}
        records = []
        for g in np.unique(groups):
            j = int(np.flatnonzero(groups == g)[0])
            base = src_rows.get(int(self.optics_group[j]))
            rec: dict[str, Any] = dict(base) if base is not None else {}
            rec["rlnOpticsGroup"] = int(g)
            if base is None or not consistent:
                rec["rlnOpticsGroupName"] = f"opticsGroup{int(g)}"
            if self.has_ctf:
                rec["rlnAmplitudeContrast"] = float(self.amplitude_contrast[j])  # type: ignore[attr-defined]
                rec["rlnSphericalAberration"] = float(self.cs_mm[j])  # type: ignore[attr-defined]
                rec["rlnVoltage"] = float(self.voltage_kV[j])  # type: ignore[attr-defined]
            if np.isfinite(self.apix_per_particle[j]):
                rec["rlnImagePixelSize"] = float(self.apix_per_particle[j])
            if box[j] > 0:
                rec["rlnImageSize"] = int(box[j])
            rec["rlnImageDimensionality"] = 2
            records.append(rec)
        optics = pd.DataFrame.from_records(records)
        first = ["rlnOpticsGroup", "rlnOpticsGroupName"]
        optics = optics[[c for c in first if c in optics.columns] + [c for c in optics.columns if c not in first]]
        return groups.astype(np.int64), optics

    def write_star(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write a RELION ≥ 3.1 STAR (optics + particles), keeping the source's other columns.

        Image paths are written relative to the output file's folder.
        """
        out = Path(path)
        optics, rows = self.star_tables(relative_to=out.parent if out.parent != Path("") else Path("."))
        if "rlnImageSize" not in optics.columns:
            warnings.warn(f"{out}: box size unknown (stacks not found), so the optics table has no _rlnImageSize", stacklevel=2)
        others = self._source.other_blocks if self._source is not None and self._source.kind == "star" else None
        return _star.write_star(out, optics, rows, force=force, other_blocks=others)

    def write_cs(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the selected rows of the source ``.cs`` atomically (edited poses/shifts/CTF written back)."""
        if self._source is None or self._source.kind != "cs":
            raise InputError(f"{self.name} was not read from a cryoSPARC .cs file; write a STAR with write_star instead")
        arr = self._source.table.copy()
        names = arr.dtype.names
        if self.rotations is not None and _cs.cs_has_poses(arr):
            rot0, sh0 = _cs.cs_poses(arr)
            if not np.allclose(rot0, self.rotations, atol=1e-6):
                arr["alignments3D/pose"] = _cs.matrices_to_cs_pose(self.rotations)
            psize = np.asarray(arr["blob/psize_A"], np.float64) if "blob/psize_A" in names else self.apix_per_particle
            if self.shifts_A is not None and not np.allclose(sh0 * psize[:, None], self.shifts_A, atol=1e-5):
                arr["alignments3D/shift"] = self.shifts_A / psize[:, None]
        if self.has_ctf and _cs.cs_has_ctf(arr):
            orig = _cs.cs_ctf(arr)
            conv = {"defocus_angle_deg": np.radians, "phase_shift_deg": np.radians}
            cs_names = {
                "defocus_u_A": "ctf/df1_A",
                "defocus_v_A": "ctf/df2_A",
                "defocus_angle_deg": "ctf/df_angle_rad",
                "voltage_kV": "ctf/accel_kv",
                "cs_mm": "ctf/cs_mm",
                "amplitude_contrast": "ctf/amp_contrast",
                "phase_shift_deg": "ctf/phase_shift_rad",
                "bfactor_A2": "ctf/bfactor",
            }
            for f, col in cs_names.items():
                cur = getattr(self, f)
                if col in names and not np.allclose(orig[f], cur, rtol=1e-6, atol=1e-6):
                    arr[col] = conv.get(f, lambda x: x)(cur)
        if "alignments3D/split" in names and np.all(self.half_set >= 0):
            arr["alignments3D/split"] = self.half_set
        return _cs.write_cs(path, arr, force)

    def cryodrgn_ctf(self) -> np.ndarray:
        """The ``(N,9)`` cryoDRGN CTF table ``[box, apix, dfU, dfV, angle°, kV, Cs, Q, phase°]``."""
        self.require_ctf("the cryoDRGN CTF export")
        return _drgn.ctf_fields_to_array(self.box, self.apix_per_particle, self.ctf_table())

    def cryodrgn_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """cryoDRGN ``(rot (N,3,3), trans (N,2))`` with ``trans = shift_A / apix / box`` (box fractions)."""
        self.require_poses("the cryoDRGN pose export")
        shifts = np.zeros((self.n, 2)) if self.shifts_A is None else self.shifts_A
        box = self.box
        apix = self.apix_per_particle
        if not np.all(np.isfinite(apix) & (apix > 0)):
            self.apix  # raises the pixel-size error
        return self.rotations.copy(), shifts / apix[:, None] / box  # type: ignore[union-attr]

    def write_cryodrgn(
        self, pose_path: str | os.PathLike | None = None, ctf_path: str | os.PathLike | None = None, force: bool = False
    ) -> None:
        """Write cryoDRGN ``pose.pkl`` and/or ``ctf.pkl`` (atomically)."""
        if pose_path is None and ctf_path is None:
            raise InputError("write_cryodrgn needs pose_path and/or ctf_path; pass at least one output")
        if pose_path is not None:
            rot, trans = self.cryodrgn_poses()
            _drgn.write_pose_pkl(pose_path, rot, trans, force)
        if ctf_path is not None:
            _drgn.write_ctf_pkl(ctf_path, self.cryodrgn_ctf(), force)

"""The particle set: lazy images plus one row of metadata per particle.

A :class:`ParticleSet` holds, for ``N`` particles, the canonical fields
(numpy, float64 unless stated; ``None`` where the source has none):

- ``rotations`` ``(N,3,3)``: maps volume coordinates into the particle frame
  (RELION ``Euler_angles2matrix``; ``Rotation.from_euler("ZYZ", [rot, tilt, psi],
  degrees=True).as_matrix().T``); the central slice samples ``V̂(Rᵀ k)``;
- ``shifts_A`` ``(N,2)``: ``(x, y)`` origin in Å with RELION's sign
  (translating the image by ``+shift`` centres the particle);
- CTF: ``defocus_u_A``, ``defocus_v_A``, ``defocus_angle_deg``, ``voltage_kV``,
  ``cs_mm``, ``amplitude_contrast``, ``phase_shift_deg``, ``bfactor_A2``, each ``(N,)``;
- ``apix_per_particle`` ``(N,)`` Å/px (NaN where unknown), ``box_per_particle``
  ``(N,)`` int px (0 where unknown), ``optics_group`` ``(N,)`` int,
  ``half_set`` ``(N,)`` int8 in {0, 1} or -1 (unknown).

``ps.apix`` and ``ps.box`` are the single pixel size and box of the set (an
:class:`~cryoscape.errors.InputError` if they are mixed or unknown).

The rows of the file the set came from (the STAR particle table with its
optics table, or the cryoSPARC structured array) are kept aligned with the

Layout: field names and the kept source rows in :mod:`.columns`; reading STAR
and ``.cs`` files in :mod:`.readers`, cryoDRGN files and arrays in
:mod:`.builders`, the pixel size's origin in :mod:`.pixel_size`; image access
(:class:`~.images.ParticleImages`) and export (:class:`~.writers.ParticleWriters`)
are mixins of :class:`ParticleSet`, which holds the fields, selection and joins.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cryoscape.errors import InputError
from cryoscape.particles.builders import array_fields, cryodrgn_fields
from cryoscape.particles.columns import CTF_FIELDS, _as_array, _frames_equal, _Source, euler_to_matrix, matrix_to_euler
from cryoscape.particles.image_source import ImageSource, StackImageSource, concat_sources
from cryoscape.particles.images import ParticleImages
from cryoscape.particles.pixel_size import fill_apix_from_header, override_apix
from cryoscape.particles.readers import read_particle_file
from cryoscape.particles.writers import ParticleWriters

__all__ = ["ParticleSet", "CTF_FIELDS", "euler_to_matrix", "matrix_to_euler"]


class ParticleSet(ParticleImages, ParticleWriters):
    """Particle images (lazy) with per-particle pose, shift, CTF, optics group and half set.

    Build with :meth:`from_file`, :meth:`from_cryodrgn` or :meth:`from_arrays`;
    index with integers, slices, index arrays or boolean masks; join with
    :meth:`concat`; export with :meth:`write_star`, :meth:`write_cs` and
    :meth:`write_cryodrgn`.
    """

    def __init__(
        self,
        n: int,
        images: ImageSource | None = None,
        rotations: np.ndarray | None = None,
        shifts_A: np.ndarray | None = None,
        ctf: Mapping[str, np.ndarray] | None = None,
        apix_per_particle: np.ndarray | None = None,
        box_per_particle: np.ndarray | None = None,
        optics_group: np.ndarray | None = None,
        half_set: np.ndarray | None = None,
        name: str = "particle set",
        source: _Source | None = None,
        ctf_missing: str = "",
    ) -> None:
        self.n = int(n)
        if images is not None and len(images) != self.n:
            raise InputError(f"{name}: {len(images)} images for {self.n} particles; give one image per particle")
        self.images = images
        self.rotations = None if rotations is None else _as_array(rotations, self.n, name="rotations").reshape(self.n, 3, 3)
        self.shifts_A = None if shifts_A is None else _as_array(shifts_A, self.n, name="shifts_A").reshape(self.n, 2)
        for f in CTF_FIELDS:
            setattr(self, f, None)
        if ctf is not None:
            for f in CTF_FIELDS:
                default = 0.0 if f in ("phase_shift_deg", "bfactor_A2") else None
                value = ctf.get(f, default)
                if value is None:
                    raise InputError(f"{name}: CTF field {f} is missing; give every CTF parameter")
                setattr(self, f, _as_array(value, self.n, name=f))
        nan = np.full(self.n, np.nan)
        self.apix_per_particle = nan if apix_per_particle is None else _as_array(apix_per_particle, self.n, name="apix")
        self.box_per_particle = (
            np.zeros(self.n, np.int64) if box_per_particle is None else _as_array(box_per_particle, self.n, np.int64, "box")
        )
        self.optics_group = np.ones(self.n, np.int64) if optics_group is None else _as_array(optics_group, self.n, np.int64, "optics_group")
        self.half_set = np.full(self.n, -1, np.int8) if half_set is None else _as_array(half_set, self.n, np.int8, "half_set")
        self.name = name
        self._source = source
        self._ctf_missing = ctf_missing
        self._checked = False

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"ParticleSet({self.name!r}, n={self.n}, poses={self.has_poses}, ctf={self.has_ctf},"
            f" images={'yes' if self.images is not None else 'no'})"
        )

    @property
    def has_poses(self) -> bool:
        """True when every particle has a 3D orientation."""
        return self.rotations is not None

    @property
    def has_ctf(self) -> bool:
        """True when every particle has CTF parameters."""
        return self.defocus_u_A is not None  # type: ignore[attr-defined]

    @property
    def has_half_sets(self) -> bool:
        """True when every particle is assigned to half set 0 or 1."""
        return bool(self.n) and bool(np.all(self.half_set >= 0))

    @property
    def source_kind(self) -> str | None:
        """``"star"``, ``"cs"`` or ``None`` (built from arrays or pickles)."""
        return None if self._source is None else self._source.kind

    @property
    def source_table(self) -> Any:
        """The original rows (DataFrame for STAR, structured array for .cs), aligned with the particles."""
        return None if self._source is None else self._source.table

    @property
    def optics_table(self) -> pd.DataFrame | None:
        """The original STAR optics table (RELION ≥ 3.1 sources), else None."""
        return None if self._source is None else self._source.optics

    @property
    def apix(self) -> float:
        """The pixel size in Å/px shared by all particles (InputError if unknown or mixed)."""
        a = self.apix_per_particle
        if self.n == 0:
            raise InputError(f"{self.name} has no particles; select at least one")
        if not np.all(np.isfinite(a) & (a > 0)):
            raise InputError(f"{self.name} has no pixel size{self._apix_sources()}; pass --apix")
        lo, hi = float(a.min()), float(a.max())
        if hi - lo > 1e-4 * hi:
            raise InputError(
                f"{self.name} mixes pixel sizes from {lo:g} to {hi:g} Å; rescale the particles to one pixel size"
                " (or select one optics group) first"
            )
        return float(np.median(a))

    def _apix_sources(self) -> str:
        """Where a pixel size was looked for, for the missing-pixel-size error."""
        where = "blob/psize_A" if self.source_kind == "cs" else "_rlnImagePixelSize, or _rlnDetectorPixelSize with _rlnMagnification"
        if not isinstance(self.images, StackImageSource):
            return f" ({where}) and no image stack to read one from"
        if not any(p.is_file() for p in self.images.paths):
            return f" ({where}) and its image stacks were not found to read one from"
        return f" ({where}) and its stack headers record none"

    @property
    def box(self) -> int:
        """The box size in px shared by all particles (read from the stack headers when the metadata lacks it)."""
        b = self.box_per_particle
        if self.n and np.any(b <= 0):
            if self.images is None:
                raise InputError(f"{self.name} does not record the box size and has no images; pass the image stacks")
            box, _ = self.images.check()
            self._checked = True
            self.box_per_particle = np.where(b <= 0, box, b).astype(np.int64)
            b = self.box_per_particle
        sizes = np.unique(b)
        if sizes.size == 0:
            raise InputError(f"{self.name} has no particles; select at least one")
        if sizes.size > 1:
            raise InputError(f"{self.name} mixes box sizes {sizes.tolist()} px; rescale the particles to one box first")
        return int(sizes[0])

    def ctf_table(self) -> dict[str, np.ndarray]:
        """CTF parameters as a dict of ``(N,)`` float64 arrays keyed by :data:`CTF_FIELDS`."""
        self.require_ctf("this step")
        return {f: getattr(self, f) for f in CTF_FIELDS}

    # ------------------------------------------------------------ requirements
    def require_poses(self, cmd: str) -> None:
        """Raise InputError (with the fix) if the set has no 3D orientations."""
        if self.has_poses:
            return
        cols = "alignments3D/pose" if self.source_kind == "cs" else "_rlnAngleRot/Tilt/Psi"
        raise InputError(
            f"{self.name} has no particle orientations ({cols}), which {cmd} needs; run a consensus refinement first"
        )

    def require_ctf(self, cmd: str) -> None:
        """Raise InputError (with the fix) if the set has no CTF parameters."""
        if self.has_ctf:
            return
        cols = "ctf/df1_A" if self.source_kind == "cs" else "_rlnDefocusU/V, _rlnVoltage, _rlnSphericalAberration"
        extra = f" ({self._ctf_missing})" if self._ctf_missing else ""
        raise InputError(f"{self.name} has no CTF parameters ({cols}){extra}, which {cmd} needs; run CTF estimation first")

    # ---------------------------------------------------------------- indexing
    def _index(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            key = [int(key)]
        if isinstance(key, slice):
            return np.arange(self.n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (self.n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for {self.n} particles")
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"particle index out of range for {self.n} particles")
        return np.where(idx < 0, idx + self.n, idx)

    def __getitem__(self, key: Any) -> "ParticleSet":
        idx = self._index(key)
        ctf = {f: getattr(self, f)[idx] for f in CTF_FIELDS} if self.has_ctf else None
        out = ParticleSet(
            idx.size,
            images=None if self.images is None else self.images.subset(idx),
            rotations=None if self.rotations is None else self.rotations[idx],
            shifts_A=None if self.shifts_A is None else self.shifts_A[idx],
            ctf=ctf,
            apix_per_particle=self.apix_per_particle[idx],
            box_per_particle=self.box_per_particle[idx],
            optics_group=self.optics_group[idx],
            half_set=self.half_set[idx],
            name=self.name,
            source=None if self._source is None else self._source.take(idx),
            ctf_missing=self._ctf_missing,
        )
        return out

    @classmethod
    def concat(cls, sets: Sequence["ParticleSet"]) -> "ParticleSet":
        """Join particle sets in order. Fields missing from any part are dropped (None).

        The original rows are kept when every part comes from the same kind of
        file (STAR parts with identical optics tables, or .cs parts with one dtype).
        """
        sets = list(sets)
        if not sets:
            raise InputError("nothing to concatenate; give at least one particle set")

        def cat(attr: str) -> np.ndarray | None:
            parts = [getattr(s, attr) for s in sets]
            return None if any(p is None for p in parts) else np.concatenate(parts)

        has_ctf = all(s.has_ctf for s in sets)
        source = None
        kinds = {s.source_kind for s in sets}
        if kinds == {"star"}:
            first = sets[0]._source
            assert first is not None
            if all(_frames_equal(s._source.optics, first.optics) for s in sets):  # type: ignore[union-attr]
                table = pd.concat([s._source.table for s in sets], ignore_index=True)  # type: ignore[union-attr]
                source = replace(first, table=table)
        elif kinds == {"cs"}:
            first = sets[0]._source
            assert first is not None
            if all(s._source.table.dtype == first.table.dtype for s in sets):  # type: ignore[union-attr]
                source = replace(first, table=np.concatenate([s._source.table for s in sets]))  # type: ignore[union-attr]
        names = sorted({s.name for s in sets})
        return cls(
            sum(s.n for s in sets),
            images=concat_sources([s.images for s in sets]),
            rotations=cat("rotations"),
            shifts_A=cat("shifts_A"),
            ctf={f: cat(f) for f in CTF_FIELDS} if has_ctf else None,  # type: ignore[misc]
            apix_per_particle=cat("apix_per_particle"),
            box_per_particle=cat("box_per_particle"),
            optics_group=cat("optics_group"),
            half_set=cat("half_set"),
            name=" + ".join(names),
            source=source,
        )


    # --------------------------------------------------------------- builders
    @classmethod
    def from_file(
        cls, path: str | os.PathLike, datadir: str | os.PathLike | None = None, apix: float | None = None
    ) -> "ParticleSet":
        """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file.

        Image stacks are looked up in ``datadir`` (by relative path, then by
        file name) and then relative to the metadata file's folder. ``apix``
        (Å/px) overrides the pixel size recorded in the file; where the file
        records none (or 0), the first stack's MRC header gives it, with a
        one-line warning naming the value and the file.
        """
        p = Path(path)
        if not p.exists():
            raise InputError(f"particle file {p} not found; check the path")
        dd = Path(datadir) if datadir is not None else None
        if dd is not None and not dd.is_dir():
            raise InputError(f"--datadir {dd} is not a folder; pass the folder that holds the image stacks")
        fields = read_particle_file(p, dd)
        if apix is not None:
            override_apix(fields, float(apix))
        else:
            fill_apix_from_header(fields, stacklevel=3)
        return cls(**fields)

    @classmethod
    def from_cryodrgn(
        cls,
        images: str | os.PathLike | np.ndarray | None = None,
        poses: str | os.PathLike | None = None,
        ctf: str | os.PathLike | None = None,
        apix: float | None = None,
    ) -> "ParticleSet":
        """Build a set from cryoDRGN files: an MRC stack, ``pose.pkl`` and ``ctf.pkl``.

        Box and pixel size come from the CTF table, else ``apix`` / the stack header.
        Translations (box fractions) become Å: ``shift_A = trans * box * apix``.
        """
        return cls(**cryodrgn_fields(images, poses, ctf, apix))

    @classmethod
    def from_arrays(
        cls,
        image_path: str | os.PathLike | np.ndarray | None = None,
        rotations: np.ndarray | None = None,
        shifts_A: np.ndarray | None = None,
        *,
        ctf: Mapping[str, Any] | None = None,
        defocus_u_A: Any = None,
        defocus_v_A: Any = None,
        defocus_angle_deg: Any = 0.0,
        voltage_kV: Any = 300.0,
        cs_mm: Any = 2.7,
        amplitude_contrast: Any = 0.1,
        phase_shift_deg: Any = 0.0,
        bfactor_A2: Any = 0.0,
        apix: Any = None,
        box: int | None = None,
        n: int | None = None,
        optics_group: np.ndarray | None = None,
        half_set: np.ndarray | None = None,
        name: str = "particle set",
    ) -> "ParticleSet":
        """Build a set from arrays.

        ``image_path``: an MRC stack (particle ``i`` = frame ``i``), an in-memory
        ``[N, D, D]`` array, or None. CTF: either a ``ctf`` mapping of canonical
        names or the keyword fields (scalars broadcast); it is present when
        ``defocus_u_A`` is given (``defocus_v_A`` defaults to it).
        ``apix`` Å/px (scalar or ``(N,)``; default: the stack header).
        """
        keywords = {
            "defocus_u_A": defocus_u_A,
            "defocus_v_A": defocus_v_A,
            "defocus_angle_deg": defocus_angle_deg,
            "voltage_kV": voltage_kV,
            "cs_mm": cs_mm,
            "amplitude_contrast": amplitude_contrast,
            "phase_shift_deg": phase_shift_deg,
            "bfactor_A2": bfactor_A2,
        }
        fields = array_fields(image_path, rotations, shifts_A, ctf, keywords, apix, box, n, name)
        return cls(**fields, optics_group=optics_group, half_set=half_set)

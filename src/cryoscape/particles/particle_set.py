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
particles, so a subset written back keeps every original column.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from cryoscape.geometry.rotations import euler_relion_to_matrix, matrix_to_euler_relion
from cryoscape.errors import InputError
from cryoscape.io import cryodrgn as _drgn
from cryoscape.io import cryosparc as _cs
from cryoscape.io import star as _star
from cryoscape.io.mrc import read_stack_header
from cryoscape.particles.image_source import ArrayImageSource, ImageSource, StackImageSource, concat_sources

__all__ = ["ParticleSet", "CTF_FIELDS", "euler_to_matrix", "matrix_to_euler"]

#: Canonical CTF fields, each ``(N,)`` float64.
CTF_FIELDS: tuple[str, ...] = (
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "bfactor_A2",
)

_ANGLE_COLS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_OPTICS_ONLY_COLS = (
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnDetectorPixelSize",
    "rlnMagnification",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnOriginX",
    "rlnOriginY",
)
_DEFAULT_Q = 0.1  # RELION's default amplitude contrast


def euler_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) in degrees ``(N,3)`` → rotation matrices ``(N,3,3)``."""
    return euler_relion_to_matrix(np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3))


def matrix_to_euler(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N,3,3)`` → RELION (rot, tilt, psi) in degrees ``(N,3)``."""
    return matrix_to_euler_relion(np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3))


@dataclass
class _Source:
    """Rows of the original file, aligned with the particles."""

    kind: str  # "star" | "cs"
    path: Path
    table: Any  # pandas DataFrame (star) or numpy structured array (cs)
    optics: pd.DataFrame | None = None
    other_blocks: dict[str, pd.DataFrame] = field(default_factory=dict)

    def take(self, idx: np.ndarray) -> "_Source":
        if self.kind == "star":
            return replace(self, table=self.table.iloc[idx].reset_index(drop=True))
        return replace(self, table=self.table[idx])


def _as_array(x: Any, n: int, dtype: Any = np.float64, name: str = "value") -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr, dtype=dtype)
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries for {n} particles; give one per particle")
    return arr


class ParticleSet:
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
            raise InputError(
                f"{self.name} has no pixel size (_rlnImagePixelSize, or _rlnDetectorPixelSize with _rlnMagnification)"
                " and its stack headers record none; pass --apix"
            )
        lo, hi = float(a.min()), float(a.max())
        if hi - lo > 1e-4 * hi:
            raise InputError(
                f"{self.name} mixes pixel sizes from {lo:g} to {hi:g} Å; rescale the particles to one pixel size"
                " (or select one optics group) first"
            )
        return float(np.median(a))

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

    # ------------------------------------------------------------------ images
    def _check_images(self) -> None:
        if self._checked or self.images is None:
            return
        box_img, _ = self.images.check()
        known = self.box_per_particle[self.box_per_particle > 0]
        if known.size and np.any(known != box_img):
            raise InputError(
                f"{self.name} says the box is {int(known[0])} px but its stacks hold {box_img}×{box_img} px images;"
                " fix _rlnImageSize or point --datadir at the right stacks"
            )
        self.box_per_particle = np.where(self.box_per_particle > 0, self.box_per_particle, box_img).astype(np.int64)
        self._checked = True

    def _require_images(self) -> ImageSource:
        if self.images is None:
            raise InputError(f"{self.name} has no particle images (no _rlnImageName / blob/path); pass the image stacks")
        self._check_images()
        return self.images

    def read_images(self, indices: Any = None) -> np.ndarray:
        """Images ``[n, D, D]`` float32 for ``indices`` (default: all), read lazily from the stacks."""
        src = self._require_images()
        idx = np.arange(self.n) if indices is None else self._index(indices)
        return src.read(idx)

    def iter_batches(self, batch_size: int = 256, indices: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices (b,), images [b, D, D] float32)`` over consecutive chunks of the set.

        Reads are grouped by stack file and contiguous frames are read in one
        go; memory use depends on ``batch_size``, not on ``N``.
        """
        src = self._require_images()
        idx = None if indices is None else self._index(indices)
        yield from src.iter_batches(batch_size, idx)

    def validate_images(self, skip_bad: bool = False, batch_size: int = 256) -> np.ndarray:
        """Count images with NaN or Inf pixels; return the ``(N,)`` bool mask of good particles.

        Raises InputError when some are bad unless ``skip_bad`` (then warns).
        """
        src = self._require_images()
        good = np.ones(self.n, dtype=bool)
        for idx, imgs in src.iter_batches(batch_size):
            good[idx] = np.isfinite(imgs).reshape(len(idx), -1).all(axis=1)
        n_bad = int((~good).sum())
        if n_bad:
            first = src.describe(int(np.flatnonzero(~good)[0]))
            msg = f"{self.name}: {n_bad} of {self.n} particles have NaN or Inf pixels (first: {first})"
            if not skip_bad:
                raise InputError(msg + "; remove them or pass --skip-bad to leave them out")
            warnings.warn(msg + "; leaving them out", stacklevel=2)
        return good

    # --------------------------------------------------------------- builders
    @classmethod
    def from_file(
        cls, path: str | os.PathLike, datadir: str | os.PathLike | None = None, apix: float | None = None
    ) -> "ParticleSet":
        """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file.

        Image stacks are looked up in ``datadir`` (by relative path, then by
        file name) and then relative to the metadata file's folder. ``apix``
        (Å/px) overrides the pixel size recorded in the file.
        """
        p = Path(path)
        if not p.exists():
            raise InputError(f"particle file {p} not found; check the path")
        dd = Path(datadir) if datadir is not None else None
        if dd is not None and not dd.is_dir():
            raise InputError(f"--datadir {dd} is not a folder; pass the folder that holds the image stacks")
        from cryoscape.particles.readers import _from_cs, _from_star

        suffix = p.suffix.lower()
        if suffix == ".star":
            ps = _from_star(_star.read_star(p), dd)
        elif suffix == ".cs":
            ps = _from_cs(p, _cs.read_cs(p), dd)
        elif suffix == ".pkl":
            raise InputError(f"{p} is a cryoDRGN pickle; use ParticleSet.from_cryodrgn(images, poses=..., ctf=...)")
        else:
            raise InputError(f"{p}: unknown particle file type {suffix!r}; pass a RELION .star or cryoSPARC .cs file")
        if apix is not None:
            ps._set_apix(float(apix))
        else:
            ps._fill_apix_from_header()
        return ps

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
        src: ImageSource | None = None
        hdr_box, hdr_apix = 0, 0.0
        name = "cryoDRGN particles"
        if isinstance(images, np.ndarray) or hasattr(images, "detach"):
            src = ArrayImageSource(images)  # type: ignore[arg-type]
            hdr_box = int(src.images.shape[-1])
        elif images is not None:
            h = read_stack_header(images)
            src = StackImageSource([Path(images)], np.zeros(h.n, np.int32), np.arange(h.n))
            hdr_box, hdr_apix = h.nx, h.apix
            name = str(images)
        fields: dict[str, np.ndarray] | None = None
        if ctf is not None:
            fields = _drgn.ctf_array_to_fields(_drgn.read_ctf_pkl(ctf))
            name = name if images is not None else str(ctf)
        rot = trans = None
        if poses is not None:
            rot, trans = _drgn.read_pose_pkl(poses)
            name = name if images is not None or ctf is not None else str(poses)
        n_candidates = {len(x) for x in (src, rot, None if fields is None else fields["box"]) if x is not None}
        if not n_candidates:
            raise InputError("from_cryodrgn needs at least one of images, poses or ctf; pass the cryoDRGN files")
        if len(n_candidates) > 1:
            raise InputError(f"cryoDRGN inputs disagree on the number of particles {sorted(n_candidates)}; pass matching files")
        n = n_candidates.pop()
        box = fields["box"] if fields is not None else np.full(n, hdr_box, np.int64)
        ap = np.full(n, float(apix)) if apix is not None else fields["apix"] if fields is not None else np.full(n, hdr_apix or np.nan)
        shifts = None
        if rot is not None:
            trans = np.zeros((n, 2)) if trans is None else trans
            if np.any(box <= 0):
                raise InputError(f"{poses}: translations are box fractions but the box size is unknown; pass the image stack or ctf.pkl")
            shifts = trans * box[:, None] * ap[:, None]
        ctf_fields = None if fields is None else {f: fields[f] for f in CTF_FIELDS}
        return cls(n, images=src, rotations=rot, shifts_A=shifts, ctf=ctf_fields, apix_per_particle=ap, box_per_particle=box, name=name)

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
        src: ImageSource | None = None
        hdr_box, hdr_apix = 0, 0.0
        if image_path is not None and (isinstance(image_path, np.ndarray) or hasattr(image_path, "detach")):
            src = ArrayImageSource(image_path)  # type: ignore[arg-type]
            hdr_box = int(src.images.shape[-1])
        elif image_path is not None:
            h = read_stack_header(image_path)
            if h.nx != h.ny:
                raise InputError(f"{image_path} holds non-square images ({h.nx}×{h.ny} px); crop them to a square box first")
            src = StackImageSource([Path(image_path)], np.zeros(h.n, np.int32), np.arange(h.n))
            hdr_box, hdr_apix = h.nx, h.apix
            name = name if name != "particle set" else str(image_path)
        sizes = {len(x) for x in (src, rotations, shifts_A) if x is not None}
        if n is not None:
            sizes.add(int(n))
        if ctf is not None and "defocus_u_A" in ctf:
            sizes.add(len(np.atleast_1d(ctf["defocus_u_A"])))
        elif defocus_u_A is not None and np.ndim(defocus_u_A) > 0:
            sizes.add(len(defocus_u_A))
        if len(sizes) != 1:
            raise InputError(f"from_arrays: inputs disagree on the number of particles ({sorted(sizes) or 'none given'}); pass n or matching arrays")
        count = sizes.pop()
        fields: dict[str, Any] | None = None
        if ctf is not None:
            fields = dict(ctf)
        elif defocus_u_A is not None:
            fields = {
                "defocus_u_A": defocus_u_A,
                "defocus_v_A": defocus_u_A if defocus_v_A is None else defocus_v_A,
                "defocus_angle_deg": defocus_angle_deg,
                "voltage_kV": voltage_kV,
                "cs_mm": cs_mm,
                "amplitude_contrast": amplitude_contrast,
                "phase_shift_deg": phase_shift_deg,
                "bfactor_A2": bfactor_A2,
            }
        if apix is None:
            apix = hdr_apix if hdr_apix > 0 else np.nan
        bx = box if box is not None else hdr_box
        if shifts_A is None and rotations is not None:
            shifts_A = np.zeros((count, 2))
        return cls(
            count,
            images=src,
            rotations=rotations,
            shifts_A=shifts_A,
            ctf=fields,
            apix_per_particle=apix,
            box_per_particle=bx,
            optics_group=optics_group,
            half_set=half_set,
            name=name,
        )

    def _set_apix(self, apix: float) -> None:
        if not (apix > 0 and np.isfinite(apix)):
            raise InputError(f"pixel size {apix} Å given for {self.name} is not positive; pass the right --apix")
        if self.shifts_A is not None and self._source is not None and self._source.kind == "star":
            # 3.0 origins are in pixels: rescale shifts given in Å with the old (or missing) size
            if "rlnOriginX" in self._source.table.columns and "rlnOriginXAngst" not in self._source.table.columns:
                px = self._source.table[["rlnOriginX", "rlnOriginY"]].to_numpy(np.float64)
                self.shifts_A = px * apix
        self.apix_per_particle = np.full(self.n, apix)

    def _fill_apix_from_header(self) -> None:
        """Where the metadata has no pixel size, take it (with a warning) from the first stack header."""
        missing = ~(np.isfinite(self.apix_per_particle) & (self.apix_per_particle > 0))
        if not missing.any() or not isinstance(self.images, StackImageSource) or not self.images.paths:
            return
        p = self.images.paths[int(self.images.file_index[np.flatnonzero(missing)[0]])]
        if not p.is_file():
            return
        h = read_stack_header(p)
        if h.apix > 0:
            warnings.warn(f"{self.name} records no pixel size; using {h.apix:g} Å/px from the header of {p}", stacklevel=3)
            self.apix_per_particle = np.where(missing, h.apix, self.apix_per_particle)
            if self.shifts_A is not None and self._source is not None and self._source.kind == "star":
                t = self._source.table
                if "rlnOriginX" in t.columns and "rlnOriginXAngst" not in t.columns:
                    px = t[["rlnOriginX", "rlnOriginY"]].to_numpy(np.float64)
                    self.shifts_A = px * self.apix_per_particle[:, None]

    # ---------------------------------------------------------------- writers
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


def _frames_equal(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.equals(b)

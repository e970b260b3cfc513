"""Atomic structures and trajectories as Gaussian-atom densities.

A structure is one or more frames of atom coordinates (Å, ordered x, y, z)
sharing one atom list. It comes from

* the built-in AdK closed→open trajectory (``"adk"``, 98 frames, 1656 heavy
  atoms; see ``cryoscape/data/README.md`` for its origin and licence),
* a trajectory ``.npz`` with per-frame coordinates (keys as in the AdK file:
  ``heavy_xyz`` (F, A, 3), optional ``heavy_element``, ``heavy_resid``,
  ``heavy_name``, ``ca_index_in_heavy``; ``xyz``/``coords`` and
  ``element``/``resid``/``name`` are accepted too), or
* an atomic model read with gemmi (``.pdb``, ``.cif``, ``.mmcif``, ``.ent``,
  optionally gzipped). Every model of the file becomes one frame when all
  models hold the same atoms; hydrogens and waters are removed.

Each atom is drawn as an isotropic 3D Gaussian ``a·exp(−|r−r₀|²/(2σ²))/(2πσ²)^{3/2}``
(unit-integral profile times the amplitude ``a``):

* amplitude ``a`` = the atomic number Z (electron count of the neutral atom), a
  simple proxy for an atom's scattering strength; the units of the density
  are therefore "electrons" and arbitrary as far as image SNR is concerned.
* width ``σ = max(atom_sigma_A, min_sigma_px · apix)``. ``atom_sigma_A``
  (default 0.6 Å) stands for the atom's own potential blurred by thermal
  motion (B ≈ 20 Å²). The floor of one pixel keeps the density effectively
  band-limited at Nyquist: the Fourier transform of the Gaussian,
  ``exp(−2π²σ²k²)``, has fallen to exp(−π²/2) ≈ 0.7 % at k = 1/(2·apix) when
  σ = apix, so sampled projections and rasterised volumes hardly alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cryoscape.errors import InputError

#: Rigid CORE domain of adenylate kinase (residue ranges, inclusive).
ADK_CORE_RESIDUES: tuple[tuple[int, int], ...] = ((1, 29), (60, 121), (160, 214))
#: LID domain of adenylate kinase (moves most along the closed→open path).
ADK_LID_RESIDUES: tuple[tuple[int, int], ...] = ((122, 159),)
#: NMP-binding domain of adenylate kinase.
ADK_NMP_RESIDUES: tuple[tuple[int, int], ...] = ((30, 59),)

#: Default intrinsic atom width (Å): potential plus thermal blur, B ≈ 20 Å².
DEFAULT_ATOM_SIGMA_A: float = 0.6
#: Default floor of the atom width in pixels (band limit at Nyquist).
DEFAULT_MIN_SIGMA_PX: float = 1.0

MODEL_SUFFIXES: tuple[str, ...] = (".pdb", ".ent", ".cif", ".mmcif")
ADK_NAME = "adk"
_ADK_FILE = "adk_dims_heavy.npz"


@dataclass
class AtomicStructure:
    """Frames of atom coordinates sharing one atom list.

    Attributes:
        frames_A: (F, A, 3) float32 coordinates in Å, ordered (x, y, z).
        elements: (A,) element symbols (str).
        resid: (A,) int residue sequence numbers (−1 where unknown).
        atom_names: (A,) atom names (str; "" where unknown).
        name: short label for reports.
        source: where the coordinates came from.
        default_align_residues: residue ranges to superpose frames on when the
            caller gives none (the AdK CORE for the built-in trajectory).
    """

    frames_A: np.ndarray
    elements: np.ndarray
    resid: np.ndarray
    atom_names: np.ndarray
    name: str
    source: str
    default_align_residues: tuple[tuple[int, int], ...] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frames_A = np.ascontiguousarray(self.frames_A, dtype=np.float32)
        if self.frames_A.ndim == 2:
            self.frames_A = self.frames_A[None]
        if self.frames_A.ndim != 3 or self.frames_A.shape[-1] != 3:
            raise InputError(f"{self.source}: coordinates must have shape (frames, atoms, 3), got {self.frames_A.shape}")
        n = self.frames_A.shape[1]
        for label in ("elements", "resid", "atom_names"):
            if len(getattr(self, label)) != n:
                raise InputError(f"{self.source}: {label} has {len(getattr(self, label))} entries for {n} atoms")
        if not np.all(np.isfinite(self.frames_A)):
            raise InputError(f"{self.source}: coordinates contain NaN or Inf; fix or remove those atoms")

    @property
    def n_frames(self) -> int:
        """Number of frames F."""
        return int(self.frames_A.shape[0])

    @property
    def n_atoms(self) -> int:
        """Number of atoms A."""
        return int(self.frames_A.shape[1])

    def ca_indices(self) -> np.ndarray:
        """Indices of C-alpha atoms (name "CA", element C); empty if names are unknown."""
        names = np.char.strip(self.atom_names.astype(str))
        elem = np.char.upper(np.char.strip(self.elements.astype(str)))
        return np.flatnonzero((names == "CA") & (elem == "C"))

    def amplitudes(self) -> np.ndarray:
        """(A,) float32 Gaussian amplitudes: atomic numbers (see module docstring)."""
        return element_amplitudes(self.elements, source=self.source)

    def sigmas_A(self, apix: float, atom_sigma_A: float = DEFAULT_ATOM_SIGMA_A,
                 min_sigma_px: float = DEFAULT_MIN_SIGMA_PX) -> np.ndarray:
        """(A,) float32 Gaussian widths in Å for pixel size ``apix`` (Å/px)."""
        return atom_sigmas_A(self.n_atoms, apix, atom_sigma_A, min_sigma_px)


def element_amplitudes(elements: Sequence[str] | np.ndarray, source: str = "structure") -> np.ndarray:
    """Atomic number Z of each element symbol, as (A,) float32 amplitudes.

    Raises:
        InputError: an element symbol gemmi does not know.
    """
    import gemmi

    symbols = np.asarray(elements).astype(str)
    uniq, inverse = np.unique(np.char.strip(symbols), return_inverse=True)
    z = np.empty(len(uniq), dtype=np.float32)
    for i, sym in enumerate(uniq):
        number = gemmi.Element(sym).atomic_number if sym else 0
        if number <= 0:
            raise InputError(f"{source}: unknown element symbol {sym!r}; fix the element column of the model")
        z[i] = number
    return z[inverse.reshape(-1)]


def atom_sigmas_A(n_atoms: int, apix: float, atom_sigma_A: float = DEFAULT_ATOM_SIGMA_A,
                  min_sigma_px: float = DEFAULT_MIN_SIGMA_PX) -> np.ndarray:
    """(A,) float32 widths ``max(atom_sigma_A, min_sigma_px·apix)`` in Å."""
    if apix <= 0 or atom_sigma_A < 0 or min_sigma_px < 0:
        raise InputError("atom widths need apix > 0, atom_sigma_A >= 0 and min_sigma_px >= 0")
    sigma = max(float(atom_sigma_A), float(min_sigma_px) * float(apix))
    if sigma <= 0:
        raise InputError("atom width is zero; give atom_sigma_A > 0 or min_sigma_px > 0")
    return np.full(n_atoms, sigma, dtype=np.float32)


def parse_residue_ranges(text: str | Sequence[Sequence[int]] | None) -> tuple[tuple[int, int], ...] | None:
    """Parse "1-29,60-121,160-214" (inclusive ranges, single numbers allowed).

    Sequences of (lo, hi) pairs pass through; None and "all" give None.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple((int(lo), int(hi)) for lo, hi in text)
    if text.strip().lower() in ("", "all"):
        return None
    ranges = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                lo, hi = int(part[:cut]), int(part[cut + 1:])
            else:
                lo = hi = int(part)
        except ValueError:
            raise InputError(f"cannot read residue range {part!r}; write ranges like 1-29,60-121,160-214") from None
        if hi < lo:
            raise InputError(f"residue range {part!r} is empty; write low-high with low <= high")
        ranges.append((lo, hi))
    return tuple(ranges)


def residue_mask(resid: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """(A,) bool: atoms whose residue number lies in any inclusive range."""
    resid = np.asarray(resid)
    mask = np.zeros(resid.shape, dtype=bool)
    for lo, hi in ranges:
        mask |= (resid >= lo) & (resid <= hi)
    return mask


def load_structure(spec: str | Path) -> AtomicStructure:
    """Load ``"adk"``, a trajectory ``.npz`` or an atomic model (PDB/mmCIF)."""
    if isinstance(spec, str) and spec.strip().lower() == ADK_NAME:
        return adk_trajectory()
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{path}: no such file; give 'adk', a trajectory .npz or a .pdb/.cif model")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] == ".npz":
        return load_npz_trajectory(path)
    if suffixes and suffixes[-1] in MODEL_SUFFIXES:
        return load_atomic_model(path)
    raise InputError(f"{path}: unknown structure format; give 'adk', a .npz trajectory or a .pdb/.cif model")


def adk_trajectory() -> AtomicStructure:
    """The built-in AdK closed→open DIMS trajectory (98 frames, 1656 heavy atoms)."""
    ref = resources.files("cryoscape.data").joinpath(_ADK_FILE) if _has_data_package() else None
    path = Path(str(ref)) if ref is not None else Path(__file__).resolve().parents[1] / "data" / _ADK_FILE
    st = load_npz_trajectory(path)
    st.name = ADK_NAME
    st.default_align_residues = ADK_CORE_RESIDUES
    return st


def _has_data_package() -> bool:
    try:
        resources.files("cryoscape.data")
    except (ModuleNotFoundError, TypeError):
        return False
    return True


def _first_key(data: np.lib.npyio.NpzFile, keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in data.files:
            return key
    return None


def load_npz_trajectory(path: str | Path) -> AtomicStructure:
    """Read a trajectory ``.npz``: coordinates (F, A, 3) in Å plus optional atom metadata.

    Missing element symbols default to carbon; missing residue numbers to −1.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as .npz ({exc}); give a numpy .npz with a heavy_xyz array") from None
    with data:
        xyz_key = _first_key(data, ("heavy_xyz", "xyz", "coords", "coordinates"))
        if xyz_key is None:
            raise InputError(f"{path}: no coordinate array; store frames as 'heavy_xyz' (F, atoms, 3) in Å")
        frames = np.asarray(data[xyz_key], dtype=np.float32)
        if frames.ndim == 2:
            frames = frames[None]
        n = frames.shape[1] if frames.ndim == 3 else 0
        ek = _first_key(data, ("heavy_element", "element", "elements"))
        rk = _first_key(data, ("heavy_resid", "resid", "resids"))
        nk = _first_key(data, ("heavy_name", "name", "names", "atom_name"))
        elements = data[ek].astype(str) if ek else np.full(n, "C")
        resid = data[rk].astype(np.int64) if rk else np.full(n, -1, dtype=np.int64)
        names = data[nk].astype(str) if nk else np.full(n, "")
        if not nk and "ca_index_in_heavy" in data.files:
            names = names.astype("<U4")
            names[data["ca_index_in_heavy"]] = "CA"
        origin = str(data["source"]) if "source" in data.files else ""
    return AtomicStructure(frames, elements, resid, names, name=path.stem, source=str(path),
                           extra={"origin": origin} if origin else {})


def _read_gemmi_structure(path: Path) -> Any:
    import gemmi

    try:
        return gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: gemmi cannot read this model ({exc}); check the file is PDB or mmCIF") from None


def load_atomic_model(path: str | Path) -> AtomicStructure:
    """Read a PDB/mmCIF model with gemmi; each model with identical atoms is one frame.

    Hydrogens and waters are removed. Models whose atom list differs from the
    first one are refused with an InputError.
    """
    path = Path(path)
    st = _read_gemmi_structure(path)
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_empty_chains()
    if len(st) == 0:
        raise InputError(f"{path}: no models with atoms; check the file holds ATOM/HETATM records")
    frames, keys0 = [], None
    elements = resid = names = None
    for model in st:
        xyz, key, el, rs, nm = [], [], [], [], []
        for chain in model:
            for res in chain:
                for atom in res:
                    xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
                    key.append((chain.name, res.seqid.num, res.seqid.icode, atom.name, atom.altloc))
                    el.append(atom.element.name)
                    rs.append(res.seqid.num)
                    nm.append(atom.name)
        if not xyz:
            continue
        if keys0 is None:
            keys0, elements, resid, names = key, np.array(el), np.array(rs, dtype=np.int64), np.array(nm)
        elif key != keys0:
            raise InputError(f"{path}: model {model.num} has different atoms than the first model; "
                             "give models with identical atom lists or one model")
        frames.append(np.asarray(xyz, dtype=np.float32))
    if not frames:
        raise InputError(f"{path}: no non-hydrogen, non-water atoms; check the model")
    return AtomicStructure(np.stack(frames), elements, resid, names, name=path.stem.split(".")[0], source=str(path))

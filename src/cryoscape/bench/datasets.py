"""Benchmark datasets with ground truth, built deterministically and cached.

All are made from the built-in AdK closed→open trajectory (98 frames,
superposed on the C-alpha atoms of the CORE domain) with
:func:`cryoscape.simulate.simulate_dataset`:

``adk-1d``
    the closed→open path: conformations uniform over the 98 frames; the
    ground-truth coordinate is ``frame / 97`` in [0, 1].
``adk-1d-snr0.01``
    the same particles (same seed: poses, CTFs, conformations) at SNR 0.01.
``adk-2d``
    two independent motions. After superposition on the CORE, a model is made
    for every cell ``(a, b)`` of a ``G × G`` grid (G = 10): the LID domain
    (residues 122–159) from path frame ``i = grid[a]`` and the NMP domain
    (residues 30–59) from frame ``j = grid[b]``; every other atom (the CORE)
    from frame 0. ``grid`` = ``round(linspace(0, 97, G))`` = 0, 11, 22, 32, 43,
    54, 65, 75, 86, 97. Conformation ``c = a·G + b`` (uniform over the G² cells);
    ``truth.npz`` ``coordinate`` is (N, 2): ``(i / 97, j / 97)`` (LID, NMP)
    (the structures: :mod:`cryoscape.bench.grid`).
``adk-junk``
    N images of which 90 % are particles simulated with the ``adk-1d``
    settings (own seed) and 10 % junk (half pure noise, half a random blob
    model, same optics, CTF ranges and noise level), at random positions and
    flagged in the truth (see :mod:`cryoscape.bench.junk`).

Shared settings (:class:`DatasetSpec`): 20 000 particles, box 64 px at 1.5 Å/px,
SNR 0.05, mean defocus uniform in 1.0–2.5 µm (astigmatism up to 0.05 µm), 300 kV,
Cs 2.7 mm, amplitude contrast 0.1, Haar-uniform poses, origins uniform in a disc
of 2 px.

:func:`build_dataset` writes ``cache_dir/<name>/`` (``particles.mrcs``,
``particles.star``, ``truth.npz``, ``spec.json``). ``spec.json`` is written
last and holds a hash of the settings: a folder with a matching hash is reused
as it is. The same settings give a byte-identical image stack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from cryoscape.bench.grid import _grid_truth, grid_frames, grid_structure  # noqa: F401  grid_frames: re-exported
from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.atomic import atomic_path, write_text_atomic
from cryoscape.simulate import (
    SimulationResult,
    adk_trajectory,
    ground_truth_volume,
    load_truth,
    simulate_dataset,
)

#: Bumped when the way datasets are built changes (invalidates caches).
FORMAT_VERSION = 1
SPEC_NAME = "spec.json"
STACK_NAME = "particles.mrcs"
STAR_NAME = "particles.star"
TRUTH_NAME = "truth.npz"
PARTS_DIR = ".parts"
BATCH_SIZE = 256  # fixed: the stack bytes depend on it

DatasetKind = Literal["path", "grid", "junk"]


@dataclass(frozen=True)
class DatasetSpec:
    """Every parameter of a benchmark dataset.

    Attributes:
        name: registry name (also the cache folder name).
        kind: "path" (1D trajectory), "grid" (2D LID × NMP) or "junk".
        description: one line for listings (not part of the hash).
        n_particles: number of images N (junk included).
        box: image size D (px, even).
        apix: pixel size (Å/px).
        snr: signal-to-noise ratio (variance ratio inside the particle circle).
        defocus_min_um, defocus_max_um: range of the mean defocus (µm, underfocus > 0).
        astigmatism_max_um: largest defocus difference U − V (µm).
        voltage_kV: acceleration voltage (kV).
        cs_mm: spherical aberration (mm).
        amplitude_contrast: amplitude contrast fraction.
        shift_max_px: radius (px) of the disc the origins are drawn from.
        seed: seed of every random draw.
        grid_size: G, cells per axis of the 2D grid ("grid" only).
        junk_fraction: share of the N images that are junk ("junk" only).
        junk_noise_share: share of the junk that is pure noise (the rest decoys).
        junk_blobs: Gaussian clusters in the decoy model.
    """

    name: str
    kind: DatasetKind
    description: str = ""
    n_particles: int = 20_000
    box: int = 64
    apix: float = 1.5
    snr: float = 0.05
    defocus_min_um: float = 1.0
    defocus_max_um: float = 2.5
    astigmatism_max_um: float = 0.05
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    shift_max_px: float = 2.0
    seed: int = 0
    grid_size: int = 10
    junk_fraction: float = 0.0
    junk_noise_share: float = 0.5
    junk_blobs: int = 6

    def resized(self, n_particles: int | None = None, box: int | None = None) -> "DatasetSpec":
        """A copy with another N and/or box; a new box keeps the field of view (apix scaled, Å/px)."""
        spec = self
        if n_particles is not None:
            spec = dataclasses.replace(spec, n_particles=int(n_particles))
        if box is not None and int(box) != self.box:
            spec = dataclasses.replace(spec, box=int(box), apix=self.apix * self.box / int(box))
        return spec

    def settings(self) -> dict[str, Any]:
        """The parameters that determine the data (everything but the description)."""
        d = dataclasses.asdict(self)
        d.pop("description")
        return d

    def spec_hash(self) -> str:
        """SHA-256 (hex) of the settings and :data:`FORMAT_VERSION`."""
        text = json.dumps({"format": FORMAT_VERSION, **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _registry() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec("adk-1d", "path", "AdK closed→open path, 98 frames, SNR 0.05", seed=1),
        DatasetSpec("adk-1d-snr0.01", "path", "adk-1d at SNR 0.01 (same poses, CTFs, frames)", snr=0.01, seed=1),
        DatasetSpec("adk-2d", "grid", "AdK LID × NMP motions on a 10 × 10 grid of path frames", seed=2),
        DatasetSpec("adk-junk", "junk", "adk-1d with 10 % junk (noise and a blob decoy)", seed=3,
                    junk_fraction=0.1),
    ]
    return {s.name: s for s in specs}


#: Registry of benchmark datasets: name → :class:`DatasetSpec`.
DATASETS: dict[str, DatasetSpec] = _registry()


def get_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name``."""
    if name not in DATASETS:
        raise InputError(f"unknown benchmark dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass(repr=False)
class BenchmarkDataset(SimulationResult):
    """A built benchmark dataset: paths, ground truth and the spec it was made from.

    ``config_path`` is ``spec.json``; ``built`` tells whether this call made
    the files (False: reused from the cache).
    """

    name: str = ""
    spec: DatasetSpec | None = None
    built: bool = False

    def true_volume(self, conformation: int | tuple[int, int] | str = 0,
                    box: int | None = None, apix: float | None = None) -> tuple[np.ndarray, float]:
        """Ground-truth volume ``[D, D, D]`` and voxel size (Å); see :func:`true_volume`."""
        return truth_volume(self.truth, conformation, box, apix)

    def __repr__(self) -> str:
        return f"BenchmarkDataset({self.name!r}, {super().__repr__()})"


# ----------------------------------------------------------------------------- builders


def _sim_kwargs(spec: DatasetSpec, progress: bool) -> dict[str, Any]:
    """Keyword arguments of :func:`simulate_dataset` shared by all builders."""
    return dict(box=spec.box, apix=spec.apix, snr=spec.snr, defocus_min_um=spec.defocus_min_um,
                defocus_max_um=spec.defocus_max_um, astigmatism_max_um=spec.astigmatism_max_um,
                voltage_kV=spec.voltage_kV, cs_mm=spec.cs_mm, amplitude_contrast=spec.amplitude_contrast,
                shift_max_px=spec.shift_max_px, seed=spec.seed, batch_size=BATCH_SIZE, progress=progress,
                force=True)


def _build_path(spec: DatasetSpec, out: Path, progress: bool) -> None:
    simulate_dataset("adk", n_particles=spec.n_particles, out_dir=out, **_sim_kwargs(spec, progress))


def _build_grid(spec: DatasetSpec, out: Path, progress: bool) -> None:
    structure, cells = grid_structure(spec.grid_size)
    res = simulate_dataset(structure, n_particles=spec.n_particles, out_dir=out, **_sim_kwargs(spec, progress))
    truth = _grid_truth(res.truth, cells, adk_trajectory().n_frames, spec.grid_size)
    _save_truth(out / TRUTH_NAME, truth)


def _build_junk(spec: DatasetSpec, out: Path, progress: bool) -> None:
    from cryoscape.bench.junk import blob_structure, junk_layout, merge_junk

    kinds = junk_layout(spec.n_particles, spec.junk_fraction, spec.junk_noise_share, spec.seed)
    n_junk = int((kinds != 0).sum())
    if n_junk in (0, spec.n_particles):
        raise InputError(f"{spec.n_particles} particles give {n_junk} junk images; use more particles")
    parts = out / PARTS_DIR
    kw = _sim_kwargs(spec, progress)
    good = simulate_dataset("adk", n_particles=spec.n_particles - n_junk, out_dir=parts / "adk", **kw)
    decoy_model = blob_structure(adk_trajectory(), spec.seed, spec.junk_blobs)
    kw.update(snr=math.inf, seed=spec.seed + 1)
    decoy = simulate_dataset(decoy_model, n_particles=n_junk, out_dir=parts / "decoy", **kw)
    merge_junk(good, decoy, kinds, spec.seed, out, force=True)
    shutil.rmtree(parts)


_BUILDERS: dict[str, Callable[[DatasetSpec, Path, bool], None]] = {
    "path": _build_path, "grid": _build_grid, "junk": _build_junk,
}


def _save_truth(path: Path, truth: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **truth)


# ----------------------------------------------------------------------------- cache


def _stored_hash(out: Path) -> str | None:
    """Hash in ``out/spec.json``, or None when absent or unreadable (an unfinished build)."""
    try:
        return str(json.loads((out / SPEC_NAME).read_text(encoding="utf-8"))["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files_present(out: Path) -> bool:
    return all((out / f).is_file() for f in (STACK_NAME, STAR_NAME, TRUTH_NAME, SPEC_NAME))


def _write_spec(out: Path, spec: DatasetSpec) -> None:
    from cryoscape import __version__

    doc = {"name": spec.name, "hash": spec.spec_hash(), "format": FORMAT_VERSION,
           "description": spec.description, "spec": spec.settings(), "cryoscape_version": __version__,
           "outputs": {"stack": STACK_NAME, "star": STAR_NAME, "truth": TRUTH_NAME}}
    write_text_atomic(out / SPEC_NAME, json.dumps(doc, indent=2) + "\n", force=True)


def _result(out: Path, spec: DatasetSpec, built: bool, elapsed_s: float) -> BenchmarkDataset:
    return BenchmarkDataset(out, out / STAR_NAME, out / STACK_NAME, out / TRUTH_NAME, out / SPEC_NAME,
                            load_truth(out / TRUTH_NAME), elapsed_s=elapsed_s, name=spec.name, spec=spec,
                            built=built)


def build_dataset(name: str, cache_dir: str | os.PathLike, n_particles: int | None = None,
                  box: int | None = None, force: bool = False, progress: bool = True) -> BenchmarkDataset:
    """Build (or reuse) benchmark dataset ``name`` in ``cache_dir/name/``.

    Args:
        name: a key of :data:`DATASETS`.
        cache_dir: folder holding the dataset folders.
        n_particles: override N (e.g. small sets for tests).
        box: override the box (px); the pixel size is scaled to keep the field of view (Å).
        force: rebuild even when a matching dataset exists, or replace one built
            with other settings.
        progress: show progress bars.

    Returns:
        A :class:`BenchmarkDataset` (paths, truth, spec, ``built``).

    Raises:
        OutputExistsError: the folder holds this dataset built with other
            settings and ``force`` is false.
    """
    spec = get_spec(name).resized(n_particles, box)
    out = Path(cache_dir) / spec.name
    stored = _stored_hash(out)
    if not force and stored == spec.spec_hash() and _files_present(out):
        return _result(out, spec, built=False, elapsed_s=0.0)
    if stored is not None and stored != spec.spec_hash() and not force:
        raise OutputExistsError(f"{out} holds {name} built with other settings; pass force=True to rebuild it "
                                "or choose another cache folder")
    t0 = time.perf_counter()
    (out / SPEC_NAME).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _BUILDERS[spec.kind](spec, out, progress)
    _write_spec(out, spec)
    return _result(out, spec, built=True, elapsed_s=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- volumes


def truth_volume(truth: str | os.PathLike | Mapping[str, Any], conformation: int | tuple[int, int] | str = 0,
                 box: int | None = None, apix: float | None = None) -> tuple[np.ndarray, float]:
    """Ground-truth volume ``[D, D, D]`` float32 ([z, y, x]) and voxel size (Å) from a truth.

    ``conformation``: a frame index (adk-1d, adk-junk), a grid cell index
    ``a·G + b`` or the pair ``(a, b)`` (adk-2d), or ``"decoy"`` (adk-junk's
    decoy model). ``box`` (px) and ``apix`` (Å/px) default to the dataset's grid.
    """
    t = load_truth(truth)
    if isinstance(conformation, str):
        if conformation != "decoy":
            raise InputError(f"conformation {conformation!r}: give an index, a grid cell (a, b) or 'decoy'")
        from cryoscape.bench.junk import decoy_volume

        return decoy_volume(t, box, apix)
    if isinstance(conformation, (tuple, list)):
        conformation = _cell_index(t, conformation)
    return ground_truth_volume(t, int(conformation), box, apix)


def _cell_index(truth: Mapping[str, np.ndarray], cell: tuple[int, int] | list[int]) -> int:
    """Cell index ``a·G + b`` of grid position (a, b) (LID, NMP grid indices)."""
    if "grid_size" not in truth:
        raise InputError("a grid cell (a, b) applies to the 2D dataset only; give a frame index")
    G = int(truth["grid_size"])
    a, b = (int(v) for v in cell)
    if not (0 <= a < G and 0 <= b < G):
        raise InputError(f"grid cell ({a}, {b}) is outside the {G} x {G} grid")
    return a * G + b


def true_volume(dataset_dir: str | os.PathLike, conformation: int | tuple[int, int] | str = 0,
                box: int | None = None, apix: float | None = None) -> tuple[np.ndarray, float]:
    """Ground-truth volume of a built dataset folder (see :func:`truth_volume`)."""
    return truth_volume(Path(dataset_dir) / TRUTH_NAME, conformation, box, apix)

"""``cryoscape refine``'s inputs and outputs around :func:`cryoscape.methods.refine.refine_poses`.

Output folder ``DIR``::

    DIR/particles.star      the input table with every column kept, the poses (angles, origins in Å)
                            replaced and _rlnMaxValueProbDistribution (the best pose's posterior) added
    DIR/map.mrc             the map of ``cryoscape reconstruct`` on the refined poses, with
    DIR/map_half1.mrc, map_half2.mrc, map_fsc.txt/.json/.png, map_filter.txt
    DIR/refine.json         the settings and every iteration (search, step, resolutions, confidence)
    DIR/log.txt             one line per iteration
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.atomic import write_text_atomic
from cryoscape.io.run_log import append_log_line

__all__ = ["RefineOutcome", "run_refine", "OUTPUT_NAMES"]

#: The files ``run_refine`` writes into its folder (besides the map's companions).
OUTPUT_NAMES = ("particles.star", "map.mrc", "refine.json", "log.txt")


@dataclass
class RefineOutcome:
    """What :func:`run_refine` did: the folder, the final resolution (Å), the iterations and the time (s)."""

    folder: Path
    resolution_A: float
    history: list[dict[str, Any]]
    elapsed_s: float


def _check_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file; give a folder for the refinement's outputs")
    taken = [n for n in OUTPUT_NAMES if (out / n).exists()]
    if taken and not force:
        raise OutputExistsError(f"{out} already holds {', '.join(taken)}; pass --force to overwrite or choose "
                                "another folder")


def load_initial(path: str | os.PathLike | None, box: int, apix: float) -> torch.Tensor:
    """The initial map ``[D, D, D]``; one-line errors for a missing one or another box or pixel size."""
    from cryoscape.io.mrc import read_mrc

    if path is None:
        raise InputError("refine needs --initial MAP (a low-pass filtered consensus or a model map); "
                         "ab initio from no map is not available yet")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"initial map {p} not found; check the path")
    vol, vapix = read_mrc(p)
    if vol.shape != (box, box, box) or (vapix and abs(float(vapix) - apix) > 1e-3 * apix):
        raise InputError(f"initial map {p} is {'x'.join(map(str, vol.shape))} at {float(vapix or 0):.4g} Å/px but the "
                         f"particles are {box}³ at {apix:.4g} Å/px; resample the map to the particles' box and pixel "
                         "size first (e.g. relion_image_handler --rescale_angpix and --new_box)")
    return torch.as_tensor(np.asarray(vol, dtype=np.float32))


def run_refine(particles_path: str | os.PathLike, out_dir: str | os.PathLike, initial: str | os.PathLike | None,
               settings: Any, *, datadir: str | os.PathLike | None = None, force: bool = False,
               progress: bool = True) -> RefineOutcome:
    """Refine the poses of the particles from ``initial`` and write ``out_dir`` (module docstring)."""
    from cryoscape.methods.refine import refine_poses
    from cryoscape.models.discrete import DiscreteVolumes
    from cryoscape.particles import ParticleSet
    from cryoscape.reconstruct import reconstruct

    out = Path(out_dir)
    _check_folder(out, force)
    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    box, apix = int(ps.box), float(ps.apix)
    vol = load_initial(initial, box, apix)
    if hasattr(ps, "check_images"):
        ps.check_images()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    if force:
        log.unlink(missing_ok=True)
    say = lambda m: append_log_line(log, m)
    say(f"refining {len(ps)} particles of {box}² at {apix:.4g} Å/px from {initial}")
    start = time.perf_counter()
    result = refine_poses(ps, vol, settings, lambda v: DiscreteVolumes(torch.as_tensor(v)[None], apix),
                          progress=progress, log=say)
    refined = copy.copy(ps)
    refined.rotations, refined.shifts_A = result.rotations, result.origins_A
    refined.half_set = result.half_sets.astype(np.int8)
    rec = reconstruct(refined, seed=settings.seed, progress=progress, device=settings.device)
    rec.save(out / "map.mrc", force=True)
    _write_star(refined, out / "particles.star", result.confidence)
    elapsed = time.perf_counter() - start
    write_text_atomic(out / "refine.json", json.dumps({"settings": asdict(settings), "iterations": result.history,
                                                       "resolution_A": rec.resolution_A, "seconds": elapsed},
                                                      indent=1, default=float), force=True)
    say(f"done in {elapsed:.1f} s: final map {rec.resolution_A:.2f} Å at FSC 0.143")
    return RefineOutcome(out, float(rec.resolution_A), result.history, elapsed)


def _write_star(ps: Any, path: Path, confidence: np.ndarray) -> None:
    """The refined particles as a STAR with every input column, the new poses and the pose confidence."""
    from cryoscape.io.star import write_star

    optics, rows = ps.star_tables(relative_to=path.parent)
    rows["rlnMaxValueProbDistribution"] = np.asarray(confidence, dtype=np.float64)
    rows["rlnRandomSubset"] = np.asarray(ps.half_set, dtype=np.int64) + 1
    write_star(path, optics, rows, force=True)

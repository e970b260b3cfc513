"""RECOVAR as a peer of the benchmark: ``recovar pipeline`` into a run directory, ``compute_state`` for volumes.

:func:`run_recovar` and :func:`recovar_volume` drive ``recovar pipeline``
(CPU JAX, ``--accept-cpu``) and ``recovar compute_state`` the way
:mod:`cryoscape.bench.peers.cryodrgn` drives cryoDRGN. RECOVAR 1.0.5 installs
and runs here, but its maps from our particles do not agree with the ground
truth (its mean, even on clean single-state data, correlates about 0.26 with
the true map; cryoDRGN reconstructs the same files at 0.99), so the benchmark
refuses ``recovar`` with that reason (:data:`RECOVAR_NOT_VALIDATED`) until the
cause is found.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cryoscape.bench.peers.files import (PEER_DIR, VOLUME_HINTS, _dataset_particles, _fresh_peer_folder, _run_file,
                                         _save_npy, _threads, _volume_hints)
from cryoscape.bench.peers.programs import RECOVAR, PeerError, find_program, run_program, unavailable_reason
from cryoscape.bench.peers.volumes import hinted_volume
from cryoscape.errors import InputError

__all__ = ["RecovarSettings", "recovar_pipeline_command", "recovar_state_command", "read_recovar_latents",
           "recovar_state_volumes", "run_recovar", "recovar_volume", "recovar_unavailable_reason",
           "RECOVAR_NOT_VALIDATED"]


@dataclass
class RecovarSettings:
    """Settings of a RECOVAR fit (``recovar pipeline``) and of its volumes (``recovar compute_state``).

    zdim: dimension of the embedding (RECOVAR fits principal components of the
    covariance and embeds each image in the first ``zdim``); mask: ``sphere``,
    ``from_halfmaps`` or an MRC path (solvent mask); uninvert_data: RECOVAR's
    ``--uninvert-data``: ``true``, what its ``automatic`` check picks for our
    white-on-dark particles (it flips the data when its mean comes out negative);
    n_bins: kernel-regression bins of ``compute_state`` (its default 50);
    threads: CPU threads (None: its own default); extra_args,
    state_args: further arguments of ``pipeline`` / ``compute_state``.
    """

    zdim: int = 4
    mask: str = "sphere"
    uninvert_data: str = "true"
    n_bins: int = 50
    threads: int | None = None
    extra_args: list[str] = field(default_factory=list)
    state_args: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "RecovarSettings":
        """Settings from benchmark options; ``iterations`` is refused (RECOVAR is not iterative)."""
        opts = dict(options)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise InputError(f"unknown recovar option {unknown[0]!r}; choose from {', '.join(sorted(known))}")
        s = cls(**opts)
        s.extra_args = [str(a) for a in s.extra_args]
        s.state_args = [str(a) for a in s.state_args]
        if s.zdim < 1 or s.n_bins < 1:
            raise InputError(f"recovar zdim ({s.zdim}) and n_bins ({s.n_bins}) must be at least 1")
        if s.uninvert_data not in ("true", "false", "automatic"):
            raise InputError(f"recovar uninvert_data is {s.uninvert_data!r}; choose true, false or automatic")
        return s


def recovar_pipeline_command(exe: str | os.PathLike, particles: str | os.PathLike, datadir: str | os.PathLike,
                             poses: str | os.PathLike, ctf: str | os.PathLike, outdir: str | os.PathLike,
                             s: RecovarSettings) -> list[str]:
    """The ``recovar pipeline`` command line (CPU accepted; data sign per ``s.uninvert_data``)."""
    return [str(exe), "pipeline", str(particles), "--datadir", str(datadir), "--poses", str(poses),
            "--ctf", str(ctf), "--mask", str(s.mask), "--zdim", str(s.zdim), "--uninvert-data", s.uninvert_data,
            "--accept-cpu", "-o", str(outdir), *s.extra_args]


def recovar_state_command(exe: str | os.PathLike, result_dir: str | os.PathLike, zfile: str | os.PathLike,
                          outdir: str | os.PathLike, n_bins: int, zdim: int, extra: Sequence[str] = ()) -> list[str]:
    """The ``recovar compute_state`` command line for the latent points in ``zfile``."""
    cmd = [str(exe), "compute_state", str(result_dir), "--latent-points", str(zfile), "-o", str(outdir),
           "--n-bins", str(int(n_bins))]
    if zdim == 1:
        cmd.append("--zdim1")
    return cmd + [str(a) for a in extra]


def read_recovar_latents(pipeline_dir: str | os.PathLike, zdim: int, n_particles: int | None = None) -> np.ndarray:
    """Latent coordinates ``[N, zdim]`` float32 from ``<pipeline>/model/zdim_<zdim>/latent_coords.npy`` (no pickles)."""
    path = Path(pipeline_dir) / "model" / f"zdim_{int(zdim)}" / "latent_coords.npy"
    if not path.is_file():
        raise PeerError(f"{path} not found: recovar pipeline wrote no {zdim}-D embedding; check its log")
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path} is not a plain .npy array ({exc}); rerun recovar pipeline") from exc
    z = np.asarray(z, dtype=np.float32).reshape(len(z), -1)
    if z.shape[1] != zdim or (n_particles is not None and z.shape[0] != n_particles) or not np.all(np.isfinite(z)):
        raise InputError(f"{path} holds {z.shape} latents (finite: {bool(np.all(np.isfinite(z)))}); expected "
                         f"({n_particles}, {zdim}) finite values; rerun recovar pipeline")
    return z


def recovar_state_volumes(result_dir: str | os.PathLike, Z: Any, *, n_bins: int = 50,
                          exe: str | os.PathLike | None = None, threads: int | None = None,
                          workdir: str | os.PathLike | None = None, log: Path | None = None,
                          extra: Sequence[str] = ()) -> np.ndarray:
    """RECOVAR's volumes ``[n, D, D, D]`` float32 at latent points ``Z [n, zdim]`` (``compute_state``, one run).

    Each volume is RECOVAR's kernel-regression reconstruction from the images
    whose latents lie near the point (its ``stateNNN.mrc``).
    """
    from cryoscape.io.mrc import read_mrc

    Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    if Z.shape[0] == 0 or not np.all(np.isfinite(Z)):
        raise InputError(f"latent points must be a finite [n, d] array with n >= 1; got shape {Z.shape}")
    program = Path(exe) if exe is not None else find_program(RECOVAR)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compute_state_", dir=workdir) as tmp:
        zfile = Path(tmp) / "z.txt"
        np.savetxt(zfile, Z, fmt="%.9g")
        out = Path(tmp) / "states"
        run_program(recovar_state_command(program, result_dir, zfile, out, n_bins, Z.shape[1], extra),
                    log or Path(tmp) / "compute_state.log", threads, "recovar compute_state")
        files = [out / f"state{k:03d}.mrc" for k in range(Z.shape[0])]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise PeerError(f"recovar compute_state wrote no {missing[0].name} in {out}; check its log")
        return np.stack([read_mrc(f)[0].astype(np.float32) for f in files])


def run_recovar(dataset: Any, out_dir: Path, progress: bool = False, **options: Any) -> Path:
    """Run RECOVAR's ``pipeline`` on a benchmark dataset and write a ``recovar`` run directory in ``out_dir``.

    ``options``: fields of :class:`RecovarSettings`. Returns ``out_dir``.
    """
    from cryoscape.io.run_dir import RunDirectory

    s = RecovarSettings.from_options(options)
    exe = find_program(RECOVAR)
    ps = _dataset_particles(dataset)
    root = Path(out_dir)
    peer = root / PEER_DIR
    star = Path(dataset.star_path).resolve()
    cmd = recovar_pipeline_command(exe, star, star.parent, peer / "pose.pkl", peer / "ctf.pkl", peer / "pipeline", s)
    config = {"particles": star, "datadir": None, "n_particles": len(ps), "box": int(ps.box),
              "apix": float(ps.apix), "peer": RECOVAR.name, **asdict(s), "command": cmd,
              "result_dir": f"{PEER_DIR}/pipeline"}
    run = RunDirectory.create(root, "recovar", config, force=True)
    _fresh_peer_folder(peer, ps)
    if progress:
        print(f"recovar: {shlex.join(cmd)}", flush=True)
    with run.log(f"recovar pipeline (zdim {s.zdim}, log {peer / 'pipeline.log'})"):
        wall = run_program(cmd, peer / "pipeline.log", s.threads, "recovar pipeline")
    latents = read_recovar_latents(peer / "pipeline", s.zdim, len(ps))
    run.write_latents(latents)
    _save_npy(peer / VOLUME_HINTS, _volume_hints(dataset, latents))
    run.write_metrics({"pipeline_wall_s": wall}, merge=False)
    return root


RECOVAR_NOT_VALIDATED = (
    "RECOVAR's reconstructions from our particles do not match the ground truth (its mean correlates 0.26 with "
    "the true map on clean data where cryoDRGN reaches 0.99 from the same files; see the RECOVAR section of "
    "benchmarks/README.md); call cryoscape.bench.peers.run_recovar directly to investigate"
)
"""Why ``recovar`` is refused by the benchmark even where it is installed."""


def recovar_unavailable_reason() -> str | None:
    """The benchmark's availability check of ``recovar``: the missing program, else :data:`RECOVAR_NOT_VALIDATED`."""
    return unavailable_reason(RECOVAR) or RECOVAR_NOT_VALIDATED


def _recovar_evaluate(run: Any, Z: np.ndarray) -> np.ndarray:
    """Volumes ``[n, D, D, D]`` of a ``recovar`` run at ``Z [n, zdim]`` (one ``compute_state``)."""
    result_dir = _run_file(run, "result_dir", f"{PEER_DIR}/pipeline")
    return recovar_state_volumes(result_dir, Z, n_bins=int(run.params.get("n_bins", 50)), threads=_threads(run),
                                 workdir=Path(run.path) / PEER_DIR, log=Path(run.path) / PEER_DIR / "compute_state.log",
                                 extra=[str(a) for a in run.params.get("state_args", [])])


def recovar_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """Volume ``[D, D, D]`` float32 of a ``recovar`` run at latent ``z`` (its volume function; hints batched, cached)."""
    return hinted_volume(run, z, _recovar_evaluate)

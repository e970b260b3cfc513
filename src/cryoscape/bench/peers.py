"""Peer programs in ``cryoscape bench``: cryoDRGN (and RECOVAR), run side by side with cryoscape's methods.

A peer is *run*, never imported: each lives in its own virtual environment and
is started as a separate program (:mod:`subprocess`). Its own files (poses,
weights, logs) stay in ``<run>/peer/``; what it finds is translated into an
ordinary cryoscape run directory so the benchmark runner scores it like any
other method:

``config.yaml``
    method ``cryodrgn`` (or ``recovar``), the particle file and every
    setting, plus the command line that was run.
``latents.npy``
    ``[N, d]`` float32 latent means in particle order.
``peer/volume_hints.npy``
    latent points whose volumes are evaluated together with the first one
    asked for (the runner's sampled particles), so that the program starts
    once for all of them instead of once per volume.

Where the programs are
    ``$CRYOSCAPE_CRYODRGN`` (``$CRYOSCAPE_RECOVAR``): a virtual environment
    folder or the program itself; else ``benchmarks/_envs/cryodrgn``
    (``benchmarks/_envs/recovar``) under the current working directory, as
    ``benchmarks/setup_envs.sh`` makes them. Each peer is registered with an
    ``available`` check that returns a one-line reason when the program is
    not there, so ``cryoscape bench`` lists it but refuses to run it.

cryoDRGN conventions (checked against the benchmark ground truth)
    Our particles are stored as RELION extracts them (white on dark,
    ``CTF(0) = +Q``). cryoDRGN inverts the data by default and uses the
    opposite CTF sign; the two flips cancel, so its *default* is right and no
    ``--uninvert-data`` is passed. Poses and CTF go in as cryoDRGN pickles
    written from the particle file (:meth:`ParticleSet.write_cryodrgn`).
    ``eval_vol`` writes ``[z, y, x]`` MRC volumes of box ``D`` on our grid
    (centre voxel ``D//2``, same hand, positive density), scaled by cryoDRGN's
    data normalisation (arbitrary units; FSC does not care). No flip, shift
    or transpose is applied: the per-image FSC of the volume at a particle's
    latent against the true volume of its conformation is highest as is
    (tested on adk-1d; a hand flip or a transpose lowers it by half).

RECOVAR
    :func:`run_recovar` and :func:`recovar_volume` drive ``recovar pipeline``
    (CPU JAX, ``--accept-cpu``) and ``recovar compute_state`` the same way.
    RECOVAR 1.0.5 installs and runs here, but its maps from our particles do
    not agree with the ground truth (its mean, even on clean single-state
    data, correlates about 0.26 with the true map; cryoDRGN reconstructs the
    same files at 0.99), so the benchmark refuses ``recovar`` with that
    reason (:data:`RECOVAR_NOT_VALIDATED`) until the cause is found.

Volumes at latent points
    :func:`cryodrgn_volume` is the volume hook of ``cryodrgn`` runs
    (:func:`cryoscape.analysis.pipeline.register_volume_hook`): it runs
    ``cryodrgn eval_vol --zfile`` on the asked point together with the hints
    not yet evaluated, and keeps the volumes in memory
    (:data:`VOLUME_CACHE_SIZE` per process).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cryoscape.errors import CryoscapeError, InputError

__all__ = [
    "PeerError",
    "Peer",
    "CRYODRGN",
    "RECOVAR",
    "PEER_DIR",
    "VOLUME_HINTS",
    "find_program",
    "unavailable_reason",
    "CryodrgnSettings",
    "cryodrgn_train_command",
    "cryodrgn_eval_command",
    "read_cryodrgn_latents",
    "cryodrgn_eval_volumes",
    "run_cryodrgn",
    "cryodrgn_volume",
    "RecovarSettings",
    "recovar_pipeline_command",
    "recovar_state_command",
    "read_recovar_latents",
    "recovar_state_volumes",
    "run_recovar",
    "recovar_volume",
    "recovar_unavailable_reason",
    "RECOVAR_NOT_VALIDATED",
    "hinted_volume",
    "clear_volume_cache",
    "register",
]

PEER_DIR = "peer"
"""Folder inside a run directory holding the peer program's own files."""
VOLUME_HINTS = "volume_hints.npy"
"""``[M, d]`` float32 latent points evaluated with the first volume asked for (in :data:`PEER_DIR`)."""
VOLUME_CACHE_SIZE = 256
"""Volumes kept in memory per process (oldest dropped first)."""
EVAL_CHUNK = 128
"""Most latent points per ``eval_vol`` call (bounds the program's output on disk)."""


class PeerError(CryoscapeError):
    """A peer program failed or left no usable output (one line, with where its log is)."""


# ----------------------------------------------------------------------------- locating programs


@dataclass(frozen=True)
class Peer:
    """A peer program: registry name, executable name and the environment variable that points at it."""

    name: str
    program: str
    env_var: str

    def default_location(self) -> Path:
        """``benchmarks/_envs/<name>`` under the current working directory (read at call time)."""
        return Path.cwd() / "benchmarks" / "_envs" / self.name


CRYODRGN = Peer("cryodrgn", "cryodrgn", "CRYOSCAPE_CRYODRGN")
RECOVAR = Peer("recovar", "recovar", "CRYOSCAPE_RECOVAR")


def _candidate(peer: Peer) -> tuple[Path, str]:
    """Where the program should be and a phrase saying why we looked there."""
    value = os.environ.get(peer.env_var)
    base = Path(value).expanduser() if value else peer.default_location()
    origin = f"${peer.env_var}={value}" if value else f"{base} (set ${peer.env_var} to its venv or program)"
    exe = base / "bin" / peer.program if base.is_dir() else base
    return exe, origin


def unavailable_reason(peer: Peer) -> str | None:
    """None when ``peer``'s program is found and executable, else a one-line reason."""
    exe, origin = _candidate(peer)
    if exe.is_file() and os.access(exe, os.X_OK):
        return None
    return (f"{peer.program} not found at {exe} (from {origin}); "
            f"run benchmarks/setup_envs.sh or point ${peer.env_var} at its virtual environment")


def find_program(peer: Peer) -> Path:
    """The peer's executable; :class:`InputError` with the reason when it is missing."""
    reason = unavailable_reason(peer)
    if reason:
        raise InputError(reason)
    return _candidate(peer)[0]


# ----------------------------------------------------------------------------- running programs


def _thread_env(threads: int | None) -> dict[str, str]:
    """The current environment, with thread counts limited to ``threads`` where given."""
    env = dict(os.environ)
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[key] = str(int(threads))
    return env


def _last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (for one-line errors)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def run_program(cmd: Sequence[str | os.PathLike], log: Path, threads: int | None = None,
                what: str = "peer program") -> float:
    """Run ``cmd`` with stdout and stderr appended to ``log``; wall seconds. :class:`PeerError` on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(c) for c in cmd]
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"$ {shlex.join(argv)}\n".encode())
        fh.flush()
        try:
            code = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=_thread_env(threads),
                                  stdin=subprocess.DEVNULL).returncode
        except OSError as exc:
            raise PeerError(f"cannot start {what} {argv[0]} ({exc}); reinstall it with benchmarks/setup_envs.sh") from exc
    if code != 0:
        raise PeerError(f"{what} failed (exit {code}): {_last_line(log)}; full log in {log}")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- cryoDRGN


@dataclass
class CryodrgnSettings:
    """Settings of a ``cryodrgn train_vae`` fit (defaults sized for a CPU).

    zdim: latent dimension; epochs: passes over the particles; enc_layers,
    enc_dim, dec_layers, dec_dim: hidden layers × width of the encoder and
    decoder (cryoDRGN's defaults are 3 × 1024); batch_size: images per
    step (cryoDRGN's default 16); lr: Adam learning rate (its default 1e-4);
    seed: cryoDRGN's ``--seed``; threads: CPU threads of the program (None:
    its own default); extra_args: further ``train_vae`` arguments, passed as
    they are.
    """

    zdim: int = 8
    epochs: int = 4
    enc_layers: int = 3
    enc_dim: int = 256
    dec_layers: int = 3
    dec_dim: int = 256
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    threads: int | None = None
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "CryodrgnSettings":
        """Settings from benchmark options; ``iterations`` means ``epochs``; unknown keys are refused."""
        opts = dict(options)
        if "iterations" in opts:
            opts.setdefault("epochs", opts.pop("iterations"))
            opts.pop("iterations", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise InputError(f"unknown cryodrgn option {unknown[0]!r}; choose from {', '.join(sorted(known))}")
        s = cls(**opts)
        s.extra_args = [str(a) for a in s.extra_args]
        s.check()
        return s

    def check(self) -> None:
        """One-line :class:`InputError` for impossible values."""
        for name in ("zdim", "epochs", "enc_layers", "enc_dim", "dec_layers", "dec_dim", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"cryodrgn {name} is {getattr(self, name)}; give at least 1")
        if not self.lr > 0:
            raise InputError(f"cryodrgn lr is {self.lr}; give a positive learning rate")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"cryodrgn threads is {self.threads}; give at least 1 or leave it unset")


def cryodrgn_train_command(exe: str | os.PathLike, particles: str | os.PathLike, datadir: str | os.PathLike,
                           poses: str | os.PathLike, ctf: str | os.PathLike, outdir: str | os.PathLike,
                           s: CryodrgnSettings, checkpoint_every: int | None = None) -> list[str]:
    """The ``cryodrgn train_vae`` command line (data sign: cryoDRGN's default, see the module docstring)."""
    cmd = [str(exe), "train_vae", str(particles), "--datadir", str(datadir), "--poses", str(poses),
           "--ctf", str(ctf), "--zdim", str(s.zdim), "-n", str(s.epochs),
           "--enc-layers", str(s.enc_layers), "--enc-dim", str(s.enc_dim),
           "--dec-layers", str(s.dec_layers), "--dec-dim", str(s.dec_dim),
           "-b", str(s.batch_size), "--lr", repr(float(s.lr)), "--seed", str(s.seed),
           "-o", str(outdir), "--no-analysis"]
    if checkpoint_every is not None:
        cmd += ["--checkpoint", str(int(checkpoint_every))]
    return cmd + list(s.extra_args)


def cryodrgn_eval_command(exe: str | os.PathLike, weights: str | os.PathLike, config: str | os.PathLike,
                          zfile: str | os.PathLike, outdir: str | os.PathLike, apix: float) -> list[str]:
    """The ``cryodrgn eval_vol`` command line for the points in ``zfile`` (one per line)."""
    return [str(exe), "eval_vol", str(weights), "-c", str(config), "--zfile", str(zfile), "-o", str(outdir),
            "--Apix", repr(float(apix))]


def read_cryodrgn_latents(path: str | os.PathLike, n_particles: int | None = None) -> np.ndarray:
    """Latent means ``[N, d]`` float32 from a cryoDRGN ``z.pkl`` (its first pickled object; the log-variances follow it).

    Read with :func:`cryoscape.io.cryodrgn.safe_load_pickle` (numbers and arrays only).
    """
    from cryoscape.io.cryodrgn import safe_load_pickle

    z = np.asarray(safe_load_pickle(path), dtype=np.float32)
    if z.ndim != 2 or z.shape[1] < 1:
        raise InputError(f"{path}: latents have shape {z.shape}, expected (N, zdim); pass a cryoDRGN z.pkl")
    if n_particles is not None and z.shape[0] != n_particles:
        raise InputError(f"{path} holds {z.shape[0]} latents but the particle file has {n_particles}; "
                         "pass the z.pkl of this data set")
    if not np.all(np.isfinite(z)):
        raise InputError(f"{path} holds non-finite latents; the cryoDRGN fit diverged, train again with a lower lr")
    return z


def _volume_number(path: Path) -> int:
    """``vol_012.mrc`` -> 12."""
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return int(digits) if digits else -1


def cryodrgn_eval_volumes(weights: str | os.PathLike, config: str | os.PathLike, Z: Any, apix: float, *,
                          exe: str | os.PathLike | None = None, threads: int | None = None,
                          workdir: str | os.PathLike | None = None, log: Path | None = None) -> np.ndarray:
    """Volumes ``[n, D, D, D]`` float32 (``[z, y, x]``, our grid) of a cryoDRGN model at latent points ``Z [n, d]``.

    Runs ``cryodrgn eval_vol --zfile`` once per :data:`EVAL_CHUNK` points in a
    temporary folder (inside ``workdir`` when given). ``apix`` (Å/px) goes to
    the MRC headers only. ``log``: where the program's output is appended
    (default: a file in the temporary folder, removed with it).
    """
    from cryoscape.io.mrc import read_mrc

    Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    if Z.ndim != 2 or Z.shape[0] == 0 or not np.all(np.isfinite(Z)):
        raise InputError(f"latent points must be a finite [n, d] array with n >= 1; got shape {Z.shape}")
    program = Path(exe) if exe is not None else find_program(CRYODRGN)
    out: list[np.ndarray] = []
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eval_vol_", dir=workdir) as tmp:
        for start in range(0, Z.shape[0], EVAL_CHUNK):
            chunk = Z[start:start + EVAL_CHUNK]
            part = Path(tmp) / f"chunk_{start:06d}"
            part.mkdir()
            zfile = part / "z.txt"
            np.savetxt(zfile, chunk, fmt="%.9g")
            vols = part / "vols"
            run_program(cryodrgn_eval_command(program, weights, config, zfile, vols, apix),
                        log or Path(tmp) / "eval_vol.log", threads, "cryodrgn eval_vol")
            files = sorted(vols.glob("*.mrc"), key=_volume_number)
            if len(files) != chunk.shape[0]:
                raise PeerError(f"cryodrgn eval_vol wrote {len(files)} volumes for {chunk.shape[0]} latent points "
                                f"in {vols}; check its log")
            out.extend(read_mrc(f)[0].astype(np.float32) for f in files)
    return np.stack(out)


def _dataset_particles(dataset: Any) -> Any:
    """The dataset's :class:`ParticleSet` (poses and CTF required)."""
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(dataset.star_path)
    ps.require_poses("the cryodrgn peer")
    ps.require_ctf("the cryodrgn peer")
    return ps


def _volume_hints(dataset: Any, latents: np.ndarray) -> np.ndarray:
    """Latents of the particles the benchmark runner samples for the per-image FSC (none without a truth)."""
    truth = getattr(dataset, "truth", None)
    if truth is None or "conformation" not in truth:
        return latents[:0]
    from cryoscape.bench.runner import sample_particles

    return latents[sample_particles(truth)]


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically, without pickles."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def _peer_version(config_yaml: Path) -> str | None:
    """The ``version`` cryoDRGN records in its ``config.yaml`` (None if absent)."""
    import yaml

    try:
        doc = yaml.safe_load(config_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return str(doc.get("version")) if isinstance(doc, dict) and doc.get("version") is not None else None


def run_cryodrgn(dataset: Any, out_dir: Path, progress: bool = False, **options: Any) -> Path:
    """Fit cryoDRGN's ``train_vae`` on a benchmark dataset and write a ``cryodrgn`` run directory in ``out_dir``.

    ``options``: fields of :class:`CryodrgnSettings` (``iterations`` is taken
    as ``epochs``). ``out_dir`` is overwritten (as the runner does for every
    method). Returns ``out_dir``.
    """
    from cryoscape.io.run_dir import RunDirectory

    s = CryodrgnSettings.from_options(options)
    exe = find_program(CRYODRGN)
    ps = _dataset_particles(dataset)
    root = Path(out_dir)
    peer = root / PEER_DIR
    train = peer / "train"
    star = Path(dataset.star_path).resolve()
    cmd = cryodrgn_train_command(exe, star, star.parent, peer / "pose.pkl", peer / "ctf.pkl", train, s)
    config = {"particles": star, "datadir": None, "n_particles": len(ps), "box": int(ps.box),
              "apix": float(ps.apix), "peer": CRYODRGN.name, **asdict(s), "command": cmd,
              "weights": f"{PEER_DIR}/train/weights.pkl", "peer_config": f"{PEER_DIR}/train/config.yaml"}
    run = RunDirectory.create(root, "cryodrgn", config, force=True)
    if peer.exists():
        import shutil

        shutil.rmtree(peer)
    peer.mkdir(parents=True)
    ps.write_cryodrgn(peer / "pose.pkl", peer / "ctf.pkl", force=True)
    if progress:
        print(f"cryodrgn: {shlex.join(cmd)}", flush=True)
    with run.log(f"cryodrgn train_vae ({s.epochs} epochs, log {peer / 'train.log'})"):
        wall = run_program(cmd, peer / "train.log", s.threads, "cryodrgn train_vae")
    latents = read_cryodrgn_latents(train / "z.pkl", len(ps))
    run.write_latents(latents)
    _save_npy(peer / VOLUME_HINTS, _volume_hints(dataset, latents))
    run.write_metrics({"train_wall_s": wall, "epochs": s.epochs, "peer_version": _peer_version(train / "config.yaml")},
                      merge=False)
    return root


# ----------------------------------------------------------------------------- RECOVAR


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
    import shutil

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
    if peer.exists():
        shutil.rmtree(peer)
    peer.mkdir(parents=True)
    ps.write_cryodrgn(peer / "pose.pkl", peer / "ctf.pkl", force=True)
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
    result_dir = _run_file(run, "result_dir", f"{PEER_DIR}/pipeline")
    return recovar_state_volumes(result_dir, Z, n_bins=int(run.params.get("n_bins", 50)), threads=_threads(run),
                                 workdir=Path(run.path) / PEER_DIR, log=Path(run.path) / PEER_DIR / "compute_state.log",
                                 extra=[str(a) for a in run.params.get("state_args", [])])


def recovar_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """Volume ``[D, D, D]`` float32 of a ``recovar`` run at latent ``z`` (the volume hook; hints batched, cached)."""
    return hinted_volume(run, z, _recovar_evaluate)


# ----------------------------------------------------------------------------- volume hooks


_CACHE: "OrderedDict[tuple[str, bytes], np.ndarray]" = OrderedDict()

Evaluator = Callable[[Any, np.ndarray], np.ndarray]
"""``evaluate(run, Z [n, d]) -> volumes [n, D, D, D]`` with one start of the peer program."""


def clear_volume_cache() -> None:
    """Forget every cached peer volume."""
    _CACHE.clear()


def _model_stamp(run: Any) -> str:
    """The run folder and the modification time of its ``latents.npy`` (a refit invalidates the cache)."""
    from cryoscape.io.run_dir import LATENTS

    latents = Path(run.path) / LATENTS
    stamp = latents.stat().st_mtime_ns if latents.exists() else 0
    return f"{Path(run.path).resolve()}@{stamp}"


def _remember(key: tuple[str, bytes], vol: np.ndarray) -> None:
    _CACHE[key] = vol
    _CACHE.move_to_end(key)
    while len(_CACHE) > VOLUME_CACHE_SIZE:
        _CACHE.popitem(last=False)


def hinted_volume(run: Any, z: np.ndarray, evaluate: Evaluator) -> np.ndarray:
    """Volume at latent ``z (d,)`` from the cache, else evaluated with every uncached hint in one call.

    Hints are the points in ``<run>/peer/volume_hints.npy``; volumes are
    cached in memory per process (:data:`VOLUME_CACHE_SIZE`), keyed by the run
    and ``z`` as float32.
    """
    z32 = np.asarray(z, dtype=np.float32).reshape(-1)
    stamp = _model_stamp(run)
    key = (stamp, z32.tobytes())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    points, seen = [z32], {key[1]}
    hints = Path(run.path) / PEER_DIR / VOLUME_HINTS
    if hints.is_file():
        for h in np.load(hints, allow_pickle=False).astype(np.float32).reshape(-1, z32.size):
            hk = h.tobytes()
            if (stamp, hk) not in _CACHE and hk not in seen:
                seen.add(hk)
                points.append(h)
    vols = evaluate(run, np.stack(points))
    if len(vols) != len(points):
        raise PeerError(f"the peer program gave {len(vols)} volumes for {len(points)} latent points; check its log "
                        f"in {Path(run.path) / PEER_DIR}")
    for p, v in zip(points[::-1], vols[::-1]):  # the asked point last: most recently used
        _remember((stamp, p.tobytes()), np.asarray(v, dtype=np.float32))
    return _CACHE[key]


def _run_file(run: Any, param: str, default: str) -> Path:
    """A file of the peer recorded in the run's params (relative to the run), which must exist."""
    f = Path(run.path) / str(run.params.get(param, default))
    if not f.exists():
        raise InputError(f"{f} not found: the {run.method} run {run.path} has no trained model; run it again")
    return f


def _threads(run: Any) -> int | None:
    t = run.params.get("threads")
    return None if t is None else int(t)


def _cryodrgn_evaluate(run: Any, Z: np.ndarray) -> np.ndarray:
    weights = _run_file(run, "weights", f"{PEER_DIR}/train/weights.pkl")
    config = _run_file(run, "peer_config", f"{PEER_DIR}/train/config.yaml")
    return cryodrgn_eval_volumes(weights, config, Z, float(run.apix or 1.0), threads=_threads(run),
                                 workdir=Path(run.path) / PEER_DIR, log=Path(run.path) / PEER_DIR / "eval_vol.log")


def cryodrgn_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """Volume ``[D, D, D]`` float32 of a ``cryodrgn`` run's decoder at latent ``z (d,)`` (the volume hook).

    On a cache miss the point is evaluated together with every hint in
    ``peer/volume_hints.npy`` not yet cached, in one ``eval_vol`` run.
    """
    return hinted_volume(run, z, _cryodrgn_evaluate)


# ----------------------------------------------------------------------------- registration


def register() -> None:
    """Register the peers with the benchmark runner and their volume hooks (idempotent)."""
    from cryoscape.analysis.pipeline import register_volume_hook
    from cryoscape.bench.runner import register_method

    register_method("cryodrgn", run_cryodrgn, "cryoDRGN train_vae (peer program, its own environment)",
                    available=lambda: unavailable_reason(CRYODRGN))
    register_volume_hook("cryodrgn", cryodrgn_volume)
    register_method("recovar", run_recovar, "RECOVAR pipeline + compute_state (peer program, its own environment)",
                    available=recovar_unavailable_reason)
    register_volume_hook("recovar", recovar_volume)


register()

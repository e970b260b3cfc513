"""cryoDRGN as a peer of the benchmark: ``train_vae`` into a cryoscape run directory, ``eval_vol`` for its volumes.

Conventions (checked against the benchmark ground truth)
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

:func:`run_cryodrgn` writes an ordinary run directory (method ``cryodrgn``,
``latents.npy`` with the ``[N, d]`` latent means, the command line in
``config.yaml``); :func:`cryodrgn_volume` is the volume function of such runs:
``cryodrgn eval_vol --zfile`` on the asked point together with the hints not
yet evaluated (:func:`cryoscape.bench.peers.volumes.hinted_volume`).
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cryoscape.bench.peers.files import (PEER_DIR, VOLUME_HINTS, _dataset_particles, _fresh_peer_folder, _run_file,
                                         _save_npy, _threads, _volume_hints)
from cryoscape.bench.peers.programs import CRYODRGN, PeerError, find_program, run_program
from cryoscape.bench.peers.volumes import hinted_volume
from cryoscape.errors import InputError

__all__ = ["EVAL_CHUNK", "CryodrgnSettings", "cryodrgn_train_command", "cryodrgn_eval_command",
           "read_cryodrgn_latents", "cryodrgn_eval_volumes", "run_cryodrgn", "cryodrgn_volume"]

EVAL_CHUNK = 128
"""Most latent points per ``eval_vol`` call (bounds the program's output on disk)."""


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
    _fresh_peer_folder(peer, ps)
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


def _cryodrgn_evaluate(run: Any, Z: np.ndarray) -> np.ndarray:
    """Volumes ``[n, D, D, D]`` of a ``cryodrgn`` run at ``Z [n, d]`` (one ``eval_vol`` per chunk)."""
    weights = _run_file(run, "weights", f"{PEER_DIR}/train/weights.pkl")
    config = _run_file(run, "peer_config", f"{PEER_DIR}/train/config.yaml")
    return cryodrgn_eval_volumes(weights, config, Z, float(run.apix or 1.0), threads=_threads(run),
                                 workdir=Path(run.path) / PEER_DIR, log=Path(run.path) / PEER_DIR / "eval_vol.log")


def cryodrgn_volume(run: Any, z: np.ndarray) -> np.ndarray:
    """Volume ``[D, D, D]`` float32 of a ``cryodrgn`` run's decoder at latent ``z (d,)`` (its volume function).

    On a cache miss the point is evaluated together with every hint in
    ``peer/volume_hints.npy`` not yet cached, in one ``eval_vol`` run.
    """
    return hinted_volume(run, z, _cryodrgn_evaluate)

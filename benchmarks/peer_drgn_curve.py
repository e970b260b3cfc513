#!/usr/bin/env python
"""Neural method vs cryoDRGN: per-image FSC AUC against training wall time, epoch by epoch.

On adk-1d (default a 5 000-particle build at box 64,
``build_dataset("adk-1d", cache, n_particles=5000)``), each side trains under
the same wall-clock budget (``--budget-min``, default 60 min) and after every
epoch is scored with

* the CryoBench per-image FSC AUC: 100 evenly spaced particles
  (:func:`cryoscape.bench.runner.sample_particles`), the model's volume at
  each particle's latent against the true volume of its conformation
  (soft-sphere mask, area to Nyquist), mean ± std;
* ``|Spearman|`` of the latents' first principal component against the true
  frame.

cryoDRGN (``cryodrgn train_vae``, 3 × 256 encoder and decoder, zdim 8; its own
environment, see :mod:`cryoscape.bench.peers`) runs as one process that saves
weights and latents every epoch; when epoch *e*'s latents appear the process is
paused (SIGSTOP) while that epoch is scored (volumes from ``cryodrgn eval_vol``
at the 100 latents in one call) and resumed (SIGCONT) afterwards, so scoring
time is left out of its clock. Its clock includes its start-up.

cryoscape runs ``cryoscape fit drgn STAR -o RUN --zdim 8 --epochs E --resume``
for E = 1, 2, ... (one process per epoch, each start-up counted) and is scored
between calls through its volume hook (:func:`cryoscape.methods.model_volume`).
Epoch E's point is charged the whole of every call up to E, less the final-latent
inference of the calls before E (``latents_s`` in the run's metrics: training
resumes from the checkpoint, which that inference does not touch), i.e. what a
single ``--epochs E`` run would cost plus E − 1 start-ups.
Where ``fit drgn`` is not available the cryoscape side is skipped with a note.

Prints one JSON object (``--out`` also saves it) and writes a PNG of AUC
against wall time for both sides (``--png``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIDES = ("cryodrgn", "cryoscape")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=5000)
    p.add_argument("--box", type=int, default=None, help="box in px (default adk-1d's, 64)")
    p.add_argument("--budget-min", type=float, default=60.0, help="training wall-clock budget per side, minutes")
    p.add_argument("--max-epochs", type=int, default=500, help="stop earlier than the budget after this many epochs")
    p.add_argument("--sides", default="cryodrgn,cryoscape", help="comma-separated: cryodrgn, cryoscape")
    p.add_argument("--zdim", type=int, default=8)
    p.add_argument("--layers", type=int, default=3, help="hidden layers of cryoDRGN's encoder and decoder")
    p.add_argument("--width", type=int, default=256, help="width of cryoDRGN's hidden layers")
    p.add_argument("--batch-size", type=int, default=None, help="cryoDRGN batch size (default its own, 16)")
    p.add_argument("--n-samples", type=int, default=100, help="particles sampled for the per-image FSC")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=C.DEFAULT_WORKDIR / "peers" / "cache")
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "peers" / "curve")
    p.add_argument("--png", type=Path, default=None, help="figure path (default WORKDIR/<tag>/auc_vs_wall.png)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- scoring


class Scorer:
    """Per-image FSC AUC at the sampled particles and |Spearman| of the latents' first PC vs the true frame."""

    def __init__(self, dataset: Any, n_samples: int) -> None:
        from cryoscape.bench.runner import _true_volume_fn, sample_particles

        self.dataset = dataset
        self.indices = sample_particles(dataset.truth, n_samples)
        self.conformation = np.asarray(dataset.truth["conformation"])
        self.coordinate = np.asarray(dataset.truth["coordinate"], dtype=np.float64)
        self.true_fn = _true_volume_fn(dataset)

    def score(self, latents: np.ndarray, volumes: Callable[[int], np.ndarray]) -> dict[str, Any]:
        """``volumes(i)``: the model's volume at particle i's latent."""
        from cryoscape.bench.runner import _fsc_scores
        from cryoscape.validate.metrics import spearman_abs

        s = _fsc_scores(volumes, self.true_fn, self.indices, self.conformation)
        return {"auc_mean": s.mean, "auc_std": s.std, "auc_missing": s.n_missing,
                "spearman_abs": float(spearman_abs(latents, self.coordinate))}

    def point(self, side: str, epoch: int, wall_s: float, latents: np.ndarray,
              volumes: Callable[[int], np.ndarray], t_eval: float, **extra: Any) -> dict[str, Any]:
        """One curve point (scores, ``eval_s`` counted from ``t_eval``), logged as it is made."""
        point = {"epoch": epoch, "wall_s": wall_s, **extra, **self.score(latents, volumes)}
        point["eval_s"] = time.perf_counter() - t_eval
        C.log(f"{side} epoch {epoch}: wall {wall_s:.0f} s, AUC {point['auc_mean']:.4f}, "
              f"|Spearman| {point['spearman_abs']:.3f} (scored in {point['eval_s']:.0f} s)")
        return point


# ----------------------------------------------------------------------------- cryoDRGN


def _wait_for_epoch(proc: subprocess.Popen, zfile: Path, clock: "PausableClock", budget_s: float,
                    poll_s: float = 1.0) -> str:
    """Wait until ``zfile`` exists ("epoch"), the process ends ("exited") or the budget is spent ("budget")."""
    while True:
        if zfile.exists():
            return "epoch"
        if proc.poll() is not None:
            return "epoch" if zfile.exists() else "exited"
        if clock.elapsed() >= budget_s:
            return "budget"
        time.sleep(poll_s)


class PausableClock:
    """Wall time of a child process, leaving out the spans it was paused (SIGSTOP … SIGCONT)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.t0, self.paused, self._since = proc, time.perf_counter(), 0.0, None

    def pause(self) -> None:
        if self._since is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self._since = time.perf_counter()

    def resume(self) -> None:
        if self._since is not None:
            self.paused += time.perf_counter() - self._since
            self._since = None
            os.kill(self.proc.pid, signal.SIGCONT)

    def elapsed(self) -> float:
        now = self._since if self._since is not None else time.perf_counter()
        return now - self.t0 - self.paused


def _read_epoch_latents(path: Path, n: int, clock: PausableClock, tries: int = 30) -> np.ndarray:
    """The epoch's latent means, waiting (with the process running) while the file is still being written."""
    from cryoscape.bench.peers import read_cryodrgn_latents
    from cryoscape.errors import InputError

    for _ in range(tries):
        try:
            return read_cryodrgn_latents(path, n)
        except InputError:
            clock.resume()
            time.sleep(1.0)
            clock.pause()
    return read_cryodrgn_latents(path, n)


def run_cryodrgn_side(dataset: Any, scorer: Scorer, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train cryoDRGN under the budget; score every epoch while the trainer is paused."""
    import shutil

    from cryoscape.bench import peers
    from cryoscape.particles import ParticleSet

    exe = peers.find_program(peers.CRYODRGN)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ps = ParticleSet.from_file(dataset.star_path)
    ps.write_cryodrgn(work / "pose.pkl", work / "ctf.pkl")
    s = peers.CryodrgnSettings(zdim=args.zdim, epochs=args.max_epochs, enc_layers=args.layers, enc_dim=args.width,
                               dec_layers=args.layers, dec_dim=args.width, seed=args.seed, threads=args.threads)
    if args.batch_size:
        s.batch_size = args.batch_size
    star = Path(dataset.star_path).resolve()
    train = work / "train"
    cmd = peers.cryodrgn_train_command(exe, star, star.parent, work / "pose.pkl", work / "ctf.pkl", train, s,
                                       checkpoint_every=1)
    C.log("cryodrgn: " + " ".join(cmd))
    budget = args.budget_min * 60.0
    points: list[dict[str, Any]] = []
    with open(work / "train.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=peers._thread_env(args.threads))
        clock = PausableClock(proc)
        stop = "max_epochs"
        try:
            for epoch in range(1, args.max_epochs + 1):
                zfile = train / f"z.{epoch}.pkl"
                state = _wait_for_epoch(proc, zfile, clock, budget)
                if state != "epoch":
                    stop = state
                    break
                clock.pause()
                wall = clock.elapsed()
                Z = _read_epoch_latents(zfile, len(ps), clock)
                t_eval = time.perf_counter()
                vols = peers.cryodrgn_eval_volumes(train / f"weights.{epoch}.pkl", train / "config.yaml",
                                                   Z[scorer.indices], float(ps.apix), exe=exe, threads=args.threads,
                                                   workdir=work, log=work / "eval_vol.log")
                pos = {int(i): k for k, i in enumerate(scorer.indices)}
                points.append(scorer.point("cryodrgn", epoch, wall, Z, lambda i: vols[pos[i]], t_eval))
                if wall >= budget:
                    stop = "budget"
                    break
                clock.resume()
        finally:
            clock.resume()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if stop == "exited" and proc.returncode != 0:
        tail = (work / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
        return {"points": points, "stop": stop, "error": f"train_vae exited {proc.returncode}: {tail}"}
    return {"points": points, "stop": stop, "command": cmd, "train_log": str(work / "train.log"),
            "peer_version": peers._peer_version(train / "config.yaml")}


# ----------------------------------------------------------------------------- cryoscape


def fit_drgn_available() -> str | None:
    """None when ``cryoscape fit drgn`` exists, else why not."""
    r = subprocess.run([*C.cryoscape_exe(), "fit", "drgn", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`cryoscape fit drgn` is not available here ({last})"
    return None


def run_cryoscape_side(dataset: Any, scorer: Scorer, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``cryoscape fit drgn`` one epoch per call (--resume), scored between calls."""
    import shutil

    reason = fit_drgn_available()
    if reason:
        C.log("skipping the cryoscape side: " + reason)
        return {"points": [], "skipped": reason}
    import cryoscape.methods  # noqa: F401  volume hooks
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods import model_volume

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    run_dir = work / "run"
    budget = args.budget_min * 60.0
    wall = 0.0
    points: list[dict[str, Any]] = []
    stop = "max_epochs"
    for epoch in range(1, args.max_epochs + 1):
        cmd = [*C.cryoscape_exe(), "fit", "drgn", str(dataset.star_path), "-o", str(run_dir),
               "--zdim", str(args.zdim), "--epochs", str(epoch), "--no-progress"]
        if epoch > 1:
            cmd.append("--resume")
        res = C.measure(cmd, work / f"fit_epoch_{epoch:04d}", env=C.thread_env(args.threads))
        if res["returncode"] != 0:
            return {"points": points, "stop": "error", "command": cmd,
                    "error": f"fit drgn exited {res['returncode']}: {res.get('stderr_tail', '')[-500:]}"}
        run = RunDirectory.open(run_dir)
        latents_s = float(run.read_metrics().get("latents_s", 0.0))
        point_wall = wall + res["wall_s"]
        # the next call continues training from the checkpoint, which the final latents of
        # this call do not change: only their inference is left off the running clock
        wall = point_wall - latents_s
        Z = run.read_latents()[0]
        points.append(scorer.point("cryoscape", epoch, point_wall, Z, lambda i: model_volume(run, Z[i]),
                                   time.perf_counter(), latents_s=latents_s))
        if point_wall >= budget:
            stop = "budget"
            break
    return {"points": points, "stop": stop, "command_last": cmd}


# ----------------------------------------------------------------------------- figure


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for side, style in (("cryodrgn", "o-"), ("cryoscape", "s-")):
        pts = result["sides"].get(side, {}).get("points", [])
        if pts:
            t = [p["wall_s"] / 60 for p in pts]
            ax.errorbar(t, [p["auc_mean"] for p in pts], fmt=style, capsize=2, label=side,
                        yerr=[p["auc_std"] / np.sqrt(result["n_samples"]) for p in pts])
    for name, value in result.get("references", {}).items():
        ax.axhline(value, ls=":", lw=1, color="grey")
        ax.text(0.01, value, f"{name} {value:.3f}", va="bottom", fontsize=8, color="grey",
                transform=ax.get_yaxis_transform())
    ax.set_xlim(0, max(result["budget_min"], ax.get_xlim()[1]) * 1.05)
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("per-image FSC AUC (mean ± s.e.)")
    ax.set_title(f"adk-1d, {result['n_particles']} particles, box {result['box']}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def consensus_auc(dataset: Any, scorer: Scorer) -> float:
    """AUC of one reconstruction from all particles (the lower reference)."""
    from cryoscape.particles import ParticleSet
    from cryoscape.reconstruct import reconstruct

    vol = reconstruct(ParticleSet.from_file(dataset.star_path), progress=False).volume
    from cryoscape.bench.runner import _fsc_scores

    return _fsc_scores(lambda i: vol, scorer.true_fn, scorer.indices, scorer.conformation).mean


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from cryoscape.bench.datasets import build_dataset, get_spec

    sides = [s for s in args.sides.split(",") if s]
    bad = [s for s in sides if s not in SIDES]
    if bad:
        print(f"unknown side {bad[0]!r}; choose from {', '.join(SIDES)}", file=sys.stderr)
        return 2
    spec = get_spec("adk-1d").resized(args.n_particles, args.box)
    tag = f"n{spec.n_particles}_box{spec.box}"
    work = args.workdir / tag
    result: dict[str, Any] = {"benchmark": "peer_drgn_curve", "machine": C.machine_info(args.threads),
                              "dataset": "adk-1d", "n_particles": spec.n_particles, "box": spec.box,
                              "apix": spec.apix, "budget_min": args.budget_min, "n_samples": args.n_samples,
                              "cryodrgn_architecture": {"layers": args.layers, "width": args.width,
                                                        "zdim": args.zdim, "batch_size": args.batch_size or 16},
                              "sides": {}}
    dataset = build_dataset("adk-1d", args.cache / tag, n_particles=args.n_particles, box=args.box, progress=False)
    scorer = Scorer(dataset, args.n_samples)
    result["references"] = {"consensus": consensus_auc(dataset, scorer)}
    C.log(f"consensus AUC {result['references']['consensus']:.4f}")
    for side in sides:
        t0 = time.perf_counter()
        try:
            if side == "cryodrgn":
                result["sides"][side] = run_cryodrgn_side(dataset, scorer, args, work / side)
            else:
                result["sides"][side] = run_cryoscape_side(dataset, scorer, args, work / side)
        except Exception as exc:  # record and go on with the other side
            result["sides"][side] = {"points": [], "error": f"{type(exc).__name__}: {exc}"}
        result["sides"][side]["total_s"] = time.perf_counter() - t0
    png = args.png or work / "auc_vs_wall.png"
    plot(result, png)
    result["png"] = str(png)
    C.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

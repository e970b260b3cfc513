#!/usr/bin/env python
"""``cryoscape fit nma`` on the AdK closed→open path, started from the closed model alone.

The ``adk-1d`` benchmark dataset (``cryoscape.bench.datasets``; default
10 000 x 64², 1.5 Å/px, SNR 0.05, CTF and shifts; cached by its settings) and
the model of its first frame (the closed state, written by
``cryoscape.bench.atom_models.reference_model`` in the maps' frame). The
command a user runs, ``cryoscape fit nma STAR --model closed.pdb -o RUN``, is
timed process to process (peak resident memory too). Scored: |Spearman| of the
first principal component of ``latents.npy`` (the mode amplitudes) against the
true path coordinate (the acceptance figure of the atoms issue), and of every
single amplitude. ``--no-fit`` only scores an existing run. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=10000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "nma")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further fit nma options (last)")
    p.add_argument("--no-fit", action="store_true", help="score the run already in the work folder")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def score(run: Path, coordinate: np.ndarray) -> dict[str, Any]:
    """|Spearman| of the amplitudes' first principal component (and of each amplitude) against the truth."""
    from scipy.stats import spearmanr

    z = np.load(run / "latents.npy").astype(np.float64)
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    pc1 = zc @ vt[0]
    return {"abs_spearman_pc1": abs(float(spearmanr(pc1, coordinate).correlation)),
            "abs_spearman_per_mode": [abs(float(spearmanr(z[:, k], coordinate).correlation))
                                      for k in range(z.shape[1])],
            "pc_std": (s / np.sqrt(len(z))).tolist()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from cryoscape.bench.atom_models import reference_model
    from cryoscape.bench.datasets import build_dataset

    args = parse_args(argv)
    C.log(f"dataset adk-1d, {args.n_particles} x {args.box}²")
    data = build_dataset("adk-1d", args.workdir / "data", n_particles=args.n_particles, box=args.box, progress=False)
    model = reference_model(data)
    run = args.workdir / "run"
    cmd = [*C.cryoscape_exe(), "fit", "nma", str(data.star_path), "--model", str(model), "-o", str(run), "--force",
           "--no-progress", *args.extra]
    result: dict[str, Any] = {"benchmark": "nma", "machine": C.machine_info(args.threads), "dataset": str(data.out_dir),
                              "model": str(model), "cmd": " ".join(cmd)}
    if not args.no_fit:
        C.log("running: " + " ".join(cmd))
        res = C.measure(cmd, args.workdir / "fit_nma", env=C.thread_env(args.threads))
        if res["returncode"] != 0:
            raise RuntimeError(f"fit nma failed:\n{res.get('stderr_tail', '')}")
        result.update(wall_s=res["wall_s"], peak_rss_MB=res["peak_rss_MB"])
    result.update(score(run, np.asarray(data.truth["coordinate"], dtype=np.float64)))
    result["target_abs_spearman_pc1"] = 0.90
    C.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Scale of ``cryoscape fit pca``: 100 000 particles at box 128, peak memory and wall time.

1. Builds (or reuses) the ``adk-1d`` benchmark dataset resized to
   ``--n-particles`` images at ``--box`` px (the field of view is kept, so
   the pixel size is 1.5 Å × 64 / box) in ``bench_out/pca_scale/data_N_BOX`` with
   ``cryoscape.bench.datasets.build_dataset``.
2. Runs ``cryoscape fit pca`` on it in a child process (``--iterations``
   EM passes, default 1: the memory of a pass does not grow with the number
   of passes, and each pass costs the same) and records process wall time,
   peak resident memory and the per-iteration time from the run's metrics.

Target: peak memory < 8 GB at 100 000 × 128². The memory of the fit is the
M-step accumulators on the padded grid plus N × K × K posterior covariances,
independent of N otherwise (images stream from the memory-mapped stack).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=100_000)
    p.add_argument("--box", type=int, default=128)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "pca_scale")
    p.add_argument("--target-peak-MB", type=float, default=8192.0)
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The dataset's STAR file and the build wall time (None when reused)."""
    from cryoscape.bench.datasets import build_dataset

    t0 = time.perf_counter()
    ds = build_dataset("adk-1d", args.workdir / f"data_{args.n_particles}_{args.box}", n_particles=args.n_particles, box=args.box, progress=False)
    return Path(ds.star_path), (time.perf_counter() - t0) if ds.built else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    C.log(f"dataset: adk-1d, {args.n_particles} particles, box {args.box}")
    star, build_s = build(args)
    run_dir = args.workdir / f"run_{args.n_particles}_{args.box}"
    cmd = [*C.cryoscape_exe(), "fit", "pca", str(star), "-o", str(run_dir), "--components", str(args.components),
           "--iterations", str(args.iterations), "--batch-size", str(args.batch_size), "--force", "--no-progress"]
    C.log("running: " + " ".join(cmd))
    res = C.measure(cmd, args.workdir / "fit_pca", env=C.thread_env(args.threads))
    metrics = json.loads((run_dir / "metrics.json").read_text()) if res["returncode"] == 0 else {}
    out = {
        "benchmark": "pca_scale",
        "machine": C.machine_info(args.threads),
        "dataset": {"name": "adk-1d", "n_particles": args.n_particles, "box": args.box, "build_s": build_s},
        "fit": {"components": args.components, "iterations": args.iterations, "batch_size": args.batch_size,
                "returncode": res["returncode"], "process_wall_s": res["wall_s"], "peak_rss_MB": res["peak_rss_MB"],
                "em_elapsed_s": metrics.get("elapsed_s"),
                "s_per_iteration": (metrics["elapsed_s"] / metrics["n_iterations"]) if metrics else None,
                "images_per_s_per_iteration": (args.n_particles * metrics["n_iterations"] / metrics["elapsed_s"])
                if metrics else None},
        "target_peak_MB": args.target_peak_MB,
        "meets_target": bool(res["returncode"] == 0 and res["peak_rss_MB"] < args.target_peak_MB),
    }
    if res["returncode"] != 0:
        out["stderr_tail"] = res.get("stderr_tail")
    C.emit(out, args.out)
    return 0 if out["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""``cryoscape refine`` with the poses wiped, from a 30 Å low-pass of the true map.

The single-state AdK set of ``bench_reconstruct_truth.py`` (6 000 x 64², 1.5 Å/px, SNR 0.05, CTF,
origins in a 2 px disc; simulated there, or here when missing). Its STAR is rewritten with every
angle and origin set to 0, the true map low-passed to 30 Å is the initial map, and the command a user
runs, ``cryoscape refine wiped.star --initial lp30.mrc -o DIR``, is timed process to process. Scored:
the geodesic angle between refined and true rotations (median, mean, fraction under 5°), the origin
error (px), and the FSC AUC against the true map of the refined map beside that of ``cryoscape
reconstruct`` at the true poses (same AUC as ``bench``). Prints one JSON object.
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
    p.add_argument("--n-particles", type=int, default=6000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.5)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "refine")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further refine options (last)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    """The wiped STAR, the 30 Å initial map and the dataset record."""
    import torch

    from cryoscape.geometry.fourier import scale_shells
    from cryoscape.io.mrc import write_mrc
    from cryoscape.io.star import read_star, write_star

    data = C.simulate_cached(C.DEFAULT_WORKDIR / "reconstruct_truth" / f"snr_{args.snr}" / "data", args.n_particles,
                             args.box, args.apix, args.snr, args.seed, threads=args.threads)
    star = read_star(data["star"])
    rows = star.particles.copy()
    for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"):
        if c in rows.columns:
            rows[c] = 0.0
    rows["rlnImageName"] = [f"{i}@{Path(data['stack']).resolve()}" for i in range(1, len(rows) + 1)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    wiped = write_star(args.workdir / "wiped.star", star.optics, rows, force=True)
    true_map, _ = C.ground_truth(data["truth"])
    shells = np.arange(args.box // 2 + 1)
    edge = np.clip((shells - args.box * args.apix / 30.0) / 2.0, 0.0, 1.0)
    lp = scale_shells(torch.as_tensor(true_map), 0.5 * (1 + np.cos(np.pi * edge))).numpy()
    initial = write_mrc(args.workdir / "lp30.mrc", lp.astype(np.float32), args.apix, force=True)
    return wiped, initial, data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from cryoscape.geometry.rotations import geodesic_distance_deg
    from cryoscape.particles import ParticleSet
    from cryoscape.validate.fsc import fsc, fsc_auc

    args = parse_args(argv)
    wiped, initial, data = prepare(args)
    out = args.workdir / "run"
    cmd = [*C.cryoscape_exe(), "refine", str(wiped), "--initial", str(initial), "-o", str(out), "--force",
           "--no-progress", *args.extra]
    res = C.measure(cmd, args.workdir / "refine", env=C.thread_env(args.threads))
    if res["returncode"] != 0:
        raise RuntimeError(f"refine failed:\n{res.get('stderr_tail', '')}")
    known = args.workdir / "known" / "map.mrc"
    known.parent.mkdir(parents=True, exist_ok=True)
    kres = C.measure([*C.cryoscape_exe(), "reconstruct", data["star"], "-o", str(known), "--force", "--no-progress"],
                     args.workdir / "known_reconstruct", env=C.thread_env(args.threads))
    truth = np.load(data["truth"])
    ps = ParticleSet.from_file(out / "particles.star")
    err = geodesic_distance_deg(ps.rotations, truth["rotations"])
    shift_px = np.linalg.norm(ps.shifts_A - truth["shifts_A"], axis=1) / args.apix
    true_map, _ = C.ground_truth(data["truth"])
    auc = lambda p: float(fsc_auc(fsc(C.read_map(p)[0], true_map)))
    result = {"benchmark": "refine", "machine": C.machine_info(args.threads), "dataset": data["params"],
              "cryoscape": {"cmd": " ".join(cmd), "wall_s": res["wall_s"], "peak_rss_MB": res.get("peak_rss_MB")},
              "angular_error_deg": {"median": float(np.median(err)), "mean": float(err.mean()),
                                    "fraction_below_5": float(np.mean(err < 5))},
              "origin_error_px_median": float(np.median(shift_px)),
              "auc_vs_truth": {"refined": auc(out / "map.mrc"), "known_poses": auc(known)},
              "known_pose_reconstruct_wall_s": kres["wall_s"]}
    result["checks"] = {"median_error_at_most_3deg": result["angular_error_deg"]["median"] <= 3.0,
                        "auc_within_0.02": result["auc_vs_truth"]["refined"] >= result["auc_vs_truth"]["known_poses"] - 0.02,
                        "within_30_min": res["wall_s"] <= 1800}
    C.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Known-pose maps against the truth: ``cryoscape reconstruct`` and cryoDRGN's ``backproject_voxel`` on one STAR.

For each noise level (default SNR 0.05, 0.01 and clean) a single-conformation
AdK set (default 6 000 x 64², 1.5 Å/px, CTF and shifts) is simulated with
``cryoscape simulate`` (cached). On the same STAR and stack:

* ``cryoscape reconstruct STAR -o map.mrc`` (the command a user runs, its
  defaults) as its own process;
* cryoDRGN's own ``parse_pose_star`` and ``parse_ctf_star``, then ``cryodrgn
  backproject_voxel`` with its defaults, from its own virtual environment
  (``benchmarks/setup_envs.sh``).

Both full maps are compared with the true map (``ground_truth_volume``): the FSC
curve per shell, its AUC (``cryoscape.validate.fsc.fsc_auc``: area under the
curve over frequency normalised to Nyquist) and the mean FSC. The checks: our
AUC not below cryoDRGN's by more than ``--auc-tolerance`` (0.005) and no shell
below its FSC by more than ``--shell-tolerance`` (0.03).

With ``--speed-n N`` (default 20 000) the two commands are also timed, process
to process, on an N x 64² set at SNR 0.05 (cryoDRGN: ``backproject_voxel``
alone, and with its two parse steps). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=6000)
    p.add_argument("--snrs", default="0.05,0.01,inf", help="comma-separated noise levels ('inf': clean)")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-n", type=int, default=20000, help="particles of the timing set (0: no timing)")
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "reconstruct_truth")
    p.add_argument("--cryodrgn-venv", type=Path, default=C.DEFAULT_CRYODRGN_VENV)
    p.add_argument("--auc-tolerance", type=float, default=0.005)
    p.add_argument("--shell-tolerance", type=float, default=0.03)
    p.add_argument("--force-simulate", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def run_ours(star: Path, work: Path, threads: int) -> dict[str, Any]:
    """``cryoscape reconstruct`` as a user runs it, timed process to process."""
    out = work / "cryoscape" / "map.mrc"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*C.cryoscape_exe(), "reconstruct", str(star), "-o", str(out), "--force", "--no-progress"]
    res = C.measure(cmd, work / "cryoscape" / "reconstruct", env=C.thread_env(threads))
    if res["returncode"] != 0:
        raise RuntimeError(f"cryoscape reconstruct failed:\n{res.get('stderr_tail', '')}")
    res.update(cmd=" ".join(cmd), volume=str(out))
    return res


def run_cryodrgn(star: Path, work: Path, venv: Path, threads: int) -> dict[str, Any]:
    """cryoDRGN's parse steps and ``backproject_voxel`` (its defaults), each timed."""
    parse = C.cryodrgn_parse(venv, star, work / "cryodrgn", threads)
    bp = C.cryodrgn_backproject(venv, star, parse, work / "cryodrgn", threads)
    parse_s = sum(v["wall_s"] for k, v in parse.items() if isinstance(v, dict) and "wall_s" in v)
    return {**bp, "parse_wall_s": parse_s, "wall_s_with_parse": bp["wall_s"] + parse_s}


def curves(vol: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    from cryoscape.validate.fsc import fsc, fsc_auc

    f = np.asarray(fsc(vol, truth), dtype=np.float64)
    return {"auc": float(fsc_auc(f)), "mean_fsc": float(f[1:].mean()), "fsc_vs_truth": [round(float(x), 4) for x in f]}


def fidelity_case(snr: float, args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir / f"snr_{snr:g}"
    data = C.simulate_cached(work / "data", args.n_particles, args.box, args.apix, snr, args.seed,
                             threads=args.threads, force=args.force_simulate)
    star = Path(data["star"])
    truth, _ = C.ground_truth(data["truth"], 0)
    truth = np.asarray(truth, dtype=np.float64)
    ours = run_ours(star, work, args.threads)
    case: dict[str, Any] = {"snr": snr, "dataset": data,
                            "cryoscape": {"cmd": ours["cmd"], "wall_s": ours["wall_s"],
                                          **curves(C.read_map(ours["volume"])[0], truth)}}
    try:
        theirs = run_cryodrgn(star, work, args.cryodrgn_venv, args.threads)
    except (RuntimeError, FileNotFoundError) as exc:
        case["cryodrgn"] = {"error": str(exc)}
        return case
    case["cryodrgn"] = {"cmd": theirs["cmd"], "wall_s": theirs["wall_s"], **curves(C.read_map(theirs["volume"])[0], truth)}
    a, b = np.asarray(case["cryoscape"]["fsc_vs_truth"]), np.asarray(case["cryodrgn"]["fsc_vs_truth"])
    case["auc_difference"] = case["cryoscape"]["auc"] - case["cryodrgn"]["auc"]
    case["worst_shell_difference"] = float((a[1:] - b[1:]).min())
    case["checks"] = {"auc_not_below": case["auc_difference"] >= -args.auc_tolerance,
                      "no_shell_below": case["worst_shell_difference"] >= -args.shell_tolerance}
    return case


def speed_case(args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir / f"speed_n{args.speed_n}"
    data = C.simulate_cached(work / "data", args.speed_n, args.box, args.apix, 0.05, args.seed + 1,
                             threads=args.threads, force=args.force_simulate)
    star = Path(data["star"])
    ours = run_ours(star, work, args.threads)
    out: dict[str, Any] = {"n_particles": args.speed_n, "cryoscape": {"cmd": ours["cmd"], "wall_s": ours["wall_s"],
                                                                      "peak_rss_MB": ours.get("peak_rss_MB")}}
    try:
        theirs = run_cryodrgn(star, work, args.cryodrgn_venv, args.threads)
    except (RuntimeError, FileNotFoundError) as exc:
        out["cryodrgn"] = {"error": str(exc)}
        return out
    out["cryodrgn"] = {"cmd": theirs["cmd"], "wall_s": theirs["wall_s"], "wall_s_with_parse": theirs["wall_s_with_parse"],
                       "peak_rss_MB": theirs.get("peak_rss_MB")}
    out["speed_ratio"] = {"vs_backproject_voxel": theirs["wall_s"] / ours["wall_s"],
                          "vs_parse_and_backproject_voxel": theirs["wall_s_with_parse"] / ours["wall_s"]}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    snrs = [float(s) for s in args.snrs.split(",") if s.strip()]
    result: dict[str, Any] = {"benchmark": "reconstruct_truth", "machine": C.machine_info(args.threads),
                              "cryodrgn_version": C.cryodrgn_version(args.cryodrgn_venv),
                              "cases": [fidelity_case(s, args) for s in snrs]}
    if args.speed_n:
        result["speed"] = speed_case(args)
    result["all_checks_pass"] = all(all(c.get("checks", {"ran": False}).values()) for c in result["cases"])
    C.emit(result, args.out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"benchmark step failed: {exc}", file=sys.stderr)
        sys.exit(1)

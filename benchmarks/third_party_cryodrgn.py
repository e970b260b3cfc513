#!/usr/bin/env python
"""Third-party convention check: does cryoDRGN read our files as RELION files?

cryoscape writes simulated particles the way RELION stores extracted
particles: protein white on a dark background, RELION's CTF sign
(``CTF(0) = +Q``), RELION 3.1 STAR with Euler angles and origins in Å.
A program that reads RELION data correctly must then reconstruct the ground
truth from our STAR and stack as well as cryoscape does.

For a clean and a noisy (default SNR 0.05) single-conformation AdK dataset
this script

1. simulates the particles with ``cryoscape simulate`` (cached),
2. reconstructs with cryoscape (known poses, CTF),
3. lets cryoDRGN parse our STAR with its own tools (``parse_pose_star``,
   ``parse_ctf_star``) and reconstruct with ``backproject_voxel`` using its
   defaults. cryoDRGN's default *inverts* the data (its ``--uninvert-data``
   turns that off) and its CTF has the opposite sign to RELION's; the two
   flips cancel, so the default is the right setting for RELION-extracted
   (white-on-dark) particles, and it is what we use. On the clean set we also
   run ``--uninvert-data`` to show that it gives the negated map,
4. compares each map with the ground truth (``ground_truth_volume``):
   FSC curve, resolution at FSC 0.5 and 0.143, real-space correlation; and
   looks for a sign flip, a hand flip or a shift (best integer
   cross-correlation offset) that would make cryoDRGN's map fit better.

Exit status 1 (and a ``finding`` in the JSON) when cryoDRGN's agreement with
the truth is much worse than ours (correlation in a common low-pass band,
lower by more than ``--corr-tolerance``; or FSC-0.5 resolution vs truth worse
by more than ``--res-tolerance``), or needs a sign/hand flip or a shift: that
would mean our files break RELION conventions. The unfiltered correlation is
reported too, but not judged: cryoscape Wiener-filters its map and cryoDRGN
does not, which alone lowers cryoDRGN's unfiltered correlation on noisy data.
Differences that do not point at the files go to ``notes``. Prints one JSON
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
    p.add_argument("--n-clean", type=int, default=3000, help="particles in the clean set")
    p.add_argument("--n-noisy", type=int, default=10000, help="particles in the noisy set")
    p.add_argument("--snr", type=float, default=0.05, help="SNR of the noisy set")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "third_party_cryodrgn")
    p.add_argument("--force-simulate", action="store_true")
    p.add_argument("--cryodrgn-venv", type=Path, default=C.DEFAULT_CRYODRGN_VENV)
    p.add_argument("--no-uninvert-demo", action="store_true",
                   help="skip the extra --uninvert-data run on the clean set")
    p.add_argument("--corr-tolerance", type=float, default=0.05,
                   help="fail if cryoDRGN's correlation with the truth is lower than ours by more than this")
    p.add_argument("--res-tolerance", type=float, default=1.25,
                   help="fail if cryoDRGN's FSC-0.5 resolution (Å) is worse than ours by more than this factor")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# map comparison


def sphere(D: int, radius: float) -> np.ndarray:
    g = np.arange(D) - D // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    return (x * x + y * y + z * z) <= radius * radius


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask], b[mask]
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def lowpass(v: np.ndarray, apix: float, resolution_A: float, edge_px: float = 2.0) -> np.ndarray:
    """Low-pass to ``resolution_A`` with a raised-cosine edge ``edge_px`` Fourier voxels wide."""
    D = v.shape[-1]
    f = np.fft.fftfreq(D)
    kz, ky, kx = np.meshgrid(f, f, f, indexing="ij")
    r = np.sqrt(kx**2 + ky**2 + kz**2) * D  # Fourier voxels
    rc = D * apix / resolution_A
    w = np.clip((rc + edge_px / 2 - r) / edge_px, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    return np.fft.ifftn(np.fft.fftn(v) * w).real


def hand_flip(v: np.ndarray) -> np.ndarray:
    """Mirror along z about voxel D//2 (index D//2 + d ↔ D//2 − d)."""
    return np.roll(v[::-1], 1, axis=0)


def best_shift(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Integer (x, y, z) voxel offset t maximising Σ a(r) b(r − t): ``a`` ≈ ``b`` moved by t."""
    D = a.shape[-1]
    cc = np.fft.ifftn(np.fft.fftn(a) * np.conj(np.fft.fftn(b))).real
    iz, iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)
    wrap = lambda i: int(i - D if i > D // 2 else i)  # noqa: E731
    return [wrap(ix), wrap(iy), wrap(iz)]


def compare(vol: np.ndarray, truth: np.ndarray, apix: float) -> dict[str, Any]:
    """FSC vs truth (unmasked), resolutions, correlation and sign/hand/shift diagnostics."""
    from cryoscape.validate.fsc import fsc, resolution_at, shell_frequencies

    D = truth.shape[-1]
    m = sphere(D, D / 2 - 1)
    curve = np.asarray(fsc(vol, truth), dtype=float)
    out: dict[str, Any] = {
        "fsc_vs_truth": [round(float(v), 4) for v in curve],
        "resolution_fsc0.5_A": float(resolution_at(curve, D, apix, 0.5)),
        "resolution_fsc0.143_A": float(resolution_at(curve, D, apix, 0.143)),
        "correlation": correlation(vol, truth, m),
        "correlation_hand_flipped": correlation(hand_flip(vol), truth, m),
        "best_shift_voxels_xyz": best_shift(vol, truth),
        "best_shift_voxels_xyz_negated_map": best_shift(-vol, truth),
    }
    out["correlation_lowpass"] = None  # filled in by run_case at a common band
    out["shell_frequencies_per_A"] = [round(float(f), 5) for f in shell_frequencies(D, apix)]
    anomalies = []
    if out["correlation"] < 0:
        anomalies.append("map is negated relative to the truth (contrast/CTF sign)")
    if out["correlation_hand_flipped"] > out["correlation"] + 0.05:
        anomalies.append("map fits the truth better after a hand flip")
    if out["correlation"] > 0 and out["best_shift_voxels_xyz"] != [0, 0, 0]:
        anomalies.append(f"map is offset from the truth by {out['best_shift_voxels_xyz']} voxels (x,y,z)")
    out["anomalies"] = anomalies
    return out


# --------------------------------------------------------------------------


def run_case(name: str, n: int, snr: float, args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir / name
    data = C.simulate_cached(work / "data", n, args.box, args.apix, snr, args.seed, threads=args.threads,
                             force=args.force_simulate)
    star = Path(data["star"])
    truth, apix_truth = C.ground_truth(data["truth"], 0)
    truth = np.asarray(truth, dtype=np.float64)
    case: dict[str, Any] = {"dataset": data}

    # cryoscape
    from bench_reconstruct import run_cryoscape

    ours = run_cryoscape(star, work, args_for_child(args))
    vol_ours, apix_ours = C.read_map(ours["inner_output"])
    case["cryoscape"] = {"wall_s": ours["wall_s"], "apix_header": apix_ours, **compare(vol_ours, truth, apix_truth)}

    # cryoDRGN, default settings (data inverted: right for RELION-extracted particles)
    venv = args.cryodrgn_venv
    dwork = work / "cryodrgn"
    pk = C.cryodrgn_parse(venv, star, dwork, args.threads)
    bp = C.cryodrgn_backproject(venv, star, pk, dwork, args.threads)
    vol_drgn, apix_drgn = C.read_map(bp["volume"])
    case["cryodrgn"] = {"cmd": bp["cmd"], "wall_s": bp["wall_s"], "apix_header": apix_drgn,
                        **compare(vol_drgn, truth, apix_truth)}
    # real-space correlation is sensitive to how each program filters its map (cryoscape
    # Wiener-filters, cryoDRGN does not); compare also in a common band, up to the
    # better of the two FSC-0.5 resolutions vs truth
    band = min(case["cryoscape"]["resolution_fsc0.5_A"], case["cryodrgn"]["resolution_fsc0.5_A"])
    m = sphere(args.box, args.box / 2 - 1)
    t_lp = lowpass(truth, apix_truth, band)
    case["lowpass_band_A"] = band
    case["cryoscape"]["correlation_lowpass"] = correlation(lowpass(vol_ours, apix_truth, band), t_lp, m)
    case["cryodrgn"]["correlation_lowpass"] = correlation(lowpass(vol_drgn, apix_truth, band), t_lp, m)
    case["cryodrgn_vs_cryoscape_correlation"] = correlation(vol_drgn, vol_ours, sphere(args.box, args.box / 2 - 1))
    if abs(apix_drgn - apix_truth) > 1e-3:
        case["cryodrgn"]["anomalies"].append(f"header voxel size {apix_drgn} Å ≠ {apix_truth} Å")

    if name == "clean" and not args.no_uninvert_demo:
        bp2 = C.cryodrgn_backproject(venv, star, pk, dwork / "uninvert", args.threads, extra=["--uninvert-data"])
        vol2, _ = C.read_map(bp2["volume"])
        case["cryodrgn_uninvert_data"] = {
            "cmd": bp2["cmd"],
            "correlation": correlation(vol2, truth, sphere(args.box, args.box / 2 - 1)),
            "note": "with --uninvert-data cryoDRGN should give the negated map for RELION-convention particles",
        }
    return case


def args_for_child(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(threads=args.threads, batch_size=None, time_backproject=False)


def verdict(cases: dict[str, dict[str, Any]], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(problems that point at our files, other notes)."""
    problems, notes = [], []
    for name, c in cases.items():
        o, d = c["cryoscape"], c["cryodrgn"]
        if d["correlation_lowpass"] < o["correlation_lowpass"] - args.corr_tolerance:
            problems.append(f"{name}: cryoDRGN correlation with truth (to {c['lowpass_band_A']:.1f} Å) "
                            f"{d['correlation_lowpass']:.3f} vs cryoscape {o['correlation_lowpass']:.3f}")
        if d["resolution_fsc0.5_A"] > args.res_tolerance * o["resolution_fsc0.5_A"]:
            problems.append(f"{name}: cryoDRGN FSC-0.5 vs truth {d['resolution_fsc0.5_A']:.2f} Å "
                            f"vs cryoscape {o['resolution_fsc0.5_A']:.2f} Å")
        problems += [f"{name}: cryoDRGN {a}" for a in d["anomalies"]]
        problems += [f"{name}: cryoscape {a}" for a in o["anomalies"]]
        if d["correlation"] < o["correlation"] - args.corr_tolerance:
            notes.append(f"{name}: unfiltered real-space correlation cryoDRGN {d['correlation']:.3f} vs cryoscape "
                         f"{o['correlation']:.3f} (cryoscape's map is Wiener-filtered, cryoDRGN's is not)")
        if o["resolution_fsc0.143_A"] > 1.1 * d["resolution_fsc0.143_A"]:
            notes.append(f"{name}: cryoscape's map agrees less with the truth at high resolution than cryoDRGN's "
                         f"(FSC-0.143 vs truth {o['resolution_fsc0.143_A']:.2f} Å vs {d['resolution_fsc0.143_A']:.2f} Å)")
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "benchmark": "third_party_cryodrgn",
        "machine": C.machine_info(args.threads),
        "cryodrgn_version": C.cryodrgn_version(args.cryodrgn_venv),
        "cryodrgn_data_sign": "default (inverts data); see the module docstring",
        "cases": {},
    }
    try:
        for name, n, snr in (("clean", args.n_clean, float("inf")), ("noisy", args.n_noisy, args.snr)):
            C.log(f"case {name}: {n} particles, snr {snr}")
            result["cases"][name] = run_case(name, n, snr, args)
    except (RuntimeError, FileNotFoundError) as exc:
        result["error"] = str(exc)
        C.emit(result, args.out)
        return 2
    problems, notes = verdict(result["cases"], args)
    result["ok"] = not problems
    result["notes"] = notes
    if problems:
        result["finding"] = ("cryoDRGN does not read our files as RELION data as well as cryoscape does: "
                             + "; ".join(problems))
        C.log("FINDING: " + result["finding"])
    C.emit(result, args.out)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

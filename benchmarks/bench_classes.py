#!/usr/bin/env python
"""``cryoscape fit classes`` on three AdK states mixed evenly, at known poses.

Simulated with :func:`cryoscape.simulate.simulate_dataset`: the closed (frame 0), half-way
(frame 48) and open (frame 97) AdK of the built-in trajectory in equal shares, default
9 000 x 64² at 1.5 Å/px, SNR 0.05, CTF (defocus 1.0–2.5 µm) and shifts; cached by its settings.
The command a user runs, ``cryoscape fit classes STAR --classes 3 -o RUN``, is timed process to
process (peak resident memory too). Scored: the adjusted Rand index of ``classes.npy`` against the
true states (the acceptance figure of the poses issue: >= 0.90 within 15 min), the contingency
table, and each class map's FSC AUC against the true map of the state it holds most of.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FRAMES = (0, 48, 97)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=9000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.5)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "classes")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further fit classes options (last)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def simulate(args: argparse.Namespace) -> Path:
    """The three-state set in ``workdir/data`` (reused when its settings match)."""
    from cryoscape.simulate import simulate_dataset

    data = args.workdir / "data"
    params = {"n": args.n_particles, "box": args.box, "apix": args.apix, "snr": args.snr, "seed": args.seed,
              "frames": list(FRAMES)}
    key = data / "bench_params.json"
    if key.exists() and json.loads(key.read_text()) == params and (data / "particles.star").exists():
        C.log(f"reusing simulated dataset {data}")
        return data
    C.log(f"simulating {args.n_particles} x {args.box}² of AdK frames {FRAMES}")
    simulate_dataset("adk", n_particles=args.n_particles, box=args.box, apix=args.apix, snr=args.snr,
                     conformations=",".join(map(str, FRAMES)), out_dir=data, force=True, progress=False,
                     seed=args.seed)
    key.write_text(json.dumps(params))
    return data


def score(run: Path, data: Path) -> dict[str, Any]:
    """ARI, contingency table and per-class FSC AUC against the true map of its main state."""
    from cryoscape.io.mrc import read_mrc
    from cryoscape.simulate import ground_truth_volume, load_truth
    from cryoscape.validate.clustering import adjusted_rand_index, contingency_table
    from cryoscape.validate.fsc import fsc, fsc_auc

    labels = np.load(run / "classes.npy")
    truth = np.load(data / "truth.npz")["conformation"]
    table = contingency_table(labels, truth)
    states = np.unique(truth)
    out: dict[str, Any] = {"adjusted_rand_index": adjusted_rand_index(labels, truth),
                           "contingency": {"rows": "classes", "columns": [int(s) for s in states],
                                           "counts": table.tolist()}}
    meta = load_truth(data / "truth.npz")
    aucs = []
    for k in range(table.shape[0]):
        state = int(states[int(np.argmax(table[k]))])
        true_map = ground_truth_volume(meta, state)[0]
        vol = read_mrc(run / f"class_{k + 1:02d}.mrc")[0]
        aucs.append({"class": k + 1, "state": state, "fsc_auc": float(fsc_auc(fsc(vol, true_map)))})
    out["class_maps"] = aucs
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data = simulate(args)
    run = args.workdir / "run"
    cmd = [*C.cryoscape_exe(), "fit", "classes", str(data / "particles.star"), "--classes", "3", "-o", str(run),
           "--force", "--no-progress", *args.extra]
    res = C.measure(cmd, args.workdir / "fit_classes", env=C.thread_env(args.threads))
    if res["returncode"] != 0:
        raise RuntimeError(f"fit classes failed:\n{res.get('stderr_tail', '')}")
    metrics = json.loads((run / "metrics.json").read_text())
    result = {"benchmark": "classes", "machine": C.machine_info(args.threads),
              "dataset": {"frames": list(FRAMES), "n_particles": args.n_particles, "box": args.box,
                          "apix": args.apix, "snr": args.snr, "seed": args.seed},
              "cryoscape": {"cmd": " ".join(cmd), "wall_s": res["wall_s"], "peak_rss_MB": res.get("peak_rss_MB"),
                            "iterations": len(metrics["iterations"]) - 1, "class_sizes": metrics["class_sizes"],
                            "resolution_A": metrics["resolution_A"]},
              **score(run, data)}
    result["checks"] = {"ari_at_least_0.90": result["adjusted_rand_index"] >= 0.90,
                        "within_15_min": res["wall_s"] <= 900}
    C.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()

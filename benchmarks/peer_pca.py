#!/usr/bin/env python
"""cryoscape's ``pca`` side by side with peer programs on adk-1d, through the benchmark runner.

Runs :func:`cryoscape.bench.runner.run_benchmark` on ``adk-1d`` (default 20 000
particles, box 64; ``--n-particles``/``--box`` to shrink it) with the methods
``pca`` and ``cryodrgn`` (cryoDRGN ``train_vae`` from its own environment,
:mod:`cryoscape.bench.peers`), plus ``recovar`` with ``--with-recovar`` where
the runner accepts that peer (it refuses it for now: RECOVAR's maps from our
particles do not match the truth, see benchmarks/README.md; and on a CPU its
``compute_state`` takes many minutes per volume, of which the per-image FSC
needs 100). Every method is scored the same way: per-image FSC AUC over 100
evenly spaced particles against the true volumes, ``|Spearman|`` of the
latents' first principal component against the true frame, kNN preservation,
and its wall time. The consensus and true-label oracle references come along.

Prints one JSON object (a compact table plus the path of the runner's full
``results.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-particles", type=int, default=None, help="dataset size (default adk-1d's, 20000)")
    p.add_argument("--box", type=int, default=None, help="box in px (default 64; field of view kept)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: pca,cryodrgn; see --with-recovar)")
    p.add_argument("--with-recovar", action="store_true", help="add recovar to the default methods where available")
    p.add_argument("--pca-iterations", type=int, default=None, help="EM iterations of pca (default its own, 20)")
    p.add_argument("--cryodrgn-epochs", type=int, default=None, help="train_vae epochs (default the peer's, 4)")
    p.add_argument("--cryodrgn-batch-size", type=int, default=None, help="train_vae batch size (default 16)")
    p.add_argument("--n-samples", type=int, default=100, help="particles sampled for the per-image FSC")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=C.DEFAULT_WORKDIR / "peers" / "cache",
                   help="dataset cache root (a subfolder per size)")
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR / "peers" / "pca",
                   help="results root (a subfolder per size)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def default_methods(with_recovar: bool) -> list[str]:
    from cryoscape.bench.runner import METHODS

    names = ["pca", "cryodrgn"]
    if with_recovar and "recovar" in METHODS and METHODS["recovar"].unavailable_reason() is None:
        names.append("recovar")
    return names


def method_options(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    opts: dict[str, dict[str, Any]] = {m: {} for m in methods}
    if "pca" in opts and args.pca_iterations is not None:
        opts["pca"]["iterations"] = args.pca_iterations
    if "cryodrgn" in opts:
        opts["cryodrgn"]["threads"] = args.threads
        if args.cryodrgn_epochs is not None:
            opts["cryodrgn"]["epochs"] = args.cryodrgn_epochs
        if args.cryodrgn_batch_size is not None:
            opts["cryodrgn"]["batch_size"] = args.cryodrgn_batch_size
    if "recovar" in opts:
        opts["recovar"]["threads"] = args.threads
    return opts


def table_row(m: dict[str, Any]) -> dict[str, Any]:
    auc = m["per_image_fsc_auc"]
    return {"name": m["name"], "auc_mean": auc["mean"], "auc_std": auc["std"], "auc_missing": auc["n_missing"],
            "spearman_abs": m["spearman_abs"], "knn_preservation": m["knn_preservation"],
            "knn_chance": m["knn_chance"], "wall_s": m["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import cryoscape.bench.peers  # noqa: F401  registers the peer methods (until the runner imports them itself)
    import cryoscape.methods  # noqa: F401  volume hooks of cryoscape's methods
    from cryoscape.bench.datasets import get_spec
    from cryoscape.bench.runner import run_benchmark

    spec = get_spec("adk-1d").resized(args.n_particles, args.box)
    tag = f"n{spec.n_particles}_box{spec.box}"
    methods = args.methods.split(",") if args.methods else default_methods(args.with_recovar)
    result: dict[str, Any] = {"benchmark": "peer_pca", "machine": C.machine_info(args.threads),
                              "dataset": "adk-1d", "n_particles": spec.n_particles, "box": spec.box,
                              "apix": spec.apix, "methods": methods}
    t0 = time.perf_counter()
    try:
        res = run_benchmark("adk-1d", methods, args.workdir / tag, cache_dir=args.cache / tag,
                            n_particles=args.n_particles, box=args.box, n_samples=args.n_samples,
                            method_options=method_options(args, methods), force=True, progress=False, log=C.log)
    except Exception as exc:  # one JSON object whatever happens
        result["error"] = f"{type(exc).__name__}: {exc}"
        C.emit(result, args.out)
        return 2
    doc = res.to_dict()
    result["total_wall_s"] = time.perf_counter() - t0
    result["table"] = [table_row(m) for m in doc["methods"] + doc["references"]]
    result["results_json"] = str(res.files.get("json", args.workdir / tag / "results.json"))
    C.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

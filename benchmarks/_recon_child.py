#!/usr/bin/env python
"""Known-pose CTF reconstruction with cryoscape, run as its own process.

Used by the benchmarks so that the peak memory of the reconstruction alone
can be measured. Prints one JSON line: timings (s) and the output paths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def reconstruct_star(star: str, batch_size: int | None, half_sets: bool, time_backproject: bool = False):
    """Read ``star`` and reconstruct with the library; returns (volume [D,D,D], apix, info dict)."""
    import numpy as np

    from cryoscape.particles import ParticleSet

    t0 = time.perf_counter()
    ps = ParticleSet.from_file(star)
    t_load = time.perf_counter() - t0
    info: dict = {"n_particles": len(ps), "box": int(ps.box), "apix": float(ps.apix), "load_s": t_load}
    t0 = time.perf_counter()
    try:
        from cryoscape.reconstruct import reconstruct  # public entry point
    except ImportError:
        reconstruct = None
    if reconstruct is not None:
        kwargs = {"progress": False}
        if batch_size:
            kwargs["batch_size"] = batch_size
        rec = reconstruct(ps, **kwargs)
        vol = getattr(rec, "volume", rec)
        info["api"] = "cryoscape.reconstruct.reconstruct"
        for k in ("resolution_A", "resolution_masked_A"):
            if hasattr(rec, k):
                info[f"halfmap_{k}"] = float(getattr(rec, k))
    else:
        from cryoscape.reconstruct.backprojection import backproject

        sums = backproject(ps, half_sets=half_sets, batch_size=batch_size or 1024)
        vol = sums.volume(None)
        info["api"] = "cryoscape.reconstruct.backprojection.backproject"
    info["reconstruct_s"] = time.perf_counter() - t0
    if time_backproject:
        # the streaming CTF-weighted insertion alone (a second pass over the images)
        from cryoscape.reconstruct.backprojection import backproject

        t0 = time.perf_counter()
        backproject(ps, half_sets=half_sets, batch_size=batch_size or 1024)
        info["backproject_only_s"] = time.perf_counter() - t0
    vol = np.asarray(vol.detach().cpu().numpy() if hasattr(vol, "detach") else vol, dtype=np.float32)
    return vol, float(ps.apix), info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("star")
    p.add_argument("-o", "--output", required=True, help="output MRC")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-half-sets", action="store_true")
    p.add_argument("--time-backproject", action="store_true",
                   help="also time the insertion step alone (a second pass; not counted in the process peak)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from cryoscape.io.mrc import write_mrc

    t_import = time.perf_counter() - t_start
    vol, apix, info = reconstruct_star(args.star, args.batch_size, not args.no_half_sets, args.time_backproject)
    t0 = time.perf_counter()
    write_mrc(args.output, vol, apix, force=True)
    info["write_s"] = time.perf_counter() - t0
    info["import_s"] = t_import
    info["total_in_process_s"] = time.perf_counter() - t_start
    info["images_per_s"] = info["n_particles"] / info["reconstruct_s"]
    if "backproject_only_s" in info:
        info["backproject_only_images_per_s"] = info["n_particles"] / info["backproject_only_s"]
    info["output"] = args.output
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())

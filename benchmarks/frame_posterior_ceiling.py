"""The best |Spearman| any method can reach on a path dataset: each particle's posterior over the true frames.

For a random subset of a cached path dataset (e.g. ``adk-1d``), every image is
compared with the noise-free rendering of every true frame volume under its
own true pose, shift and CTF; with the dataset's white noise ``σ`` the
log-likelihood of frame ``f`` is ``−‖y − A f‖² / 2σ²``, the prior the
dataset's frame probabilities. The posterior mean frame is the Bayes estimate
of the position along the path given perfect volumes, poses and CTFs, so its
|Spearman| against the true coordinate bounds what a latent coordinate learnt
from the same images can reach (up to the projector's own small error).

    .venv/bin/python benchmarks/frame_posterior_ceiling.py --cache bench_out/cache/n20000 --n-particles 2000
    .venv/bin/python benchmarks/frame_posterior_ceiling.py --dataset adk-1d-snr0.01 --cache bench_out/cache/n20000

Prints one JSON object (``--out FILE`` also saves it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def frame_log_likelihoods(ds, ps, idx: np.ndarray, batch: int = 500) -> np.ndarray:
    """``[len(idx), n_frames]`` Gaussian log-likelihoods (up to a constant) of each image under each true frame."""
    from cryoscape.imaging.forward import render
    from cryoscape.imaging.projector import FourierProjector
    from cryoscape.inference.ppca_em import batch_inputs

    images = torch.as_tensor(np.concatenate([im for _, im in ps.iter_batches(512, idx)]), dtype=torch.float32)
    R, sh, ctf = batch_inputs(ps, idx, True, "cpu", torch.float32)
    sigma = float(ds.truth["noise_std"])
    n_frames = int(ds.truth["n_frames"])
    out = np.zeros((idx.size, n_frames))
    for f in range(n_frames):
        proj = FourierProjector(torch.as_tensor(ds.true_volume(f)[0], dtype=torch.float32))
        for s in range(0, idx.size, batch):
            sl = slice(s, s + batch)
            model = render(proj, R[sl], sh[sl], {k: v[sl] for k, v in ctf.items()}, float(ps.apix))
            out[sl, f] = (-((images[sl] - model) ** 2).sum((1, 2)) / (2 * sigma ** 2)).double().numpy()
    return out


def main() -> None:
    from cryoscape.bench.datasets import build_dataset
    from cryoscape.bench.runner import _particles

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="adk-1d")
    ap.add_argument("--cache", default="bench_out/cache/n20000", help="dataset cache folder (built if missing)")
    ap.add_argument("--n-total", type=int, default=20000, help="particles of the cached dataset")
    ap.add_argument("--n-particles", type=int, default=2000, help="random subset scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ds = build_dataset(args.dataset, args.cache, n_particles=args.n_total, progress=False)
    ps = _particles(ds)
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(ps), min(args.n_particles, len(ps)), replace=False))
    ll = frame_log_likelihoods(ds, ps, idx)
    log_post = ll + np.log(np.maximum(np.asarray(ds.truth["frame_probabilities"], dtype=np.float64), 1e-300))[None]
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    post /= post.sum(axis=1, keepdims=True)
    frames = np.arange(ll.shape[1])
    mean_frame = post @ frames
    coord = np.asarray(ds.truth["coordinate"])[idx]
    C.emit({
        "benchmark": "frame_posterior_ceiling", "machine": C.machine_info(args.threads),
        "dataset": args.dataset, "n_particles": int(idx.size), "box": int(ps.box),
        "spearman_abs_posterior_mean_frame": float(abs(spearmanr(mean_frame, coord)[0])),
        "spearman_abs_map_frame": float(abs(spearmanr(post.argmax(axis=1), coord)[0])),
        "map_frame_exact": float(np.mean(post.argmax(axis=1) == np.asarray(ds.truth["conformation"])[idx])),
        "posterior_sd_frames_mean": float(np.mean(np.sqrt(np.maximum(post @ frames ** 2 - mean_frame ** 2, 0)))),
        "wall_s": round(time.perf_counter() - start, 1),
    }, args.out)


if __name__ == "__main__":
    main()

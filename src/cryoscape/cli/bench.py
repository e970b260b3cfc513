"""``cryoscape bench``: fit methods on a benchmark dataset and score them against its ground truth."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Build (or reuse from the cache) a benchmark dataset with ground truth, fit each
method with its defaults into OUT/<dataset>/<method>/, and score it:

  per-image FSC AUC  100 evenly spaced particles; the method's volume at each
                     particle's latent against the true volume of its
                     conformation (soft-sphere mask, area to Nyquist), mean ± std
  |Spearman|         first principal component of the latents against the true
                     coordinate (2-D truth: the largest over its axes)
  |Spearman| (latent curve)
                     where a method writes curve_coordinate.npy (pca): each
                     particle's place along its latent curve, same comparison
  kNN preservation   10 nearest latent neighbours kept among the true ones,
                     with the chance level
  outlier ROC AUC    adk-junk only: junk score (the larger of the latent-density
                     and the consensus-map-fit z-scores) against the labels
  wall s             the method's run time

Two references are scored on the same particles: consensus (one map from all
particles; on adk-junk its outlier ROC AUC is that of the map fit alone) and
oracle (for each sampled particle, the map with true poses from the particles
whose true coordinate is within a window around its own: frames ±w on a path,
a block of grid cells on adk-2d; w is the candidate with the best per-image
FSC AUC predicted from the true volumes and the consensus SSNR). Writes
OUT/results.json, OUT/results.md (a table) and OUT/results.html
(self-contained).
"""


def _description() -> str:
    """:data:`DESCRIPTION` followed by the datasets, the registry's methods and the peer programs."""
    from cryoscape.bench.datasets import DATASETS
    from cryoscape.bench.method_table import GRID
    from cryoscape.bench.peers.table import PEERS
    from cryoscape.methods.registry import METHODS

    lines = [DESCRIPTION, f"datasets: {', '.join(DATASETS)}.", "",
             "methods (the method registry; representation x inference, fitted with their defaults):"]
    lines += [f"  {m.name:<18}{m.representation + ' x ' + m.inference:<25} {m.summary}" for m in METHODS.values()]
    lines += [f"  {GRID:<18}every runnable representation x inference pair above; the pairs that cannot",
              f"  {'':<18}run are listed with their reason in the results", "",
              "peer programs (where their environments exist: benchmarks/setup_envs.sh, or",
              "$CRYOSCAPE_<NAME> pointing at the virtual environment or the program):"]
    lines += [f"  {p.name:<18}{p.summary}" for p in PEERS.values()]
    return "\n".join(lines) + "\n"

EPILOG = """\
examples:
  cryoscape bench --dataset adk-1d --methods pca -o bench/
  cryoscape bench --dataset adk-1d --methods grid --n-particles 2000 --box 32 -o grid/
  cryoscape bench --dataset adk-junk --methods pca --n-particles 2000 --box 32 --cache ~/bench-cache -o junk/ --force
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command."""
    p = subparsers.add_parser("bench", help="benchmark methods on a dataset with ground truth",
                              description=_description(), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, metavar="NAME", help="benchmark dataset, e.g. adk-1d")
    p.add_argument("--methods", required=True, nargs="+", metavar="METHOD",
                   help="methods to fit (space or comma separated), e.g. pca,drgn,cryodrgn; grid: every runnable "
                        "representation x inference pair")
    p.add_argument("-o", "--output", default="bench_results", metavar="OUT",
                   help="results folder (default bench_results)")
    p.add_argument("--cache", metavar="DIR",
                   help="dataset cache (default $CRYOSCAPE_BENCH_CACHE or ~/.cache/cryoscape/bench)")
    p.add_argument("--n-particles", type=int, metavar="N", help="dataset size (default the dataset's, 20000)")
    p.add_argument("--box", type=int, metavar="D", help="image box in px, field of view kept (default 64)")
    p.add_argument("--iterations", type=int, metavar="N", help="iterations (epochs, for the gradient-trained methods) of every method "
                        "(default each method's own)")
    p.add_argument("--n-samples", type=int, default=100, metavar="N",
                   help="particles sampled for the per-image FSC (default 100)")
    p.add_argument("--force", action="store_true",
                   help="overwrite OUT; rebuild a cached dataset made with other settings")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return p


def _method_names(values: list[str]) -> list[str]:
    """``["pca,drgn", "grid"]`` -> ``["pca", "drgn", "grid"]``."""
    return [name for v in values for name in v.split(",") if name]


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the results table."""
    from cryoscape.bench.report import results_markdown
    from cryoscape.bench.method_table import iteration_options
    from cryoscape.bench.runner import check_methods, run_benchmark

    names = _method_names(args.methods)
    methods = check_methods(names)
    options = {} if args.iterations is None else {m: iteration_options(m, args.iterations) for m in methods}
    res = run_benchmark(args.dataset, names, args.output, cache_dir=args.cache, n_particles=args.n_particles,
                        box=args.box, n_samples=args.n_samples, method_options=options, force=args.force,
                        progress=not args.no_progress, log=print)
    print(results_markdown(res))
    print("wrote " + ", ".join(str(p) for p in res.files.values()))
    return 0

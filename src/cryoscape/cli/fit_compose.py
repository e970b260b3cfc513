"""``cryoscape fit compose``: fit any (representation, inference) pair of the method registry."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

COMPOSE_DESCRIPTION = """\
Fit a representation of the conformations by an inference scheme, any pair
the method registry runs, into one run directory of the same shape as every
other method's (config.yaml, latents.npy, weights.pt, metrics.json, log.txt,
mean.mrc), so volume, analyze, select, traverse, compare and bench read it.

representations:
{representations}

inference schemes:
{schemes}

pairs (representation x inference -> method):
{pairs}

--latent-dim and --epochs mean the same for every pair (for em, --epochs is
the number of EM iterations); any other option of the method goes through
--set NAME=VALUE (e.g. --set beta=0.5 --set encoder=cnn for the gradient
schemes, --set mask=sphere for em). The presets `fit pca` and `fit drgn`
document their options in full.
"""

COMPOSE_EPILOG = """\
examples:
  cryoscape fit compose run_data.star -o runs/lin_vae --representation linear --inference amortised
  cryoscape fit compose run_data.star -o runs/lin_em --representation linear --inference em --latent-dim 4
  cryoscape fit compose run_data.star -o runs/nf --representation neural --inference explicit --epochs 30
"""


def _description() -> str:
    from cryoscape.methods.registry import INFERENCE_SCHEMES, REPRESENTATION_KINDS, pair_grid

    reps = "\n".join(f"  {k:<12} {v}" for k, v in REPRESENTATION_KINDS.items())
    schemes = "\n".join(f"  {k:<10} {v}" for k, v in INFERENCE_SCHEMES.items())
    pairs = "\n".join(f"  {r:<12} x {i:<10} -> {m or 'cannot run'}" for r, i, m in pair_grid())
    return COMPOSE_DESCRIPTION.format(representations=reps, schemes=schemes, pairs=pairs)


def add_compose_parser(methods: argparse._SubParsersAction) -> None:
    """The ``fit compose`` sub-command."""
    from cryoscape.methods.registry import INFERENCE_SCHEMES, REPRESENTATION_KINDS

    p = methods.add_parser("compose", help="any representation with any inference scheme (see --help for the pairs)",
                           description=_description(), epilog=COMPOSE_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with poses (and CTF): .star or .cs")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--representation", required=True, choices=tuple(REPRESENTATION_KINDS),
                   help="how conformations are represented")
    p.add_argument("--inference", required=True, choices=tuple(INFERENCE_SCHEMES), help="how the latents are inferred")
    p.add_argument("--latent-dim", type=int, metavar="D", help="latent dimension (default: the method's)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="passes over the particles: EM iterations (em) or training epochs (default: the method's)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="any other option of the method (repeatable; VALUE read as a number, true/false, or text)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per step (default: the method's)")
    p.add_argument("--seed", type=int, help="seed of the random start, batch order and noise (default 0)")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default cpu)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="overwrite an earlier run in RUN")
    again.add_argument("--resume", action="store_true", help="continue the run in RUN from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> ``(name, value)``, the value read as YAML (number, bool, null or text)."""
    import yaml

    from cryoscape.errors import InputError

    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name.isidentifier():
        raise InputError(f"--set {text!r} is not NAME=VALUE; write e.g. --set beta=0.5")
    try:
        return name, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return name, value


def _check_options(method: Any, options: dict[str, Any]) -> None:
    """Refuse an option the method's runner does not take, naming the ones it does."""
    from cryoscape.errors import InputError

    params = inspect.signature(method.runner_function()).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the runner checks its own options
    known = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL][2:]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"the {method.name} method has no option {', '.join(unknown)}; it takes {', '.join(known)}")


def run_compose(args: argparse.Namespace) -> int:
    """Fit the pair, write the run, print a summary."""
    import numpy as np
    import torch

    from cryoscape.errors import InputError
    from cryoscape.methods.registry import method_for_pair

    method = method_for_pair(args.representation, args.inference)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    for flag, value in (("--latent-dim", args.latent_dim), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:  # named as the user typed them, not as the method calls them
            raise InputError(f"{flag} must be at least 1; got {value}")
    extra = dict(parse_setting(s) for s in args.settings)
    clash = sorted(set(extra) & {"latent_dim", method.passes_option, "batch_size", "seed", "device",
                                 "datadir", "force", "resume", "progress", "method", "representation", "latents"})
    if clash:
        raise InputError(f"--set {clash[0]}=... is not an option to set here; use the command's own flag "
                         "(--latent-dim, --epochs, --batch-size, --seed, --device, ...) or another pair")
    options = method.options(args.latent_dim, args.epochs, batch_size=args.batch_size, seed=args.seed,
                             device=args.device, datadir=args.datadir, **extra)
    options = {**method.defaults, **options}
    _check_options(method, options)
    out = method.run(args.particles, args.output, force=args.force, resume=args.resume,
                     progress=not args.no_progress, **options)
    run_dir = out.run
    latents = np.load(run_dir.path / "latents.npy", mmap_mode="r")
    print(f"method {method.name} ({method.representation} x {method.inference}): {latents.shape[0]} particles, "
          f"{latents.shape[1]}-D latents; box {run_dir.box} px, {run_dir.apix:.4g} Å/px; {out.elapsed_s:.1f} s")
    print(f"wrote {run_dir.path}; next: cryoscape analyze {run_dir.path}")
    return 0

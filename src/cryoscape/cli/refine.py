"""``cryoscape refine``: the poses of every particle by EM over SO(3) x shifts, from an initial map."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Refine every particle's orientation and origin against an initial map
(--initial, e.g. a low-pass filtered consensus or a map of a model, at the
particles' box and pixel size) by expectation-maximisation: each pass scores
candidate poses of every image against the map of its own half set (gold
standard: the halves are refined independently from the same start, low-passed
to --initial-lowpass), on the frequencies the half maps resolve (frequency
marching), and backprojects every image at its most probable poses weighted by
their posteriors. First --global-iterations passes over a 15-degree SO(3) grid
(4 608 rotations) and origins on a 1 px grid within --max-shift, then local
passes around each pose with the steps of --local-steps (degrees; origins by
half a pixel and less). Any poses in the particle file are ignored unless
--global-iterations is 0 (then the local passes start from them).

Writes DIR/particles.star (every input column kept, the poses replaced,
_rlnMaxValueProbDistribution the best pose's posterior, _rlnRandomSubset the half
sets), DIR/map.mrc with map_half1/2.mrc, map_fsc.txt/.json/.png and
map_filter.txt (as cryoscape reconstruct writes them, from the refined poses),
DIR/refine.json (settings and every iteration) and DIR/log.txt.
"""

EPILOG = """\
examples:
  cryoscape refine particles.star --initial lowpass30.mrc -o refine/
  cryoscape refine run_data.star --initial consensus.mrc --global-iterations 0 --local-steps 1.9,0.9 -o local/
"""


def _steps(text: str) -> tuple[float, ...]:
    try:
        steps = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--local-steps {text!r}: give degrees separated by commas, e.g. 7.5,3.75")
    if any(not s > 0 for s in steps):
        raise argparse.ArgumentTypeError(f"--local-steps {text!r}: every step must be positive")
    return steps


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``refine`` sub-command."""
    p = subparsers.add_parser("refine", help="refine particle poses against an initial map (EM over SO(3) x shifts)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", help="particle file with CTF (.star, .cs); its poses are not needed")
    p.add_argument("--initial", metavar="MAP", help="initial map at the particles' box and pixel size (required)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument("--initial-lowpass", type=float, default=30.0, metavar="Å",
                   help="low-pass of the initial map before the first pass (default 30)")
    p.add_argument("--global-iterations", type=int, default=3, metavar="N",
                   help="passes of global search before the local ones (default 3; 0: start from the file's poses)")
    p.add_argument("--local-steps", type=_steps, default=(7.5, 3.75, 1.875, 0.94), metavar="DEG,...",
                   help="angular steps of the local passes (default 7.5,3.75,1.875,0.94)")
    p.add_argument("--max-shift", type=float, default=3.0, metavar="PX",
                   help="largest origin searched globally, in pixels (default 3)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random half sets (default 0)")
    p.add_argument("--datadir", metavar="DIR", help="folder holding the particle stacks, if the file's paths do not resolve")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to compute (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite earlier outputs in DIR")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    """Refine, write the folder, print a summary."""
    from cryoscape.errors import InputError
    from cryoscape.methods.refine import RefineSettings
    from cryoscape.methods.refine_run import run_refine

    if args.global_iterations < 0 or args.batch_size < 1 or not args.max_shift >= 0 or not args.initial_lowpass > 0:
        raise InputError("--global-iterations must be >= 0, --batch-size >= 1, --max-shift >= 0 and "
                         "--initial-lowpass > 0")
    if args.global_iterations == 0 and not args.local_steps:
        raise InputError("nothing to do: --global-iterations 0 and no --local-steps")
    settings = RefineSettings(initial_lowpass_A=args.initial_lowpass, global_iterations=args.global_iterations,
                              max_shift_px=args.max_shift, local_steps_deg=tuple(args.local_steps),
                              batch_size=args.batch_size, seed=args.seed, device=args.device)
    out = run_refine(args.particles, args.output, args.initial, settings, datadir=args.datadir, force=args.force,
                     progress=not args.no_progress)
    last = out.history[-1]
    print(f"{len(out.history)} passes in {out.elapsed_s:.1f} s; last pass: mean pose confidence "
          f"{last['mean_confidence']:.3f}; map at FSC 0.143: {out.resolution_A:.2f} Å")
    print(f"wrote {out.folder}/particles.star, map.mrc (with half maps and FSC), refine.json, log.txt")
    return 0

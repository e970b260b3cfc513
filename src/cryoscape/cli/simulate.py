"""``cryoscape simulate``: a particle dataset with ground truth."""

from __future__ import annotations

import argparse
import math

from cryoscape.errors import InputError

DESCRIPTION = """\
Simulate cryo-EM particle images with known ground truth.

The density comes from exactly one of
  --volume map.mrc          projected by Fourier slicing,
  --structure model.pdb     an atomic model (PDB/mmCIF, read with gemmi) drawn as Gaussian atoms,
  --structure traj.npz      a trajectory (coordinates per frame, keys as in the AdK file),
  --structure adk           the built-in adenylate kinase closed->open path (98 frames).
Trajectory frames are superposed on the C-alpha atoms of --align-residues (AdK: the CORE,
residues 1-29,60-121,160-214) and centred with one common translation.

Atoms: amplitude = atomic number, width sigma = max(--atom-sigma, --min-sigma-px * apix).
Images: CTF (RELION sign, CTF(0)=+Q) and shift applied in Fourier space, protein white;
origins in the STAR with RELION's sign (image content moved by -origin). Noise is white
Gaussian with one std for the dataset, std^2 = mean clean-signal variance inside the
particle circle / snr. Mean defocus uniform in [--defocus-min, --defocus-max] um,
astigmatism dfU-dfV uniform in [0, --astigmatism] um, angle uniform; origins uniform
in a disc of radius --shift-max px; poses Haar-uniform unless --poses is given.

Writes OUT/particles.mrcs, OUT/particles.star (RELION 3.1), OUT/truth.npz (per-particle
conformation, coordinate in [0,1], poses, shifts, CTF, and the model to rebuild every
ground-truth volume with cryoscape.simulate.ground_truth_volume) and OUT/simulation.json.
The same --seed gives a byte-identical stack.
"""


def _snr(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--snr must be a number or 'inf', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("--snr must be positive (or 'inf' for clean images)")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``simulate``."""
    p = subparsers.add_parser(
        "simulate", help="simulate particles with ground truth from a volume, a model or a trajectory",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("density (give one)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--structure", metavar="SRC", help="'adk', a trajectory .npz, or a .pdb/.cif model")
    one.add_argument("--volume", metavar="MAP", help="an MRC map (cubic, even box)")
    src.add_argument("--align-residues", metavar="RANGES",
                     help="residues whose C-alphas frames are superposed on, e.g. 1-29,60-121 or 'all' "
                          "(default: AdK CORE for adk, all atoms otherwise)")
    src.add_argument("--centre", choices=("mean", "first"), default="mean",
                     help="common centring: density centre averaged over frames (mean) or of frame 0")
    src.add_argument("--atom-sigma", type=float, default=0.6, metavar="A",
                     help="intrinsic atom width in Å (default 0.6)")
    src.add_argument("--min-sigma-px", type=float, default=1.0, metavar="PX",
                     help="atom width floor in pixels, keeps the density band-limited (default 1.0)")
    src.add_argument("--conformations", metavar="LIST",
                     help="frames to draw from uniformly, e.g. 0,97 or 0-10 (default: all frames)")
    src.add_argument("--conformation-weights", metavar="FILE",
                     help=".npy or text file with one weight per frame")

    img = p.add_argument_group("images")
    img.add_argument("--n-particles", "-n", type=int, default=None,
                     help="number of particles (default 1000, or the number of --poses)")
    img.add_argument("--box", type=int, default=None, help="box size in px, even (default 64; a map's own box)")
    img.add_argument("--apix", type=float, default=None, help="pixel size in Å (default 1.5; a map's header)")
    img.add_argument("--snr", type=_snr, default=0.1, help="signal-to-noise ratio, or 'inf' for clean (default 0.1)")
    img.add_argument("--poses", metavar="FILE", help="rotations: STAR with angles, .npy (N,3,3) or (N,3) RELION angles")
    img.add_argument("--shift-max", type=float, default=2.0, metavar="PX",
                     help="origins uniform in a disc of this radius in px (default 2)")

    ctf = p.add_argument_group("microscope")
    ctf.add_argument("--defocus-min", type=float, default=1.0, metavar="UM", help="µm (default 1.0)")
    ctf.add_argument("--defocus-max", type=float, default=2.5, metavar="UM", help="µm (default 2.5)")
    ctf.add_argument("--astigmatism", type=float, default=0.05, metavar="UM",
                     help="largest dfU-dfV in µm (default 0.05)")
    ctf.add_argument("--voltage", type=float, default=300.0, help="kV (default 300)")
    ctf.add_argument("--cs", type=float, default=2.7, help="spherical aberration in mm (default 2.7)")
    ctf.add_argument("--amp-contrast", type=float, default=0.1, help="amplitude contrast Q (default 0.1)")
    ctf.add_argument("--bfactor", type=float, default=0.0, help="CTF B-factor envelope in Å² (default 0)")

    run_ = p.add_argument_group("run")
    run_.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    run_.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run_.add_argument("--batch-size", type=int, default=256, help="particles per batch (default 256)")
    run_.add_argument("--write-volumes", action="store_true",
                      help="also write OUT/truth_volumes/conformation_XXX.mrc for every drawable frame")
    run_.add_argument("--force", action="store_true", help="overwrite existing outputs")
    run_.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the simulation and print where the outputs are."""
    from cryoscape.simulate import simulate_dataset

    n = args.n_particles
    if n is None and args.poses is None:
        n = 1000
    if args.box is not None and args.box <= 0:
        raise InputError("--box must be positive")
    result = simulate_dataset(
        structure=args.structure, volume=args.volume, n_particles=n, box=args.box, apix=args.apix,
        snr=args.snr, defocus_min_um=args.defocus_min, defocus_max_um=args.defocus_max,
        astigmatism_max_um=args.astigmatism, voltage_kV=args.voltage, cs_mm=args.cs,
        amplitude_contrast=args.amp_contrast, bfactor_A2=args.bfactor, poses=args.poses,
        shift_max_px=args.shift_max, conformations=args.conformations,
        conformation_weights=args.conformation_weights, align_residues=args.align_residues,
        centre=args.centre, atom_sigma_A=args.atom_sigma, min_sigma_px=args.min_sigma_px, seed=args.seed,
        out_dir=args.out, force=args.force, batch_size=args.batch_size, write_volumes=args.write_volumes,
        progress=not args.no_progress,
    )
    snr = float(result.truth["snr"])
    print(f"simulated {result.n_particles} particles ({int(result.truth['box'])} px, "
          f"{float(result.truth['apix']):g} Å/px, snr {'inf' if math.isinf(snr) else f'{snr:g}'}) "
          f"in {result.elapsed_s:.1f} s")
    print(f"  images: {result.stack_path}")
    print(f"  STAR:   {result.star_path}")
    print(f"  truth:  {result.truth_path}")
    if result.volume_paths:
        print(f"  volumes: {len(result.volume_paths)} in {result.volume_paths[0].parent}")
    return 0

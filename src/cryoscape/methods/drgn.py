"""The ``drgn`` recipe: a neural hyper-molecule fitted by a VAE or by explicit latents (survey §7.2).

Representation: :class:`cryoscape.models.neural.NeuralHyperMolecule`, an MLP
over a positional encoding of 3D frequencies and a latent ``z`` in the Fourier
domain (Hermitian symmetry built in). Inference
(:mod:`cryoscape.inference.vae`): an amortised encoder trained on the ELBO with
a ``β``-weighted KL term (``latents="amortised"``), or one latent per particle
optimised jointly with the decoder (``latents="explicit"``); optional pose
refinement by gradient from the consensus poses.

Run directory (see :mod:`cryoscape.io.run_dir`)::

    run/
      config.yaml        method "drgn", the particle file, every hyper-parameter and
                         norm_scale (the image normalisation): enough to rebuild the model
      latents.npy        [N, latent_dim] float32 latent means, particle order, after the
                         Gauss–Newton polish (latent_refine_steps > 0) started at the
                         explicit table or at the encoder's means; an explicit
                         weights.pt holds the polished table, the checkpoints the
                         unpolished one that training continues from
      latents_var.npy    [N, latent_dim] float32 variances: Laplace at the polished latents
                         (encoder σ² for amortised latents without the polish)
      weights.pt         LatentModel.state_dict() (decoder.*, encoder.* / latents.*; weights_only=True)
      metrics.json       loss per epoch (total, reconstruction, KL), images/s, timings
      mean.mrc           the volume at the mean latent, with the fit's voxel size
      rotation_corrections.npy [N, 3] rad, shift_corrections_A.npy [N, 2] Å (pose refinement only)
      checkpoints/epoch_XXXX.pt   the last two epochs (model, optimisers, noise generator, history)
      log.txt

Defaults are chosen for quality per minute on a CPU. The decoder is the
consensus reconstruction plus the network (which starts at zero, so training
starts from the consensus map and learns how the conformations differ from
it); the network is a 3 × 128 residual MLP fitted only below 0.3 × Nyquist
(``max_freq=0.3``: 9 % of the in-circle points, about 30× less work per image
than the whole disc at width 256), while the consensus carries the higher
frequencies. On a 2 000-particle adk-1d subset (box 64, SNR 0.05) fitting the
network up to 0.5 × Nyquist took twice as long and lowered the per-image FSC
AUC (0.380 against 0.407 at 0.3 × Nyquist, 16 epochs): the network's mid
frequencies fitted noise. The encoder (3 × 256) sees the image minus the
consensus rendered at the particle's pose, phase-flipped, below 0.3 × Nyquist
(``encoder_max_freq``; 0.5 gave |Spearman| 0.894 against 0.904 at 0.3 on 5 000
particles, with the polish below, at AUC 0.456 / 0.457), together with the
pose. Batches of 32 (more steps per epoch), Adam at 3e-3, ``β = 0.1``. After
training, every particle's latent is polished by ``latent_refine_steps = 3``
Gauss–Newton steps against the final decoder, starting at the encoder's mean
(:func:`cryoscape.inference.vae.polished_latents`: a per-image MAP estimate,
i.e. semi-amortised inference; the encoder itself is unchanged). On the
2 000-particle subset (16 epochs) this raised |Spearman| from 0.85 to 0.88 at
the same AUC (0.407; encoder below 0.5 × Nyquist); on a CPU it costs about
half as much again as the 16 training epochs (a Jacobian and up to four
evaluations per image and step); ``latent_refine_steps=0`` turns it off.

The explicit scheme (an auto-decoder: one free latent per particle) shares
these defaults, plus its own: sparse Adam on the latents at a large rate,
``latent_lr = 1.5`` (each latent moves only once per epoch, and Adam's first
steps are about ``latent_lr`` per coordinate whatever the gradient's size,
so at a small rate the latents stay near their random start, ``N(0, 0.1²)``,
while the decoder learns to fit noise with those random codes), and the same
Gauss–Newton polish (here it matters more: the table's noisy latents of the
last epoch were fitted to earlier decoders). On the 2 000-particle adk-1d
subset, 16 epochs (per-image FSC AUC from 100 sampled particles; |Spearman| of
the latents' first principal component against the true coordinate):

==============================================  =====  =========
explicit latents                                 AUC   Spearman
==============================================  =====  =========
latent_lr 0.05 (the old default)                0.387    0.11
latent_lr 0.5                                   0.382    0.70
latent_lr 1.5                                   0.401    0.81
latent_lr 3.0                                   0.410    0.74
latent_lr 1.5, then 3 Gauss–Newton steps        0.407    0.88
latent_lr 3.0, then 3 Gauss–Newton steps        0.414    0.88
8 warm-up epochs (below), then latent_lr 0.05   0.403    0.83
8 warm-up epochs, then latent_lr 0.01           0.407    0.75
VAE, encoder below 0.5 × Nyquist (comparison)  0.407    0.85
the same VAE, then 3 Gauss–Newton steps         0.407    0.88
==============================================  =====  =========

On the 5 000-particle adk-1d subset (16 epochs): explicit latents AUC 0.456,
Spearman 0.885; amortised with the encoder below 0.5 × Nyquist 0.456 and 0.894
(0.456 and 0.878 without the polish); amortised with the defaults
(encoder below 0.3 × Nyquist) 0.457 and 0.904.

``warmup_epochs = W`` (default 0, explicit only) trains the encoder for the
first ``W`` epochs and starts each particle's latent at the encoder's mean
(a hybrid, recorded as such in ``config.yaml``); it was no better than the
pure auto-decoder above (and a Gauss–Newton polish of that run lowered its
Spearman to 0.81), so it is off by default.

Resuming (``resume=True`` or a checkpoint path) continues from the latest (or
the given) checkpoint; only ``epochs``, ``device`` and ``keep_last`` may
change. Every checkpoint is read with ``torch.load(weights_only=True)``: a file
holding other objects (e.g. a pickled checkpoint of another program) is refused
with a one-line error before anything in it runs.

Volumes at latent points for ``analyze``, ``traverse``, ``compare`` and
``volume`` come from :func:`drgn_volume`, the volume function of every
gradient-fitted method in :mod:`cryoscape.methods.registry`.

The same driver fits the linear representation (``representation="linear"``:
mean plus ``latent_dim`` principal volumes, started at the consensus and at the top
principal volumes of the low-resolution covariance) by the same amortised or
explicit schemes: the registry's ``linear-amortised`` and ``linear-explicit``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoscape.errors import InputError
from cryoscape.methods.drgn_model import (build_model, canonical_latents, drgn_volume, load_decoder,  # noqa: F401  (re-exported)
                                          representation_volume, start_representation)
from cryoscape.methods.drgn_settings import (BASES, DrgnSettings, make_settings,  # noqa: F401  (re-exported)
                                             settings_from_params)

_settings = make_settings

__all__ = ["METHOD", "DrgnSettings", "DrgnRun", "run_drgn", "load_decoder", "drgn_volume", "build_model"]

METHOD = "drgn"
MEAN_MAP = "mean.mrc"
ROT_CORR = "rotation_corrections.npy"
SHIFT_CORR = "shift_corrections_A.npy"


@dataclass
class DrgnRun:
    """What :func:`run_drgn` produced: the run folder, the trained model, latents and files."""

    run: Any  # RunDirectory
    model: Any  # LatentModel
    latents: np.ndarray
    latents_var: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0
    epochs_run: int = 0


# ---------------------------------------------------------------- inputs
def _load_particles(particles_path: str | os.PathLike, datadir: str | os.PathLike | None, s: DrgnSettings) -> Any:
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(particles_path, datadir=datadir)
    ps.require_poses("cryoscape fit drgn")
    if s.use_ctf:
        ps.require_ctf("cryoscape fit drgn (pass --no-ctf to fit without a CTF)")
    if len(ps) < 2:
        raise InputError(f"{particles_path} has {len(ps)} particle; fit drgn needs at least 2")
    box = int(ps.box)
    if box % 2 or box < 8:
        raise InputError(f"{particles_path} has a {box} px box; drgn needs an even box of at least 8 px")
    if (s.latents == "amortised" or s.warmup_epochs > 0) and s.encoder == "cnn" and box % 16:
        raise InputError(f"the CNN encoder needs a box divisible by 16, but the particles have {box} px; "
                         "use --encoder mlp or downsample the particles")
    return ps


def _flat_config(ps: Any, particles_path: str | os.PathLike, datadir: str | os.PathLike | None,
                 s: DrgnSettings, norm_scale: float) -> dict[str, Any]:
    """Data keys, every hyper-parameter, the decoder description and the image normalisation."""
    box = int(ps.box)
    spec = s.decoder_spec(box, float(ps.apix))
    params = asdict(s)
    params.update({k: spec[k] for k in ("pe_dim", "pe_min_px", "pe_max_px", "pe_sigma_px") if k in spec})
    return {"particles": str(Path(particles_path).expanduser().resolve()), "datadir": datadir,
            "n_particles": len(ps), "box": box, "apix": float(ps.apix), **params,
            "norm_scale": float(norm_scale)}


# ---------------------------------------------------------------- outputs
def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically without pickles (overwrites)."""
    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def _write_outputs(run: Any, model: Any, mean: np.ndarray, var: np.ndarray, history: dict[str, list[float]],
                   timing: dict[str, float], norm_scale: float, apix: float, max_freq: float) -> list[Path]:
    """Latents, weights, metrics (history; ``timing``: ``elapsed_s``, ``train_s`` for the epochs of this call,
    ``latents_s`` for the final latents) and the map at the mean latent."""
    from cryoscape.io.mrc import write_mrc
    from cryoscape.io.run_dir import LATENTS, LATENTS_VAR, METRICS

    run.write_latents(mean, var=var)
    files = [run.path / LATENTS, run.path / LATENTS_VAR, run.save_weights(model.state_dict())]
    if model.rot_corr is not None:
        files.append(_save_npy(run.path / ROT_CORR, model.rot_corr.weight.detach().cpu().numpy().astype(np.float32)))
        files.append(_save_npy(run.path / SHIFT_CORR, model.shift_corr.weight.detach().cpu().numpy().astype(np.float32)))
    run.write_metrics({**history, **{k: float(v) for k, v in timing.items()}, "norm_scale": float(norm_scale),
                       "n_epochs": len(history.get("loss", []))}, merge=False)
    files.append(run.path / METRICS)
    vol = representation_volume(model.decoder, np.asarray(mean, dtype=np.float32).mean(axis=0), norm_scale, max_freq)
    files.append(write_mrc(run.path / MEAN_MAP, vol, apix, force=True))
    return files


def _clear_outputs(root: Path) -> None:
    for name in (MEAN_MAP, ROT_CORR, SHIFT_CORR):
        (root / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- the recipe
def run_drgn(
    particles_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    latent_dim: int = 8,
    epochs: int = 20,
    latents: str = "amortised",
    *,
    datadir: str | os.PathLike | None = None,
    force: bool = False,
    resume: bool | str | os.PathLike = False,
    progress: bool = True,
    method: str = METHOD,
    **options: Any,
) -> DrgnRun:
    """Fit a representation by a gradient scheme to a posed particle file and write the run folder ``out_dir``.

    Args:
        particles_path: STAR / .cs file with poses and CTF.
        out_dir: run folder; refused when not empty unless ``force`` or ``resume``.
        latent_dim: latent dimension. epochs: passes over the particles.
        latents: "amortised" (VAE) or "explicit" (per-particle table).
        datadir: folder of the particle stacks if the file's paths do not resolve.
        force: overwrite an earlier run in ``out_dir``.
        resume: True continues from the run's latest checkpoint; a path continues from
            that checkpoint file (always read with ``weights_only=True``).
        progress: progress bars.
        method: the registry name recorded in ``config.yaml`` (``drgn``, ``linear-amortised``, ...).
        **options: any other field of :class:`DrgnSettings` (``representation``, ``encoder``, ``beta``,
            ``batch_size``, ``lr``, ``refine_poses``, ``seed``, ``device``, ...).
    Returns:
        :class:`DrgnRun`.
    """
    from cryoscape.inference.vae import (ParticleBatches, estimate_norm_scale, fit_points, infer_latents,
                                         polished_latents, train)
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.models import describe

    s = make_settings(latent_dim, epochs, latents, options)
    _check_device(s.device)
    if force and resume:
        raise InputError(f"{out_dir}: pass either --force (start over) or --resume (continue), not both")
    root = Path(out_dir).expanduser()
    checkpoint, saved_norm = None, None
    if resume:
        checkpoint, saved_norm = _read_checkpoint(root, resume, method)
    ps = _load_particles(particles_path, datadir, s)
    norm_scale = saved_norm if saved_norm is not None else estimate_norm_scale(ps, invert=s.invert)
    run = RunDirectory.create(root, method, _flat_config(ps, particles_path, datadir, s, norm_scale),
                              force=force, resume=bool(resume))
    if not resume:
        _clear_outputs(run.path)
    run.log(f"particles: {len(ps)} from {particles_path}, box {ps.box} px, {ps.apix:.4g} Å/px, "
            f"image scale {norm_scale:.6g}" + ("" if s.use_ctf else "; no CTF applied (--no-ctf)"))
    box = int(ps.box)
    model = build_model(run.params, box, len(ps), s.device, float(ps.apix))
    if checkpoint is None:
        consensus = _consensus(run, ps, s, norm_scale, progress) if s.base == "consensus" else None
        start_representation(model, ps, s, consensus, norm_scale, run, progress)
    run.log(describe(model.decoder) + f", fitted by {s.latents} latents")
    data = ParticleBatches(ps, fit_points(box, s.max_freq, s.encoder_max_freq), norm_scale, s.use_ctf, s.invert,
                           s.encoder_phase_flip and s.uses_encoder, s.device, encoder_residual=s.encoder_residual)
    ts = s.train_settings()
    start = 0 if checkpoint is None else int(checkpoint["epoch"])
    if checkpoint is not None:
        run.log(f"resuming after epoch {start}")
    t0 = time.perf_counter()
    with run.log(f"training {s.latents} latents (latent_dim {s.latent_dim}), epochs {start + 1}..{s.epochs}"):
        result = train(model, data, ts, run=run, checkpoint=checkpoint, progress=progress)
    t_latents = time.perf_counter()
    if s.latent_refine_steps > 0:
        with run.log(f"latents of every particle, refined against the final decoder "
                     f"({s.latent_refine_steps} Gauss-Newton steps)"):
            mean, var, accepted = polished_latents(model, data, ts, s.latent_refine_steps, progress=progress)
        run.log("accepted steps: " + ", ".join(f"{a:.0%}" for a in accepted))
    else:
        with run.log("latents of every particle"):
            mean, var = infer_latents(model, data, ts, progress=progress)
    mean, var, eigenvalues = canonical_latents(model.decoder, mean, var)
    if eigenvalues is not None:
        run.log("latents in the frame of orthonormal principal volumes; variances "
                + ", ".join(f"{e:.4g}" for e in eigenvalues))
    t_end = time.perf_counter()
    elapsed = t_end - t0
    timing = {"elapsed_s": elapsed, "train_s": t_latents - t0, "latents_s": t_end - t_latents}
    files = _write_outputs(run, model, mean, var, result.history, timing, norm_scale, float(ps.apix), s.max_freq)
    if eigenvalues is not None:
        run.write_metrics({"eigenvalues": [float(e) for e in eigenvalues]}, merge=True)
    return DrgnRun(run, model, mean, var, result.history, files, elapsed, result.epochs_run)


def _consensus(run: Any, ps: Any, s: DrgnSettings, norm_scale: float, progress: bool) -> np.ndarray:
    """The consensus reconstruction in the decoder's units (divided by ``norm_scale``; negated with ``invert``)."""
    from cryoscape.reconstruct import reconstruct

    with run.log("consensus reconstruction (the decoder's reference volume)"):
        rec = reconstruct(ps, device=s.device, seed=s.seed, progress=progress)
    sign = -1.0 if s.invert else 1.0
    return (sign / norm_scale) * np.asarray(rec.volume, dtype=np.float32)


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu")


def _read_checkpoint(root: Path, resume: bool | str | os.PathLike, method: str = METHOD
                     ) -> tuple[dict[str, Any], float]:
    """The checkpoint to continue from and the run's saved image scale (one-line errors)."""
    from cryoscape.io.run_dir import RunDirectory

    run = RunDirectory.open(root)
    if run.method != method:
        raise InputError(f"cannot resume {root}: it holds a {run.method!r} run, not {method!r}; "
                         "choose another output folder")
    path = None if resume is True else Path(resume)
    state = run.load_checkpoint(path)
    norm = run.params.get("norm_scale")
    if norm is None:
        raise InputError(f"{root}/config.yaml records no norm_scale; it was not written by fit drgn")
    return state, float(norm)




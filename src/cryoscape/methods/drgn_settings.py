"""Settings of the gradient-fitted methods (``drgn`` and the compose pairs with an encoder or explicit latents).

One source: :class:`DrgnSettings` extends the optimisation settings of the
inference layer (:class:`cryoscape.inference.settings.TrainSettings`) with the
representation and data choices, and everything is stored in ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from cryoscape.errors import InputError
from cryoscape.inference.settings import LATENT_SCHEMES, TrainSettings

__all__ = ["DrgnSettings", "BASES", "REPRESENTATIONS", "LINEAR_INITS", "settings_from_params", "make_settings"]

BASES = ("consensus", "none")
REPRESENTATIONS = ("neural", "linear", "normal-modes")
LINEAR_INITS = ("covariance", "random")


@dataclass
class DrgnSettings(TrainSettings):
    """Hyper-parameters of a gradient fit (all stored in ``config.yaml``); training fields from :class:`TrainSettings`.

    Model: representation "neural" (an MLP decoder, :mod:`cryoscape.models.neural`) |
    "linear" (mean plus ``latent_dim`` principal volumes, :mod:`cryoscape.models.linear`);
    latent_dim; latents "amortised" | "explicit"; base "consensus" (neural: the decoder is
    the consensus reconstruction plus the network; linear: the mean starts at the
    consensus) | "none"; encoder "mlp" | "cnn"; enc_hidden, enc_layers; neural only:
    dec_hidden, dec_layers, pe "geometric" | "gaussian", pe_dim, pe_min_px,
    pe_max_px, pe_sigma_px (None: defaults of :func:`cryoscape.models.neural.decoder_spec`);
    linear only: init "covariance" (components start at the top principal volumes of
    the covariance at ``init_resolution_A``) | "random"; "normal-modes" (an atomic model
    moved along ``latent_dim`` elastic-network modes, :mod:`cryoscape.models.normal_modes`)
    only: model (its file), n_atoms, n_nodes (its C-alpha atoms), cutoff_A (spring cutoff), mode_rms_A (RMS per node
    of the softest mode at one prior standard deviation). Data: max_freq (fitted
    frequencies, fraction of Nyquist), encoder_max_freq (encoder input),
    encoder_phase_flip, encoder_residual (the encoder sees the image minus the
    representation's reference part rendered at the pose), encoder_pose (the MLP
    encoder also reads the pose), invert (stacks dark on white), use_ctf.
    latent_refine_steps (0: off): Gauss–Newton steps per particle against the final
    decoder after training (see :func:`cryoscape.inference.latents.polished_latents`).
    """

    representation: str = "neural"
    latent_dim: int = 8
    latents: str = "amortised"
    base: str = "consensus"
    encoder: str = "mlp"
    enc_hidden: int = 256
    enc_layers: int = 3
    dec_hidden: int = 128
    dec_layers: int = 3
    pe: str = "geometric"
    pe_dim: int | None = None
    pe_min_px: float = 0.5
    pe_max_px: float | None = None
    pe_sigma_px: float | None = None
    init: str = "covariance"
    init_resolution_A: float = 15.0
    max_freq: float = 0.3
    encoder_max_freq: float = 0.3
    encoder_phase_flip: bool = True
    encoder_residual: bool = True
    encoder_pose: bool = True
    invert: bool = False
    use_ctf: bool = True
    latent_refine_steps: int = 3
    model: str | None = None
    n_atoms: int = 0
    n_nodes: int = 0
    cutoff_A: float = 10.0
    mode_rms_A: float = 2.0

    def check(self) -> None:
        """One-line :class:`InputError` for impossible values (before any work)."""
        from cryoscape.models.encoder import ENCODER_KINDS
        from cryoscape.models.positional import ENCODINGS

        choices = (("representation", REPRESENTATIONS), ("latents", LATENT_SCHEMES), ("base", BASES),
                   ("encoder", ENCODER_KINDS), ("pe", ENCODINGS), ("init", LINEAR_INITS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.latent_dim < 1:
            raise InputError(f"the latent dimension (--zdim, --latent-dim) is {self.latent_dim}; give at least 1")
        for name in ("enc_hidden", "enc_layers", "dec_hidden", "dec_layers"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.pe_dim is not None and self.pe_dim < 1:
            raise InputError(f"--pe-dim must be at least 1; got {self.pe_dim}")
        for name in ("max_freq", "encoder_max_freq"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise InputError(f"--{name.replace('_', '-')} must be a fraction of Nyquist in (0, 1]; got {v}")
        if self.representation == "normal-modes" and (not self.model or self.n_atoms < 1):
            raise InputError("the normal-modes representation needs an atomic model: use cryoscape fit nma --model")
        if not self.init_resolution_A > 0:
            raise InputError(f"--init-resolution must be positive (Å); got {self.init_resolution_A}")
        self.train_settings().check()
        if self.latent_refine_steps < 0:
            raise InputError(f"--latent-refine-steps must be >= 0; got {self.latent_refine_steps}")
        if self.warmup_epochs and self.latents != "explicit":
            raise InputError("--warmup-epochs applies to --latents explicit only; drop it for amortised latents")
        if self.warmup_epochs >= self.epochs:
            raise InputError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs}) "
                             "so that the explicit latents get trained")

    @property
    def uses_encoder(self) -> bool:
        """Whether an encoder is built (amortised latents, or an explicit table with a warm-up)."""
        return self.latents == "amortised" or self.warmup_epochs > 0

    def train_settings(self) -> TrainSettings:
        """The :class:`TrainSettings` part."""
        names = {f.name for f in dataclasses.fields(TrainSettings)}
        return TrainSettings(**{k: v for k, v in asdict(self).items() if k in names})

    def decoder_spec(self, box: int, apix: float = 1.0) -> dict[str, Any]:
        """The representation's description for :func:`cryoscape.models.build_representation`."""
        if self.representation == "normal-modes":
            return {"kind": "normal-modes", "box": int(box), "apix": float(apix), "n_atoms": int(self.n_atoms),
                    "latent_dim": int(self.latent_dim), "n_nodes": int(self.n_nodes)}
        if self.representation == "linear":
            return {"kind": "linear", "box": int(box), "latent_dim": int(self.latent_dim), "apix": float(apix),
                    "oversampling": 2.0, "trainable": True}
        from cryoscape.models.neural import decoder_spec

        spec = decoder_spec(box, self.latent_dim, self.dec_hidden, self.dec_layers, self.pe, self.pe_dim,
                            self.pe_min_px, self.pe_max_px, self.pe_sigma_px, pe_seed=self.seed,
                            base=self.base == "consensus")
        return {"kind": "neural", **spec, "apix": float(apix)}


def settings_from_params(params: dict[str, Any]) -> DrgnSettings:
    """The settings recorded in a run's ``config.yaml`` (unknown keys ignored; runs before the
    representation choice are neural; :func:`~cryoscape.io.run_config.read_config` gives old names their
    present ones)."""
    names = {f.name for f in dataclasses.fields(DrgnSettings)}
    return DrgnSettings(**{k: v for k, v in params.items() if k in names})


def make_settings(latent_dim: int, epochs: int, latents: str, options: dict[str, Any]) -> DrgnSettings:
    """Checked settings from the runner's arguments; one-line error for an unknown option."""
    names = {f.name for f in dataclasses.fields(DrgnSettings)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; choose from {', '.join(sorted(names))}")
    s = DrgnSettings(latent_dim=latent_dim, epochs=epochs, latents=latents, **options)
    s.check()
    return s

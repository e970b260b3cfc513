"""The one registry of methods: each a named pair (representation, inference scheme) with its defaults.

``cryoscape fit``, ``cryoscape volume``, the analysis (volumes at latent
points), ``cryoscape bench`` and ``cryoscape fit compose`` all read
:data:`METHODS`. A method's code is named as ``"module:function"`` and imported
only when used, so reading the registry costs nothing and imports no model.

Adding a method is one module (its ``run`` and ``volume`` functions) plus one
:class:`Method` line below.

Every runner is called as ``run(particles_path, out_dir, *, force, resume,
progress, **options)`` and returns an object whose ``.run`` is the
:class:`~cryoscape.io.run_dir.RunDirectory` it wrote; every volume function as
``volume(run, z)`` with ``z`` ``(d,)`` and returns the model's volume
``[D, D, D]`` float32 at that latent, in the run's voxel size.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cryoscape.errors import InputError

__all__ = ["Method", "METHODS", "REPRESENTATION_KINDS", "INFERENCE_SCHEMES", "get_method", "method_for_pair",
           "volume_function", "pair_grid"]

REPRESENTATION_KINDS: dict[str, str] = {
    "linear": "mean plus principal volumes, V(z) = X0 + sum_k z_k X_k",
    "neural": "an MLP over positional-encoded 3D frequencies and z (Fourier domain, Hermitian)",
    "normal-modes": "an atomic model moved along its elastic-network normal modes, drawn as Gaussian atoms",
    "discrete": "K class maps; the latent is the vector of class probabilities, V(z) = sum_k z_k V_k",
}
INFERENCE_SCHEMES: dict[str, str] = {
    "em": "expectation-maximisation over closed-form latent posteriors",
    "amortised": "an encoder image -> q(z | image) trained on the ELBO (VAE)",
    "explicit": "one free latent per particle optimised with the model (auto-decoder)",
}


def _load(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """A named pair (representation, inference) with the code that fits it and its defaults.

    ``runner`` / ``volume_ref``: ``"module:function"`` (see the module docstring).
    ``defaults``: options passed to the runner unless the caller gives them.
    ``preset``: a named recipe with its own ``cryoscape fit NAME`` command.
    ``passes_option``: the runner's name for the number of passes over the
    particles (EM iterations or training epochs), so that :meth:`options` speaks
    one language for every method; every runner takes the latent dimension as ``latent_dim``.
    """

    name: str
    representation: str
    inference: str
    summary: str
    runner: str
    volume_ref: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    preset: bool = False
    passes_option: str = "epochs"

    def options(self, latent_dim: int | None = None, passes: int | None = None, **others: Any) -> dict[str, Any]:
        """Runner keyword arguments for a latent dimension and a number of passes (None: the default)."""
        named = {"latent_dim": latent_dim, self.passes_option: passes, **others}
        return {k: v for k, v in named.items() if v is not None}

    def runner_function(self) -> Callable[..., Any]:
        """The function that fits this method (imported now)."""
        return _load(self.runner)

    def run(self, particles_path: Any, out_dir: Any, **options: Any) -> Any:
        """Fit this method: the runner with :attr:`defaults` under ``options``."""
        return _load(self.runner)(particles_path, out_dir, **{**self.defaults, **options})

    def volume(self, run: Any, z: Any) -> Any:
        """The model's volume at latent ``z`` of a run of this method."""
        return _load(self.volume_ref)(run, z)


_GRADIENT = "cryoscape.methods.drgn:run_drgn"
_GRADIENT_VOLUME = "cryoscape.methods.drgn:drgn_volume"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("pca", "linear", "em", "probabilistic PCA by EM (mean + principal volumes)",
           "cryoscape.methods.pca:run_pca", "cryoscape.methods.pca:pca_volume", {"latent_dim": 4}, preset=True,
           passes_option="iterations"),
    Method("drgn", "neural", "amortised", "neural hyper-molecule with a VAE encoder",
           _GRADIENT, _GRADIENT_VOLUME, {"latent_dim": 8}, preset=True),
    Method("nma", "normal-modes", "explicit", "atomic model moved along its normal modes, amplitudes per particle",
           "cryoscape.methods.nma:run_nma", _GRADIENT_VOLUME, {"latent_dim": 10}, preset=True),
    Method("classes", "discrete", "em", "3D classification: K maps, class posteriors by EM at the given poses",
           "cryoscape.methods.classes:run_classes", "cryoscape.methods.classes:classes_volume", {"latent_dim": 3},
           preset=True, passes_option="iterations"),
    Method("neural-explicit", "neural", "explicit", "neural hyper-molecule with one latent per particle",
           _GRADIENT, _GRADIENT_VOLUME, {"latent_dim": 8, "latents": "explicit", "method": "neural-explicit"}),
    Method("linear-amortised", "linear", "amortised", "principal volumes with a VAE encoder",
           _GRADIENT, _GRADIENT_VOLUME,
           {"latent_dim": 4, "latents": "amortised", "representation": "linear", "method": "linear-amortised",
            "batch_size": 256}),
    Method("linear-explicit", "linear", "explicit", "principal volumes with one latent per particle",
           _GRADIENT, _GRADIENT_VOLUME,
           {"latent_dim": 4, "latents": "explicit", "representation": "linear", "method": "linear-explicit",
            "batch_size": 256}),
)}
"""Every method by name, presets first."""

_NOT_SENSIBLE: dict[tuple[str, str], str] = {
    ("discrete", "amortised"): "a particle's class is discrete and its posterior closed-form; the class maps are "
                               "fitted by EM (cryoscape fit classes)",
    ("discrete", "explicit"): "a particle's class is discrete and its posterior closed-form; the class maps are "
                              "fitted by EM (cryoscape fit classes)",
    ("normal-modes", "em"): "the atoms move nonlinearly in the image with the mode amplitudes (no closed-form "
                            "posteriors); use cryoscape fit nma (explicit amplitudes per particle)",
    ("neural", "em"): "EM over posteriors needs a representation linear in its latent (closed-form Gaussian "
                      "posteriors); the neural field is not: use --inference amortised or explicit",
}


def get_method(name: str) -> Method:
    """The method called ``name``; one-line :class:`InputError` naming the choices otherwise."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_for_pair(representation: str, inference: str) -> Method:
    """The method fitting ``representation`` by ``inference``; a one-line reason when the pair makes no sense."""
    if representation not in REPRESENTATION_KINDS:
        raise InputError(f"unknown representation {representation!r}; choose from {', '.join(REPRESENTATION_KINDS)}")
    if inference not in INFERENCE_SCHEMES:
        raise InputError(f"unknown inference scheme {inference!r}; choose from {', '.join(INFERENCE_SCHEMES)}")
    for m in METHODS.values():
        if (m.representation, m.inference) == (representation, inference):
            return m
    reason = _NOT_SENSIBLE.get((representation, inference), "no method implements this pair yet")
    raise InputError(f"--representation {representation} with --inference {inference} cannot run: {reason}")


def pair_grid() -> list[tuple[str, str, str | None]]:
    """Every (representation, inference) pair with its method name, or None where the pair cannot run."""
    names = {(m.representation, m.inference): m.name for m in METHODS.values()}
    return [(r, i, names.get((r, i))) for r in REPRESENTATION_KINDS for i in INFERENCE_SCHEMES]


def volume_function(method: str) -> Callable[[Any, Any], Any] | None:
    """``volume(run, z)`` of the registered method ``method``, or None (a method without a model, or a peer's)."""
    m = METHODS.get(method)
    return None if m is None else m.volume

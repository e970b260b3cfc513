"""Representations of conformations (hyper-molecules), one module each, behind one protocol.

:mod:`cryoscape.models.representation` defines the contract every
representation keeps and every inference scheme relies on. The kinds here:

* ``linear``: mean plus principal volumes (:mod:`cryoscape.models.linear`);
* ``neural``: an MLP over positional encodings of 3D frequencies and a latent
  (:mod:`cryoscape.models.neural`);
* ``normal-modes``: an atomic model moved along its elastic-network modes
  (:mod:`cryoscape.models.normal_modes`);
* ``discrete``: K class maps, the latent a vector of class probabilities
  (:mod:`cryoscape.models.discrete`).

Adding a representation is one module and one line in :data:`REPRESENTATIONS`.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from cryoscape.models.representation import LinearInLatent, Representation, describe, is_linear_in_latent

__all__ = ["Representation", "LinearInLatent", "is_linear_in_latent", "describe", "REPRESENTATIONS",
           "build_representation", "representation_class"]

REPRESENTATIONS: dict[str, str] = {
    "linear": "cryoscape.models.linear:LinearHyperMolecule",
    "neural": "cryoscape.models.neural:NeuralHyperMolecule",
    "normal-modes": "cryoscape.models.normal_modes:NormalModeModel",
    "discrete": "cryoscape.models.discrete:DiscreteVolumes",
}
"""Representation kind -> ``module:class``; each class has ``from_config(config)``."""


def representation_class(kind: str) -> type:
    """The class of representation ``kind`` (``ValueError`` naming the kinds for an unknown one)."""
    if kind not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {kind!r}; choose from {', '.join(REPRESENTATIONS)}")
    module, name = REPRESENTATIONS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_representation(config: Mapping[str, Any]) -> Any:
    """An untrained representation from its :meth:`~Representation.config` (``config["kind"]`` picks the class)."""
    return representation_class(str(config["kind"])).from_config(config)

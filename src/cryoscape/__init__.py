"""cryoscape: cryo-EM single-particle analysis of macromolecules that change shape.

The most used pieces are available at the top level (imported on first use)::

    import cryoscape
    sim = cryoscape.simulate_dataset("adk", n_particles=2000, box=64, apix=1.5, snr=0.05, out_dir="sim")
    particles = cryoscape.ParticleSet.from_file("sim/particles.star")
    rec = cryoscape.reconstruct.reconstruct(particles)   # the sub-package holds the function
    rec.save("sim/consensus.mrc")
    volume, apix = cryoscape.read_mrc("sim/consensus.mrc")

Sub-packages: ``io``, ``particles``, ``geometry``, ``imaging``, ``simulate``,
``reconstruct``, ``validate``, ``report``, ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

from cryoscape.errors import CryoscapeError, InputError

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "ParticleSet": ("cryoscape.particles.particle_set", "ParticleSet"),
    "read_mrc": ("cryoscape.io.mrc", "read_mrc"),
    "write_mrc": ("cryoscape.io.mrc", "write_mrc"),
    "simulate_dataset": ("cryoscape.simulate", "simulate_dataset"),
    "ground_truth_volume": ("cryoscape.simulate", "ground_truth_volume"),
    "Reconstruction": ("cryoscape.reconstruct", "Reconstruction"),
    "FourierProjector": ("cryoscape.imaging", "FourierProjector"),
    "compute_ctf": ("cryoscape.imaging", "compute_ctf"),
    "fsc": ("cryoscape.validate.fsc", "fsc"),
    "resolution_at": ("cryoscape.validate.fsc", "resolution_at"),
}

__all__ = ["CryoscapeError", "InputError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cryoscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

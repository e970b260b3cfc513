"""cryoscape: cryo-EM single-particle analysis of macromolecules that change shape."""

from __future__ import annotations

__version__ = "0.1.0"

from cryoscape.errors import CryoscapeError, InputError  # noqa: E402

__all__ = ["CryoscapeError", "InputError", "__version__"]

"""Random-number generator states as tensors and plain containers, for checkpoints.

:func:`capture_rng_state` gathers the torch (CPU and, where initialised, CUDA),
numpy-global, Python ``random`` and optionally one numpy ``Generator`` state;
:func:`restore_rng_state` puts them back, so a resumed fit draws the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.io.plain import to_plain

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Random states as tensors and plain containers, ready for a checkpoint.

    Holds the torch CPU state (uint8 tensor), the CUDA states where CUDA is
    initialised, numpy's global state, Python's ``random`` state and, when
    given, ``generator.bit_generator.state`` (a plain dict).
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_global": to_plain(np.random.get_state(legacy=False)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["numpy"] = to_plain(generator.bit_generator.state)
    return state


def restore_rng_state(state: Mapping[str, Any], generator: np.random.Generator | None = None) -> None:
    """Restore the states :func:`capture_rng_state` captured (``generator`` in place)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_state(state["numpy_global"]))
    random.setstate(_python_state(state["python"]))
    cuda = state.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if generator is not None:
        if "numpy" not in state:
            raise InputError("the checkpoint holds no numpy generator state; it was saved without one")
        generator.bit_generator.state = _numpy_state(state["numpy"])


def _numpy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A bit-generator state dict with MT19937's key list turned back into uint32."""
    out = dict(state)
    inner = dict(out["state"])
    if "key" in inner:
        inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
    out["state"] = inner
    return out


def _python_state(state: Any) -> tuple:
    """Python's ``random`` state as the nested tuple ``random.setstate`` expects."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)

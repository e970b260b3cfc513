"""Torch files that hold only tensors and plain containers: weights and epoch checkpoints.

Everything is written atomically and read back with ``weights_only=True``, so
loading a file never runs code. Checkpoints are ``epoch_XXXX.pt`` in one
folder, of which the last few are kept.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.io.atomic import atomic_path

__all__ = ["tensor_tree", "save_tensors", "load_tensors", "list_checkpoints", "write_checkpoint",
           "read_checkpoint"]

_TORCH_LEAVES = (torch.Tensor, str, bytes, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)
_CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.pt$")


def tensor_tree(value: Any, where: str) -> Any:
    """Check that ``value`` holds only tensors and plain containers; numpy becomes torch.

    numpy arrays become tensors and numpy scalars Python numbers. Containers
    are rebuilt only where something inside changed, so a module's
    ``state_dict`` (an ``OrderedDict`` with ``_metadata``) is kept as is.
    Raises ``TypeError`` naming the first value ``weights_only`` loading would refuse.
    """
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, np.generic):  # before the leaves: np.float64 subclasses float
        return value.item()
    if isinstance(value, _TORCH_LEAVES):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        new = {k: tensor_tree(v, f"{where}[{k!r}]") for k, v in value.items()}
        return value if all(new[k] is value[k] for k in value) else type(value)(new)
    if isinstance(value, (list, tuple)):
        new_seq = [tensor_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(new_seq, value)) else type(value)(new_seq)
    raise TypeError(f"{where} has type {type(value).__name__}; checkpoints hold only tensors and plain containers")


def save_tensors(path: Path, obj: Any) -> Path:
    """``torch.save`` atomically (replacing ``path``); return ``path``."""
    with atomic_path(path, force=True) as tmp:
        torch.save(obj, tmp)
    return path


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line :class:`InputError` on refusal."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path} holds objects other than tensors and plain containers, so it was refused unread "
            "(loading it could run code); delete it or restore the file cryoscape wrote"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputError(f"{path} is not a readable torch file (truncated or corrupt); delete it") from exc


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``epoch_XXXX.pt`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = ((_CHECKPOINT_RE.match(p.name), p) for p in folder.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def write_checkpoint(folder: Path, epoch: int, state: Mapping[str, Any], keep_last: int = 2) -> Path:
    """Write ``folder/epoch_XXXX.pt`` (``state`` plus its ``epoch``) and keep the last ``keep_last``."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, not {keep_last}")
    if "epoch" in state and state["epoch"] != epoch:
        raise ValueError(f"state['epoch'] = {state['epoch']} disagrees with epoch = {epoch}")
    payload = tensor_tree({**state, "epoch": int(epoch)}, "checkpoint")
    path = save_tensors(folder / f"epoch_{int(epoch):04d}.pt", payload)
    for _, old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by :func:`write_checkpoint` at ``path``, with its ``epoch``; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {p} not found; list {p.parent} for the saved epochs")
    state = load_tensors(p, map_location)
    if not isinstance(state, dict) or "epoch" not in state:
        raise InputError(f"{p} is not a cryoscape checkpoint (no epoch recorded)")
    return state

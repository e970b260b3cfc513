"""Plain YAML/JSON types: converting values to them and writing strict JSON.

:func:`to_plain` turns numpy, torch and path values into dict/list/str/int/
float/bool/None; :func:`finite_or_null` replaces NaN and ±inf (which strict
JSON lacks) by None; :func:`write_json` writes both results atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from cryoscape.io.atomic import write_text_atomic

__all__ = ["to_plain", "finite_or_null", "write_json"]


def to_plain(value: Any, where: str = "config") -> Any:
    """Return ``value`` as plain YAML/JSON types (dict, list, str, int, float, bool, None).

    numpy scalars and arrays, torch tensors, tuples and paths are converted;
    anything else raises ``TypeError`` naming the offending key.
    """
    if isinstance(value, (np.generic, np.ndarray)):  # before float: np.float64 subclasses it
        return to_plain(value.tolist(), where)
    if value is None or isinstance(value, bool):
        return value
    for plain in (int, float, str):
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, torch.Tensor):
        return to_plain(value.detach().cpu().tolist(), where)
    raise TypeError(f"{where} has type {type(value).__name__}; use numbers, strings, lists or dicts")


def finite_or_null(value: Any) -> Any:
    """Plain types with NaN and ±inf replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def write_json(path: str | Path, content: Mapping[str, Any], force: bool = False) -> Path:
    """Write ``content`` as strict, indented JSON (NaN → null) atomically."""
    text = json.dumps(finite_or_null(to_plain(content, "json")), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text, force)

"""The layout and ``config.yaml`` of a run directory: file names, building, reading and comparing configs.

``config.yaml`` has four top-level keys besides ``method``::

    run_format: 1
    method: pca
    cryoscape_version: 0.1.0
    data:      {particles: /abs/p.star, particles_relative: ../p.star,
                datadir: /abs/dir | null, datadir_relative: ..., n_particles: N,
                box: D (px), apix: Å/px}
    params:    {every hyper-parameter, plain YAML types}

:func:`build_config` takes one flat dict: the keys ``particles``,
``datadir``, ``n_particles``, ``box`` and ``apix`` go to ``data``, everything
else to ``params``. :func:`config_differences` says what a resumed run would
change.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cryoscape.errors import InputError
from cryoscape.io.plain import to_plain

RUN_FORMAT = 1
CONFIG = "config.yaml"
LATENTS = "latents.npy"
LATENTS_VAR = "latents_var.npy"
LATENTS_COV = "latents_cov.npy"
CURVE_COORDINATE = "curve_coordinate.npy"  # [N] each particle's position along a latent curve, in [0, 1]
CURVE_COORDINATE_SD = "curve_coordinate_sd.npy"  # [N] its posterior standard deviation
CURVE_POINTS = "curve_points.npy"  # [M, d] latent points of the curve at M equally spaced positions
WEIGHTS = "weights.pt"
LOG = "log.txt"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
ANALYSIS = "analysis"

DATA_KEYS = ("particles", "datadir", "n_particles", "box", "apix")
"""Keys of the flat config given to :meth:`RunDirectory.create` that describe the data."""

RESUMABLE_PARAMS = frozenset(
    {"epochs", "n_epochs", "num_epochs", "iterations", "device", "num_workers", "log_every", "checkpoint_every",
     "keep_last", "batch_size"}
)
"""Hyper-parameters that may change when a run is resumed (they do not change the model)."""


def _relative(path: Path, start: Path) -> str | None:
    """``path`` relative to ``start`` (POSIX separators), or None across drives."""
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:
        return None


def _data_section(flat: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The ``data`` section: particle file and datadir (absolute and relative), N, box, apix."""
    data: dict[str, Any] = {}
    for key in ("particles", "datadir"):
        if flat.get(key) is not None:
            absolute = Path(flat[key]).expanduser().resolve()
            data[key] = str(absolute)
            data[f"{key}_relative"] = _relative(absolute, root)
    for key in ("n_particles", "box", "apix"):
        if flat.get(key) is not None:
            data[key] = flat[key]
    return to_plain(data, "config")


def build_config(method: str, config: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The full ``config.yaml`` content for a flat user ``config`` of a run in ``root``."""
    from cryoscape import __version__

    params = {k: v for k, v in config.items() if k not in DATA_KEYS}
    full = {
        "run_format": RUN_FORMAT,
        "method": str(method),
        "cryoscape_version": __version__,
        "data": _data_section(config, root),
        "params": to_plain(params, "config"),
    }
    return yaml.safe_load(yaml.safe_dump(full))


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to ``{"a.b.c": value}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def _ignored_on_resume(key: str) -> bool:
    """Keys that may differ between a run and its resumption."""
    if key.startswith("data.datadir") or key == "data.particles_relative":
        return True
    return key.startswith("params.") and key.split(".", 1)[1] in RESUMABLE_PARAMS


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every model-relevant entry that differs (sorted)."""
    a, b = flatten_config(old.get("data", {}), "data."), flatten_config(new.get("data", {}), "data.")
    a.update(flatten_config(old.get("params", {}), "params."))
    b.update(flatten_config(new.get("params", {}), "params."))
    if _same_particles(old.get("data", {}), new.get("data", {})):
        a.pop("data.particles", None)
        b.pop("data.particles", None)
    keys = sorted(k for k in set(a) | set(b) if not _ignored_on_resume(k) and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys]


def _same_particles(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when both name the same particle file: same path, same file on disk, or
    same path relative to the run (the project folder moved as a whole)."""
    p, q = old.get("particles"), new.get("particles")
    if p == q or (old.get("particles_relative") is not None and old.get("particles_relative") == new.get("particles_relative")):
        return True
    if p is None or q is None:
        return False
    with contextlib.suppress(OSError):
        return os.path.samefile(p, q)
    return False


def read_config(path: Path) -> dict[str, Any]:
    """Parse and minimally validate ``config.yaml``."""
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{path} is not valid YAML ({reason}); restore the file the run wrote") from exc
    if not isinstance(cfg, dict) or "method" not in cfg:
        raise InputError(f"{path} names no method; it is not a cryoscape run config")
    if int(cfg.get("run_format", RUN_FORMAT)) > RUN_FORMAT:
        raise InputError(f"{path} has run format {cfg['run_format']}, newer than this cryoscape reads; upgrade cryoscape")
    return _current_names(cfg)


#: Parameter names that earlier runs wrote, by method (``"*"``: any), and their present name.
_RENAMED_PARAMS: dict[str, dict[str, str]] = {"*": {"zdim": "latent_dim"}, "pca": {"components": "latent_dim"}}


def _current_names(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the parameters of earlier runs under their present names (the latent dimension was
    ``zdim`` in gradient fits and ``components`` in ``pca``), so old runs resume and load."""
    params = cfg.get("params")
    if not isinstance(params, dict):
        return cfg
    renames = {**_RENAMED_PARAMS["*"], **_RENAMED_PARAMS.get(str(cfg["method"]), {})}
    for old, new in renames.items():
        if old in params and new not in params:
            params[new] = params.pop(old)
    return cfg


def non_empty(path: Path) -> bool:
    """True when ``path`` is a folder with any entry in it."""
    return path.is_dir() and any(path.iterdir())


def remove_stale_outputs(root: Path) -> None:
    """Remove the outputs of an earlier run in ``root`` (only where ``config.yaml`` marks one).

    ``log.txt`` and ``analysis/`` are kept; the log records the restart.
    """
    if not (root / CONFIG).is_file():
        return
    for name in (LATENTS, LATENTS_VAR, LATENTS_COV, WEIGHTS, METRICS):
        (root / name).unlink(missing_ok=True)
    checkpoints = root / CHECKPOINTS
    if checkpoints.is_dir():
        shutil.rmtree(checkpoints)

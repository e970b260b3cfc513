"""The run directory: one self-describing folder per fitted method.

Layout (every file written atomically; nothing is pickled)::

    run/
      config.yaml          method, cryoscape version, particle file, hyper-parameters
      latents.npy          [N, d] float32, in particle order
      latents_var.npy      [N, d] float32 posterior variance (optional), or
      latents_cov.npy      [N, d, d] float32 posterior covariance (optional)
      weights.pt           torch state_dict (loaded with ``weights_only=True``)
      log.txt              appended, timestamped lines
      metrics.json         scalar summaries of the fit
      checkpoints/epoch_XXXX.pt   tensors and plain containers only; the last K kept
      analysis/            figures, volumes and report.html (created on demand)

This module holds :class:`RunDirectory`; the file names and ``config.yaml``
are in :mod:`cryoscape.io.run_config`, the torch files in
:mod:`cryoscape.io.torch_files`, the random states in
:mod:`cryoscape.io.rng_state`, the arrays in :mod:`cryoscape.io.npy` and the
log in :mod:`cryoscape.io.run_log`. The run's particle set is opened above both
io and particles, by :func:`cryoscape.analysis.run_particles.run_particles`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.atomic import write_text_atomic
from cryoscape.io.npy import as_float32, check_latent_shapes, load_float_npy, save_npy
from cryoscape.io.plain import finite_or_null, to_plain, write_json
from cryoscape.io.rng_state import capture_rng_state, restore_rng_state
from cryoscape.io.run_config import (
    ANALYSIS, CHECKPOINTS, CONFIG, CURVE_COORDINATE, CURVE_COORDINATE_SD, CURVE_POINTS, DATA_KEYS, LATENTS,
    LATENTS_COV, LATENTS_VAR, LOG, METRICS, RESUMABLE_PARAMS, RUN_FORMAT, WEIGHTS, build_config,
    config_differences, flatten_config, non_empty, read_config, remove_stale_outputs,
)
from cryoscape.io.run_log import LogTimer, append_log_line
from cryoscape.io.torch_files import list_checkpoints, load_tensors, read_checkpoint, save_tensors, tensor_tree, write_checkpoint

__all__ = [
    "RunDirectory", "to_plain", "capture_rng_state", "restore_rng_state", "build_config", "config_differences",
    "RUN_FORMAT", "CONFIG", "LATENTS", "LATENTS_VAR", "LATENTS_COV", "CURVE_COORDINATE", "CURVE_COORDINATE_SD",
    "CURVE_POINTS", "WEIGHTS", "LOG", "METRICS", "CHECKPOINTS", "ANALYSIS", "DATA_KEYS", "RESUMABLE_PARAMS",
]

class RunDirectory:
    """A run folder: config, latents, weights, checkpoints, log, metrics, analysis.

    Build one with :meth:`create` (a new or resumed run) or :meth:`open` (an
    existing run, for analysis). ``path`` is the folder.
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        """Use :meth:`create` or :meth:`open`; this does no checking."""
        self.path = path
        self._config = config

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r}, method={self.method!r}, n_particles={self.n_particles})"

    # -- construction -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        method: str,
        config: Mapping[str, Any],
        force: bool = False,
        resume: bool = False,
    ) -> "RunDirectory":
        """Start a run in ``path`` (or resume one) and write ``config.yaml``.

        ``config`` is flat: ``particles`` (path), ``datadir``, ``n_particles``,
        ``box`` (px) and ``apix`` (Å/px) describe the data, every other key is
        a hyper-parameter. A non-empty folder is refused unless ``force``
        (stale latents, weights, metrics and checkpoints of an earlier run
        there are removed) or ``resume`` (the folder must hold a run of the
        same method whose config differs at most in :data:`RESUMABLE_PARAMS`
        and ``datadir``).
        """
        root = Path(path).expanduser()
        if force and resume:
            raise InputError(f"{root}: pass either --force (start over) or --resume (continue), not both")
        if root.exists() and not root.is_dir():
            raise InputError(f"{root} is a file, not a folder; choose a folder for the run")
        new = build_config(method, config, root.resolve())
        if resume:
            return cls._resume(root, new)
        if non_empty(root):
            if not force:
                raise OutputExistsError(
                    f"{root} is not empty; pass --resume to continue the run there, --force to overwrite it, "
                    "or choose another output folder"
                )
            remove_stale_outputs(root)
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root, new)
        run._write_config()
        run.log(f"started {method} run (cryoscape {new['cryoscape_version']})")
        return run

    @classmethod
    def _resume(cls, root: Path, new: dict[str, Any]) -> "RunDirectory":
        """Open the run in ``root`` and check ``new`` may continue it."""
        run = cls.open(root)
        if run.method != new["method"]:
            raise InputError(
                f"cannot resume {root}: it holds a {run.method!r} run, not {new['method']!r}; "
                "choose another output folder"
            )
        diffs = config_differences(run.config, new)
        if diffs:
            raise InputError(
                f"cannot resume {root}: the config differs from the saved run ({'; '.join(diffs)}); "
                "use the saved settings, --force to start over, or another output folder"
            )
        old_flat, new_flat = flatten_config(run.config), flatten_config(new)
        changed = sorted(k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k))
        run._config = new
        run._write_config()
        run.log("resumed" + (f"; changed: {', '.join(changed)}" if changed else ""))
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDirectory":
        """Open an existing run folder (for analysis or resuming)."""
        root = Path(path).expanduser()
        cfg_path = root / CONFIG
        if not cfg_path.is_file():
            raise InputError(
                f"{root} is not a cryoscape run directory (no {CONFIG}); give the folder a `cryoscape fit ...` wrote"
            )
        return cls(root, read_config(cfg_path))

    @staticmethod
    def is_run_directory(path: str | os.PathLike) -> bool:
        """True when ``path`` is a folder holding ``config.yaml``."""
        return (Path(path) / CONFIG).is_file()

    # -- config -------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The whole ``config.yaml`` (a copy): run_format, method, version, data, params."""
        return yaml.safe_load(yaml.safe_dump(self._config))

    @property
    def method(self) -> str:
        """The method name, e.g. ``"pca"``."""
        return str(self._config["method"])

    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters (a copy)."""
        return self.config.get("params", {})

    def _data(self, key: str) -> Any:
        """One entry of the ``data`` section, or None."""
        return self._config.get("data", {}).get(key)

    @property
    def n_particles(self) -> int | None:
        """Number of particles N the run was fitted on (None if not recorded)."""
        n = self._data("n_particles")
        return None if n is None else int(n)

    @property
    def box(self) -> int | None:
        """Box size D in pixels (None if not recorded)."""
        d = self._data("box")
        return None if d is None else int(d)

    @property
    def apix(self) -> float | None:
        """Pixel size in Å/px (None if not recorded)."""
        a = self._data("apix")
        return None if a is None else float(a)

    def _write_config(self) -> None:
        """Write ``config.yaml`` atomically (overwriting)."""
        text = yaml.safe_dump(self._config, sort_keys=False, default_flow_style=False)
        write_text_atomic(self.path / CONFIG, text, force=True)

    # -- latents ------------------------------------------------------------

    def write_latents(self, mean: Any, var: Any = None, cov: Any = None) -> None:
        """Write ``latents.npy`` ``[N, d]`` and optionally ``latents_var.npy`` ``[N, d]`` or
        ``latents_cov.npy`` ``[N, d, d]``, all float32 in particle order.

        Arrays may be numpy or torch. A spread file not given now is removed
        so the folder never mixes two fits. Raises ``ValueError`` on a shape
        that disagrees with N or with ``mean``.
        """
        if var is not None and cov is not None:
            raise ValueError("give the posterior spread as var [N, d] or cov [N, d, d], not both")
        m = as_float32(mean)
        v = None if var is None else as_float32(var)
        c = None if cov is None else as_float32(cov)
        check_latent_shapes(m, v, c, self.n_particles, ValueError, "latents")
        for name, arr in ((LATENTS_VAR, v), (LATENTS_COV, c)):
            if arr is None:
                (self.path / name).unlink(missing_ok=True)
            else:
                save_npy(self.path / name, arr)
        save_npy(self.path / LATENTS, m)

    def read_latents(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(mean [N, d], var [N, d] | None, cov [N, d, d] | None)`` as float32."""
        mean = load_float_npy(self.path / LATENTS, "latents")
        var = load_float_npy(self.path / LATENTS_VAR, "latent variances") if (self.path / LATENTS_VAR).exists() else None
        cov = load_float_npy(self.path / LATENTS_COV, "latent covariances") if (self.path / LATENTS_COV).exists() else None
        check_latent_shapes(mean, var, cov, self.n_particles, InputError, str(self.path / LATENTS))
        return mean, var, cov

    def has_curve(self) -> bool:
        """Whether the run holds a latent curve (:data:`CURVE_POINTS` and :data:`CURVE_COORDINATE`)."""
        return (self.path / CURVE_POINTS).is_file() and (self.path / CURVE_COORDINATE).is_file()

    def read_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(points [M, d], coordinate [N])`` of the run's latent curve as float32; one-line error without one."""
        if not self.has_curve():
            raise InputError(f"{self.path} has no latent curve ({CURVE_POINTS}, {CURVE_COORDINATE}); "
                             "`cryoscape fit pca` writes one unless --curve-basis 0")
        points = load_float_npy(self.path / CURVE_POINTS, "latent curve")
        coordinate = load_float_npy(self.path / CURVE_COORDINATE, "curve coordinates").reshape(-1)
        if points.ndim != 2 or points.shape[0] < 2 or coordinate.size != self.n_particles:
            raise InputError(f"{self.path}: the latent curve has points {points.shape} and {coordinate.size} "
                             f"coordinates for {self.n_particles} particles; refit the run")
        return points, coordinate

    # -- weights and checkpoints -------------------------------------------

    def save_weights(self, state_dict: Mapping[str, Any]) -> Path:
        """Write ``weights.pt`` (a torch ``state_dict``) atomically; return its path."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"weights must be a state_dict (a mapping), not {type(state_dict).__name__}")
        return save_tensors(self.path / WEIGHTS, tensor_tree(state_dict, "weights"))

    def load_weights(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read ``weights.pt`` with ``weights_only=True``."""
        path = self.path / WEIGHTS
        if not path.is_file():
            raise InputError(f"{self.path} has no {WEIGHTS}; the fit has not finished: resume it from its checkpoint")
        return load_tensors(path, map_location)

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/`` (may not exist yet)."""
        return self.path / CHECKPOINTS

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of every checkpoint, oldest first."""
        return list_checkpoints(self.checkpoint_dir)

    def save_checkpoint(self, epoch: int, state: Mapping[str, Any], keep_last: int = 2) -> Path:
        """Write ``checkpoints/epoch_XXXX.pt`` atomically and keep the last ``keep_last``.

        ``state`` holds tensors and plain containers only (model and optimiser
        state dicts, latents, :func:`capture_rng_state`); numpy arrays are
        stored as tensors. The key ``epoch`` is added.
        """
        return write_checkpoint(self.checkpoint_dir, epoch, state, keep_last)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """``(epoch, path)`` of the newest checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def load_checkpoint(self, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read a checkpoint (the latest when ``path`` is None) with ``weights_only=True``.

        Returns the saved ``state`` with its ``epoch``.
        """
        if path is None:
            latest = self.latest_checkpoint()
            if latest is None:
                raise InputError(f"{self.path} has no checkpoints to resume from; start the run again with --force")
            path = latest[1]
        if not Path(path).is_file():
            raise InputError(f"checkpoint {Path(path)} not found; list {self.checkpoint_dir} for the saved epochs")
        return read_checkpoint(path, map_location)

    # -- log and metrics ----------------------------------------------------

    def log(self, message: str) -> LogTimer:
        """Append ``<ISO time>  message`` to ``log.txt``.

        Each line goes out in one ``O_APPEND`` write, so lines are never torn.
        Use as a context to time a step: ``with run.log("fit"): ...`` adds
        ``fit: done in 12.30 s`` (or ``failed after ...``) at the end.
        """
        append_log_line(self.path / LOG, message)
        return LogTimer(self.log, message)

    def write_metrics(self, metrics: Mapping[str, Any], merge: bool = True) -> Path:
        """Write ``metrics.json`` atomically; ``merge`` keeps earlier top-level keys.

        NaN and ±inf are stored as ``null`` (strict JSON).
        """
        new = finite_or_null(to_plain(metrics, "metrics"))
        current = self.read_metrics() if merge else {}
        return write_json(self.path / METRICS, {**current, **new}, force=True)

    def read_metrics(self) -> dict[str, Any]:
        """The content of ``metrics.json`` ({} when there is none)."""
        path = self.path / METRICS
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON; delete it or restore the file the run wrote") from exc

    # -- analysis folder and particle file ----------------------------------

    @property
    def analysis_dir(self) -> Path:
        """``analysis/``, created on first use."""
        path = self.path / ANALYSIS
        path.mkdir(parents=True, exist_ok=True)
        return path

    def particle_file(self, override: str | os.PathLike | None = None) -> Path:
        """The particle file: ``override``, else the recorded path relative to the run, else absolute."""
        if override is not None:
            return Path(override)
        if self._data("particles") is None:
            raise InputError(f"{self.path / CONFIG} records no particle file; pass --particles")
        rel = self._data("particles_relative")
        candidates = ([self.path / rel] if rel else []) + [Path(self._data("particles"))]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise InputError(
            f"the particle file of {self.path} was not found at {' or '.join(map(str, candidates))}; "
            "if it moved, pass --particles NEW_PATH"
        )

    def recorded_datadir(self) -> Path | None:
        """The recorded datadir (relative to the run first), or None if absent or gone."""
        rel, absolute = self._data("datadir_relative"), self._data("datadir")
        for candidate in ([self.path / rel] if rel else []) + ([Path(absolute)] if absolute else []):
            if candidate.is_dir():
                return candidate
        return None

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

``config.yaml`` has four top-level keys besides ``method``::

    run_format: 1
    method: pca
    cryoscape_version: 0.1.0
    data:      {particles: /abs/p.star, particles_relative: ../p.star,
                datadir: /abs/dir | null, datadir_relative: ..., n_particles: N,
                box: D (px), apix: Å/px}
    params:    {every hyper-parameter, plain YAML types}

:meth:`RunDirectory.create` takes one flat dict: the keys ``particles``,
``datadir``, ``n_particles``, ``box`` and ``apix`` go to ``data``, everything
else to ``params``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
import yaml

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.atomic import atomic_path, write_text_atomic

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

_CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.pt$")
_log = logging.getLogger("cryoscape.run")


# ----------------------------------------------------------------------------
# plain types
# ----------------------------------------------------------------------------


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


def _json_safe(value: Any) -> Any:
    """Plain types with NaN and ±inf replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


_TORCH_LEAVES = (torch.Tensor, str, bytes, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def _tensor_tree(value: Any, where: str) -> Any:
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
        new = {k: _tensor_tree(v, f"{where}[{k!r}]") for k, v in value.items()}
        return value if all(new[k] is value[k] for k in value) else type(value)(new)
    if isinstance(value, (list, tuple)):
        new_seq = [_tensor_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(new_seq, value)) else type(value)(new_seq)
    raise TypeError(f"{where} has type {type(value).__name__}; checkpoints hold only tensors and plain containers")


def _load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
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


# ----------------------------------------------------------------------------
# random-number generator state
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# config building and comparison
# ----------------------------------------------------------------------------


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


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to ``{"a.b.c": value}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
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
    a, b = _flatten(old.get("data", {}), "data."), _flatten(new.get("data", {}), "data.")
    a.update(_flatten(old.get("params", {}), "params."))
    b.update(_flatten(new.get("params", {}), "params."))
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


# ----------------------------------------------------------------------------
# the run directory
# ----------------------------------------------------------------------------


class _LogTimer:
    """Returned by :meth:`RunDirectory.log`; as a context it logs the elapsed time (s)."""

    def __init__(self, run: "RunDirectory", message: str) -> None:
        self._run, self._message, self._start = run, message, time.perf_counter()

    def __enter__(self) -> "_LogTimer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        elapsed = time.perf_counter() - self._start
        if exc_type is None:
            self._run.log(f"{self._message}: done in {elapsed:.2f} s")
        else:
            self._run.log(f"{self._message}: failed after {elapsed:.2f} s ({exc_type.__name__}: {exc})")


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
        if _non_empty(root):
            if not force:
                raise OutputExistsError(
                    f"{root} is not empty; pass --resume to continue the run there, --force to overwrite it, "
                    "or choose another output folder"
                )
            _remove_stale_outputs(root)
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
        old_flat, new_flat = _flatten(run.config), _flatten(new)
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
        return cls(root, _read_config(cfg_path))

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

    @property
    def n_particles(self) -> int | None:
        """Number of particles N the run was fitted on (None if not recorded)."""
        n = self._config.get("data", {}).get("n_particles")
        return None if n is None else int(n)

    @property
    def box(self) -> int | None:
        """Box size D in pixels (None if not recorded)."""
        d = self._config.get("data", {}).get("box")
        return None if d is None else int(d)

    @property
    def apix(self) -> float | None:
        """Pixel size in Å/px (None if not recorded)."""
        a = self._config.get("data", {}).get("apix")
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
        m = _float32(mean)
        v = None if var is None else _float32(var)
        c = None if cov is None else _float32(cov)
        _check_latent_shapes(m, v, c, self.n_particles, ValueError, "latents")
        for name, arr in ((LATENTS_VAR, v), (LATENTS_COV, c)):
            if arr is None:
                (self.path / name).unlink(missing_ok=True)
            else:
                _save_npy(self.path / name, arr)
        _save_npy(self.path / LATENTS, m)

    def read_latents(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(mean [N, d], var [N, d] | None, cov [N, d, d] | None)`` as float32."""
        mean = _load_npy(self.path / LATENTS, "latents")
        var = _load_npy(self.path / LATENTS_VAR, "latent variances") if (self.path / LATENTS_VAR).exists() else None
        cov = _load_npy(self.path / LATENTS_COV, "latent covariances") if (self.path / LATENTS_COV).exists() else None
        _check_latent_shapes(mean, var, cov, self.n_particles, InputError, str(self.path / LATENTS))
        return mean, var, cov

    def has_curve(self) -> bool:
        """Whether the run holds a latent curve (:data:`CURVE_POINTS` and :data:`CURVE_COORDINATE`)."""
        return (self.path / CURVE_POINTS).is_file() and (self.path / CURVE_COORDINATE).is_file()

    def read_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(points [M, d], coordinate [N])`` of the run's latent curve as float32; one-line error without one."""
        if not self.has_curve():
            raise InputError(f"{self.path} has no latent curve ({CURVE_POINTS}, {CURVE_COORDINATE}); "
                             "`cryoscape fit pca` writes one unless --curve-basis 0")
        points = _load_npy(self.path / CURVE_POINTS, "latent curve")
        coordinate = _load_npy(self.path / CURVE_COORDINATE, "curve coordinates").reshape(-1)
        if points.ndim != 2 or points.shape[0] < 2 or coordinate.size != self.n_particles:
            raise InputError(f"{self.path}: the latent curve has points {points.shape} and {coordinate.size} "
                             f"coordinates for {self.n_particles} particles; refit the run")
        return points, coordinate

    # -- weights and checkpoints -------------------------------------------

    def save_weights(self, state_dict: Mapping[str, Any]) -> Path:
        """Write ``weights.pt`` (a torch ``state_dict``) atomically; return its path."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"weights must be a state_dict (a mapping), not {type(state_dict).__name__}")
        return _torch_save(self.path / WEIGHTS, _tensor_tree(state_dict, "weights"))

    def load_weights(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read ``weights.pt`` with ``weights_only=True``."""
        path = self.path / WEIGHTS
        if not path.is_file():
            raise InputError(f"{self.path} has no {WEIGHTS}; the fit has not finished: resume it from its checkpoint")
        return _load_tensors(path, map_location)

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/`` (may not exist yet)."""
        return self.path / CHECKPOINTS

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of every checkpoint, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = ((_CHECKPOINT_RE.match(p.name), p) for p in self.checkpoint_dir.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def save_checkpoint(self, epoch: int, state: Mapping[str, Any], keep_last: int = 2) -> Path:
        """Write ``checkpoints/epoch_XXXX.pt`` atomically and keep the last ``keep_last``.

        ``state`` holds tensors and plain containers only (model and optimiser
        state dicts, latents, :func:`capture_rng_state`); numpy arrays are
        stored as tensors. The key ``epoch`` is added.
        """
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, not {keep_last}")
        if "epoch" in state and state["epoch"] != epoch:
            raise ValueError(f"state['epoch'] = {state['epoch']} disagrees with epoch = {epoch}")
        payload = _tensor_tree({**state, "epoch": int(epoch)}, "checkpoint")
        path = _torch_save(self.checkpoint_dir / f"epoch_{int(epoch):04d}.pt", payload)
        for _, old in self.checkpoints()[:-keep_last]:
            old.unlink(missing_ok=True)
        return path

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
        p = Path(path)
        if not p.is_file():
            raise InputError(f"checkpoint {p} not found; list {self.checkpoint_dir} for the saved epochs")
        state = _load_tensors(p, map_location)
        if not isinstance(state, dict) or "epoch" not in state:
            raise InputError(f"{p} is not a cryoscape checkpoint (no epoch recorded)")
        return state

    # -- log and metrics ----------------------------------------------------

    def log(self, message: str) -> _LogTimer:
        """Append ``<ISO time>  message`` to ``log.txt``.

        Each line goes out in one ``O_APPEND`` write, so lines are never torn.
        Use as a context to time a step: ``with run.log("fit"): ...`` adds
        ``fit: done in 12.30 s`` (or ``failed after ...``) at the end.
        """
        line = f"{datetime.now().astimezone().isoformat(timespec='seconds')}  {' '.join(str(message).split())}\n"
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        _log.info("%s: %s", self.path, message)
        return _LogTimer(self, message)

    def write_metrics(self, metrics: Mapping[str, Any], merge: bool = True) -> Path:
        """Write ``metrics.json`` atomically; ``merge`` keeps earlier top-level keys.

        NaN and ±inf are stored as ``null`` (strict JSON).
        """
        new = _json_safe(to_plain(metrics, "metrics"))
        current = self.read_metrics() if merge else {}
        text = json.dumps({**current, **new}, indent=2, allow_nan=False) + "\n"
        return write_text_atomic(self.path / METRICS, text, force=True)

    def read_metrics(self) -> dict[str, Any]:
        """The content of ``metrics.json`` ({} when there is none)."""
        path = self.path / METRICS
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON; delete it or restore the file the run wrote") from exc

    # -- analysis and particles --------------------------------------------

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
        data = self._config.get("data", {})
        if data.get("particles") is None:
            raise InputError(f"{self.path / CONFIG} records no particle file; pass --particles")
        candidates = [self.path / data["particles_relative"]] if data.get("particles_relative") else []
        candidates.append(Path(data["particles"]))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise InputError(
            f"the particle file of {self.path} was not found at {' or '.join(map(str, candidates))}; "
            "if it moved, pass --particles NEW_PATH"
        )

    def particles(self, datadir: str | os.PathLike | None = None, particles: str | os.PathLike | None = None) -> Any:
        """The run's :class:`~cryoscape.particles.ParticleSet`, checked against N.

        ``particles`` overrides the recorded file (``--particles``); ``datadir``
        defaults to the recorded one where it still exists.
        """
        from cryoscape.particles.particle_set import ParticleSet

        path = self.particle_file(particles)
        ps = ParticleSet.from_file(path, datadir=datadir if datadir is not None else self._recorded_datadir())
        if self.n_particles is not None and len(ps) != self.n_particles:
            raise InputError(
                f"{path} has {len(ps)} particles but the run {self.path} was fitted on {self.n_particles}; "
                "pass the particle file the run was fitted on"
            )
        return ps

    def _recorded_datadir(self) -> Path | None:
        """The recorded datadir (relative to the run first), or None if absent or gone."""
        data = self._config.get("data", {})
        rel, absolute = data.get("datadir_relative"), data.get("datadir")
        for candidate in ([self.path / rel] if rel else []) + ([Path(absolute)] if absolute else []):
            if candidate.is_dir():
                return candidate
        return None


# ----------------------------------------------------------------------------
# file helpers
# ----------------------------------------------------------------------------


def _non_empty(path: Path) -> bool:
    """True when ``path`` is a folder with any entry in it."""
    return path.is_dir() and any(path.iterdir())


def _remove_stale_outputs(root: Path) -> None:
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


def _read_config(path: Path) -> dict[str, Any]:
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
    return cfg


def _float32(x: Any) -> np.ndarray:
    """numpy or torch array as a float32 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _check_latent_shapes(
    mean: np.ndarray,
    var: np.ndarray | None,
    cov: np.ndarray | None,
    n: int | None,
    error: type[Exception],
    what: str,
) -> None:
    """Check mean ``[N, d]``, var ``[N, d]``, cov ``[N, d, d]`` and N against the run."""
    if mean.ndim != 2:
        raise error(f"{what}: latent means must be [N, d], got shape {mean.shape}")
    if n is not None and mean.shape[0] != n:
        raise error(f"{what}: {mean.shape[0]} latent rows but the run has {n} particles")
    N, d = mean.shape
    if var is not None and var.shape != (N, d):
        raise error(f"{what}: latent variances have shape {var.shape}, expected {(N, d)}")
    if cov is not None and cov.shape != (N, d, d):
        raise error(f"{what}: latent covariances have shape {cov.shape}, expected {(N, d, d)}")


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically, without pickles."""
    with atomic_path(path, force=True) as tmp:
        np.save(tmp, array, allow_pickle=False)


def _load_npy(path: Path, what: str) -> np.ndarray:
    """``np.load`` without pickles as float32, with one-line errors."""
    if not path.is_file():
        raise InputError(f"{path} not found: the run has no {what} yet; finish or resume the fit")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path} holds pickled objects or is not a .npy array; it was not written by cryoscape") from exc
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path} holds {array.dtype} values, expected float {what}")
    return array.astype(np.float32, copy=False)


def _torch_save(path: Path, obj: Any) -> Path:
    """``torch.save`` atomically; return ``path``."""
    with atomic_path(path, force=True) as tmp:
        torch.save(obj, tmp)
    return path


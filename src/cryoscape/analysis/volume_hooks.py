"""The former per-method volume hooks, kept only as the compatible path of :mod:`cryoscape.analysis.pipeline`.

The analysis itself takes a run's model as an explicit ``volume_fn``
(:mod:`cryoscape.analysis.volumes`) and never reads these hooks. They remain
for the code that still registers them (``cryoscape.methods.pca`` and
``cryoscape.methods.drgn`` at import) or calls ``volume_at(run, z)`` without a
volume function (``cryoscape.methods.model_volume``); once those take the
function from :func:`cryoscape.methods.registry.volume_function`, this module
goes.
"""

from __future__ import annotations

import numpy as np

from cryoscape.analysis.volumes import VolumeFn
from cryoscape.analysis.volumes import volume_at as _volume_at
from cryoscape.io.run_dir import RunDirectory

__all__ = ["register_volume_hook", "volume_at"]

_VOLUME_HOOKS: dict[str, VolumeFn] = {}
_REGISTERED = object()


def register_volume_hook(method: str, hook: VolumeFn | None) -> None:
    """Record ``hook`` as the volume function of ``method`` runs for :func:`volume_at` without one (None removes it)."""
    if hook is None:
        _VOLUME_HOOKS.pop(method, None)
    else:
        _VOLUME_HOOKS[method] = hook


def volume_at(run: RunDirectory, z: np.ndarray, volume_fn: VolumeFn | None | object = _REGISTERED) -> np.ndarray | None:
    """:func:`cryoscape.analysis.volumes.volume_at`; without ``volume_fn``, the hook registered for the run's method."""
    fn = _VOLUME_HOOKS.get(run.method) if volume_fn is _REGISTERED else volume_fn
    return _volume_at(run, z, fn)  # type: ignore[arg-type]

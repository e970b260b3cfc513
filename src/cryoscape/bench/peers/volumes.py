"""Peer volumes at latent points: evaluated in batches with the run's hints, kept in an in-memory cache.

Starting a peer program is slow, so :func:`hinted_volume` evaluates the asked
point together with every hint of the run (``peer/volume_hints.npy``) not yet
cached, in one start, and keeps the volumes (:data:`VOLUME_CACHE_SIZE` per
process, oldest dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cryoscape.bench.peers.files import PEER_DIR, VOLUME_HINTS
from cryoscape.bench.peers.programs import PeerError

__all__ = ["VOLUME_CACHE_SIZE", "Evaluator", "clear_volume_cache", "hinted_volume"]

VOLUME_CACHE_SIZE = 256
"""Volumes kept in memory per process (oldest dropped first)."""


_CACHE: "OrderedDict[tuple[str, bytes], np.ndarray]" = OrderedDict()

Evaluator = Callable[[Any, np.ndarray], np.ndarray]
"""``evaluate(run, Z [n, d]) -> volumes [n, D, D, D]`` with one start of the peer program."""


def clear_volume_cache() -> None:
    """Forget every cached peer volume."""
    _CACHE.clear()


def _model_stamp(run: Any) -> str:
    """The run folder and the modification time of its ``latents.npy`` (a refit invalidates the cache)."""
    from cryoscape.io.run_dir import LATENTS

    latents = Path(run.path) / LATENTS
    stamp = latents.stat().st_mtime_ns if latents.exists() else 0
    return f"{Path(run.path).resolve()}@{stamp}"


def _remember(key: tuple[str, bytes], vol: np.ndarray) -> None:
    _CACHE[key] = vol
    _CACHE.move_to_end(key)
    while len(_CACHE) > VOLUME_CACHE_SIZE:
        _CACHE.popitem(last=False)


def hinted_volume(run: Any, z: np.ndarray, evaluate: Evaluator) -> np.ndarray:
    """Volume at latent ``z (d,)`` from the cache, else evaluated with every uncached hint in one call.

    Hints are the points in ``<run>/peer/volume_hints.npy``; volumes are
    cached in memory per process (:data:`VOLUME_CACHE_SIZE`), keyed by the run
    and ``z`` as float32.
    """
    z32 = np.asarray(z, dtype=np.float32).reshape(-1)
    stamp = _model_stamp(run)
    key = (stamp, z32.tobytes())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    points, seen = [z32], {key[1]}
    hints = Path(run.path) / PEER_DIR / VOLUME_HINTS
    if hints.is_file():
        for h in np.load(hints, allow_pickle=False).astype(np.float32).reshape(-1, z32.size):
            hk = h.tobytes()
            if (stamp, hk) not in _CACHE and hk not in seen:
                seen.add(hk)
                points.append(h)
    vols = evaluate(run, np.stack(points))
    if len(vols) != len(points):
        raise PeerError(f"the peer program gave {len(vols)} volumes for {len(points)} latent points; check its log "
                        f"in {Path(run.path) / PEER_DIR}")
    for p, v in zip(points[::-1], vols[::-1]):  # the asked point last: most recently used
        _remember((stamp, p.tobytes()), np.asarray(v, dtype=np.float32))
    return _CACHE[key]

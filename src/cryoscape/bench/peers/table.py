"""The benchmark's table of peer programs: each peer's runner, volume function and availability check.

Peers are not cryoscape methods (they are not in
:data:`cryoscape.methods.registry.METHODS`); the benchmark lists them beside
the registry's methods (:mod:`cryoscape.bench.method_table`) and refuses one
with its one-line reason where :attr:`PeerMethod.available` says it cannot
run here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cryoscape.bench.peers.cryodrgn import cryodrgn_volume, run_cryodrgn
from cryoscape.bench.peers.programs import CRYODRGN, unavailable_reason
from cryoscape.bench.peers.recovar import recovar_unavailable_reason, recovar_volume, run_recovar

__all__ = ["PeerMethod", "PEERS", "peer_volume_function"]


@dataclass(frozen=True)
class PeerMethod:
    """A peer program as the benchmark runs it.

    ``run(dataset, out_dir, progress, **options) -> run directory``;
    ``volume(run, z) -> [D, D, D]`` float32, the volume of one of its runs at
    latent ``z``; ``available() -> None`` where it can run here, else a
    one-line reason.
    """

    name: str
    summary: str
    run: Callable[..., Path]
    volume: Callable[[Any, Any], np.ndarray]
    available: Callable[[], str | None]


PEERS: dict[str, PeerMethod] = {p.name: p for p in (
    PeerMethod("cryodrgn", "cryoDRGN train_vae (peer program, its own environment)", run_cryodrgn,
               cryodrgn_volume, functools.partial(unavailable_reason, CRYODRGN)),
    PeerMethod("recovar", "RECOVAR pipeline + compute_state (peer program, its own environment)", run_recovar,
               recovar_volume, recovar_unavailable_reason),
)}
"""Every peer program by name."""


def peer_volume_function(method: str) -> Callable[[Any, Any], np.ndarray] | None:
    """``volume(run, z)`` of runs of the peer ``method`` (a run's ``method``), or None for a non-peer."""
    peer = PEERS.get(method)
    return None if peer is None else peer.volume

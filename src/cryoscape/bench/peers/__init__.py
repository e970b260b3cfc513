"""Peer programs in ``cryoscape bench``: cryoDRGN (and RECOVAR), run side by side with cryoscape's methods.

A peer is *run*, never imported: each lives in its own virtual environment and
is started as a separate program. Its own files (poses, weights, logs) stay in
``<run>/peer/``; what it finds is translated into an ordinary cryoscape run
directory so the benchmark runner scores it like any other method:

``config.yaml``
    method ``cryodrgn`` (or ``recovar``), the particle file and every
    setting, plus the command line that was run.
``latents.npy``
    ``[N, d]`` float32 latent means in particle order.
``peer/volume_hints.npy``
    latent points whose volumes are evaluated together with the first one
    asked for (the runner's sampled particles).

Modules:

* :mod:`~cryoscape.bench.peers.programs` — locating a program, running it with a log
* :mod:`~cryoscape.bench.peers.files` — the peer folder, hints and particles every peer run shares
* :mod:`~cryoscape.bench.peers.volumes` — batched, cached volumes at latent points
* :mod:`~cryoscape.bench.peers.cryodrgn` — cryoDRGN (its sign conventions are there)
* :mod:`~cryoscape.bench.peers.recovar` — RECOVAR (refused by the benchmark, see there)
* :mod:`~cryoscape.bench.peers.table` — :data:`PEERS`, the benchmark's table of peers

Nothing here imports the benchmark runner; the runner reads :data:`PEERS`.
"""

from __future__ import annotations

from cryoscape.bench.peers.cryodrgn import (
    EVAL_CHUNK,
    CryodrgnSettings,
    _peer_version,  # noqa: F401  (benchmarks/ scripts)
    cryodrgn_eval_command,
    cryodrgn_eval_volumes,
    cryodrgn_train_command,
    cryodrgn_volume,
    read_cryodrgn_latents,
    run_cryodrgn,
)
from cryoscape.bench.peers.files import PEER_DIR, VOLUME_HINTS
from cryoscape.bench.peers.programs import (
    CRYODRGN,
    RECOVAR,
    Peer,
    PeerError,
    _thread_env,  # noqa: F401  (benchmarks/ scripts)
    find_program,
    run_program,
    unavailable_reason,
)
from cryoscape.bench.peers.recovar import (
    RECOVAR_NOT_VALIDATED,
    RecovarSettings,
    read_recovar_latents,
    recovar_pipeline_command,
    recovar_state_command,
    recovar_state_volumes,
    recovar_unavailable_reason,
    recovar_volume,
    run_recovar,
)
from cryoscape.bench.peers.table import PEERS, PeerMethod, peer_volume_function
from cryoscape.bench.peers.volumes import VOLUME_CACHE_SIZE, clear_volume_cache, hinted_volume

__all__ = [
    "PeerError",
    "Peer",
    "CRYODRGN",
    "RECOVAR",
    "PEER_DIR",
    "VOLUME_HINTS",
    "VOLUME_CACHE_SIZE",
    "EVAL_CHUNK",
    "find_program",
    "unavailable_reason",
    "run_program",
    "CryodrgnSettings",
    "cryodrgn_train_command",
    "cryodrgn_eval_command",
    "read_cryodrgn_latents",
    "cryodrgn_eval_volumes",
    "run_cryodrgn",
    "cryodrgn_volume",
    "RecovarSettings",
    "recovar_pipeline_command",
    "recovar_state_command",
    "read_recovar_latents",
    "recovar_state_volumes",
    "run_recovar",
    "recovar_volume",
    "recovar_unavailable_reason",
    "RECOVAR_NOT_VALIDATED",
    "hinted_volume",
    "clear_volume_cache",
    "PeerMethod",
    "PEERS",
    "peer_volume_function",
]

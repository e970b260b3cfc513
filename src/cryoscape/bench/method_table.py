"""The benchmark's method table: every method of the registry, the peer programs, and the method grid.

:data:`METHODS` maps a name to a :class:`BenchMethod`: first every method of
:data:`cryoscape.methods.registry.METHODS` (fitted with the registry's
defaults under the caller's options), then the peer programs of
:data:`cryoscape.bench.peers.PEERS` (each with its availability check). A peer
that cannot run here is listed but refused with its one-line reason.

``grid`` (:data:`GRID`) stands for every runnable (representation, inference)
pair of :func:`cryoscape.methods.registry.pair_grid`; :func:`grid_methods`
also gives the pairs that cannot run, each with the reason
:func:`cryoscape.methods.registry.method_for_pair` states.

A run's volume function (:func:`method_volume_function`) comes from the
registry for cryoscape methods and from the peer table for peer runs; the
runner passes it explicitly to the scoring.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from cryoscape.bench.peers.table import PEERS, peer_volume_function
from cryoscape.bench.results import SkippedPair
from cryoscape.bench.scoring import VolumeFn
from cryoscape.errors import InputError
from cryoscape.methods.registry import METHODS as REGISTRY
from cryoscape.methods.registry import Method, method_for_pair, pair_grid, volume_function

__all__ = ["GRID", "MethodRunner", "BenchMethod", "METHODS", "register_method", "check_methods", "grid_methods",
           "method_volume_function", "iteration_options"]

GRID = "grid"
"""The method name standing for every runnable (representation, inference) pair."""


class MethodRunner(Protocol):
    """``(dataset, out_dir, progress, **options) -> run directory path`` of one method."""

    def __call__(self, dataset: Any, out_dir: Path, progress: bool, **options: Any) -> Path: ...


@dataclass(frozen=True)
class BenchMethod:
    """A method the runner can fit.

    ``run``: the :class:`MethodRunner`; ``description``: one line for listings;
    ``available``: None (always available) or a check returning None when the
    method can run here, else a one-line reason (e.g. "cryodrgn is not installed");
    ``volume``: the volume function of its runs (None: looked up by the run's method);
    ``pair``: (representation, inference) of a registry method, None for a peer.
    """

    name: str
    run: MethodRunner
    description: str = ""
    available: Callable[[], str | None] | None = None
    volume: VolumeFn | None = None
    pair: tuple[str, str] | None = None

    def unavailable_reason(self) -> str | None:
        """None when the method can run in this environment, else why not."""
        return None if self.available is None else self.available()


#: Registry of benchmarkable methods: name -> :class:`BenchMethod`.
METHODS: dict[str, BenchMethod] = {}


def register_method(name: str, run: MethodRunner, description: str = "",
                    available: Callable[[], str | None] | None = None, volume: VolumeFn | None = None) -> None:
    """Add (or replace) a method of the benchmark.

    ``run`` writes a cryoscape run directory (``config.yaml``, ``latents.npy``);
    ``volume(run, z)`` gives its model's volume for the per-image FSC;
    ``available`` (e.g. a check that a program is installed) returns a
    one-line reason where the method cannot run here.
    """
    METHODS[name] = BenchMethod(name, run, description, available, volume)


def _registry_runner(method: Method) -> MethodRunner:
    """The runner of a registry method: its defaults under the options, the run folder overwritten."""

    def run(dataset: Any, out_dir: Path, progress: bool, **options: Any) -> Path:
        if method.representation == "normal-modes" and "model" not in options:
            from cryoscape.bench.atom_models import reference_model

            options = {**options, "model": str(reference_model(dataset))}  # the truth's first frame
        return Path(method.run(dataset.star_path, out_dir, force=True, progress=progress, **options).run.path)

    run.__doc__ = f"``{method.name}`` ({method.representation}, {method.inference}) with the registry's defaults."
    return run


def _fill_table() -> None:
    """The registry's methods, then the peers."""
    for m in REGISTRY.values():
        METHODS[m.name] = BenchMethod(m.name, _registry_runner(m), m.summary, volume=m.volume,
                                      pair=(m.representation, m.inference))
    for p in PEERS.values():
        METHODS[p.name] = BenchMethod(p.name, p.run, p.summary, p.available, p.volume)


_fill_table()


def grid_methods() -> tuple[list[str], list[SkippedPair]]:
    """The methods of every runnable pair of :func:`pair_grid`, and the pairs that cannot run with their reason."""
    names: list[str] = []
    skipped: list[SkippedPair] = []
    for representation, inference, name in pair_grid():
        try:
            names.append(name or method_for_pair(representation, inference).name)
        except InputError as exc:
            skipped.append(SkippedPair(representation, inference, str(exc)))
    return names, skipped


def _choices() -> str:
    return f"{', '.join(METHODS)}, or {GRID} (every runnable representation x inference pair)"


def check_methods(names: Sequence[str]) -> list[str]:
    """The requested method names (``grid`` expanded), validated; one-line :class:`InputError` otherwise."""
    if not names:
        raise InputError(f"no method given; choose from: {_choices()}")
    expanded = [m for n in names for m in (grid_methods()[0] if n == GRID else [n])]
    unknown = [n for n in expanded if n not in METHODS]
    if unknown:
        raise InputError(f"unknown method {unknown[0]!r}; available: {_choices()}")
    for n in expanded:
        reason = METHODS[n].unavailable_reason()
        if reason:
            raise InputError(f"method {n!r} cannot run here: {reason}")
    return list(dict.fromkeys(expanded))


def method_volume_function(name: str, run_method: str) -> VolumeFn:
    """The volume function of a run of benchmark method ``name`` whose ``config.yaml`` says ``run_method``.

    The registry's (:func:`cryoscape.methods.registry.volume_function`) for a
    cryoscape method, the peer table's for a peer run, else the table entry's;
    a one-line :class:`InputError` when there is none.
    """
    fn = volume_function(run_method) or peer_volume_function(run_method)
    if fn is None and name in METHODS:
        fn = METHODS[name].volume
    if fn is None:
        raise InputError(f"{run_method!r} runs have no model to generate volumes from; "
                         f"the benchmark cannot score {name!r}")
    return fn


def iteration_options(name: str, iterations: int) -> dict[str, int]:
    """``iterations`` as an option of method ``name``: ``epochs`` for a registry runner counting epochs."""
    m = REGISTRY.get(name)
    if m is None:
        return {"iterations": iterations}
    module, function = m.runner.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), function)).parameters
    key = "epochs" if "iterations" not in params and "epochs" in params else "iterations"
    return {key: iterations}

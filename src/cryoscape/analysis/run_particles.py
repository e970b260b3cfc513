"""The particle set a run was fitted on, opened from the file its config records.

This sits above both :mod:`cryoscape.io` (which knows where a run's particle
file and datadir are) and :mod:`cryoscape.particles` (which reads particle
files), so neither of those imports the other for it.
"""

from __future__ import annotations

import os

from cryoscape.errors import InputError
from cryoscape.io.run_dir import RunDirectory
from cryoscape.particles import ParticleSet

__all__ = ["run_particles"]


def run_particles(
    run: RunDirectory, datadir: str | os.PathLike | None = None, particles: str | os.PathLike | None = None
) -> ParticleSet:
    """The run's :class:`~cryoscape.particles.ParticleSet`, checked against N.

    ``particles`` overrides the recorded file (``--particles``); ``datadir``
    defaults to the recorded one where it still exists.
    """
    path = run.particle_file(particles)
    ps = ParticleSet.from_file(path, datadir=datadir if datadir is not None else run.recorded_datadir())
    if run.n_particles is not None and len(ps) != run.n_particles:
        raise InputError(
            f"{path} has {len(ps)} particles but the run {run.path} was fitted on {run.n_particles}; "
            "pass the particle file the run was fitted on"
        )
    return ps

"""User-facing errors.

Every error a user can cause (a missing file, a malformed STAR, an output that
already exists) is raised as a :class:`CryoscapeError` whose message is one
line naming the file and the fix. The command line prints it as
``cryoscape: error: <message>`` and exits with status 2, without a traceback.
"""

from __future__ import annotations


class CryoscapeError(Exception):
    """An error caused by the input or the invocation, with a one-line fix."""


class InputError(CryoscapeError):
    """Bad or inconsistent input data (files, columns, values)."""


class OutputExistsError(CryoscapeError):
    """An output path exists and ``--force`` was not given."""

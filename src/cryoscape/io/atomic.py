"""Atomic file output and the no-overwrite rule.

Outputs are written to a temporary file in the destination folder and moved
into place with :func:`os.replace`, so a crash never leaves a half-written
file and an existing file is never damaged. An existing output is refused
unless ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cryoscape.errors import OutputExistsError


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output unless ``force``; create the parent folder."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p} already exists; pass --force to overwrite it or choose another output path")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary file keeps the destination's suffix so libraries that look
    at file extensions (mrcfile, starfile) behave as for the final name.
    """
    final = check_output_path(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix + ".part" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), force)

"""Atomic outputs: no overwrite without force, ordinary permissions, no debris."""

from __future__ import annotations

import os
import stat

import pytest

from cryoscape.errors import OutputExistsError
from cryoscape.io.atomic import atomic_path, write_text_atomic


def test_refuses_existing_without_force(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(OutputExistsError, match="--force"):
        write_text_atomic(target, "new")
    assert target.read_text() == "original"
    write_text_atomic(target, "new", force=True)
    assert target.read_text() == "new"


def test_failure_leaves_existing_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError):
        with atomic_path(target, force=True) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

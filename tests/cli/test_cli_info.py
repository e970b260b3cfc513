"""``cryoscape info``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cryoscape.cli import info
from cryoscape.errors import InputError

from _particle_data import make_dataset


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    info.add_parser(parser.add_subparsers())
    assert info.run(parser.parse_args(["info", *argv])) == 0
    return capsys.readouterr().out


def test_info_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    star, _, _ = make_dataset(tmp_path)
    out = _run([str(star)], capsys)
    assert "particles       10" in out
    assert "box             16 px" in out
    assert "pixel size      2.0000 Å/px" in out
    assert "optics groups   1" in out
    assert "poses           yes" in out and "CTF             yes" in out
    assert "half-sets       yes (5 / 5)" in out
    assert "defocus" in out and "µm" in out
    assert "2 file(s), 2 found" in out


def test_info_cs_with_missing_stacks(fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run([str(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")], capsys)
    assert "particles       2019" in out and "box             180 px" in out and "(missing)" in out


def test_info_datadir(tmp_path: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run([str(fixtures_dir / "empiar_10076_7.star"), "--datadir", str(fixtures_dir)], capsys)
    assert "box             320 px" in out and "poses           no" in out and "1 file(s), 1 found" in out


def test_info_missing_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    info.add_parser(parser.add_subparsers())
    with pytest.raises(InputError, match="not found"):
        info.run(parser.parse_args(["info", str(tmp_path / "x.star")]))


def test_info_help_text() -> None:
    parser = argparse.ArgumentParser()
    p = info.add_parser(parser.add_subparsers())
    assert "--datadir" in p.format_help() and "Examples" in p.format_help()

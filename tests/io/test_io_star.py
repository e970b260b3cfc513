"""RELION STAR reading and writing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.star import read_star, split_image_names, write_star

STARS = [
    ("FinalRefinement-OriginalParticles-PfCRT.star", "3.0", 5),
    ("relion31.star", "3.1+", 5),
    ("relion31.v2.star", "3.1+", 5),
    ("relion31.6opticsgroups.star", "3.1+", 139),
    ("relion5.star", "3.1+", 17),
    ("toy_projections.star", "3.0", 1000),
    ("empiar_10076_7.star", "3.0", 7),
]


@pytest.mark.parametrize("name,version,n", STARS)
def test_fixture_star_reads(fixtures_dir: Path, name: str, version: str, n: int) -> None:
    s = read_star(fixtures_dir / name)
    assert s.version == version and len(s.particles) == n
    assert "rlnImageName" in s.particles.columns
    assert s.particles["rlnImageName"].map(type).eq(str).all()
    if version == "3.1+":
        assert s.optics is not None and "rlnImagePixelSize" in s.optics.columns


def test_write_read_keeps_every_column(tmp_path: Path, fixtures_dir: Path) -> None:
    s = read_star(fixtures_dir / "relion5.star")
    out = write_star(tmp_path / "o.star", s.optics, s.particles)
    t = read_star(out)
    assert list(t.particles.columns) == list(s.particles.columns)
    assert list(t.optics.columns) == list(s.optics.columns)
    pd.testing.assert_frame_equal(t.particles, s.particles, check_dtype=False)
    assert t.optics["rlnOddZernike"].iloc[0] == s.optics["rlnOddZernike"].iloc[0]
    with pytest.raises(OutputExistsError):
        write_star(out, s.optics, s.particles)


def test_split_image_names() -> None:
    idx, stack = split_image_names(pd.Series(["000003@a/b.mrcs", "12@c.mrcs", "single.mrc"]), Path("x.star"))
    assert idx.tolist() == [3, 12, 1]
    assert stack.tolist() == ["a/b.mrcs", "c.mrcs", "single.mrc"]
    with pytest.raises(InputError, match="index@stack"):
        split_image_names(pd.Series(["x@a.mrcs"]), Path("x.star"))


def test_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_star(tmp_path / "none.star")
    bad = tmp_path / "bad.star"
    bad.write_text("data_optics\n\nloop_\n_rlnOpticsGroup #1\n1\n")
    with pytest.raises(InputError, match="no particle table"):
        read_star(bad)

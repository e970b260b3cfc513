"""Bad input at the command line: one line on stderr, exit status 2, nothing overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from cryoscape.cli.main import main
from _helpers import one_line_error as _one_line_error


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "sim"
    rc = main(["simulate", "--structure", "adk", "--n-particles", "40", "--box", "32", "--apix", "3.0",
               "--snr", "0.1", "--conformations", "0", "-o", str(out), "--no-progress"])
    assert rc == 0
    return out


def _copy(sim_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(sim_dir, dst)
    return dst


def test_missing_file(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.star")]) == 2
    _one_line_error(capsys, "nope.star")


def test_star_rows_past_end_of_stack(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    star = starfile.read(d / "particles.star", always_dict=True)
    star["particles"].loc[0, "rlnImageName"] = "000999@particles.mrcs"
    starfile.write(star, d / "particles.star", overwrite=True)
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "particles.mrcs")
    assert not (d / "map.mrc").exists()


def test_stack_and_star_counts_disagree(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    with mrcfile.open(d / "particles.mrcs") as m:
        data = m.data[:10].copy()
    (d / "particles.mrcs").unlink()
    with mrcfile.new(d / "particles.mrcs") as m:
        m.set_data(data)
        m.voxel_size = 3.0
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "particles.mrcs")


def test_non_square_images(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    (d / "particles.mrcs").unlink()
    with mrcfile.new(d / "particles.mrcs") as m:
        m.set_data(np.zeros((40, 32, 30), np.float32))
        m.voxel_size = 3.0
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "square")


def test_missing_pose_columns(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    star = starfile.read(d / "particles.star", always_dict=True)
    star["particles"] = star["particles"].drop(columns=["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"])
    starfile.write(star, d / "particles.star", overwrite=True)
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "refinement")


def test_missing_ctf_columns(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    star = starfile.read(d / "particles.star", always_dict=True)
    star["particles"] = star["particles"].drop(columns=["rlnDefocusU", "rlnDefocusV"])
    starfile.write(star, d / "particles.star", overwrite=True)
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "CTF")


def test_nan_pixels_refused_unless_skip_bad(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    with mrcfile.open(d / "particles.mrcs", mode="r+") as m:
        m.data[3, 5, 5] = np.nan
        m.data[7, 0, 0] = np.inf
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    line = _one_line_error(capsys, "--skip-bad")
    assert "2" in line  # the count of bad images
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress", "--skip-bad"]) == 0
    with mrcfile.open(d / "map.mrc") as m:
        assert np.isfinite(m.data).all()


def test_zero_pixel_size(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    star = starfile.read(d / "particles.star", always_dict=True)
    star["optics"]["rlnImagePixelSize"] = 0.0
    starfile.write(star, d / "particles.star", overwrite=True)
    with mrcfile.open(d / "particles.mrcs", mode="r+") as m:
        m.voxel_size = 0.0
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "pixel size")


def test_existing_output_needs_force(sim_dir, tmp_path, capsys):
    d = _copy(sim_dir, tmp_path)
    (d / "map.mrc").write_text("keep")
    assert main(["reconstruct", str(d / "particles.star"), "-o", str(d / "map.mrc"), "--no-progress"]) == 2
    _one_line_error(capsys, "--force")
    assert (d / "map.mrc").read_text() == "keep"
    assert main(["simulate", "--structure", "adk", "--n-particles", "5", "--box", "32", "-o", str(d), "--no-progress"]) == 2
    _one_line_error(capsys, "--force")

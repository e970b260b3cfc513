"""Inputs are checked before any work (no progress bar before an error); warnings reach the user as one note line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoscape.cli.main import main
from cryoscape.io.mrc import write_mrc
from cryoscape.io.star import write_star

D = 16


def _mrc(path: Path, data: np.ndarray, apix: float) -> Path:
    """An MRC file; ``apix`` 0 leaves the header's voxel size at 0 (none recorded)."""
    if apix > 0:
        return write_mrc(path, data, apix)
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        if path.suffix == ".mrcs":
            mrc.set_image_stack()
    return path


def _stack(path: Path, n: int, apix: float) -> Path:
    rng = np.random.default_rng(0)
    return _mrc(path, rng.normal(size=(n, D, D)).astype(np.float32), apix)


def _star(folder: Path, *, poses: bool = True, optics: bool = True, apix: float | None = 2.0,
          stack: str = "stack.mrcs", n: int = 8) -> Path:
    """A STAR of ``n`` particles in ``folder/stack``: RELION 3.1 (``optics``) or 3.0 (no optics table)."""
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{stack}" for i in range(n)],
        "rlnDefocusU": rng.uniform(1e4, 2e4, n),
        "rlnDefocusV": rng.uniform(1e4, 2e4, n),
        "rlnDefocusAngle": np.zeros(n),
        "rlnRandomSubset": [1, 2] * (n // 2),
    })
    if poses:
        for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"):
            rows[c] = rng.uniform(0, 180, n)
        rows["rlnOriginXAngst"] = rows["rlnOriginYAngst"] = 0.0
    consts = {"rlnVoltage": 300.0, "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1}
    if apix is not None:
        consts["rlnImagePixelSize"] = apix
    if not optics:
        for k, v in consts.items():
            rows[k] = v
        return write_star(folder / "particles.star", None, rows)
    rows["rlnOpticsGroup"] = 1
    table = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                          **{k: [v] for k, v in consts.items()}, "rlnImageSize": [D], "rlnImageDimensionality": [2]})
    return write_star(folder / "particles.star", table, rows)


def _error_before_work(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "backprojecting" not in err and "downsampling" not in err and "%|" not in err, err
    assert err.startswith("cryoscape: error:"), err
    for w in words:
        assert w in err, err
    return err


# --------------------------------------------------------------- reconstruct
def test_reconstruct_without_poses_fails_before_the_progress_bar(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 2.0)
    star = _star(tmp_path, poses=False)
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc")]) == 2
    _error_before_work(capsys, "orientations")


def test_reconstruct_bad_mask_box_fails_before_the_progress_bar(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 2.0)
    star = _star(tmp_path)
    write_mrc(tmp_path / "mask.mrc", np.ones((D + 2,) * 3, np.float32), 2.0)
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc"), "--mask", str(tmp_path / "mask.mrc")]) == 2
    _error_before_work(capsys, "mask.mrc")


def test_reconstruct_missing_mask_and_taken_output(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 2.0)
    star = _star(tmp_path)
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc"), "--mask", str(tmp_path / "no.mrc")]) == 2
    _error_before_work(capsys, "no.mrc")
    (tmp_path / "map_half1.mrc").write_bytes(b"")
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc")]) == 2
    _error_before_work(capsys, "map_half1.mrc", "--force")


def test_reconstruct_missing_stack_fails_before_the_progress_bar(tmp_path, capsys):
    star = _star(tmp_path, stack="gone.mrcs")
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc")]) == 2
    _error_before_work(capsys, "gone.mrcs")
    assert not (tmp_path / "map.mrc").exists()


def test_reconstruct_one_empty_half_fails_before_the_progress_bar(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 2.0)
    star = _star(tmp_path)
    from cryoscape.io.star import read_star

    s = read_star(star)
    s.particles["rlnRandomSubset"] = 1
    write_star(star, s.optics, s.particles, force=True)
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc")]) == 2
    _error_before_work(capsys, "half set is empty")


# ---------------------------------------------------------------- pixel size
def test_no_pixel_size_anywhere_asks_for_apix(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 0.0)
    star = _star(tmp_path, apix=None)
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "map.mrc")]) == 2
    err = _error_before_work(capsys, "no pixel size", "--apix", "stack headers record none")
    assert len(err.strip().splitlines()) == 1


def test_zero_pixel_size_note_names_the_value_and_the_header(tmp_path):
    from cryoscape.particles import ParticleSet

    _stack(tmp_path / "stack.mrcs", 8, 1.25)
    star = _star(tmp_path, apix=0.0)
    with pytest.warns(UserWarning, match=r"records pixel size 0 \(rlnImagePixelSize\); using 1.25 Å/px from the MRC header of .*stack.mrcs"):
        ps = ParticleSet.from_file(star)
    assert ps.apix == pytest.approx(1.25)


def test_apix_option_stands_in_for_a_missing_pixel_size(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 0.0)
    star = _star(tmp_path, apix=None)
    assert main(["info", str(star), "--apix", "1.5"]) == 0
    assert "pixel size      1.5000 Å/px" in capsys.readouterr().out


# --------------------------------------------------------------- downsample
def test_downsample_missing_stack_fails_before_the_progress_bar(tmp_path, capsys):
    star = _star(tmp_path, stack="gone.mrcs")
    assert main(["downsample", str(star), "--box", "8", "-o", str(tmp_path / "small")]) == 2
    _error_before_work(capsys, "gone.mrcs")
    assert not (tmp_path / "small").exists()


def test_downsample_odd_box_and_taken_output(tmp_path, capsys):
    _stack(tmp_path / "stack.mrcs", 8, 2.0)
    star = _star(tmp_path)
    assert main(["downsample", str(star), "--box", "7", "-o", str(tmp_path / "small")]) == 2
    _error_before_work(capsys, "--box 7")
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "particles.star").write_text("")
    assert main(["downsample", str(star), "--box", "8", "-o", str(tmp_path / "small")]) == 2
    _error_before_work(capsys, "particles.star", "--force")


def test_downsample_volume_without_voxel_size_asks_for_apix(tmp_path, capsys):
    _mrc(tmp_path / "map.mrc", np.ones((D, D, D), np.float32), 0.0)
    assert main(["downsample", str(tmp_path / "map.mrc"), "--box", "8", "-o", str(tmp_path / "small.mrc")]) == 2
    _error_before_work(capsys, "--apix")
    assert main(["downsample", str(tmp_path / "map.mrc"), "--box", "8", "-o", str(tmp_path / "small.mrc"),
                 "--apix", "1.0"]) == 0
    assert "2.0000 Å/voxel" in capsys.readouterr().out


# ---------------------------------------------------------------- fsc, simulate
def test_fsc_missing_mask_is_checked_first(tmp_path, capsys):
    for name in ("a.mrc", "b.mrc"):
        write_mrc(tmp_path / name, np.random.default_rng(0).normal(size=(D, D, D)).astype(np.float32), 2.0)
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "--mask", str(tmp_path / "m.mrc")]) == 2
    _error_before_work(capsys, "m.mrc")


def test_simulate_into_a_file_is_refused_before_rendering(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["simulate", "--structure", "adk", "-n", "4", "--box", "16", "--apix", "6", "-o",
                 str(tmp_path / "taken")]) == 2
    err = _error_before_work(capsys, "is a file")
    assert "simulate" not in err.split("error:")[0]


# ------------------------------------------------------------- warnings as notes
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "cryoscape.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


_PY_WARNING = re.compile(r"\w*Warning:|\.py:\d+")


def test_star_without_optics_table_gives_notes_not_python_warnings(tmp_path):
    _stack(tmp_path / "stack.mrcs", 8, 1.25)
    star = _star(tmp_path, optics=False, apix=None)
    res = _cli("info", str(star))
    assert res.returncode == 0, res.stderr
    assert not _PY_WARNING.search(res.stderr), res.stderr
    notes = [line for line in res.stderr.splitlines() if line]
    assert any("records no pixel size; using 1.25 Å/px from the MRC header of" in line for line in notes), res.stderr
    assert all(line.startswith("cryoscape: note:") for line in notes), res.stderr
    assert "1.2500 Å/px" in res.stdout


def test_fsc_map_without_voxel_size_gives_a_note(tmp_path):
    rng = np.random.default_rng(0)
    write_mrc(tmp_path / "a.mrc", rng.normal(size=(D, D, D)).astype(np.float32), 2.0)
    _mrc(tmp_path / "b.mrc", rng.normal(size=(D, D, D)).astype(np.float32), 0.0)
    res = _cli("fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"))
    assert res.returncode == 0, res.stderr
    assert not _PY_WARNING.search(res.stderr), res.stderr
    assert "b.mrc records no voxel size; using 2 Å from the header of" in res.stderr

"""Bad particle input: each case gives one-line InputError naming the file and the fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.mrc import write_mrc
from cryoscape.io.star import write_star
from cryoscape.particles import ParticleSet

from _particle_data import make_dataset


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _star30(tmp_path: Path, names: list[str], name: str = "p.star", **cols: object) -> Path:
    df = pd.DataFrame({"rlnImageName": names, **cols})
    return write_star(tmp_path / name, None, df)


def test_missing_particle_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        ParticleSet.from_file(tmp_path / "nope.star")
    assert "nope.star" in _one_line(e)


def test_unknown_suffix(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("hi")
    with pytest.raises(InputError, match="RELION .star or cryoSPARC .cs"):
        ParticleSet.from_file(p)


def test_missing_stack_names_datadir(tmp_path: Path) -> None:
    star = _star30(tmp_path, ["1@gone.mrcs"], rlnImagePixelSize=[1.0])
    ps = ParticleSet.from_file(star)  # metadata reads without the stacks
    with pytest.raises(InputError) as e:
        ps.read_images()
    msg = _one_line(e)
    assert "gone.mrcs" in msg and "--datadir" in msg and "p.star" in msg


def test_rows_past_end_of_stack(tmp_path: Path) -> None:
    write_mrc(tmp_path / "s.mrcs", np.zeros((3, 8, 8)), 1.0)
    star = _star30(tmp_path, ["1@s.mrcs", "4@s.mrcs"], rlnImagePixelSize=[1.0, 1.0])
    ps = ParticleSet.from_file(star)
    with pytest.raises(InputError) as e:
        ps.read_images()
    msg = _one_line(e)
    assert "image 4 of" in msg and "holds only 3" in msg
    with pytest.raises(InputError, match="holds only 3"):
        ps[[1]].read_images()
    np.testing.assert_array_equal(ps[[0]].read_images(), np.zeros((1, 8, 8)))


def test_fewer_rows_than_frames_warns(tmp_path: Path) -> None:
    write_mrc(tmp_path / "s.mrcs", np.zeros((5, 8, 8)), 1.0)
    star = _star30(tmp_path, ["1@s.mrcs", "2@s.mrcs"], rlnImagePixelSize=[1.0, 1.0])
    ps = ParticleSet.from_file(star)
    with pytest.warns(UserWarning, match="lists 2 particles but .* holds 5 images"):
        imgs = ps.read_images()
    assert imgs.shape == (2, 8, 8)


def test_non_square_images(tmp_path: Path) -> None:
    write_mrc(tmp_path / "s.mrcs", np.zeros((2, 8, 10)), 1.0)
    star = _star30(tmp_path, ["1@s.mrcs", "2@s.mrcs"], rlnImagePixelSize=[1.0, 1.0])
    with pytest.raises(InputError, match="non-square") as e:
        ParticleSet.from_file(star).read_images()
    assert "s.mrcs" in _one_line(e)


def test_mixed_size_stacks(tmp_path: Path) -> None:
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 8, 8)), 1.0)
    write_mrc(tmp_path / "b.mrcs", np.zeros((2, 10, 10)), 1.0)
    star = _star30(tmp_path, ["1@a.mrcs", "1@b.mrcs"], rlnImagePixelSize=[1.0, 1.0])
    with pytest.raises(InputError, match="different sizes") as e:
        ParticleSet.from_file(star).read_images()
    _one_line(e)


def test_box_in_star_disagrees_with_stack(tmp_path: Path) -> None:
    star, _, _ = make_dataset(tmp_path)
    text = star.read_text().replace("\t16\t", "\t32\t").replace(" 16 ", " 32 ")
    star.write_text(text)
    ps = ParticleSet.from_file(star)
    assert ps.box_per_particle[0] == 32
    with pytest.raises(InputError, match="box is 32 px but its stacks hold 16"):
        ps.read_images([0])


def test_missing_poses_and_ctf(tmp_path: Path) -> None:
    write_mrc(tmp_path / "s.mrcs", np.zeros((1, 8, 8)), 1.0)
    star = _star30(tmp_path, ["1@s.mrcs"], rlnImagePixelSize=[1.0])
    ps = ParticleSet.from_file(star)
    assert not ps.has_poses and not ps.has_ctf
    with pytest.raises(InputError) as e:
        ps.require_poses("cryoscape reconstruct")
    msg = _one_line(e)
    assert "p.star has no particle orientations (_rlnAngleRot/Tilt/Psi)" in msg
    assert "run a consensus refinement first" in msg and "cryoscape reconstruct" in msg
    with pytest.raises(InputError, match=r"no CTF parameters \(_rlnDefocusU.*run CTF estimation first"):
        ps.require_ctf("cryoscape reconstruct")


def test_defocus_without_voltage_is_not_ctf(tmp_path: Path) -> None:
    star = _star30(tmp_path, ["1@s.mrcs"], rlnDefocusU=[1e4], rlnSphericalAberration=[2.7], rlnImagePixelSize=[1.0])
    with pytest.warns(UserWarning, match="no _rlnVoltage"):
        ps = ParticleSet.from_file(star)
    with pytest.raises(InputError, match="_rlnVoltage is missing"):
        ps.require_ctf("x")


@pytest.mark.filterwarnings("ignore:Data array contains NaN values")  # the test writes the NaN stack itself
def test_nan_and_inf_pixels(tmp_path: Path) -> None:
    imgs = np.zeros((4, 8, 8), np.float32)
    imgs[1, 2, 3] = np.nan
    imgs[3, 0, 0] = np.inf
    write_mrc(tmp_path / "s.mrcs", imgs, 1.0)
    star = _star30(tmp_path, [f"{i}@s.mrcs" for i in range(1, 5)], rlnImagePixelSize=[1.0] * 4)
    ps = ParticleSet.from_file(star)
    with pytest.raises(InputError) as e:
        ps.validate_images(batch_size=3)
    msg = _one_line(e)
    assert "2 of 4 particles have NaN or Inf" in msg and "--skip-bad" in msg and "2@" in msg
    with pytest.warns(UserWarning, match="leaving them out"):
        good = ps.validate_images(skip_bad=True)
    assert good.tolist() == [True, False, True, False]
    assert ps[good].validate_images().all()


def test_pixel_size_missing_or_zero(tmp_path: Path) -> None:
    with mrcfile.new(tmp_path / "s.mrcs") as m:
        m.set_data(np.zeros((2, 8, 8), np.float32))
        m.voxel_size = 0.0
    star = _star30(tmp_path, ["1@s.mrcs", "2@s.mrcs"])
    ps = ParticleSet.from_file(star)
    with pytest.raises(InputError) as e:
        ps.apix
    assert "no pixel size" in _one_line(e) and "--apix" in str(e.value)
    assert ParticleSet.from_file(star, apix=1.3).apix == pytest.approx(1.3)
    with pytest.raises(InputError, match="not positive"):
        ParticleSet.from_file(star, apix=0.0)
    zero = _star30(tmp_path, ["1@s.mrcs"], name="zero.star", rlnImagePixelSize=[0.0])
    with pytest.raises(InputError, match="no pixel size"):
        ParticleSet.from_file(zero).apix


def test_mixed_pixel_sizes(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "relion31.6opticsgroups.star")
    with pytest.raises(InputError, match="mixes pixel sizes from 1.24 to 1.25"):
        ps.apix


def test_existing_outputs_need_force(tmp_path: Path, fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")[:5]
    for write, name in ((ps.write_star, "a.star"), (ps.write_cs, "a.cs")):
        out = write(tmp_path / name)
        with pytest.raises(OutputExistsError, match="--force"):
            write(out)
        write(out, force=True)
    ps.write_cryodrgn(tmp_path / "pose.pkl", tmp_path / "ctf.pkl")
    with pytest.raises(OutputExistsError):
        ps.write_cryodrgn(tmp_path / "pose.pkl")


def test_write_cs_needs_cs_source(tmp_path: Path) -> None:
    star, _, _ = make_dataset(tmp_path)
    with pytest.raises(InputError, match="write_star"):
        ParticleSet.from_file(star).write_cs(tmp_path / "x.cs")


def test_undefined_optics_group(tmp_path: Path) -> None:
    star, _, _ = make_dataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cryoscape.io.star import read_star

        s = read_star(star)
    s.particles["rlnOpticsGroup"] = 7
    bad = write_star(tmp_path / "bad.star", s.optics, s.particles)
    with pytest.raises(InputError, match="optics group 7"):
        ParticleSet.from_file(bad)

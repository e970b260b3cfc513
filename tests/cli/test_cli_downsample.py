"""``cryoscape downsample`` on a volume and on a RELION 3.1 particle stack."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoscape.cli import main as cli_main
from cryoscape.io.mrc import read_mrc, write_mrc
from cryoscape.io.star import read_star
from cryoscape.particles.preprocess import fourier_crop_images, fourier_crop_volume


@pytest.fixture(autouse=True)
def _only_this_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register only ``downsample`` so the test does not depend on the other commands."""
    monkeypatch.setattr(cli_main, "COMMANDS", ("downsample",))


def main(argv: list[str]) -> int:
    return cli_main.main(argv)


def _blob(D: int) -> np.ndarray:
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.exp(-(x**2 + (y - 2) ** 2 + z**2) / (2 * 3.0**2)).astype(np.float32)


def test_downsample_volume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "vol.mrc", tmp_path / "vol_small.mrc"
    vol = _blob(32)
    write_mrc(src, vol, 1.25)
    assert main(["downsample", str(src), "--box", "16", "-o", str(out)]) == 0
    small, apix = read_mrc(out)
    assert small.shape == (16, 16, 16) and apix == pytest.approx(2.5)
    np.testing.assert_allclose(small, fourier_crop_volume(vol, 16), atol=1e-6)
    assert "vol_small.mrc" in capsys.readouterr().out
    # Existing output without --force: a one-line error, exit status 2.
    assert main(["downsample", str(src), "--box", "16", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["downsample", str(src), "--box", "16", "-o", str(out), "--force"]) == 0


@pytest.mark.parametrize("box", [17, 32, 64])
def test_downsample_volume_bad_box(tmp_path: Path, box: int, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "vol.mrc"
    write_mrc(src, _blob(32), 1.0)
    assert main(["downsample", str(src), "--box", str(box), "-o", str(tmp_path / "o.mrc")]) == 2
    assert "--box" in capsys.readouterr().err


def test_downsample_particles_relion31(tmp_path: Path, fixtures_dir: Path) -> None:
    pytest.importorskip("cryoscape.particles.particle_set")
    from cryoscape.particles.particle_set import ParticleSet

    star = fixtures_dir / "relion31.star"
    out = tmp_path / "small"
    rc = main(["downsample", str(star), "--box", "64", "-o", str(out), "--batch-size", "2", "--no-progress"])
    assert rc == 0

    with mrcfile.open(out / "particles.mrcs") as mrc:
        assert mrc.data.shape == (5, 64, 64) and mrc.data.dtype == np.float32
        assert float(mrc.voxel_size.x) == pytest.approx(2.806 * 4, rel=1e-5)
        assert mrc.header.ispg == 0  # image stack

    orig = ParticleSet.from_file(star)
    small = ParticleSet.from_file(out / "particles.star")
    assert len(small) == 5 and small.box == 64
    assert small.apix == pytest.approx(orig.apix * 4)
    expected = fourier_crop_images(orig.read_images(np.arange(5)), 64)
    np.testing.assert_allclose(small.read_images(np.arange(5)), expected, atol=1e-5)
    np.testing.assert_allclose(small.rotations, orig.rotations, atol=1e-6)
    np.testing.assert_allclose(small.shifts_A, orig.shifts_A, atol=1e-6)
    np.testing.assert_allclose(small.defocus_u_A, orig.defocus_u_A)

    src_star, new_star = read_star(star), read_star(out / "particles.star")
    assert new_star.optics is not None
    assert int(new_star.optics["rlnImageSize"].iloc[0]) == 64
    assert float(new_star.optics["rlnImagePixelSize"].iloc[0]) == pytest.approx(2.806 * 4)
    assert list(new_star.particles["rlnImageName"]) == [f"{i:06d}@particles.mrcs" for i in range(1, 6)]
    for col in src_star.particles.columns:
        assert col in new_star.particles.columns, col
    for col in ("rlnImageOriginalName", "rlnMicrographName", "rlnCoordinateX", "rlnCtfFigureOfMerit", "rlnRandomSubset"):
        assert list(new_star.particles[col]) == list(src_star.particles[col]), col

    # Refuses to overwrite; --force replaces.
    assert main(["downsample", str(star), "--box", "64", "-o", str(out), "--no-progress"]) == 2
    assert main(["downsample", str(star), "--box", "32", "-o", str(out), "--no-progress", "--force"]) == 0
    assert ParticleSet.from_file(out / "particles.star").box == 32


def test_normalise_and_invert_without_cropping(tmp_path):
    from cryoscape.particles import ParticleSet
    from cryoscape.particles.preprocess import downsample_particles

    rng = np.random.default_rng(0)
    imgs = (3.0 + 2.0 * rng.standard_normal((6, 32, 32))).astype(np.float32)
    ps = ParticleSet.from_arrays(imgs, apix=2.0)
    out = downsample_particles(ps, 32, tmp_path / "pre", normalise=True, invert=True, progress=False)
    got = out.read_images()
    assert got.shape == (6, 32, 32) and out.apix == pytest.approx(2.0)
    yy, xx = np.mgrid[:32, :32] - 16
    outside = np.hypot(yy, xx) > 16
    # normalised to mean 0 / std 1 outside the circle, then negated
    assert np.allclose(got[:, outside].mean(axis=1), 0.0, atol=1e-4)
    assert np.allclose(got[:, outside].std(axis=1, ddof=1), 1.0, atol=1e-3)
    expected = -(imgs - imgs[:, outside].mean(axis=1)[:, None, None]) / imgs[:, outside].std(axis=1, ddof=1)[:, None, None]
    assert np.allclose(got, expected, atol=1e-4)


def test_downsample_needs_something_to_do(tmp_path, capsys):
    assert main(["downsample", str(tmp_path / "x.star"), "-o", str(tmp_path / "o")]) == 2
    assert "nothing to do" in capsys.readouterr().err

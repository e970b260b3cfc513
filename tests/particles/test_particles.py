"""ParticleSet: golden parses against cryoDRGN, fixtures, lazy images, slicing, round trips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoscape.io.cryodrgn import read_ctf_pkl, read_pose_pkl
from cryoscape.io.mrc import write_mrc
from cryoscape.io.star import read_star
from cryoscape.particles import CTF_FIELDS, ParticleSet

from _particle_data import APIX, D, make_dataset  # noqa: F401  (re-exported for the other tests)


# ----------------------------------------------------------------- golden parses
def test_relion30_matches_cryodrgn(fixtures_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no _rlnAmplitudeContrast: RELION's default is used
        ps = ParticleSet.from_file(fixtures_dir / "FinalRefinement-OriginalParticles-PfCRT.star")
    rot, trans = read_pose_pkl(fixtures_dir / "pose.star.pkl")
    box = 300  # the README's box (the stack is not shipped)
    assert ps.apix == pytest.approx(1.035)
    np.testing.assert_allclose(ps.rotations, rot, atol=1e-5)
    np.testing.assert_allclose(ps.shifts_A / ps.apix / box, trans, atol=1e-5)
    ps.box_per_particle[:] = box
    np.testing.assert_allclose(ps.cryodrgn_ctf(), read_ctf_pkl(fixtures_dir / "ctf1.pkl"), rtol=1e-5, atol=1e-5)
    assert ps.half_set.tolist() == [1, 0, 1, 1, 1]


def test_cryosparc_matches_cryodrgn(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")
    rot, trans = read_pose_pkl(fixtures_dir / "pose.cs.pkl")
    assert ps.box == 180 and ps.apix == pytest.approx(2.95)
    np.testing.assert_allclose(ps.rotations, rot, atol=1e-5)
    np.testing.assert_allclose(ps.shifts_A / ps.apix / ps.box, trans, atol=1e-5)
    np.testing.assert_allclose(ps.cryodrgn_ctf(), read_ctf_pkl(fixtures_dir / "ctf2.pkl"), rtol=1e-5, atol=1e-5)
    arr = ps.source_table
    np.testing.assert_array_equal(ps.half_set, arr["alignments3D/split"])


def test_relion31_angle_and_origin_convention(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "relion31.star")
    df = read_star(fixtures_dir / "relion31.star").particles
    ang = df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    np.testing.assert_allclose(ps.rotations, Rotation.from_euler("ZYZ", ang, degrees=True).as_matrix().transpose(0, 2, 1))
    np.testing.assert_allclose(ps.shifts_A, df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy())
    assert ps.box == 256 and ps.apix == pytest.approx(2.806)
    assert ps.voltage_kV[0] == 300 and ps.cs_mm[0] == pytest.approx(0.01) and ps.amplitude_contrast[0] == pytest.approx(0.1)


FILES = [
    "FinalRefinement-OriginalParticles-PfCRT.star",
    "relion31.star",
    "relion31.v2.star",
    "relion31.6opticsgroups.star",
    "relion5.star",
    "toy_projections.star",
    "empiar_10076_7.star",
    "cryosparc_P12_J24_001_particles.cs",
    "cryosparc_J2_particles_exported.cs",
    "empiar_10076_7.cs",
]


@pytest.mark.parametrize("name", FILES)
def test_every_fixture_reads(fixtures_dir: Path, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = ParticleSet.from_file(fixtures_dir / name)
    assert len(ps) > 0 and ps.has_ctf and ps.images is not None
    if ps.has_poses:
        np.testing.assert_allclose(np.linalg.det(ps.rotations), 1.0, atol=1e-6)


def test_two_d_only_cs_has_no_poses(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_J2_particles_exported.cs")
    assert not ps.has_poses and ps.rotations is None and len(ps) == 22


def test_relion5_and_optics_groups(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "relion5.star")
    assert ps.box == 448 and ps.apix == pytest.approx(0.89) and ps.voltage_kV[0] == 100
    assert set(ps.half_set.tolist()) == {0, 1}
    ps6 = ParticleSet.from_file(fixtures_dir / "relion31.6opticsgroups.star")
    assert len(np.unique(ps6.optics_group)) == 6
    sel = ps6.optics_group == 2
    np.testing.assert_allclose(ps6.apix_per_particle[sel], 1.24)
    np.testing.assert_allclose(ps6.cs_mm[ps6.optics_group == 4], 2.6)
    assert ps6[sel].apix == pytest.approx(1.24)


def test_empiar_star_and_cs_agree(fixtures_dir: Path) -> None:
    a = ParticleSet.from_file(fixtures_dir / "empiar_10076_7.star")
    b = ParticleSet.from_file(fixtures_dir / "empiar_10076_7.cs")
    assert len(a) == len(b) == 7
    assert a.has_poses == b.has_poses
    assert a.apix == pytest.approx(b.apix, rel=1e-5) and a.box == b.box == 320
    for f in CTF_FIELDS:
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-5, err_msg=f)
    np.testing.assert_array_equal(a.read_images(), b.read_images())


def test_relion31_images_through_star(fixtures_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = ParticleSet.from_file(fixtures_dir / "relion31.star")
        imgs = ps.read_images()
    assert imgs.shape == (5, 256, 256) and imgs.dtype == np.float32 and np.isfinite(imgs).all()
    assert imgs.std() > 0


def test_toy_projections_take_pixel_size_from_header(fixtures_dir: Path) -> None:
    with pytest.warns(UserWarning, match="records no pixel size"):
        ps = ParticleSet.from_file(fixtures_dir / "toy_projections.star")
    assert ps.apix == pytest.approx(1.0) and ps.box == 30
    np.testing.assert_allclose(ps.cryodrgn_ctf(), read_ctf_pkl(fixtures_dir / "test_ctf.pkl"), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- lazy images
def test_images_from_several_stacks(tmp_path: Path) -> None:
    star, images, _ = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    assert len(ps.images.paths) == 2
    np.testing.assert_array_equal(ps.read_images(), images)
    np.testing.assert_array_equal(ps.read_images([7, 1, 1]), images[[7, 1, 1]])
    seen = []
    for idx, batch in ps.iter_batches(3):
        assert batch.shape[0] <= 3
        np.testing.assert_array_equal(batch, images[idx])
        seen.extend(idx.tolist())
    assert seen == list(range(10))
    assert ps.validate_images().all()


def test_fields_from_synthetic_star(tmp_path: Path) -> None:
    star, _, angles = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    assert ps.box == D and ps.apix == APIX and ps.has_half_sets
    assert ps.half_set.tolist() == [0, 1] * 5
    np.testing.assert_allclose(ps.amplitude_contrast, 0.07)
    np.testing.assert_allclose(ps.bfactor_A2, 5.0)
    np.testing.assert_allclose(ps.rotations, Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1), atol=1e-7)


def test_datadir_override(tmp_path: Path) -> None:
    star, images, _ = make_dataset(tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in (tmp_path / "Extract").iterdir():
        p.rename(moved / p.name)
    ps = ParticleSet.from_file(star, datadir=moved)  # found by basename
    np.testing.assert_array_equal(ps.read_images(), images)


def test_slicing_and_concat(tmp_path: Path) -> None:
    star, images, _ = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    sub = ps[2:5]
    assert len(sub) == 3
    np.testing.assert_array_equal(sub.read_images(), images[2:5])
    np.testing.assert_array_equal(sub.rotations, ps.rotations[2:5])
    mask = np.zeros(10, bool)
    mask[[0, 9]] = True
    m = ps[mask]
    assert len(m) == 2 and m.source_table["rlnCustomScore"].tolist() == [0.0, 4.5]
    fancy = ps[[9, 0]]
    np.testing.assert_array_equal(fancy.read_images(), images[[9, 0]])
    both = ParticleSet.concat([sub, fancy])
    assert len(both) == 5
    np.testing.assert_array_equal(both.read_images(), images[[2, 3, 4, 9, 0]])
    np.testing.assert_array_equal(both.defocus_u_A, ps.defocus_u_A[[2, 3, 4, 9, 0]])
    assert both.source_kind == "star" and len(both.source_table) == 5


# ---------------------------------------------------------------- round trips
def test_write_star_round_trip_keeps_unknown_columns(tmp_path: Path) -> None:
    star, images, _ = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    sub = ps[[1, 4, 6, 8]]
    out = sub.write_star(tmp_path / "out" / "subset.star")
    back = ParticleSet.from_file(out)
    _assert_same(sub, back)
    np.testing.assert_array_equal(back.read_images(), images[[1, 4, 6, 8]])
    table = read_star(out)
    assert table.particles["rlnCustomScore"].tolist() == [0.5, 2.0, 3.0, 4.0]
    assert table.particles["rlnMicrographName"].tolist() == sub.source_table["rlnMicrographName"].tolist()
    assert table.optics["rlnBeamTiltX"].iloc[0] == pytest.approx(0.1)


def test_write_star_from_relion30(tmp_path: Path, fixtures_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = ParticleSet.from_file(fixtures_dir / "FinalRefinement-OriginalParticles-PfCRT.star")
        ps.box_per_particle[:] = 300
        out = ps.write_star(tmp_path / "p31.star")
        back = ParticleSet.from_file(out)
    t = read_star(out)
    assert t.version == "3.1+" and "rlnOriginXAngst" in t.particles.columns and "rlnOriginX" not in t.particles.columns
    assert "rlnImageOriginalName" in t.particles.columns and "rlnVoltage" not in t.particles.columns
    _assert_same(ps, back)


def test_write_star_from_cs(tmp_path: Path, fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")[:50]
    back = ParticleSet.from_file(ps.write_star(tmp_path / "from_cs.star"))
    _assert_same(ps, back)


def test_write_star_edited_poses(tmp_path: Path) -> None:
    star, _, _ = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    ps.rotations = Rotation.random(10, random_state=3).as_matrix()
    ps.rotations[0] = np.eye(3)  # tilt 0: rot and psi are not separable
    ps.rotations[1] = np.diag([-1.0, 1.0, -1.0])  # tilt 180
    back = ParticleSet.from_file(ps.write_star(tmp_path / "edited.star"))
    np.testing.assert_allclose(back.rotations, ps.rotations, atol=1e-6)


def test_write_cs_subset(tmp_path: Path, fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")
    sel = np.array([10, 3, 500, 2018])
    out = ps[sel].write_cs(tmp_path / "sel.cs")
    back = ParticleSet.from_file(out)
    np.testing.assert_array_equal(back.source_table, ps.source_table[sel])
    _assert_same(ps[sel], back)


def test_write_cryodrgn_round_trip(tmp_path: Path, fixtures_dir: Path) -> None:
    ps = ParticleSet.from_file(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")
    ps.write_cryodrgn(tmp_path / "pose.pkl", tmp_path / "ctf.pkl")
    back = ParticleSet.from_cryodrgn(poses=tmp_path / "pose.pkl", ctf=tmp_path / "ctf.pkl")
    assert back.box == 180 and back.apix == pytest.approx(2.95)
    np.testing.assert_allclose(back.rotations, ps.rotations, atol=1e-6)
    np.testing.assert_allclose(back.shifts_A, ps.shifts_A, atol=1e-5)
    np.testing.assert_allclose(back.cryodrgn_ctf(), ps.cryodrgn_ctf(), rtol=1e-6)
    rot, trans = read_pose_pkl(tmp_path / "pose.pkl")
    gold_rot, gold_trans = read_pose_pkl(fixtures_dir / "pose.cs.pkl")
    np.testing.assert_allclose(rot, gold_rot, atol=1e-5)
    np.testing.assert_allclose(trans, gold_trans, atol=1e-5)


def test_from_cryodrgn_with_stack(fixtures_dir: Path) -> None:
    ps = ParticleSet.from_cryodrgn(fixtures_dir / "hand.mrcs", poses=fixtures_dir / "hand_rot_trans.pkl")
    assert len(ps) == 100 and ps.box == 64 and ps.has_poses and not ps.has_ctf
    assert ps.read_images([0]).shape == (1, 64, 64)


def test_from_arrays(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    rot = Rotation.random(4, random_state=0).as_matrix()
    ps = ParticleSet.from_arrays(imgs, rot, defocus_u_A=np.full(4, 1.5e4), apix=1.5, half_set=np.array([0, 1, 0, 1]))
    assert ps.box == 8 and ps.apix == 1.5 and ps.has_ctf and ps.has_poses
    np.testing.assert_allclose(ps.defocus_v_A, 1.5e4)
    np.testing.assert_array_equal(ps.shifts_A, 0)
    p = write_mrc(tmp_path / "s.mrcs", imgs, 1.5)
    ps2 = ParticleSet.from_arrays(p, rot, defocus_u_A=1.5e4)
    assert ps2.apix == pytest.approx(1.5)
    back = ParticleSet.from_file(ps2.write_star(tmp_path / "s.star"))
    np.testing.assert_array_equal(back.read_images(), imgs)
    _assert_same(ps2, back)


def _assert_same(a: ParticleSet, b: ParticleSet) -> None:
    assert len(a) == len(b)
    assert a.has_poses == b.has_poses and a.has_ctf == b.has_ctf
    if a.has_poses:
        np.testing.assert_allclose(b.rotations, a.rotations, atol=1e-6)
        np.testing.assert_allclose(b.shifts_A, a.shifts_A, atol=1e-5)
    if a.has_ctf:
        for f in CTF_FIELDS:
            np.testing.assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-6, atol=1e-5, err_msg=f)
    np.testing.assert_allclose(b.apix_per_particle, a.apix_per_particle, rtol=1e-6)
    np.testing.assert_array_equal(b.half_set, a.half_set)


def test_particle_set_pickles_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    star, images, _ = make_dataset(tmp_path)
    ps = ParticleSet.from_file(star)
    ps.read_images([0])  # opens memory maps, which must not travel
    clone = pickle.loads(pickle.dumps(ps))
    np.testing.assert_array_equal(clone.read_images([3, 4]), images[[3, 4]])

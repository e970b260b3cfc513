"""Simulated datasets: determinism, STAR/truth/image conventions, SNR, inputs, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.geometry.fourier import ifftn_c
from cryoscape.geometry.masks import circle_mask
from cryoscape.geometry.rotations import euler_relion_to_matrix
from cryoscape.io.mrc import read_mrc, write_mrc
from cryoscape.io.star import read_star
from cryoscape.simulate import ground_truth_volume, load_truth, simulate_dataset

BOX, APIX = 40, 2.5  # AdK reaches ~40 Å from the centre; the box half-width is 50 Å

TINY_PDB = """\
ATOM      1  N   GLY A   1      -3.000   0.000   0.000  1.00 20.00           N
ATOM      2  CA  GLY A   1      -1.500   1.000   0.000  1.00 20.00           C
ATOM      3  C   GLY A   1       0.000   0.000   1.000  1.00 20.00           C
ATOM      4  O   GLY A   1       1.000  -1.000   1.000  1.00 20.00           O
ATOM      5  SD  MET A   2       4.000   2.000  -2.000  1.00 20.00           S
END
"""


def _sim(tmp_path: Path, name: str, structure: str | None = "adk", **kw):
    args = dict(n_particles=200, box=BOX, apix=APIX, snr=0.1, seed=3, progress=False, batch_size=64)
    args.update(kw)
    return simulate_dataset(structure, out_dir=tmp_path / name, **args)


def _stack(path: Path) -> np.ndarray:
    return read_mrc(path)[0]


def _forward(vol: np.ndarray, apix: float, rot: np.ndarray, shifts_A: np.ndarray, ctf: dict) -> np.ndarray:
    """Independent assembly of the forward model: slice · shift(−origin) · CTF."""
    from cryoscape.imaging import FourierProjector, compute_ctf, phase_shift

    D = vol.shape[0]
    n = len(rot)
    proj = FourierProjector(torch.as_tensor(vol, dtype=torch.float32))
    sl = proj.slice(torch.as_tensor(rot, dtype=torch.float32))
    t = {k: torch.as_tensor(np.broadcast_to(v, (n,)).copy(), dtype=torch.float32) for k, v in ctf.items()}
    c = compute_ctf(D, apix, t["defocus_u_A"], t["defocus_v_A"], t["defocus_angle_deg"], t["voltage_kV"],
                    t["cs_mm"], t["amplitude_contrast"], t["phase_shift_deg"], t["bfactor_A2"])
    s = phase_shift(D, torch.as_tensor(-shifts_A, dtype=torch.float32), apix)
    return ifftn_c(sl * s * c, 2).real.numpy()


def _rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm((a - b).reshape(len(a), -1), axis=1) / np.linalg.norm(b.reshape(len(b), -1), axis=1)


def test_same_seed_gives_identical_stack(tmp_path) -> None:
    a = _sim(tmp_path, "a", n_particles=150, box=32, apix=3.0)
    b = _sim(tmp_path, "b", n_particles=150, box=32, apix=3.0)
    c = _sim(tmp_path, "c", n_particles=150, box=32, apix=3.0, seed=4)
    assert a.stack_path.read_bytes() == b.stack_path.read_bytes()
    assert a.stack_path.read_bytes() != c.stack_path.read_bytes()
    ta, tb = load_truth(a.truth_path), load_truth(b.truth_path)
    for k in ("rotations", "shifts_A", "defocus_u_A", "conformation", "half_set"):
        np.testing.assert_array_equal(ta[k], tb[k])


def test_truth_matches_star_and_stack(tmp_path) -> None:
    res = _sim(tmp_path, "s", write_volumes=False)
    star = read_star(res.star_path)
    df, optics = star.particles, star.optics
    t = load_truth(res.truth_path)
    n = len(df)
    assert n == 200 and len(t["conformation"]) == 200
    rot = euler_relion_to_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float))
    np.testing.assert_allclose(rot, t["rotations"], atol=1e-6)
    np.testing.assert_allclose(df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(float), t["shifts_A"], atol=1e-6)
    np.testing.assert_allclose(df["rlnDefocusU"].to_numpy(float), t["defocus_u_A"], rtol=1e-8)
    np.testing.assert_allclose(df["rlnDefocusV"].to_numpy(float), t["defocus_v_A"], rtol=1e-8)
    np.testing.assert_allclose(df["rlnDefocusAngle"].to_numpy(float), t["defocus_angle_deg"], rtol=1e-8)
    np.testing.assert_array_equal(df["rlnRandomSubset"].to_numpy(int), t["half_set"] + 1)
    assert sorted(np.bincount(t["half_set"])) == [100, 100]
    assert list(df["rlnImageName"][:2]) == ["000001@particles.mrcs", "000002@particles.mrcs"]
    assert float(optics["rlnImagePixelSize"][0]) == APIX and int(optics["rlnImageSize"][0]) == BOX
    assert float(optics["rlnVoltage"][0]) == 300 and float(optics["rlnSphericalAberration"][0]) == 2.7
    assert float(optics["rlnAmplitudeContrast"][0]) == pytest.approx(0.1)
    # draws within their documented ranges
    mean_df = (t["defocus_u_A"] + t["defocus_v_A"]) / 2
    assert mean_df.min() >= 1e4 and mean_df.max() <= 2.5e4
    assert np.all(t["defocus_u_A"] >= t["defocus_v_A"]) and np.all(t["defocus_u_A"] - t["defocus_v_A"] <= 500)
    assert np.linalg.norm(t["shifts_A"], axis=1).max() <= 2 * APIX + 1e-9
    assert t["frames_A"].shape == (98, 1656, 3) and int(t["n_frames"]) == 98
    np.testing.assert_allclose(t["coordinate"], t["conformation"] / 97)
    # stack: shape, pixel size, dtype
    stack, apix = read_mrc(res.stack_path)
    assert stack.shape == (200, BOX, BOX) and apix == pytest.approx(APIX)
    cfg = json.loads(res.config_path.read_text())
    assert cfg["n_particles"] == 200 and cfg["seed"] == 3


def test_particle_set_reads_the_simulation(tmp_path) -> None:
    pytest.importorskip("cryoscape.particles.particle_set")
    from cryoscape.particles import ParticleSet

    res = _sim(tmp_path, "p", n_particles=50)
    ps = ParticleSet.from_file(res.star_path)
    t = res.truth
    assert len(ps) == 50 and ps.box == BOX and ps.apix == pytest.approx(APIX)
    np.testing.assert_allclose(ps.rotations, t["rotations"], atol=1e-6)
    np.testing.assert_allclose(ps.shifts_A, t["shifts_A"], atol=1e-6)
    np.testing.assert_array_equal(ps.half_set, t["half_set"])
    np.testing.assert_allclose(ps.read_images(np.arange(5)), _stack(res.stack_path)[:5])


def test_clean_images_equal_forward_model_of_ground_truth(tmp_path) -> None:
    """Images from atoms (exact projection) = FourierProjector(rasterised truth) · shift · CTF.

    Parameters are read back from the STAR file, so this pins STAR, truth and image conventions together.
    """
    res = _sim(tmp_path, "clean", n_particles=24, snr=math.inf, conformations="40", shift_max_px=3.0)
    star = read_star(res.star_path)
    df, optics = star.particles, star.optics
    rot = euler_relion_to_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float))
    shifts = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(float)
    ctf = dict(defocus_u_A=df["rlnDefocusU"].to_numpy(float), defocus_v_A=df["rlnDefocusV"].to_numpy(float),
               defocus_angle_deg=df["rlnDefocusAngle"].to_numpy(float),
               voltage_kV=float(optics["rlnVoltage"][0]), cs_mm=float(optics["rlnSphericalAberration"][0]),
               amplitude_contrast=float(optics["rlnAmplitudeContrast"][0]),
               phase_shift_deg=df["rlnPhaseShift"].to_numpy(float), bfactor_A2=df["rlnCtfBfactor"].to_numpy(float))
    vol, apix = ground_truth_volume(res.truth_path, 40)
    assert vol.shape == (BOX, BOX, BOX) and apix == APIX
    expected = _forward(vol, apix, rot, shifts, ctf)
    images = _stack(res.stack_path)
    err = _rel_l2(images, expected)
    assert err.max() < 0.05, err
    # protein white: RELION's CTF(0) = +Q keeps the mean of a positive density positive
    assert np.all(images.reshape(24, -1).mean(1) > 0)


def test_rotation_and_origin_sign_by_centroid(tmp_path) -> None:
    """Nearly pure amplitude contrast and tiny defocus: image ≈ projection moved by −origin."""
    pdb = tmp_path / "tiny.pdb"
    pdb.write_text(TINY_PDB)
    res = simulate_dataset(pdb, n_particles=30, box=48, apix=1.0, snr=math.inf, amplitude_contrast=0.999,
                           defocus_min_um=0.0, defocus_max_um=0.0, astigmatism_max_um=0.0, shift_max_px=6.0,
                           min_sigma_px=1.5, out_dir=tmp_path / "c", seed=1, progress=False)
    t = res.truth
    images = _stack(res.stack_path).astype(np.float64)
    ax = (np.arange(48) - 24) * 1.0
    w = images.sum(axis=(1, 2))
    cx = (images.sum(1) * ax).sum(1) / w
    cy = (images.sum(2) * ax).sum(1) / w
    a = t["amplitudes"].astype(np.float64)
    c3 = (a[:, None] * t["frames_A"][0]).sum(0) / a.sum()
    expected = np.einsum("nij,j->ni", t["rotations"], c3)[:, :2] - t["shifts_A"]
    np.testing.assert_allclose(np.stack([cx, cy], 1), expected, atol=0.15)


def test_measured_snr_matches_request(tmp_path) -> None:
    clean = _sim(tmp_path, "clean", snr=math.inf, box=32, apix=3.0)
    noisy = _sim(tmp_path, "noisy", snr=0.1, box=32, apix=3.0)
    a, b = _stack(clean.stack_path).astype(np.float64), _stack(noisy.stack_path).astype(np.float64)
    noise = b - a  # the same seed draws the same particles; noise has its own stream
    mask = circle_mask(32, float(noisy.truth["particle_radius_px"])).numpy()
    signal = a[:, mask].var(axis=1).mean()
    measured = signal / noise[:, mask].var()
    assert measured == pytest.approx(0.1, rel=0.1)
    assert noise.std() == pytest.approx(float(noisy.truth["noise_std"]), rel=0.02)
    assert abs(noise.mean()) < 0.02 * noise.std()


def test_conformation_subset_weights_and_volumes(tmp_path) -> None:
    res = _sim(tmp_path, "sub", n_particles=60, box=32, apix=3.0, conformations="0,97", write_volumes=True)
    t = res.truth
    assert set(np.unique(t["conformation"])) == {0, 97}
    assert set(np.unique(t["coordinate"])) == {0.0, 1.0}
    assert [p.name for p in res.volume_paths] == ["conformation_000.mrc", "conformation_097.mrc"]
    vol, apix = read_mrc(res.volume_paths[1])
    np.testing.assert_allclose(vol, ground_truth_volume(t, 97)[0], rtol=1e-5, atol=1e-6)
    w = np.zeros(98)
    w[5] = 1.0
    res2 = _sim(tmp_path, "w", n_particles=20, box=32, apix=3.0, conformation_weights=w)
    assert np.all(res2.truth["conformation"] == 5)
    with pytest.raises(InputError):
        _sim(tmp_path, "bad", n_particles=5, box=32, apix=3.0, conformations="98")


def test_given_poses_are_used(tmp_path) -> None:
    from cryoscape.geometry.rotations import random_rotations

    rots = random_rotations(12, np.random.default_rng(9))
    np.save(tmp_path / "poses.npy", rots)
    res = _sim(tmp_path, "poses", n_particles=None, box=32, apix=3.0, poses=tmp_path / "poses.npy")
    np.testing.assert_allclose(res.truth["rotations"], rots)
    res2 = _sim(tmp_path, "poses2", n_particles=None, box=32, apix=3.0, poses=res.star_path, seed=11)
    np.testing.assert_allclose(res2.truth["rotations"], rots, atol=1e-6)
    with pytest.raises(InputError):
        _sim(tmp_path, "poses3", n_particles=13, box=32, apix=3.0, poses=rots)


def test_pdb_input_and_volume_input(tmp_path) -> None:
    pdb = tmp_path / "tiny.pdb"
    pdb.write_text(TINY_PDB)
    res = simulate_dataset(pdb, n_particles=16, box=32, apix=1.0, snr=math.inf, out_dir=tmp_path / "pdb",
                           progress=False)
    t = res.truth
    assert t["frames_A"].shape == (1, 5, 3)
    np.testing.assert_array_equal(t["amplitudes"], [7, 6, 6, 8, 16])
    np.testing.assert_allclose(t["sigma_A"], 1.0)
    vol, apix = ground_truth_volume(res.truth_path, 0)
    write_mrc(tmp_path / "map.mrc", vol, apix)
    vres = simulate_dataset(volume=tmp_path / "map.mrc", n_particles=16, snr=math.inf, out_dir=tmp_path / "vol",
                            progress=False, poses=t["rotations"])
    assert int(vres.truth["box"]) == 32 and float(vres.truth["apix"]) == 1.0
    np.testing.assert_allclose(ground_truth_volume(vres.truth_path, 0)[0], vol)
    a, b = _stack(res.stack_path), _stack(vres.stack_path)
    assert _rel_l2(b, a).max() < 0.05  # same draws: Fourier-slice images agree with exact projections
    with pytest.raises(InputError):
        simulate_dataset(volume=tmp_path / "map.mrc", n_particles=4, box=40, out_dir=tmp_path / "v2", progress=False)


def test_output_exists_requires_force(tmp_path) -> None:
    kw = dict(n_particles=8, box=32, apix=3.0)
    _sim(tmp_path, "o", **kw)
    with pytest.raises(OutputExistsError):
        _sim(tmp_path, "o", **kw)
    _sim(tmp_path, "o", force=True, **kw)
    with pytest.raises(InputError):
        simulate_dataset("adk", volume=tmp_path / "x.mrc", out_dir=tmp_path / "z")


def _cli(argv: list[str]) -> int:
    """Parse and run ``simulate`` through its own parser (as cryoscape.cli.main does)."""
    import argparse

    from cryoscape.cli import simulate as cli_simulate

    parser = argparse.ArgumentParser(prog="cryoscape")
    cli_simulate.add_parser(parser.add_subparsers(dest="command"))
    return cli_simulate.run(parser.parse_args(argv))


def test_cli(tmp_path) -> None:
    out = tmp_path / "cli"
    argv = ["simulate", "--structure", "adk", "-n", "20", "--box", "32", "--apix", "3", "--snr", "inf",
            "--conformations", "0-3", "-o", str(out), "--no-progress", "--seed", "2"]
    assert _cli(argv) == 0
    assert (out / "particles.mrcs").is_file() and (out / "particles.star").is_file()
    assert (out / "truth.npz").is_file() and (out / "simulation.json").is_file()
    t = load_truth(out)
    assert float(t["snr"]) == math.inf and t["conformation"].max() <= 3
    before = (out / "particles.mrcs").read_bytes()
    with pytest.raises(OutputExistsError):
        _cli(argv[:-2] + ["--seed", "5"])
    assert (out / "particles.mrcs").read_bytes() == before
    assert _cli(argv + ["--force"]) == 0
    with pytest.raises(SystemExit):
        _cli(["simulate", "--structure", "adk", "--snr", "-1", "-o", str(out)])

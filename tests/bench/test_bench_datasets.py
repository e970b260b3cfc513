"""Benchmark datasets: registry, caching, determinism, 2D truth, junk flags, STAR round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryoscape.bench import DATASETS, build_dataset, true_volume
from cryoscape.bench.datasets import grid_frames
from cryoscape.errors import InputError, OutputExistsError
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.geometry.rotations import random_rotations
from cryoscape.imaging import compute_ctf, phase_shift, project_atoms
from cryoscape.io.mrc import read_mrc
from cryoscape.io.star import read_star
from cryoscape.particles import ParticleSet
from cryoscape.simulate import ADK_LID_RESIDUES, ADK_NMP_RESIDUES
from cryoscape.simulate.structures import residue_mask

N, BOX = 200, 32
SMALL = dict(n_particles=N, box=BOX, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder shared by the tests of this module."""
    return tmp_path_factory.mktemp("bench_cache")


def _build(name: str, cache: Path):
    return build_dataset(name, cache, **SMALL)


def test_registry_holds_the_specified_parameters() -> None:
    assert {"adk-1d", "adk-1d-snr0.01", "adk-2d", "adk-junk"} <= set(DATASETS)
    s = DATASETS["adk-1d"]
    assert (s.n_particles, s.box, s.apix, s.snr) == (20_000, 64, 1.5, 0.05)
    assert (s.defocus_min_um, s.defocus_max_um, s.voltage_kV, s.cs_mm) == (1.0, 2.5, 300.0, 2.7)
    assert (s.amplitude_contrast, s.shift_max_px) == (0.1, 2.0)
    assert DATASETS["adk-1d-snr0.01"].snr == 0.01
    assert DATASETS["adk-junk"].junk_fraction == 0.1
    assert DATASETS["adk-2d"].grid_size == 10
    small = s.resized(n_particles=10, box=32)
    assert small.apix == pytest.approx(3.0) and small.n_particles == 10
    assert small.spec_hash() != s.spec_hash() and s.resized().spec_hash() == s.spec_hash()
    with pytest.raises(InputError):
        build_dataset("no-such-set", "unused")


def test_cache_is_reused_and_builds_are_deterministic(tmp_path: Path) -> None:
    a = build_dataset("adk-1d", tmp_path / "a", **SMALL)
    assert a.built and (a.out_dir / "spec.json").is_file()
    mtime = a.stack_path.stat().st_mtime_ns
    again = build_dataset("adk-1d", tmp_path / "a", **SMALL)
    assert not again.built and again.stack_path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.truth["conformation"], a.truth["conformation"])
    b = build_dataset("adk-1d", tmp_path / "b", **SMALL)
    assert b.stack_path.read_bytes() == a.stack_path.read_bytes()
    with pytest.raises(OutputExistsError):
        build_dataset("adk-1d", tmp_path / "a", n_particles=N + 2, box=BOX, progress=False)
    rebuilt = build_dataset("adk-1d", tmp_path / "a", force=True, **SMALL)
    assert rebuilt.built and rebuilt.stack_path.read_bytes() == a.stack_path.read_bytes()


def test_unfinished_build_is_redone(tmp_path: Path) -> None:
    a = build_dataset("adk-2d", tmp_path, n_particles=40, box=BOX, progress=False)
    (a.out_dir / "spec.json").unlink()
    assert build_dataset("adk-2d", tmp_path, n_particles=40, box=BOX, progress=False).built


def test_junk_build_is_deterministic(tmp_path: Path, cache: Path) -> None:
    a = _build("adk-junk", cache)
    b = build_dataset("adk-junk", tmp_path, **SMALL)
    assert a.stack_path.read_bytes() == b.stack_path.read_bytes()
    np.testing.assert_array_equal(a.truth["junk_kind"], b.truth["junk_kind"])
    assert not (a.out_dir / ".parts").exists()


@pytest.mark.parametrize("name", ["adk-1d", "adk-1d-snr0.01", "adk-2d", "adk-junk"])
def test_every_dataset_reads_back_and_has_true_volumes(name: str, cache: Path) -> None:
    res = _build(name, cache)
    ps = ParticleSet.from_file(res.star_path)
    assert len(ps) == N == len(res.truth["conformation"])
    stack, apix = read_mrc(res.stack_path)
    assert stack.shape == (N, BOX, BOX) and apix == pytest.approx(3.0, rel=1e-4)
    vol, vapix = true_volume(res.out_dir, 0)
    assert vol.shape == (BOX,) * 3 and vapix == pytest.approx(3.0) and vol.sum() > 0
    np.testing.assert_allclose(res.true_volume(0)[0], vol)


def test_low_snr_variant_shares_draws_and_has_more_noise(cache: Path) -> None:
    hi, lo = _build("adk-1d", cache), _build("adk-1d-snr0.01", cache)
    for key in ("conformation", "rotations", "defocus_u_A", "shifts_A"):
        np.testing.assert_array_equal(hi.truth[key], lo.truth[key])
    assert float(lo.truth["noise_std"]) > 2.0 * float(hi.truth["noise_std"])


def _domain_centroids(truth: dict, ranges: tuple) -> np.ndarray:
    """(G, G, 3) centroid (Å) of a domain in every grid cell."""
    G = int(truth["grid_size"])
    mask = residue_mask(truth["resid"], ranges)
    return truth["frames_A"][:, mask].mean(axis=1).reshape(G, G, 3)


def test_adk_2d_has_two_independent_motions(cache: Path) -> None:
    res = _build("adk-2d", cache)
    t = res.truth
    G = int(t["grid_size"])
    coord = t["coordinate"]
    assert coord.shape == (N, 2) and coord.min() >= 0 and coord.max() <= 1
    np.testing.assert_allclose(coord, t["cell_frames"][t["conformation"]] / 97.0)
    np.testing.assert_array_equal(t["grid_frames"], grid_frames(98, 10))
    lid, nmp = _domain_centroids(t, ADK_LID_RESIDUES), _domain_centroids(t, ADK_NMP_RESIDUES)
    lid_i, lid_j = np.linalg.norm(lid[-1] - lid[0], axis=-1), np.linalg.norm(lid[:, -1] - lid[:, 0], axis=-1)
    nmp_i, nmp_j = np.linalg.norm(nmp[-1] - nmp[0], axis=-1), np.linalg.norm(nmp[:, -1] - nmp[:, 0], axis=-1)
    assert lid_i.min() > 8.0 and lid_j.max() < 0.05  # LID moves with i only (Å)
    assert nmp_j.min() > 5.0 and nmp_i.max() < 0.05  # NMP moves with j only (Å)
    v_pair, _ = true_volume(res.out_dir, (G - 1, 0))
    v_index, _ = true_volume(res.out_dir, (G - 1) * G)
    np.testing.assert_array_equal(v_pair, v_index)
    assert np.abs(v_pair - true_volume(res.out_dir, (0, 0))[0]).max() > 0


def _clean_adk(truth: dict, frame: int, rotations: np.ndarray) -> np.ndarray:
    """Noise-free AdK images [N, D, D] of one frame with the truth's CTFs and origins."""
    D, apix = int(truth["box"]), float(truth["apix"])
    f = lambda key: torch.as_tensor(truth[key], dtype=torch.float32)  # noqa: E731
    proj = project_atoms(torch.as_tensor(truth["frames_A"][frame]), f("amplitudes"), f("sigma_A"),
                         torch.as_tensor(rotations, dtype=torch.float32), D, apix)
    ctf = compute_ctf(D, apix, f("defocus_u_A"), f("defocus_v_A"), f("defocus_angle_deg"), f("voltage_kV"),
                      f("cs_mm"), f("amplitude_contrast"), f("phase_shift_deg"), f("bfactor_A2"))
    return ifftn_c(fftn_c(proj, 2) * phase_shift(D, -f("shifts_A"), apix) * ctf, 2).real.numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _best_adk_corr(images: np.ndarray, truth: dict, rotations: np.ndarray) -> np.ndarray:
    """(N,) highest correlation with AdK (closed, middle, open) at the given poses."""
    return np.max([_corr(images, _clean_adk(truth, f, rotations)) for f in (0, 48, 97)], axis=0)


def test_adk_junk_is_flagged_scattered_and_different(cache: Path) -> None:
    res = _build("adk-junk", cache)
    t = res.truth
    junk, kind = t["is_junk"], t["junk_kind"]
    assert junk.shape == (N,) and junk.dtype == bool and junk.sum() == round(0.1 * N)
    assert set(np.unique(kind[junk])) == {1, 2} and np.all(kind[~junk] == 0)
    pos = np.flatnonzero(junk)
    assert pos.min() < N // 2 and np.any(np.diff(pos) > 1)  # scattered, not a block at the end
    assert np.all(t["conformation"][junk] == -1) and np.all(np.isnan(t["coordinate"][junk]))
    assert np.all(np.isfinite(t["coordinate"][~junk]))
    images = read_mrc(res.stack_path)[0]
    star = read_star(res.star_path).particles
    np.testing.assert_allclose(star["rlnDefocusU"].to_numpy(), t["defocus_u_A"], rtol=1e-6)
    at_pose = _best_adk_corr(images, t, t["rotations"])
    elsewhere = _best_adk_corr(images, t, random_rotations(N, np.random.default_rng(0)))
    match = at_pose - elsewhere  # how much better the recorded pose explains the image
    assert at_pose[~junk].mean() > 0.1 and abs(at_pose[kind == 1].mean()) < 0.03
    assert at_pose[junk].mean() < at_pose[~junk].mean() - 0.05
    assert match[~junk].mean() > 0.03 and match[kind == 2].mean() < match[~junk].mean() - 0.04
    noise = images[kind == 1]
    assert noise.std() == pytest.approx(float(t["noise_std"]), rel=0.05)
    vol, _ = true_volume(res.out_dir, "decoy")
    assert vol.sum() == pytest.approx(true_volume(res.out_dir, 0)[0].sum(), rel=0.02)

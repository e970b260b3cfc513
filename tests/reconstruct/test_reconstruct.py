"""Homogeneous reconstruction with known poses: backprojection, Wiener filter, FSC, outputs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _reconstruct_data import Synthetic, blob_volume, make_dataset, relion_ctf  # noqa: E402

from cryoscape.errors import InputError, OutputExistsError  # noqa: E402
from cryoscape.reconstruct import (  # noqa: E402
    Backprojector,
    assign_half_sets,
    backproject,
    output_paths,
    reconstruct,
    ssnr_from_fsc,
)
from cryoscape.reconstruct import CTF_FIELDS  # noqa: E402
from cryoscape.validate.fsc import fsc, resolution_at, shell_frequencies  # noqa: E402


def _simulated_adk(out_dir: Path, n: int, snr: float, seed: int) -> Synthetic:
    """AdK frame 0 only (one conformation), box 32, 3 Å/px, true poses, shifts and CTF."""
    from cryoscape.simulate.dataset import simulate_dataset

    sim = simulate_dataset(
        "adk", n_particles=n, box=32, apix=3.0, snr=snr, conformations="0", seed=seed,
        out_dir=out_dir, force=True, progress=False,
    )
    truth, apix = sim.ground_truth_volume(0)
    return Synthetic(sim.particles(), truth, apix)


@pytest.fixture(scope="module")
def noisy_ctf(tmp_path_factory):
    """Simulated AdK, 2000 particles at SNR 0.05 with CTF and shifts; and its reconstruction."""
    ds = _simulated_adk(tmp_path_factory.mktemp("adk_noisy"), 2000, 0.05, seed=3)
    return ds, reconstruct(ds.particles, progress=False, batch_size=512)


def test_clean_simulated_adk_with_ctf(tmp_path):
    ds = _simulated_adk(tmp_path / "adk_clean", 1000, math.inf, seed=4)
    assert ds.particles.has_half_sets  # _rlnRandomSubset written by the simulator
    rec = reconstruct(ds.particles, progress=False)
    truth_fsc = fsc(rec.volume, ds.volume)
    crossing = int(np.argmax(np.r_[rec.fsc[1:], -1.0] < 0.143)) + 1
    # ≥ 0.9 out to the reported resolution (Nyquist here); the Nyquist shell itself (0.75-0.8) holds
    # the trilinear-interpolation and pixel-sampling errors of clean data
    assert truth_fsc[1 : min(crossing, 16)].min() >= 0.9
    assert truth_fsc[1 : int(0.8 * 16) + 1].min() > 0.98, np.round(truth_fsc, 3)
    assert rec.resolution_A == pytest.approx(2 * ds.apix)


def test_noiseless_projections_without_ctf_recover_the_volume():
    ds = make_dataset(D=32, n=1500, apix=3.0, with_ctf=False, seed=1)
    rec = reconstruct(ds.particles, progress=False)
    f = fsc(rec.volume, ds.volume)
    upto = int(0.8 * 16)
    assert f[1 : upto + 1].min() > 0.99, np.round(f, 4)
    # the scale is kept (no regulariser bias for noiseless data)
    scale = float((rec.volume * ds.volume).sum() / (ds.volume**2).sum())
    assert abs(scale - 1.0) < 0.02
    assert rec.resolution_A == pytest.approx(2 * 3.0)
    assert rec.volume.dtype == np.float32 and rec.volume.shape == (32, 32, 32)


def _compact_blobs(D: int, seed: int) -> np.ndarray:
    """Eight Gaussian blobs (σ = 1.5 px) within 0.15·D of the centre, ``[D, D, D]`` float32."""
    rng = np.random.default_rng(seed)
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((D, D, D))
    for cx, cy, cz in rng.normal(0.0, 0.08 * D, (8, 3)).clip(-0.15 * D, 0.15 * D):
        vol += rng.uniform(0.5, 1.5) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * 1.5**2))
    return vol.astype(np.float32)


def test_noiseless_ctf_and_shifts_keep_the_low_frequencies_and_the_scale():
    """Noise-free projections with CTF and shifts: small L2 error and the right integrated density.

    The plain adjoint (``D``-spaced samples scattered onto the 2x padded grid)
    undersamples the lowest frequencies and loses ~10 % of the integrated
    density here; the reconstruction backprojector must not.
    """
    D, apix = 32, 3.0
    ds = make_dataset(D=D, n=1500, apix=apix, with_ctf=True, shift_px=1.5, seed=5, volume=_compact_blobs(D, 5))
    truth = ds.volume
    sums = backproject(ds.particles, half_sets=False)
    tiny = sums.volume(None)  # λ = 1e-3 ⟨W⟩_k: the first, nearly unregularised pass
    rec = reconstruct(ds.particles, progress=False)  # Wiener λ(k) from the half-map SSNR
    for vol in (tiny, rec.volume):
        err = np.linalg.norm(vol - truth) / np.linalg.norm(truth)
        assert err < 0.05, err
        assert float(vol.sum() / truth.sum()) == pytest.approx(1.0, abs=0.05)
    plain = Backprojector(D, apix, 2, 1, fine_radius=0)
    plain.insert(ds.particles.read_images(), ds.particles.rotations, ds.particles.shifts_A,
                 {k: np.asarray(v) for k, v in ds.particles.ctf_table().items()})
    assert abs(float(plain.sums().volume(None).sum() / truth.sum()) - 1.0) > 0.05


def test_noisy_ctf_reconstruction_agrees_with_truth_to_the_reported_resolution(noisy_ctf):
    ds, rec = noisy_ctf
    D, apix = 32, ds.apix
    truth_fsc = fsc(rec.volume, ds.volume)
    half = rec.fsc
    crossing = int(np.argmax(half[1:] < 0.143)) + 1  # first shell below 0.143
    assert 4 < crossing < 16, np.round(half, 3)
    # accurate wherever the halves agree well ...
    good = np.flatnonzero(half[:crossing] >= 0.75)
    assert good.size >= 4
    assert truth_fsc[good].min() >= 0.9, (np.round(truth_fsc, 3), np.round(half, 3))
    # ... and the half-map FSC is an honest estimate: FSC vs truth ≈ sqrt(2 FSC / (1 + FSC)) (0.5 at 0.143)
    predicted = np.sqrt(np.clip(2 * half / (1 + half), 0.0, 1.0))
    assert np.abs(truth_fsc[1:crossing] - predicted[1:crossing]).max() < 0.1
    # the resolution against the truth at 0.5 matches the half-map 0.143 resolution within one shell
    res_truth = resolution_at(truth_fsc, D, apix, 0.5)
    assert abs(1 / res_truth - 1 / rec.resolution_A) <= 1.0 / (D * apix) + 1e-9
    # the half maps are already confined to the box's sphere, so the masked, corrected FSC agrees within a shell
    assert abs(1 / rec.resolution_masked_A - 1 / rec.resolution_A) <= 1.0 / (D * apix) + 1e-9
    assert rec.n_particles == 2000 and rec.n_half[0] + rec.n_half[1] == 2000
    # the simulator's _rlnRandomSubset is honoured
    assert list(rec.n_half) == [int((ds.particles.half_set == 0).sum()), int((ds.particles.half_set == 1).sum())]


def test_wiener_filter_beats_a_tiny_regulariser(noisy_ctf):
    """The SSNR-based λ(k) gives a map closer to the truth than a nearly unregularised inverse."""
    ds, rec = noisy_ctf
    sums = backproject(ds.particles, half_sets=False, batch_size=1024)
    raw = sums.volume(None, regulariser=1e-3)  # all 2000 particles, nearly unregularised
    err_wiener = np.linalg.norm(rec.volume - ds.volume)
    err_raw = np.linalg.norm(raw - ds.volume)
    assert err_wiener < 0.7 * err_raw


def test_ssnr_from_fsc():
    f = np.array([1.0, 0.5, 0.143, 0.0, -0.2, np.nan])
    half = ssnr_from_fsc(f)
    full = ssnr_from_fsc(f, full=True)
    assert half[1] == pytest.approx(1.0)
    assert full[1] == pytest.approx(2.0)
    assert np.all(np.isfinite(half)) and np.all(half > 0)
    assert half[3] == half[4] == half[5] == pytest.approx(1e-4)


def test_half_sets_from_random_subset_are_honoured():
    """Half 0 holds images of volume A, half 1 of volume B: each half map must match its own volume."""
    D, n = 24, 1200
    vol_a = blob_volume(D, 3.0, seed=11)
    vol_b = blob_volume(D, 3.0, seed=12)
    labels = np.tile(np.array([0, 1], dtype=np.int8), n // 2)
    ds_a = make_dataset(D=D, n=n, apix=3.0, with_ctf=False, volume=vol_a, seed=5)
    ds_b = make_dataset(D=D, n=n, apix=3.0, with_ctf=False, volume=vol_b, seed=5)
    images = np.where(labels[:, None, None] == 0, ds_a.particles.read_images(), ds_b.particles.read_images())
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_arrays(images, ds_a.particles.rotations, ds_a.particles.shifts_A, apix=3.0, half_set=labels)
    sums = backproject(ps, half_sets=True, batch_size=256)
    assert sums.n_particles.tolist() == [n // 2, n // 2]
    ha, hb = sums.volume(0), sums.volume(1)
    assert fsc(ha, vol_a)[1:9].min() > 0.98 and fsc(hb, vol_b)[1:9].min() > 0.98
    assert fsc(ha, vol_b)[4:9].max() < 0.5


def test_assign_half_sets_keeps_labels_and_balances_the_rest():
    given = np.array([0, 1, -1, -1, -1, -1, 0, -1], dtype=np.int8)
    out = assign_half_sets(given, len(given), seed=0)
    assert np.array_equal(out[given >= 0], given[given >= 0])
    assert set(out.tolist()) <= {0, 1} and abs(int((out == 0).sum()) - int((out == 1).sum())) <= 1
    assert np.array_equal(out, assign_half_sets(given, len(given), seed=0))
    rand = assign_half_sets(None, 101, seed=3)
    assert abs(int(rand.sum()) - 50) <= 1


def test_images_are_streamed_in_batches(monkeypatch):
    ds = make_dataset(D=24, n=300, apix=3.0, with_ctf=True, seed=2)
    ps = ds.particles
    seen: list[int] = []
    real_iter = type(ps).iter_batches

    def counting_iter(self, batch_size=256, indices=None):
        for idx, imgs in real_iter(self, batch_size, indices):
            seen.append(len(idx))
            yield idx, imgs

    def no_bulk_read(self, indices=None):
        raise AssertionError("read_images must not be used to load the whole stack")

    monkeypatch.setattr(type(ps), "iter_batches", counting_iter)
    monkeypatch.setattr(type(ps), "read_images", no_bulk_read)
    reconstruct(ps, progress=False, batch_size=64)
    assert sum(seen) == 300 and max(seen) <= 64 and len(seen) == 5


def test_particle_weights_scale_free_and_exclude():
    ds = make_dataset(D=24, n=600, apix=3.0, with_ctf=True, seed=4)
    a = backproject(ds.particles, half_sets=False)
    b = backproject(ds.particles, half_sets=False, particle_weights=np.full(600, 2.5))
    assert np.allclose(a.volume(None), b.volume(None), atol=1e-4 * np.abs(a.volume(None)).max())
    w = np.zeros(600)
    w[:200] = 1.0
    c = backproject(ds.particles, half_sets=False, particle_weights=w)
    d = backproject(ds.particles[np.arange(200)], half_sets=False)
    assert c.n_particles.tolist() == [200]
    assert torch.allclose(c.weights, d.weights, rtol=1e-4, atol=1e-3)
    with pytest.raises(InputError):
        backproject(ds.particles, particle_weights=-np.ones(600))


def test_plain_insertion_matches_the_projector_adjoint():
    """With ``fine_radius=0`` the sums equal imaging.insert_slices / insert_weights of the CTF-weighted slices."""
    from cryoscape.imaging.projector import insert_slices, insert_weights

    D, n, apix = 16, 40, 2.0
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, D, D)).astype(np.float32)
    from scipy.spatial.transform import Rotation

    R = Rotation.random(n, random_state=0).as_matrix().transpose(0, 2, 1).astype(np.float32)
    ctf = {f: np.zeros(n) for f in CTF_FIELDS}
    ctf.update(defocus_u_A=rng.uniform(5e3, 1e4, n), defocus_v_A=rng.uniform(5e3, 1e4, n),
               defocus_angle_deg=rng.uniform(0, 180, n), voltage_kV=np.full(n, 300.0), cs_mm=np.full(n, 2.7),
               amplitude_contrast=np.full(n, 0.1))
    bp = Backprojector(D, apix, oversampling=2, n_sets=1, fine_radius=0)
    bp.insert(images, R, None, ctf)
    sums = bp.sums()
    # the same slices on the full centred grid, restricted to the inserted disc
    F = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1))), axes=(-2, -1))
    C = relion_ctf(D, apix, ctf["defocus_u_A"], ctf["defocus_v_A"], ctf["defocus_angle_deg"])
    k = np.arange(D) - D // 2
    r = np.hypot(*np.meshgrid(k, k, indexing="ij"))
    disc = r < D / 2
    slices = torch.as_tensor(F * C * disc).to(torch.complex64)
    num = insert_slices(slices, torch.as_tensor(R), D, 2.0)
    den = insert_weights(torch.as_tensor((C * C * disc).astype(np.float32)), torch.as_tensor(R), D, 2.0)
    assert torch.allclose(sums.numerator[0], num, atol=2e-3 * float(num.abs().max()))
    assert torch.allclose(sums.weights[0], den, atol=2e-4 * float(den.abs().max()))


def test_ctf_matches_relion_formula():
    """The one CTF (imaging.compute_ctf) equals RELION's formula written out independently."""
    from cryoscape.imaging import compute_ctf

    n, D, apix = 5, 32, 2.5
    rng = np.random.default_rng(1)
    dfu, dfv, ang = rng.uniform(8e3, 2e4, n), rng.uniform(8e3, 2e4, n), rng.uniform(0, 180, n)
    got = compute_ctf(D, apix, dfu, dfv, ang, 300.0, 2.7, 0.1).numpy()
    assert np.allclose(got, relion_ctf(D, apix, dfu, dfv, ang), atol=2e-4)
    assert got[:, D // 2, D // 2] == pytest.approx(0.1, abs=1e-6)


def test_nan_images_fail_or_are_skipped():
    ds = make_dataset(D=16, n=100, apix=3.0, with_ctf=False, seed=6)
    images = ds.particles.read_images()
    images[7, 3, 3] = np.nan
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_arrays(images, ds.particles.rotations, ds.particles.shifts_A, apix=3.0)
    with pytest.raises(InputError, match="skip-bad"):
        reconstruct(ps, progress=False)
    rec = reconstruct(ps, progress=False, skip_bad=True)
    assert rec.n_particles == 99 and rec.n_skipped == 1
    assert np.all(np.isfinite(rec.volume))


def test_save_writes_every_output_atomically_and_refuses_to_overwrite(tmp_path, noisy_ctf):
    from cryoscape.io.mrc import read_mrc

    _, rec = noisy_ctf
    out = tmp_path / "run" / "consensus.mrc"
    paths = rec.save(out)
    assert set(paths) == {"volume", "half1", "half2", "fsc_txt", "fsc_json", "fsc_png", "filter_txt"}
    assert paths == output_paths(out)
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    vol, apix = read_mrc(paths["volume"])
    assert apix == pytest.approx(rec.apix) and np.allclose(vol, rec.volume)
    half, _ = read_mrc(paths["half2"])
    assert np.allclose(half, rec.half_b)
    doc = json.loads(paths["fsc_json"].read_text())
    assert np.allclose(doc["curves"]["fsc_unmasked"], rec.fsc)
    assert np.allclose(doc["curves"]["fsc_masked"], rec.fsc_masked)
    header = paths["fsc_txt"].read_text().splitlines()[0]
    assert header.split(",") == ["shell", "frequency_invA", "resolution_A", "fsc_unmasked", "fsc_masked"]
    assert np.allclose(rec.shell_frequencies, shell_frequencies(32, rec.apix))
    table = np.loadtxt(paths["filter_txt"], delimiter=",", skiprows=1)
    header = paths["filter_txt"].read_text().splitlines()[0].split(",")
    assert header[3:] == ["wiener_weight_half", "wiener_weight_full", "ssnr_full"]
    assert np.allclose(table[:, 4], rec.filter_weights_full, atol=1e-6) and np.all(table[:, 3:5] > 0)
    with pytest.raises(OutputExistsError):
        rec.save(out)
    rec.save(out, force=True)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_user_mask_and_bad_mask(tmp_path, noisy_ctf):
    from cryoscape.io.mrc import write_mrc

    ds, _ = noisy_ctf
    sub = ds.particles[np.arange(400)]
    tight = np.zeros((32, 32, 32), np.float32)
    tight[8:24, 8:24, 8:24] = 1.0
    write_mrc(tmp_path / "m.mrc", tight, ds.apix)
    rec = reconstruct(sub, progress=False, mask=tmp_path / "m.mrc")
    assert np.array_equal(rec.mask, tight)
    write_mrc(tmp_path / "small.mrc", tight[:16, :16, :16], ds.apix)
    with pytest.raises(InputError, match="box"):
        reconstruct(sub, progress=False, mask=tmp_path / "small.mrc")


def test_requires_poses():
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_arrays(np.zeros((4, 16, 16), np.float32), apix=2.0)
    with pytest.raises(InputError, match="orientations"):
        reconstruct(ps, progress=False)


def test_cli_reconstruct(tmp_path, capsys):
    from cryoscape.cli.main import main
    from cryoscape.io.mrc import write_mrc

    ds = make_dataset(D=24, n=400, apix=3.0, snr=0.5, with_ctf=True, seed=8)
    stack = tmp_path / "particles.mrcs"
    write_mrc(stack, ds.particles.read_images(), 3.0)
    from cryoscape.particles import ParticleSet

    src = ds.particles
    ps = ParticleSet.from_arrays(stack, src.rotations, src.shifts_A, ctf=src.ctf_table(), apix=3.0,
                                 half_set=np.arange(400) % 2)
    star = tmp_path / "particles.star"
    ps.write_star(star)
    out = tmp_path / "out" / "consensus.mrc"
    assert main(["reconstruct", str(star), "-o", str(out), "--no-progress", "--batch-size", "128"]) == 0
    text = capsys.readouterr().out
    assert "particles: 400 (half sets 200 + 200)" in text and "resolution at FSC 0.143" in text
    for p in output_paths(out).values():
        assert p.is_file()
    assert main(["reconstruct", str(star), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cryoscape: error:") and "--force" in err and "\n" not in err
    assert main(["reconstruct", str(star), "-o", str(out), "--no-progress", "--force"]) == 0
    # particles without CTF: one-line error naming the fix
    no_ctf = ParticleSet.from_arrays(stack, src.rotations, src.shifts_A, apix=3.0)
    star2 = tmp_path / "noctf.star"
    no_ctf.write_star(star2)
    assert main(["reconstruct", str(star2), "-o", str(tmp_path / "x.mrc"), "--no-progress"]) == 2
    assert "CTF" in capsys.readouterr().err


def test_wiener_volume_matches_a_full_grid_reference(full_grid_wiener):
    from cryoscape.reconstruct import wiener_volume

    ds = make_dataset(D=16, n=200, apix=3.0, snr=1.0, with_ctf=True, seed=9)
    sums = backproject(ds.particles, half_sets=False)
    lam = np.linspace(0.5, 5.0, 9) * float(sums.weights.mean())
    ours = wiener_volume(sums.numerator[0], sums.weights[0], lam, 16, 2)
    ref = full_grid_wiener(sums.numerator[0], sums.weights[0], lam, 16, 2).numpy()
    assert ours.dtype == np.float32 and ours.shape == (16, 16, 16)
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()

"""``cryoscape fit pca`` and ``cryoscape volume`` on a tiny simulated AdK set with two conformations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch
import yaml

from cryoscape.cli.main import main
from cryoscape.simulate import simulate_dataset
from _helpers import one_line_error as _one_line_error

N, BOX, APIX = 400, 32, 4.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("fitpca") / "sim"
    return simulate_dataset("adk", n_particles=N, box=BOX, apix=APIX, snr=0.5, conformations="0,97",
                            out_dir=out, progress=False, seed=0)


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fitpca_run") / "run_pca"
    rc = main(["fit", "pca", str(sim.star_path), "-o", str(out), "--components", "2", "--iterations", "5",
               "--no-progress"])
    assert rc == 0
    return out


def _mrc(path: Path) -> tuple[np.ndarray, float]:
    with mrcfile.open(path) as m:
        return np.asarray(m.data, dtype=np.float64).copy(), float(m.voxel_size.x)


# ------------------------------------------------------------------ fit
def test_fit_writes_every_file(run):
    for name in ("config.yaml", "latents.npy", "latents_cov.npy", "contrast.npy", "weights.pt", "metrics.json",
                 "log.txt", "mean.mrc", "component_01.mrc", "component_02.mrc"):
        assert (run / name).is_file(), name
    assert not (run / "component_03.mrc").exists()
    assert np.load(run / "latents.npy").shape == (N, 2)
    assert np.load(run / "latents_cov.npy").shape == (N, 2, 2)
    assert np.load(run / "contrast.npy").shape == (N,)
    state = torch.load(run / "weights.pt", weights_only=True)
    assert tuple(state["mean"].shape) == (BOX,) * 3 and tuple(state["components"].shape) == (2, BOX, BOX, BOX)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == "pca" and cfg["data"]["n_particles"] == N and cfg["data"]["box"] == BOX
    assert cfg["data"]["particles"].endswith("particles.star")
    p = cfg["params"]
    assert (p["latent_dim"], p["iterations"], p["seed"], p["downsample"], p["mask"]) == (2, 5, 0, None, "auto")
    assert p["latent_resolution_A"] == 8.0
    for name in ("mask.mrc", "consensus.mrc", "consensus_half1.mrc", "consensus_fsc.json"):
        assert (run / name).is_file(), name
    mask, _ = _mrc(run / "mask.mrc")
    assert 0.0 <= mask.min() and mask.max() <= 1.0 and 0.01 < mask.mean() < 0.5
    comps = torch.load(run / "weights.pt", weights_only=True)["components"].numpy()
    assert np.abs(comps[:, mask < 1e-6]).max() < 1e-6 * np.abs(comps).max()  # components live inside the mask
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["covariance_eigenvalues"]) == 2 and metrics["covariance_eigenvalues"][0] > 0
    assert np.load(run / "spectral_coordinates.npy").shape == (N, 2)
    assert metrics["diffusion_landmarks"] is None  # a small set: solved directly
    for name in ("spectral_mean.mrc", "spectral_volume_01.mrc", "spectral_volume_02.mrc"):
        assert (run / name).is_file(), name
    assert len(metrics["diffusion_eigenvalues"]) == 2
    curve = np.load(run / "curve_coordinate.npy")
    assert curve.shape == (N,) and curve.min() >= 0 and curve.max() <= 1 and curve.std() > 0.05
    assert np.load(run / "curve_coordinate_sd.npy").shape == (N,) and np.load(run / "curve_points.npy").shape[1] == 2
    assert metrics["curve_iterations"] == len(metrics["curve_log_likelihood"]) >= 1
    assert np.asarray(metrics["latent_prior_covariance"]).shape == (2, 2)
    assert len(metrics["eigenvalues"]) == 2 and metrics["eigenvalues"][0] >= metrics["eigenvalues"][1] > 0
    assert len(metrics["objective"]) == 5 and metrics["sigma2"] > 0
    assert np.asarray(metrics["half_set_fsc"]).shape == (3, BOX // 2 + 1) and p["fsc_filter"] is True
    assert len(metrics["half_set_resolution_A"]) == 3 and min(metrics["half_set_resolution_A"]) >= 2 * APIX
    assert "half-set FSC 0.143 resolution" in (run / "log.txt").read_text()
    mean, apix = _mrc(run / "mean.mrc")
    assert mean.shape == (BOX,) * 3 and apix == pytest.approx(APIX)
    np.testing.assert_allclose(mean, state["mean"].numpy(), rtol=1e-6, atol=1e-6)
    assert "PPCA EM" in (run / "log.txt").read_text()


def test_first_latent_separates_the_two_conformations(run, sim):
    z = np.load(run / "latents.npy")
    label = sim.truth["conformation"].astype(np.float64)
    assert set(np.unique(label).tolist()) == {0.0, 97.0}
    assert abs(np.corrcoef(z[:, 0], label)[0, 1]) > 0.8


def test_downsample_fits_at_the_smaller_box(sim, tmp_path):
    from cryoscape.io.mrc import write_mrc
    from cryoscape.reconstruct.backprojection import default_mask

    mask = write_mrc(tmp_path / "mask.mrc", default_mask(BOX), APIX)  # at the original box: cropped to 24
    out = tmp_path / "run_small"
    rc = main(["fit", "pca", str(sim.star_path), "-o", str(out), "--components", "1", "--iterations", "1",
               "--downsample", "24", "--mask", str(mask), "--no-progress"])
    assert rc == 0
    assert (out / "particles_box24.star").is_file() and (out / "particles_box24.mrcs").is_file()
    mean, apix = _mrc(out / "mean.mrc")
    assert mean.shape == (24,) * 3 and apix == pytest.approx(APIX * 32 / 24)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["box"] == 24 and cfg["params"]["source_box"] == BOX
    assert cfg["params"]["source_particles"] == str(Path(sim.star_path).resolve())


# ------------------------------------------------------------------ volume
def test_volume_at_zero_is_the_mean(run, tmp_path):
    out = tmp_path / "z0.mrc"
    assert main(["volume", str(run), "--z", "0", "0", "-o", str(out)]) == 0
    vol, apix = _mrc(out)
    mean, _ = _mrc(run / "mean.mrc")
    assert apix == pytest.approx(APIX)
    np.testing.assert_allclose(vol, mean, rtol=1e-6, atol=1e-6)


def test_volume_is_mean_plus_weighted_components(run, tmp_path):
    out = tmp_path / "z.mrc"
    assert main(["volume", str(run), "--z", "1.5", "-2", "-o", str(out)]) == 0
    mean, c1, c2 = (_mrc(run / n)[0] for n in ("mean.mrc", "component_01.mrc", "component_02.mrc"))
    np.testing.assert_allclose(_mrc(out)[0], mean + 1.5 * c1 - 2 * c2, rtol=1e-5, atol=1e-5)


def test_z_file_writes_one_volume_per_row(run, tmp_path):
    zfile = tmp_path / "z.txt"
    zfile.write_text("0 0\n1 0\n0 1\n")
    out = tmp_path / "vols"
    assert main(["volume", str(run), "--z-file", str(zfile), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["vol_000.mrc", "vol_001.mrc", "vol_002.mrc"]
    c1 = _mrc(out / "vol_001.mrc")[0] - _mrc(out / "vol_000.mrc")[0]
    np.testing.assert_allclose(c1, _mrc(run / "component_01.mrc")[0], rtol=1e-4, atol=1e-5)


def test_component_movie(run, tmp_path):
    out = tmp_path / "movie"
    assert main(["volume", str(run), "--component", "1", "--steps", "3", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.mrc"))
    assert names == ["component1_00.mrc", "component1_01.mrc", "component1_02.mrc"]
    points = np.loadtxt(out / "component1_points.txt")
    z = np.load(run / "latents.npy")
    np.testing.assert_allclose(points[:, 0], np.percentile(z[:, 0], [5, 50, 95]), rtol=1e-4)
    np.testing.assert_allclose(points[:, 1], z[:, 1].mean(), rtol=1e-4, atol=1e-3)


def test_curve_movie(run, tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["volume", str(run), "--curve", "--steps", "3", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.mrc")) == ["curve_00.mrc", "curve_01.mrc", "curve_02.mrc"]
    points = np.loadtxt(out / "curve_points.txt")
    nodes, s = np.load(run / "curve_points.npy"), np.load(run / "curve_coordinate.npy")
    middle = np.median(s) * (len(nodes) - 1)  # the 50th percentile, between two nodes
    j, t = int(middle), middle - int(middle)
    np.testing.assert_allclose(points[1], (1 - t) * nodes[j] + t * nodes[j + 1], rtol=1e-4, atol=1e-5)
    mean, c1, c2 = (_mrc(run / n)[0] for n in ("mean.mrc", "component_01.mrc", "component_02.mrc"))
    np.testing.assert_allclose(_mrc(out / "curve_01.mrc")[0], mean + points[1, 0] * c1 + points[1, 1] * c2,
                               rtol=1e-4, atol=1e-4)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    (bare / "curve_points.npy").unlink()
    assert main(["volume", str(bare), "--curve", "-o", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "has no latent curve" in err and "--curve-basis" in err and len(err.strip().splitlines()) == 1


def test_near_particle_writes_map_half_maps_and_fsc(run, tmp_path):
    out = tmp_path / "local.mrc"
    rc = main(["volume", str(run), "--near-particle", "7", "--n-neighbours", "150", "-o", str(out), "--no-progress"])
    assert rc == 0
    for name in ("local.mrc", "local_half1.mrc", "local_half2.mrc", "local_fsc.txt", "local_fsc.json"):
        assert (tmp_path / name).is_file(), name
    vol, apix = _mrc(out)
    assert vol.shape == (BOX,) * 3 and apix == pytest.approx(APIX) and np.isfinite(vol).all() and vol.std() > 0


def test_registry_volume_function_gives_the_mean_at_zero(run):
    from cryoscape.analysis.pipeline import volume_at
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.registry import volume_function

    vol = volume_at(RunDirectory.open(run), np.zeros(2), volume_function("pca"))
    np.testing.assert_allclose(vol, _mrc(run / "mean.mrc")[0], rtol=1e-6, atol=1e-6)


def test_analyze_makes_volumes_from_the_model(run, tmp_path):
    import shutil

    copy = tmp_path / "run_copy"
    shutil.copytree(run, copy)
    rc = main(["analyze", str(copy), "--kmeans", "3", "--n-points", "3", "--no-progress"])
    assert rc == 0
    summary = json.loads((copy / "analysis" / "analysis.json").read_text())
    vols = sorted((copy / "analysis" / "volumes").glob("cluster_*.mrc"))
    assert len(vols) == 3
    vol, apix = _mrc(vols[0])
    assert vol.shape == (BOX,) * 3 and apix == pytest.approx(APIX)
    assert all(v["source"] == "model" for v in summary["volumes"])


# ------------------------------------------------------------------ errors
def test_wrong_latent_dimension_is_one_line(run, tmp_path, capsys):
    assert main(["volume", str(run), "--z", "0", "0", "0", "-o", str(tmp_path / "v.mrc")]) == 2
    _one_line_error(capsys, "3 coordinates", "2-D")
    zfile = tmp_path / "z.txt"
    zfile.write_text("0\n1\n")
    assert main(["volume", str(run), "--z-file", str(zfile), "-o", str(tmp_path / "zz")]) == 2
    _one_line_error(capsys, "1 coordinates")
    assert main(["volume", str(run), "--component", "3", "-o", str(tmp_path / "m")]) == 2
    _one_line_error(capsys, "--component 3")


def test_star_without_poses_is_refused(sim, tmp_path, capsys):
    data = starfile.read(sim.star_path, always_dict=True)
    parts = data["particles"]
    data["particles"] = parts.drop(columns=[c for c in parts.columns if c.startswith("rlnAngle")])
    star = sim.star_path.parent / "no_poses.star"
    starfile.write(data, star)
    assert main(["fit", "pca", str(star), "-o", str(tmp_path / "r"), "--components", "2", "--no-progress"]) == 2
    _one_line_error(capsys, "refinement")
    assert not (tmp_path / "r").exists()


def test_more_components_than_particles_is_refused(sim, tmp_path, capsys):
    assert main(["fit", "pca", str(sim.star_path), "-o", str(tmp_path / "r"), "--components", str(N + 1)]) == 2
    _one_line_error(capsys, "components", str(N))


def test_bad_latent_resolution_is_refused(sim, tmp_path, capsys):
    assert main(["fit", "pca", str(sim.star_path), "-o", str(tmp_path / "r"), "--components", "2",
                 "--latent-resolution", "-8"]) == 2
    _one_line_error(capsys, "--latent-resolution", "positive")
    assert not (tmp_path / "r").exists()


def test_existing_run_needs_force_and_finished_resume_asks_for_more_iterations(run, sim, capsys):
    before = (run / "latents.npy").read_bytes()
    assert main(["fit", "pca", str(sim.star_path), "-o", str(run), "--components", "2"]) == 2
    _one_line_error(capsys, "--force")
    assert main(["fit", "pca", str(sim.star_path), "-o", str(run), "--components", "2", "--iterations", "5",
                 "--resume"]) == 2
    _one_line_error(capsys, "already has 5", "--iterations")
    assert (run / "latents.npy").read_bytes() == before


def test_resume_continues_to_the_uninterrupted_result(run, sim, tmp_path):
    """3 iterations then --resume to 5 gives the same model and latents as 5 in one go."""
    part = tmp_path / "part"
    args = ["fit", "pca", str(sim.star_path), "-o", str(part), "--components", "2", "--no-progress"]
    assert main(args + ["--iterations", "3"]) == 0
    assert (part / "checkpoints").is_dir()
    assert main(args + ["--iterations", "5", "--resume"]) == 0
    whole = torch.load(run / "weights.pt", weights_only=True)
    resumed = torch.load(part / "weights.pt", weights_only=True)
    for key in ("mean", "components"):
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(part / "latents.npy"), np.load(run / "latents.npy"), rtol=1e-4, atol=1e-5)
    metrics = json.loads((part / "metrics.json").read_text())
    assert len(metrics["objective"]) == 5
    assert "resuming after iteration 3" in (part / "log.txt").read_text()


def test_resume_with_other_settings_is_refused(run, sim, capsys):
    assert main(["fit", "pca", str(sim.star_path), "-o", str(run), "--components", "3", "--iterations", "8",
                 "--resume"]) == 2
    _one_line_error(capsys, "latent_dim: 2 -> 3", "--force")


def test_existing_volume_needs_force(run, tmp_path, capsys):
    out = tmp_path / "v.mrc"
    assert main(["volume", str(run), "--z", "0", "0", "-o", str(out)]) == 0
    assert main(["volume", str(run), "--z", "1", "0", "-o", str(out)]) == 2
    _one_line_error(capsys, "--force")
    assert main(["volume", str(run), "--z", "1", "0", "-o", str(out), "--force"]) == 0


def test_force_refit_replaces_the_maps(run, sim, tmp_path):
    import shutil

    copy = tmp_path / "run_copy"
    shutil.copytree(run, copy)
    rc = main(["fit", "pca", str(sim.star_path), "-o", str(copy), "--components", "1", "--iterations", "1",
               "--init", "random", "--mask", "sphere", "--spectral-components", "0", "--force", "--no-progress"])
    assert rc == 0
    assert (copy / "component_01.mrc").is_file() and not (copy / "component_02.mrc").exists()
    for stale in ("spectral_coordinates.npy", "spectral_volume_01.mrc", "mask.mrc", "consensus.mrc",
                  "curve_coordinate.npy", "curve_points.npy"):
        assert not (copy / stale).exists(), stale
    assert "covariance_eigenvalues" not in json.loads((copy / "metrics.json").read_text())
    assert np.load(copy / "latents.npy").shape == (N, 1)

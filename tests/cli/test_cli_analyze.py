"""``cryoscape analyze`` on a tiny simulated dataset: files, report, truth statistics, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from PIL import Image

from cryoscape.analysis.pipeline import AnalysisSettings, analyse_latents, analyse_run
from cryoscape.analysis.volumes import volume_at
from cryoscape.cli.main import main
from cryoscape.errors import InputError
from cryoscape.io.run_dir import RunDirectory
from cryoscape.simulate import simulate_dataset
from _helpers import error_before_any_progress, one_line_error as _one_line_error, embedded_pngs as _embedded_pngs


def make_run(root: Path, sim, method: str = "test", noise: float = 0.05, seed: int = 0, **extra) -> Path:
    """A run directory whose latents are a noisy curve through the true coordinate (3-D)."""
    t = sim.truth["coordinate"]
    rng = np.random.default_rng(seed)
    z = np.stack([t, t**2, np.sin(3 * t)], axis=1) + noise * rng.standard_normal((len(t), 3))
    config = {"particles": sim.star_path, "n_particles": len(t), "box": 32, "apix": 3.0, **extra}
    run = RunDirectory.create(root, method=method, config=config)
    run.write_latents(z)
    return root


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "sim"
    return simulate_dataset("adk", n_particles=300, box=32, apix=3.0, snr=0.1, conformations="0,20,40,60,80,97",
                            out_dir=out, progress=False, seed=1)


def test_analyze_writes_arrays_figures_and_report(sim, tmp_path, capsys):
    run = make_run(tmp_path / "run", sim)
    rc = main(["analyze", str(run), "--kmeans", "4", "--truth", str(sim.truth_path), "--local-volumes",
               "--n-points", "3", "--neighbours", "120"])
    assert rc == 0
    a = run / "analysis"
    for name in ("analysis.json", "embedding.npy", "labels.npy", "centres.npy", "log_density.npy", "outlier_scores.npy",
                 "pc1_points.npy", "pc2_points.npy", "report.html", "latent_density.png", "latent_clusters.png",
                 "latent_truth.png", "free_energy.png", "trajectory_pc1.png", "trajectory_pc2.png",
                 "outlier_scores.png", "volumes.png"):
        assert (a / name).is_file(), name
    assert np.load(a / "embedding.npy").shape == (300, 2)
    labels = np.load(a / "labels.npy")
    assert labels.shape == (300,) and set(labels.tolist()) == {0, 1, 2, 3}
    assert np.load(a / "centres.npy").shape == (4, 3)
    summary = json.loads((a / "analysis.json").read_text())
    assert sum(c["n_particles"] for c in summary["clusters"]) == 300
    assert summary["truth"]["spearman_pc1_abs"] > 0.8
    vols = sorted((a / "volumes").glob("*.mrc"))
    assert len(vols) == 4 + 2 * 3  # cluster centres + PC1 and PC2 points
    with mrcfile.open(vols[0]) as m:
        assert m.data.shape == (32, 32, 32) and float(m.voxel_size.x) == pytest.approx(3.0)
        assert np.isfinite(m.data).all() and m.data.std() > 0
    html = (a / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert "Spearman" in html and f"{summary['truth']['spearman_pc1_abs']:.3f}" in html
    assert "cluster 3" in html
    pngs = _embedded_pngs(html)
    assert len(pngs) >= 8
    for data in pngs:
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.size[0] > 100 and img.size[1] > 100 and np.asarray(img).std() > 0
    out = capsys.readouterr()
    assert "Spearman" in out.out and "k-means" in out.out


def test_analyze_refuses_to_overwrite_and_uses_recorded_truth(sim, tmp_path, capsys):
    run = make_run(tmp_path / "run", sim, truth=str(sim.truth_path))
    assert main(["analyze", str(run), "--kmeans", "3", "--no-progress"]) == 0
    summary = json.loads((run / "analysis" / "analysis.json").read_text())
    assert summary["truth"]["spearman_pc1_abs"] > 0.8  # truth taken from the run config
    assert "no volumes" in " ".join(summary["notes"])
    before = (run / "analysis" / "report.html").read_bytes()
    capsys.readouterr()
    assert main(["analyze", str(run), "--kmeans", "5", "--no-progress"]) == 2
    _one_line_error(capsys, "--force")
    assert (run / "analysis" / "report.html").read_bytes() == before
    assert main(["analyze", str(run), "--kmeans", "5", "--no-progress", "--force"]) == 0
    assert json.loads((run / "analysis" / "analysis.json").read_text())["n_clusters"] == 5


def test_analyze_bad_input(sim, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    _one_line_error(capsys, "not a cryoscape run directory")
    run = make_run(tmp_path / "run", sim)
    bad_truth = tmp_path / "truth.npz"
    np.savez(bad_truth, coordinate=np.zeros(10))
    assert main(["analyze", str(run), "--truth", str(bad_truth)]) == 2
    _one_line_error(capsys, "10 particles")
    assert main(["analyze", str(run), "--kmeans", "0"]) == 2
    _one_line_error(capsys, "--kmeans")


def test_analysis_is_deterministic_and_handles_1d_latents():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 1))
    a = analyse_latents(z, AnalysisSettings(n_clusters=3))
    b = analyse_latents(z, AnalysisSettings(n_clusters=3))
    assert np.array_equal(a.labels, b.labels) and a.embedding.shape == (200, 2)
    assert a.landscape is None and a.notes  # a line has no 2-D landscape; said so
    assert list(a.trajectories) == ["pc1"]


def _constant_volume(run, z):
    return np.full((32, 32, 32), float(z[0]), dtype=np.float32)


def test_volumes_come_from_the_volume_function_passed_in(sim, tmp_path):
    run = RunDirectory.open(make_run(tmp_path / "run", sim, method="modelled"))
    assert volume_at(run, np.zeros(3), None) is None
    vol = volume_at(run, np.array([2.0, 0.0, 0.0]), _constant_volume)
    assert vol is not None and vol.shape == (32, 32, 32) and vol.dtype == np.float32 and float(vol[0, 0, 0]) == 2.0
    result = analyse_run(run, AnalysisSettings(n_clusters=2, n_points=2, fit_scores=False), volume_fn=_constant_volume)
    assert [v.source for v in result.volumes] == ["model"] * (2 + 2 * 2)
    assert not any("no volumes" in n for n in result.notes)
    assert analyse_run(run, AnalysisSettings(n_clusters=2, n_points=2, fit_scores=False)).volumes == []


def test_analyze_takes_the_volume_function_from_the_registry(sim, tmp_path, monkeypatch):
    import cryoscape.methods.registry as registry

    run = make_run(tmp_path / "run", sim, method="modelled")
    monkeypatch.setattr(registry, "volume_function", lambda m: _constant_volume if m == "modelled" else None)
    assert main(["analyze", str(run), "--kmeans", "2", "--n-points", "2", "--no-progress", "--no-fit-scores"]) == 0
    summary = json.loads((run / "analysis" / "analysis.json").read_text())
    assert [v["source"] for v in summary["volumes"]] == ["model"] * 6
    assert len(list((run / "analysis" / "volumes").glob("*.mrc"))) == 6


def test_analyze_checks_its_inputs_before_any_work(sim, tmp_path, capsys):
    run = make_run(tmp_path / "run", sim)
    bad_truth = tmp_path / "truth.npz"
    np.savez(bad_truth, coordinate=np.zeros(10))
    assert main(["analyze", str(run), "--truth", str(bad_truth)]) == 2
    error_before_any_progress(capsys, "10 particles")
    assert main(["analyze", str(run), "--truth", str(tmp_path / "missing.npz")]) == 2
    error_before_any_progress(capsys, "missing.npz")
    moved = make_run(tmp_path / "moved", sim, particles=str(tmp_path / "gone.star"))
    assert main(["analyze", str(moved), "--local-volumes"]) == 2  # local volumes need the particles: said at once
    error_before_any_progress(capsys, "gone.star", "--particles")
    no_latents = RunDirectory.create(tmp_path / "unfitted", method="test", config={"n_particles": 300})
    assert main(["analyze", str(no_latents.path)]) == 2
    error_before_any_progress(capsys, "latents")
    tiny = RunDirectory.create(tmp_path / "tiny", method="test", config={"n_particles": 3})
    tiny.write_latents(np.zeros((3, 2)))
    assert main(["analyze", str(tiny.path)]) == 2
    error_before_any_progress(capsys, "at least 4")
    assert main(["analyze", str(run), "--neighbours", "0"]) == 2
    error_before_any_progress(capsys, "--neighbours")
    assert not (run / "analysis").exists() and not (moved / "analysis").exists()


def test_umap_without_umap_learn_is_a_one_line_error(tmp_path, capsys):
    try:
        import umap  # noqa: F401
        pytest.skip("umap-learn is installed")
    except ImportError:
        pass
    z = np.random.default_rng(1).standard_normal((100, 3))
    with pytest.raises(InputError, match="pip install umap-learn"):
        analyse_latents(z, AnalysisSettings(n_clusters=2, umap=True))
    assert main(["analyze", str(tmp_path / "no_run"), "--umap"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "umap-learn" in err[0]


def test_analyze_scores_the_fit_to_the_consensus_map(sim, tmp_path, capsys):
    run = make_run(tmp_path / "run", sim)
    assert main(["analyze", str(run), "--kmeans", "3", "--no-progress"]) == 0
    a = run / "analysis"
    r = np.load(a / "fit_correlation.npy")
    assert r.shape == (300,) and np.all(np.abs(r) <= 1) and np.median(r) > 0.05  # real particles fit the map
    summary = json.loads((a / "analysis.json").read_text())
    assert summary["outlier_score_parts"] == ["latent density", "fit to the consensus map"]
    assert summary["fit_correlation"]["median"] == pytest.approx(float(np.median(r)))
    assert "fit to the consensus map" in capsys.readouterr().out
    other = make_run(tmp_path / "other", sim)
    assert main(["analyze", str(other), "--kmeans", "3", "--no-progress", "--no-fit-scores"]) == 0
    assert not (other / "analysis" / "fit_correlation.npy").exists()
    assert json.loads((other / "analysis" / "analysis.json").read_text())["outlier_score_parts"] == ["latent density"]


def test_analyze_without_readable_particles_says_so(sim, tmp_path):
    run = make_run(tmp_path / "run", sim, particles=str(tmp_path / "moved.star"))
    assert main(["analyze", str(run), "--kmeans", "3", "--no-progress"]) == 0
    summary = json.loads((run / "analysis" / "analysis.json").read_text())
    assert summary["outlier_score_parts"] == ["latent density"]
    assert any("no fit scores" in n for n in summary["notes"])


def test_learning_curves_are_read_from_metrics_and_drawn(sim, tmp_path):
    from cryoscape.analysis.pipeline import learning_curves

    curves, axis = learning_curves({"objective": [3.0, 2.0, 1.5], "n_iterations": 3, "sigma2": 0.1,
                                    "eigenvalues": [4.0, 2.0], "loss": {"total": [2, 1], "kld": [0.5, 0.4]},
                                    "val_loss": [1.0], "train_loss": [1.0, float("nan")], "kl": [0.3, 0.2],
                                    "images_per_s": [10.0, 12.0], "bloss_x": [1.0, 2.0]})
    assert axis == "iteration" and set(curves) == {"objective", "loss.total", "loss.kld", "kl"}
    np.testing.assert_array_equal(curves["objective"], [3.0, 2.0, 1.5])
    assert learning_curves({"loss": [1.0, 0.5], "n_epochs": 2})[1] == "epoch"
    assert learning_curves({"eigenvalues": [1.0, 2.0]}) == ({}, "iteration")

    run = make_run(tmp_path / "run", sim)
    RunDirectory.open(run).write_metrics({"loss": [4.0, 2.0, 1.0, 0.9], "n_epochs": 4, "images_per_s": [10.0, 11.0]})
    assert main(["analyze", str(run), "--kmeans", "3", "--no-progress", "--no-fit-scores"]) == 0
    a = run / "analysis"
    img = Image.open(a / "learning_curve.png")
    assert img.size[0] > 100 and np.asarray(img).std() > 0
    summary = json.loads((a / "analysis.json").read_text())
    assert summary["learning_curves"] == {"loss": {"axis": "epoch", "n": 4, "first": 4.0, "last": 0.9}}
    html = (a / "report.html").read_text()
    assert "Learning curve" in html and "per epoch" in html

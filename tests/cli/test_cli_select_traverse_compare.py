"""``cryoscape select``, ``traverse`` and ``compare`` on a tiny simulated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoscape.analysis.compare import compare_latents
from cryoscape.analysis.latent import kmeans
from cryoscape.cli.main import main
from cryoscape.io.run_dir import RunDirectory
from cryoscape.particles import ParticleSet
from cryoscape.simulate import simulate_dataset
from _helpers import error_before_any_progress, one_line_error as _one_line_error


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("select") / "sim"
    return simulate_dataset("adk", n_particles=300, box=32, apix=3.0, snr=0.1, conformations="0-60",
                            out_dir=out, progress=False, seed=2)


def _latents(sim, seed: int = 0) -> np.ndarray:
    t = sim.truth["coordinate"]
    rng = np.random.default_rng(seed)
    return np.stack([t, np.cos(2 * t)], axis=1) + 0.05 * rng.standard_normal((len(t), 2))


def _run(root: Path, sim, latents: np.ndarray, method: str = "test") -> Path:
    run = RunDirectory.create(root, method=method, config={"particles": sim.star_path, "n_particles": len(latents),
                                                           "box": 32, "apix": 3.0})
    run.write_latents(latents)
    return root


@pytest.fixture
def run(sim, tmp_path) -> Path:
    return _run(tmp_path / "run", sim, _latents(sim))


# ------------------------------------------------------------------ select
def test_select_cluster_writes_star_with_the_cluster_count(sim, run, tmp_path):
    labels, _ = kmeans(RunDirectory.open(run).read_latents()[0], 4, seed=0)
    out = tmp_path / "c1.star"
    assert main(["select", str(run), "--cluster", "1", "--kmeans", "4", "-o", str(out)]) == 0
    subset = ParticleSet.from_file(out)
    assert len(subset) == int((labels == 1).sum())
    inv = tmp_path / "not_c1.txt"
    assert main(["select", str(run), "--cluster", "1", "--kmeans", "4", "--invert", "-o", str(inv)]) == 0
    assert len(np.loadtxt(inv, dtype=int)) == 300 - len(subset)


def test_select_reads_clusters_of_a_saved_analysis(run, tmp_path):
    assert main(["analyze", str(run), "--kmeans", "3", "--no-progress"]) == 0
    saved = np.load(run / "analysis" / "labels.npy")
    out = tmp_path / "c2.npy"
    assert main(["select", str(run), "--cluster", "2", "-o", str(out)]) == 0  # k taken from the analysis
    assert np.array_equal(np.load(out), np.flatnonzero(saved == 2))


def test_select_indices_round_trip_and_other_criteria(run, tmp_path):
    wanted = np.array([3, 7, 11, 200, 299])
    src = tmp_path / "idx.txt"
    src.write_text("\n".join(map(str, wanted)) + "\n")
    for suffix in (".npy", ".pkl", ".txt", ".star"):
        out = tmp_path / f"sel{suffix}"
        assert main(["select", str(run), "--indices", str(src), "-o", str(out)]) == 0
    assert np.array_equal(np.load(tmp_path / "sel.npy"), wanted)
    assert np.array_equal(np.loadtxt(tmp_path / "sel.txt", dtype=int), wanted)
    assert len(ParticleSet.from_file(tmp_path / "sel.star")) == wanted.size
    back = tmp_path / "back.npy"
    assert main(["select", str(run), "--indices", str(tmp_path / "sel.pkl"), "-o", str(back)]) == 0
    assert np.array_equal(np.load(back), wanted)
    assert main(["select", str(run), "--region", "-100", "100", "-100", "100", "-o", str(tmp_path / "all.npy")]) == 0
    assert np.load(tmp_path / "all.npy").size == 300
    assert main(["select", str(run), "--outliers-above", "2", "-o", str(tmp_path / "out.npy")]) == 0
    assert 0 < np.load(tmp_path / "out.npy").size < 100


def test_select_bad_input(run, tmp_path, capsys):
    out = tmp_path / "sel.star"
    out.write_text("keep me")
    assert main(["select", str(run), "--cluster", "0", "-o", str(out)]) == 2
    _one_line_error(capsys, "--force")
    assert out.read_text() == "keep me"
    assert main(["select", str(run), "-o", str(tmp_path / "x.star")]) == 2
    _one_line_error(capsys, "exactly one")
    assert main(["select", str(run), "--cluster", "7", "--kmeans", "4", "-o", str(tmp_path / "x.star")]) == 2
    _one_line_error(capsys, "cluster 7")
    bad = tmp_path / "bad.txt"
    bad.write_text("5\n300\n")
    assert main(["select", str(run), "--indices", str(bad), "-o", str(tmp_path / "x.star")]) == 2
    _one_line_error(capsys, "out of range")
    assert main(["select", str(tmp_path), "--cluster", "0", "-o", str(tmp_path / "x.star")]) == 2
    _one_line_error(capsys, "not a cryoscape run directory")


# ------------------------------------------------------------------ traverse
def test_traverse_path_ends_at_the_given_particles(run, tmp_path):
    z = RunDirectory.open(run).read_latents()[0]
    start, end = int(np.argmin(z[:, 0])), int(np.argmax(z[:, 0]))
    out = tmp_path / "path"
    assert main(["traverse", str(run), "--from-particle", str(start), "--to-particle", str(end), "-o", str(out),
                 "--n-points", "3", "--local-volumes", "--neighbours", "100"]) == 0
    path = json.loads((out / "path.json").read_text())
    assert path["indices"][0] == start and path["indices"][-1] == end
    assert np.allclose(path["latent_points"][0], z[start], atol=1e-6)
    assert np.allclose(path["latent_points"][-1], z[end], atol=1e-6)
    assert np.load(out / "path_points.npy").shape == (3, 2)
    assert (out / "path.png").stat().st_size > 1000
    assert len(list((out / "volumes").glob("path_*.mrc"))) == 3


def test_traverse_bad_input(run, tmp_path, capsys):
    out = tmp_path / "path"
    assert main(["traverse", str(run), "--to-particle", "5", "-o", str(out)]) == 2
    _one_line_error(capsys, "--from-particle")
    assert main(["traverse", str(run), "--from-particle", "0", "--to-particle", "300", "-o", str(out)]) == 2
    _one_line_error(capsys, "out of range", "0 to 299")
    assert main(["traverse", str(run), "--from-particle", "0", "--to-particle", "5", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["traverse", str(run), "--from-particle", "0", "--to-particle", "6", "-o", str(out)]) == 2
    _one_line_error(capsys, "--force")
    assert main(["traverse", str(tmp_path / "nope"), "--from-particle", "0", "--to-particle", "1", "-o", str(out)]) == 2
    _one_line_error(capsys)


def test_traverse_checks_its_inputs_before_the_search(sim, tmp_path, capsys):
    moved = RunDirectory.create(tmp_path / "moved", method="test", config={"particles": tmp_path / "gone.star",
                                                                            "n_particles": 300})
    moved.write_latents(_latents(sim))
    moved = moved.path
    out = tmp_path / "path"
    assert main(["traverse", str(moved), "--from-particle", "0", "--to-particle", "5", "-o", str(out),
                 "--local-volumes"]) == 2
    error_before_any_progress(capsys, "gone.star", "--particles")
    assert main(["traverse", str(moved), "--from-particle", "-1", "--to-particle", "5", "-o", str(out)]) == 2
    error_before_any_progress(capsys, "--from-particle -1", "out of range")
    assert main(["traverse", str(moved), "--from-particle", "0", "--to-particle", "5", "-o", str(out),
                 "--n-points", "1"]) == 2
    error_before_any_progress(capsys, "--n-points")
    assert not out.exists()


def test_traverse_uses_the_registered_volume_function(sim, run, tmp_path, monkeypatch):
    import cryoscape.methods.registry as registry

    calls: list[np.ndarray] = []

    def volume(r, z):
        calls.append(z)
        return np.full((32, 32, 32), float(z[0]), dtype=np.float32)

    monkeypatch.setattr(registry, "volume_function", lambda m: volume if m == "test" else None)
    out = tmp_path / "path"
    assert main(["traverse", str(run), "--from-particle", "0", "--to-particle", "5", "-o", str(out),
                 "--n-points", "3"]) == 0
    path = json.loads((out / "path.json").read_text())
    assert [v["source"] for v in path["volumes"]] == ["model"] * 3 and len(calls) == 3


# ------------------------------------------------------------------ compare
def test_compare_self_and_permuted(sim, run, tmp_path, capsys):
    z = RunDirectory.open(run).read_latents()[0]
    shuffled = _run(tmp_path / "shuffled", sim, np.random.default_rng(5).permutation(z), method="other")
    out = tmp_path / "self.json"
    assert main(["compare", str(run), str(run), "-o", str(out)]) == 0
    same = json.loads(out.read_text())
    assert same["neighbourhood_overlap"] == pytest.approx(1.0)
    assert same["canonical_correlations"][0] == pytest.approx(1.0)
    assert same["volume_fsc_auc_mean"] is None
    assert "overlap" in capsys.readouterr().out
    out2 = tmp_path / "perm.json"
    assert main(["compare", str(run), str(shuffled), "-o", str(out2)]) == 0
    perm = json.loads(out2.read_text())
    chance = perm["neighbourhood_overlap_chance"]
    assert chance == pytest.approx(10 / 299)
    assert perm["neighbourhood_overlap"] < 3 * chance


def test_compare_bad_input(sim, run, tmp_path, capsys):
    other = _run(tmp_path / "small", sim, _latents(sim)[:100])
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("n_particles: 300", "n_particles: 100"))
    assert main(["compare", str(run), str(other), "-o", str(tmp_path / "c.json")]) == 2
    _one_line_error(capsys, "300", "100")
    existing = tmp_path / "c.json"
    existing.write_text("{}")
    assert main(["compare", str(run), str(run), "-o", str(existing)]) == 2
    _one_line_error(capsys, "--force")
    assert main(["compare", str(run), str(tmp_path), "-o", str(tmp_path / "d.json")]) == 2
    _one_line_error(capsys, "not a cryoscape run directory")


def test_compare_checks_its_inputs_before_any_work(sim, run, tmp_path, capsys):
    out = tmp_path / "c.json"
    for options, needle in ((["--k", "0"], "--k"), (["--n-query", "0"], "--n-query"),
                            (["--n-volumes", "-1"], "--n-volumes"), (["--k", "300"], "N − 1 = 299")):
        assert main(["compare", str(run), str(run), "-o", str(out), *options]) == 2
        error_before_any_progress(capsys, needle)
    unfitted = RunDirectory.create(tmp_path / "unfitted", method="test", config={"n_particles": 300})
    assert main(["compare", str(run), str(unfitted.path), "-o", str(out)]) == 2
    error_before_any_progress(capsys, "latents")
    assert not out.exists()


def test_compare_volumes_come_from_both_runs_volume_functions(sim, run, tmp_path, monkeypatch):
    import cryoscape.methods.registry as registry

    twin = _run(tmp_path / "twin", sim, RunDirectory.open(run).read_latents()[0], method="twin")
    grid = np.linspace(-1.0, 1.0, 32)
    blob = np.exp(-4.0 * (grid[:, None, None] ** 2 + grid[None, :, None] ** 2 + grid[None, None, :] ** 2))

    def volume(r, z):
        return (blob * (1.0 + 0.1 * float(z[0]))).astype(np.float32)

    monkeypatch.setattr(registry, "volume_function", lambda m: volume if m == "twin" else None)
    out = tmp_path / "c.json"
    assert main(["compare", str(run), str(twin), "-o", str(out), "--n-volumes", "2"]) == 0
    assert json.loads(out.read_text())["volume_fsc_auc_mean"] is None  # run A has no model
    monkeypatch.setattr(registry, "volume_function", lambda m: volume)
    assert main(["compare", str(run), str(twin), "-o", str(out), "--n-volumes", "2", "--force"]) == 0
    assert json.loads(out.read_text())["volume_fsc_auc_mean"] == pytest.approx(1.0, abs=0.05)


def test_compare_latents_is_linear_invariant():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 3))
    overlap, chance, cc = compare_latents(z, z @ np.diag([2.0, 2.0, 2.0]) + 1.0, k=5)
    assert overlap == pytest.approx(1.0) and chance == pytest.approx(5 / 199)
    assert np.allclose(cc, 1.0)

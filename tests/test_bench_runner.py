"""The benchmark runner: results files, references, registry errors and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cryoscape.methods  # noqa: F401  registers the pca volume hook
from cryoscape.bench.runner import (
    METHODS,
    RESULTS_HTML,
    RESULTS_JSON,
    RESULTS_MD,
    check_methods,
    register_method,
    run_benchmark,
)
from cryoscape.cli.main import main
from cryoscape.errors import InputError

N, BOX, ITERATIONS = 300, 24, 2


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    """One tiny adk-1d benchmark of ``pca`` shared by the tests of this module."""
    root = tmp_path_factory.mktemp("bench")
    return run_benchmark("adk-1d", ["pca"], root / "out", cache_dir=root / "cache", n_particles=N, box=BOX,
                         method_options={"pca": {"iterations": ITERATIONS}}, progress=False)


def test_runner_writes_the_three_files(bench) -> None:
    out = bench.out_dir
    assert {p.name for p in bench.files.values()} == {RESULTS_JSON, RESULTS_MD, RESULTS_HTML}
    doc = json.loads((out / RESULTS_JSON).read_text())
    assert doc["dataset"] == "adk-1d" and doc["n_particles"] == N and doc["n_samples"] == 100
    assert [m["name"] for m in doc["methods"]] == ["pca"]
    assert [r["name"] for r in doc["references"]] == ["consensus", "oracle"]
    md = (out / RESULTS_MD).read_text()
    assert "| pca |" in md and "| consensus |" in md and "| oracle |" in md
    html = (out / RESULTS_HTML).read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html and "src=\"http" not in html
    assert (out / "adk-1d" / "pca" / "latents.npy").is_file()


def test_method_scores_are_in_range(bench) -> None:
    pca = bench.methods[0]
    assert 0.0 < pca.per_image.mean < 1.0 and pca.per_image.values.shape == (100,)
    assert 0.0 <= pca.spearman_abs <= 1.0
    # the latent-curve coordinate is scored against the truth, independently of the latents' PC
    from scipy.stats import spearmanr

    curve = np.load(bench.out_dir / "adk-1d" / "pca" / "curve_coordinate.npy")
    truth = np.load(bench.out_dir.parent / "cache" / "adk-1d" / "truth.npz")["coordinate"]
    assert pca.curve_spearman_abs == pytest.approx(abs(spearmanr(curve, truth)[0]), abs=1e-9)
    assert "\\|Spearman\\| (latent curve)" in (bench.out_dir / RESULTS_MD).read_text()
    assert 0.0 <= pca.knn_preservation <= 1.0 and 0.0 < pca.knn_chance < 0.2
    assert pca.wall_s > 0 and pca.outlier_roc_auc is None


def test_sampled_particles_are_evenly_spaced(bench) -> None:
    idx = bench.sample_indices
    assert idx[0] == 0 and idx[-1] == N - 1 and idx.size == 100 and np.all(np.diff(idx) > 0)


def test_references_are_scored(bench) -> None:
    consensus, oracle = bench.references
    assert 0.0 < consensus.per_image.mean < 1.0 and consensus.per_image.n_missing == 0
    assert 0.0 < oracle.per_image.mean < 1.0 and oracle.per_image.values.shape == (100,)
    doc = json.loads((bench.out_dir / RESULTS_JSON).read_text())["references"][1]["oracle"]
    assert doc["unit"] == "frames" and str(doc["half_width"]) in doc["predicted_auc"]
    assert doc["images_read"] <= 3 * N  # the windows slide: each image is read about twice


def test_unknown_method_lists_the_available_ones() -> None:
    with pytest.raises(InputError, match="available: pca"):
        check_methods(["nope"])


def test_unavailable_external_method_is_refused() -> None:
    register_method("external-test", lambda *a, **k: Path("."), "test", available=lambda: "tool is not installed")
    try:
        with pytest.raises(InputError, match="tool is not installed"):
            check_methods(["external-test"])
    finally:
        METHODS.pop("external-test")


def test_cli_unknown_method_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    rc = main(["bench", "--dataset", "adk-1d", "--methods", "nope", "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pca" in err[0] and "nope" in err[0]


def test_cli_refuses_existing_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text("keep me")
    rc = main(["bench", "--dataset", "adk-1d", "--methods", "pca", "-o", str(out), "--cache", str(tmp_path / "c"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--force" in err[0]
    assert (out / "results.json").read_text() == "keep me"


def test_cli_unknown_dataset_is_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["bench", "--dataset", "adk-9d", "--methods", "pca", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "adk-1d" in err[0]

"""The benchmark runner: results files, references, the method table and grid, registry errors and the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryoscape.bench import runner
from cryoscape.bench.method_table import iteration_options, method_volume_function
from cryoscape.bench.report import results_markdown, write_results
from cryoscape.bench.runner import (
    METHODS,
    RESULTS_HTML,
    RESULTS_JSON,
    RESULTS_MD,
    SkippedPair,
    check_methods,
    grid_methods,
    register_method,
    run_benchmark,
)
from cryoscape.cli.main import main
from cryoscape.errors import InputError
from cryoscape.methods.registry import METHODS as REGISTRY
from cryoscape.methods.registry import pair_grid, volume_function

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


# ----------------------------------------------------------------------------- the method table and the grid


def test_every_registry_method_is_benchmarkable_with_its_pair() -> None:
    assert list(METHODS)[:len(REGISTRY)] == list(REGISTRY)
    for name, m in REGISTRY.items():
        assert METHODS[name].pair == (m.representation, m.inference)
        assert METHODS[name].description == m.summary and METHODS[name].unavailable_reason() is None
        assert method_volume_function(name, name) == volume_function(name)
    assert check_methods(["linear-amortised", "pca"]) == ["linear-amortised", "pca"]


def test_run_without_a_volume_function_is_refused() -> None:
    with pytest.raises(InputError, match="no model to generate volumes"):
        method_volume_function("external-test", "external-test")


def test_grid_expands_to_the_runnable_pairs_and_gives_the_others_with_a_reason() -> None:
    names, skipped = grid_methods()
    assert names == [n for _r, _i, n in pair_grid() if n is not None]
    assert [(p.representation, p.inference) for p in skipped] == [(r, i) for r, i, n in pair_grid() if n is None]
    reason = {(p.representation, p.inference): p.reason for p in skipped}[("neural", "em")]
    assert "closed-form" in reason and "\n" not in reason
    assert check_methods(["grid"]) == names
    assert check_methods(["pca", "grid"]) == names  # pca is in the grid once


def test_a_grid_request_records_the_pairs_that_cannot_run() -> None:
    lines: list[str] = []
    names, skipped = runner._checked_request("adk-1d", ["grid"], 10, lines.append)
    assert names == grid_methods()[0] and skipped == grid_methods()[1]
    assert any(line.startswith("pair neural x em:") for line in lines)
    assert runner._checked_request("adk-1d", ["pca"], 10, lines.append)[1] == []


def test_skipped_pairs_are_in_the_results_files(bench, tmp_path: Path) -> None:
    import dataclasses

    res = dataclasses.replace(bench, out_dir=tmp_path / "o", files={},
                              skipped=[SkippedPair("neural", "em", "needs a representation linear in its latent")])
    files = write_results(res)
    doc = json.loads(files["json"].read_text())
    assert doc["skipped_pairs"] == [{"representation": "neural", "inference": "em",
                                     "reason": "needs a representation linear in its latent"}]
    assert "- neural x em: needs a representation linear in its latent" in results_markdown(res)
    assert "neural x em cannot run" in files["html"].read_text()
    assert json.loads((bench.out_dir / RESULTS_JSON).read_text())["skipped_pairs"] == []


def test_iterations_are_epochs_for_runners_counting_epochs() -> None:
    assert iteration_options("pca", 3) == {"iterations": 3}
    assert iteration_options("drgn", 3) == {"epochs": 3}
    assert iteration_options("cryodrgn", 3) == {"iterations": 3}  # the peer maps it to its epochs itself


def test_cli_help_lists_the_registry_methods_with_their_pairs_and_the_peers(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for m in REGISTRY.values():
        assert any(line.split()[:4] == [m.name, m.representation, "x", m.inference] and m.summary in line
                   for line in out.splitlines())
    assert "  grid " in out and "  cryodrgn " in out and "  recovar " in out


def test_registry_methods_are_fitted_through_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from cryoscape.methods.registry import Method

    calls: list[tuple[str, Any, Any, dict[str, Any]]] = []

    def fake_run(self: Method, particles_path: Any, out_dir: Any, **options: Any) -> Any:
        calls.append((self.name, particles_path, out_dir, options))
        return SimpleNamespace(run=SimpleNamespace(path=str(out_dir)))

    monkeypatch.setattr(Method, "run", fake_run)
    dataset = SimpleNamespace(star_path=tmp_path / "particles.star")
    path = METHODS["linear-explicit"].run(dataset, tmp_path / "run", False, epochs=2)
    assert path == tmp_path / "run"
    assert calls == [("linear-explicit", dataset.star_path, tmp_path / "run",
                      {"force": True, "progress": False, "epochs": 2})]

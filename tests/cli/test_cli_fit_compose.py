"""``cryoscape fit compose``: any (representation, inference) pair into a run directory every command reads."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml

from cryoscape.cli.main import main
from cryoscape.methods.registry import METHODS, pair_grid
from _particle_data import two_state_adk
from _helpers import one_line_error

SMALL = ["--set", "dec_hidden=16", "--set", "enc_hidden=16", "--set", "dec_layers=2", "--set", "enc_layers=2",
         "--set", "pe_dim=4", "--batch-size", "16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """48 particles of two AdK conformations, box 16."""
    return two_state_adk(tmp_path_factory.mktemp("compose_tiny") / "sim", 48, seed=1)


def _compose(star: Path, out: Path, representation: str, inference: str, *extra: str) -> int:
    return main(["fit", "compose", str(star), "-o", str(out), "--representation", representation,
                 "--inference", inference, "--no-progress", *extra])


def test_help_lists_every_pair(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "compose", "--help"])
    text = capsys.readouterr().out
    for representation, inference, name in pair_grid():
        assert f"{representation:<12} x {inference:<10} -> {name or 'cannot run'}" in text


def test_a_pair_that_cannot_run_says_why(tiny, tmp_path, capsys) -> None:
    assert _compose(tiny, tmp_path / "r", "neural", "em") == 2
    one_line_error(capsys, "neural", "em", "linear in its latent")
    assert not (tmp_path / "r").exists()


def test_an_option_the_method_lacks_is_refused_before_work(tiny, tmp_path, capsys) -> None:
    assert _compose(tiny, tmp_path / "r", "linear", "em", "--set", "no_such=1") == 2
    one_line_error(capsys, "no option no_such", "spectral_components")
    assert not (tmp_path / "r").exists()
    assert _compose(tiny, tmp_path / "r", "linear", "em", "--set", "broken") == 2
    one_line_error(capsys, "NAME=VALUE")
    assert _compose(tiny, tmp_path / "r", "linear", "em", "--latent-dim", "0") == 2
    one_line_error(capsys, "--latent-dim must be at least 1")
    assert _compose(tiny, tmp_path / "r", "neural", "explicit", "--set", "latent_dim=3") == 2
    one_line_error(capsys, "--set latent_dim", "--latent-dim")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("inference", ["amortised", "explicit"])
def test_linear_by_gradient_writes_a_run_that_volume_and_analyze_read(tiny, tmp_path, capsys, inference) -> None:
    run = tmp_path / "run"
    assert _compose(tiny, run, "linear", inference, "--latent-dim", "2", "--epochs", "2", *SMALL) == 0
    assert "next: cryoscape analyze" in capsys.readouterr().out
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == f"linear-{inference}" == METHODS[f"linear-{inference}"].name
    for name in ("latents.npy", "weights.pt", "metrics.json", "log.txt", "mean.mrc"):
        assert (run / name).is_file(), name
    assert np.load(run / "latents.npy").shape == (48, 2)
    state = torch.load(run / "weights.pt", weights_only=True)
    assert any(tuple(v.shape) == (2, 16, 16, 16) for v in state.values())  # two principal volumes
    rc = main(["volume", str(run), "--z", "1", "-1", "-o", str(tmp_path / "v.mrc")])
    assert rc == 0
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert m.data.shape == (16, 16, 16) and float(m.voxel_size.x) == pytest.approx(8.0)
        assert np.isfinite(m.data).all() and float(np.std(m.data)) > 0
    rc = main(["analyze", str(run), "--kmeans", "2", "--n-points", "2", "--no-progress", "--no-fit-scores"])
    assert rc == 0
    assert len(list((run / "analysis" / "volumes").glob("cluster_*.mrc"))) == 2


def test_linear_by_em_is_the_pca_preset(tiny, tmp_path) -> None:
    composed, preset = tmp_path / "composed", tmp_path / "preset"
    assert _compose(tiny, composed, "linear", "em", "--latent-dim", "2", "--epochs", "3",
                    "--set", "spectral_components=0", "--set", "mask=sphere") == 0
    assert main(["fit", "pca", str(tiny), "-o", str(preset), "--components", "2", "--iterations", "3",
                 "--spectral-components", "0", "--mask", "sphere", "--no-progress"]) == 0
    assert yaml.safe_load((composed / "config.yaml").read_text())["method"] == "pca"
    np.testing.assert_allclose(np.load(composed / "latents.npy"), np.load(preset / "latents.npy"), atol=1e-6)

"""The demo pipeline end to end on a small dataset, and the report it writes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cryoscape.cli.main import main
from _helpers import embedded_pngs as _embedded_pngs


def test_demo_writes_map_and_self_contained_report(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--n-particles", "600", "--box", "32", "--apix", "3.0", "--no-progress",
               "--pca-box", "16", "--pca-iterations", "2", "--pca-components", "2"])
    assert rc == 0
    for name in ("sim/particles.star", "sim/particles.mrcs", "sim/truth.npz", "consensus.mrc",
                 "consensus_half1.mrc", "consensus_half2.mrc", "consensus_fsc.json", "report.html",
                 "run_pca/latents.npy", "run_pca/mean.mrc", "run_pca/component_02.mrc",
                 "run_pca/particles_box16.star", "run_pca/analysis/report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "<html" in html and "http://" not in html and "https://" not in html  # nothing external
    pngs = _embedded_pngs(html)
    assert len(pngs) == 3  # FSC, central slices, particle montage
    for data in pngs:
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.size[0] > 100 and img.size[1] > 100
        assert np.asarray(img).std() > 0  # not a blank picture
    stdout = capsys.readouterr().out
    assert "resolution" in stdout and "|Spearman|" in stdout
    assert "principal volumes (pca)" in html and "run_pca/analysis/report.html" in html


def test_demo_full_trains_drgn_and_links_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--n-particles", "300", "--box", "32", "--apix", "3.0", "--no-progress",
               "--pca-box", "16", "--pca-iterations", "1", "--pca-components", "2", "--full", "--drgn-epochs", "1"])
    assert rc == 0
    for name in ("run_drgn/latents.npy", "run_drgn/weights.pt", "run_drgn/analysis/report.html"):
        assert (out / name).is_file(), name
    assert np.load(out / "run_drgn/latents.npy").shape == (300, 8)
    html = (out / "report.html").read_text()
    assert "neural hyper-molecule (drgn)" in html and "run_drgn/analysis/report.html" in html
    assert "drgn run:" in capsys.readouterr().out


def test_demo_refuses_a_bad_pca_box_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--n-particles", "100", "--box", "32", "--pca-box", "15"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pca-box" in err[0]
    assert not out.exists()


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.html").write_text("keep me")
    rc = main(["demo", "-o", str(out), "--n-particles", "100", "--box", "32", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert (out / "report.html").read_text() == "keep me"


@pytest.mark.parametrize("command", ["demo", "simulate", "info", "reconstruct", "fsc", "downsample",
                                     "analyze", "select", "traverse", "compare", "fit", "volume",
                                     "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 200

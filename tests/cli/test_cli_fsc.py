"""``cryoscape fsc``: resolution of two maps, curve output, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.io.mrc import write_mrc


def _blobs(D: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((D, D, D), np.float32)
    for p in rng.normal(0, D / 8, (12, 3)):
        vol += np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / 4.0).astype(np.float32)
    return vol


def test_identical_maps_give_fsc_one(tmp_path, capsys):
    vol = _blobs(24, 0)
    write_mrc(tmp_path / "a.mrc", vol, 2.0)
    write_mrc(tmp_path / "b.mrc", vol, 2.0)
    out = tmp_path / "fsc.json"
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resolution at FSC 0.143 (unmasked): 4.00 Å" in text
    doc = json.loads(out.read_text())
    assert np.allclose(doc["curves"]["fsc_unmasked"], 1.0)
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_noisy_maps_plot_mask_and_threshold(tmp_path, capsys):
    rng = np.random.default_rng(1)
    vol = _blobs(32, 2)
    a = vol + 0.05 * rng.standard_normal(vol.shape).astype(np.float32)
    b = vol + 0.05 * rng.standard_normal(vol.shape).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", a, 1.5)
    write_mrc(tmp_path / "b.mrc", b, 1.5)
    mask = np.zeros_like(vol)
    mask[6:26, 6:26, 6:26] = 1.0
    write_mrc(tmp_path / "m.mrc", mask, 1.5)
    png = tmp_path / "fsc.png"
    args = ["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "--mask", str(tmp_path / "m.mrc"), "-o", str(png)]
    assert main(args + ["--threshold", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "FSC 0.5 (unmasked)" in text and "FSC 0.5 (masked (corrected))" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    txt = tmp_path / "fsc.txt"
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc"), "-o", str(txt)]) == 0
    assert txt.read_text().splitlines()[0] == "shell,frequency_invA,resolution_A,fsc_unmasked"


@pytest.mark.parametrize(
    "second, apix, message",
    [
        (16, 2.0, "resample one map to the other's box"),
        (24, 3.0, "voxel size"),
    ],
)
def test_mismatched_maps_give_one_line_error(tmp_path, capsys, second, apix, message):
    write_mrc(tmp_path / "a.mrc", _blobs(24, 0), 2.0)
    write_mrc(tmp_path / "b.mrc", _blobs(second, 0), apix)
    assert main(["fsc", str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cryoscape: error:") and message in err and "\n" not in err

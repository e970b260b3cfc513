"""``cryoscape fit classes`` end to end on a tiny two-state AdK set, the run's files, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoscape.cli.main import main
from cryoscape.io.star import read_star, write_star
from cryoscape.methods.registry import get_method
from cryoscape.validate.clustering import adjusted_rand_index
from _helpers import one_line_error


N, BOX, APIX = 160, 24, 4.0


@pytest.fixture(scope="module")
def star(tmp_path_factory) -> Path:
    """The two AdK end states (frames 0 and 97), 160 images of 24² at 4 Å/px, SNR 0.5."""
    from cryoscape.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("classes") / "sim"
    simulate_dataset("adk", n_particles=N, box=BOX, apix=APIX, snr=0.5, conformations="0,97", out_dir=out,
                     progress=False, seed=2)
    return out / "particles.star"


@pytest.fixture(scope="module")
def run(star, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classes_run") / "run"
    assert main(["fit", "classes", str(star), "--classes", "2", "-o", str(out), "--iterations", "8",
                 "--no-progress"]) == 0
    return out


def test_the_run_holds_posteriors_labels_and_a_map_per_class(run, star) -> None:
    post = np.load(run / "latents.npy")
    assert post.shape == (N, 2) and np.allclose(post.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(np.load(run / "class_posteriors.npy"), post)
    labels = np.load(run / "classes.npy")
    assert np.array_equal(labels, post.argmax(1))
    truth = np.load(star.parent / "truth.npz")["conformation"]
    assert adjusted_rand_index(labels, truth) >= 0.9
    for k in (1, 2):
        for suffix in ("", "_half1", "_half2"):
            with mrcfile.open(run / f"class_{k:02d}{suffix}.mrc") as m:
                assert m.data.shape == (BOX, BOX, BOX) and float(m.voxel_size.x) == pytest.approx(APIX)
        assert (run / f"class_{k:02d}_fsc.txt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert sum(metrics["class_sizes"]) == N and len(metrics["resolution_A"]) == 2
    assert metrics["iterations"][0]["iteration"] == 0


def test_volume_at_a_one_hot_latent_is_that_class_map(run) -> None:
    from cryoscape.io.run_dir import RunDirectory

    vol = get_method("classes").volume(RunDirectory.open(run), np.array([0.0, 1.0]))
    with mrcfile.open(run / "class_02.mrc") as m:
        assert np.allclose(vol, m.data, atol=1e-5)


def test_bad_inputs_are_one_line_errors(star, tmp_path, capsys) -> None:
    assert main(["fit", "classes", str(star), "--classes", "100", "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    one_line_error(capsys, f"{N} particles for 100 classes", "fewer --classes")
    assert main(["fit", "classes", str(star), "--classes", "1", "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    one_line_error(capsys, "at least 2 classes")
    data = read_star(star)
    unposed = data.particles.drop(columns=[c for c in data.particles.columns if c.startswith("rlnAngle")])
    bare = write_star(star.parent / "unposed.star", data.optics, pd.DataFrame(unposed), force=True)
    assert main(["fit", "classes", str(bare), "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    one_line_error(capsys, "no particle orientations", "fit classes")
    assert not (tmp_path / "r").exists()


def test_an_existing_run_is_kept_without_force(run, star, capsys) -> None:
    before = (run / "classes.npy").read_bytes()
    assert main(["fit", "classes", str(star), "--classes", "2", "-o", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "not empty", "--force")
    assert (run / "classes.npy").read_bytes() == before

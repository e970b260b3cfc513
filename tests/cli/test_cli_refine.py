"""``cryoscape refine`` end to end on a tiny clean AdK set from a low-passed true map, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.geometry.rotations import geodesic_distance_deg
from cryoscape.io.mrc import write_mrc
from cryoscape.io.star import read_star
from cryoscape.particles import ParticleSet
from _helpers import one_line_error

N, BOX, APIX = 160, 24, 4.0


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """Clean images of one AdK state, the true map written as the initial map, the true rotations."""
    from cryoscape.simulate import ground_truth_volume, simulate_dataset

    out = tmp_path_factory.mktemp("refine") / "sim"
    simulate_dataset("adk", n_particles=N, box=BOX, apix=APIX, snr=float("inf"), conformations="0", out_dir=out,
                     progress=False, seed=3)
    vol, _ = ground_truth_volume(out / "truth.npz", 0)
    initial = write_mrc(out / "truth_map.mrc", vol, APIX)
    return out / "particles.star", initial, np.load(out / "truth.npz")["rotations"]


@pytest.fixture(scope="module")
def refined(data, tmp_path_factory) -> Path:
    star, initial, _ = data
    out = tmp_path_factory.mktemp("refine_out") / "refine"
    assert main(["refine", str(star), "--initial", str(initial), "-o", str(out), "--global-iterations", "2",
                 "--local-steps", "7.5,3.75,1.875", "--no-progress"]) == 0
    return out


def test_poses_are_found_from_a_30A_start(refined, data) -> None:
    _, _, true_R = data
    ps = ParticleSet.from_file(refined / "particles.star")
    err = geodesic_distance_deg(ps.rotations, true_R)
    assert np.median(err) < 3.0, np.median(err)
    table = read_star(refined / "particles.star").particles
    assert {"rlnMaxValueProbDistribution", "rlnRandomSubset", "rlnDefocusU", "rlnImageName"} <= set(table.columns)
    assert set(table["rlnRandomSubset"]) <= {1, 2}
    for name in ("map.mrc", "map_half1.mrc", "map_half2.mrc", "map_fsc.txt", "map_fsc.png", "log.txt"):
        assert (refined / name).is_file(), name
    report = json.loads((refined / "refine.json").read_text())
    assert [it["search"] for it in report["iterations"]] == ["global", "global", "local", "local", "local"]


def test_bad_inputs_are_one_line_errors(data, refined, tmp_path, capsys) -> None:
    star, initial, _ = data
    assert main(["refine", str(star), "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    one_line_error(capsys, "--initial MAP", "ab initio")
    other = write_mrc(tmp_path / "small.mrc", np.zeros((16, 16, 16), np.float32), APIX)
    assert main(["refine", str(star), "--initial", str(other), "-o", str(tmp_path / "r"), "--no-progress"]) == 2
    one_line_error(capsys, "16x16x16", "24³", "resample")
    before = (refined / "particles.star").read_bytes()
    assert main(["refine", str(star), "--initial", str(initial), "-o", str(refined), "--no-progress"]) == 2
    one_line_error(capsys, "already holds", "--force")
    assert (refined / "particles.star").read_bytes() == before
    assert not (tmp_path / "r").exists()

"""``cryoscape fit nma`` end to end on a tiny simulated AdK set, ``volume --pdb``, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest

from cryoscape.cli.main import main
from cryoscape.io.pdb import write_pdb
from cryoscape.simulate import simulate_dataset
from _helpers import one_line_error

N, BOX, APIX = 48, 32, 4.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("nma") / "sim"
    return simulate_dataset("adk", n_particles=N, box=BOX, apix=APIX, snr=0.5, conformations="0,97",
                            out_dir=out, progress=False, seed=0)


def _model(sim, path: Path, shift_A: float = 0.0) -> Path:
    t = sim.truth
    xyz = np.asarray(t["frames_A"][0], dtype=np.float64) + (BOX // 2) * APIX + shift_A
    return write_pdb(path, xyz, [str(e) for e in t["elements"]], t["resid"], [str(n) for n in t["atom_names"]])


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("nma_run")
    model = _model(sim, tmp / "closed.pdb")
    out = tmp / "run"
    rc = main(["fit", "nma", str(sim.star_path), "--model", str(model), "-o", str(out), "--modes", "3",
               "--epochs", "1", "--latent-refine-steps", "1", "--batch-size", "16", "--no-progress"])
    assert rc == 0
    return out


def test_fit_nma_writes_the_run(run):
    for name in ("config.yaml", "latents.npy", "latents_var.npy", "weights.pt", "metrics.json", "mean.mrc",
                 "modes.npz", "log.txt"):
        assert (run / name).is_file(), name
    z = np.load(run / "latents.npy")
    assert z.shape == (N, 3) and np.all(np.isfinite(z))
    modes = np.load(run / "modes.npz")
    assert modes["eigenvalues"].shape == (3,) and np.all(np.diff(modes["eigenvalues"]) >= 0)


def test_volume_writes_the_map_and_the_moved_model(run, tmp_path):
    rc = main(["volume", str(run), "--z", "2", "0", "0", "-o", str(tmp_path / "v.mrc"), "--pdb"])
    assert rc == 0
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert m.data.shape == (BOX,) * 3 and float(m.voxel_size.x) == pytest.approx(APIX)
    moved = gemmi.read_structure(str(tmp_path / "v.pdb"))
    rest = gemmi.read_structure(str(run.parent / "closed.pdb"))
    a = np.array([[at.pos.x, at.pos.y, at.pos.z] for res in moved[0][0] for at in res])
    b = np.array([[at.pos.x, at.pos.y, at.pos.z] for res in rest[0][0] for at in res])
    assert a.shape == b.shape
    shift = np.sqrt(((a - b) ** 2).sum(1).mean())
    assert 0.5 < shift < 20.0  # the softest mode at amplitude 2 moves the model by a few Å RMS


def test_model_outside_the_box_is_refused(sim, tmp_path, capsys):
    model = _model(sim, tmp_path / "far.pdb", shift_A=500.0)
    rc = main(["fit", "nma", str(sim.star_path), "--model", str(model), "-o", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "outside the", "box")
    assert not (tmp_path / "r").exists()


def test_unreadable_model_is_refused(sim, tmp_path, capsys):
    bad = tmp_path / "bad.pdb"
    bad.write_text("this is not a model\n")
    rc = main(["fit", "nma", str(sim.star_path), "--model", str(bad), "-o", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "bad.pdb")


def test_pdb_does_not_go_with_a_local_reconstruction(run, tmp_path, capsys):
    rc = main(["volume", str(run), "--near-particle", "0", "-o", str(tmp_path / "l.mrc"), "--pdb"])
    assert rc == 2
    one_line_error(capsys, "--pdb", "--near-particle")
    assert not (tmp_path / "l.mrc").exists()


def test_pdb_needs_an_nma_run(sim, tmp_path, capsys):
    from cryoscape.io.run_dir import RunDirectory

    other = RunDirectory.create(tmp_path / "pca_run", "pca", {"particles": str(sim.star_path), "datadir": None,
                                                              "n_particles": N, "box": BOX, "apix": APIX})
    rc = main(["volume", str(other.path), "--z", "0", "0", "-o", str(tmp_path / "v.mrc"), "--pdb"])
    assert rc == 2
    one_line_error(capsys, "'pca' run", "--pdb needs a run of fit nma")
    assert not (tmp_path / "v.mrc").exists() and not (tmp_path / "v.pdb").exists()


def test_modes_file_holds_the_modes(run):
    modes = np.load(run / "modes.npz")
    assert modes["modes_A"].shape == (3, modes["nodes"].size, 3)
    # scaled to their spreads: RMS displacement per node equals the spread
    rms = np.sqrt((modes["modes_A"] ** 2).sum(-1).mean(-1))
    assert np.allclose(rms, modes["spreads_A"], rtol=1e-4)

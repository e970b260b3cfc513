"""Training the neural hyper-molecule: it learns, resumes exactly, refuses pickles, writes a run, CLI errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch
import yaml

from cryoscape.cli.main import main
from cryoscape.errors import InputError
from cryoscape.inference.vae import ParticleBatches
from cryoscape.simulate import simulate_dataset
from _helpers import one_line_error

TINY = {"dec_hidden": 16, "enc_hidden": 16, "dec_layers": 2, "enc_layers": 2, "pe_dim": 4, "batch_size": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """48 particles of two AdK conformations, box 16."""
    out = tmp_path_factory.mktemp("drgn_tiny") / "sim"
    simulate_dataset("adk", n_particles=48, box=16, apix=8.0, snr=1.0, conformations="0,97", out_dir=out,
                     progress=False, seed=1)
    return out / "particles.star"


@pytest.fixture(scope="module")
def two_states(tmp_path_factory):
    out = tmp_path_factory.mktemp("drgn_two") / "sim"
    return simulate_dataset("adk", n_particles=256, box=32, apix=4.0, snr=2.0, conformations="0,97", out_dir=out,
                            progress=False, seed=0)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights.pt", weights_only=True)


def _fit(star: Path, out: Path, **kw):
    from cryoscape.methods.drgn import run_drgn

    opts = {**TINY, **kw}
    return run_drgn(star, out, opts.pop("zdim", 2), opts.pop("epochs", 2), opts.pop("latents", "amortised"),
                    progress=False, **opts)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("latents", ["amortised", "explicit"])
def test_latents_separate_two_conformations(two_states, tmp_path, latents) -> None:
    kw = {"latent_lr": 0.3} if latents == "explicit" else {"beta": 0.1}
    out = _fit(two_states.star_path, tmp_path / latents, zdim=1, epochs=10, latents=latents, dec_hidden=64,
               enc_hidden=64, pe_dim=8, batch_size=32, lr=3e-3, **kw)
    label = two_states.truth["conformation"].astype(np.float64)
    z = out.latents[:, 0]
    assert abs(np.corrcoef(z, label)[0, 1]) > 0.8
    assert out.history["loss"][-1] < out.history["loss"][0]
    assert np.all(out.latents_var > 0) and np.all(np.isfinite(out.latents_var))


# ------------------------------------------------------------------ run directory and model rebuild
def test_run_directory_rebuilds_the_model(tiny, tmp_path) -> None:
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.drgn import build_model, drgn_volume

    out = _fit(tiny, tmp_path / "run", refine_poses=True, refine_start_epoch=1)
    run = tmp_path / "run"
    for name in ("config.yaml", "latents.npy", "latents_var.npy", "weights.pt", "metrics.json", "mean.mrc",
                 "log.txt", "rotation_corrections.npy", "shift_corrections_A.npy"):
        assert (run / name).is_file(), name
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["epoch_0001.pt", "epoch_0002.pt"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == "drgn" and cfg["params"]["norm_scale"] > 0 and cfg["params"]["base"] == "consensus"
    rd = RunDirectory.open(run)
    model = build_model(rd.params, rd.box, rd.n_particles)
    model.load_state_dict(_weights(run))
    for (k, a), b in zip(model.state_dict().items(), out.model.state_dict().values()):
        assert torch.equal(a, b.cpu()), k
    assert np.load(run / "rotation_corrections.npy").shape == (48, 3)
    assert np.abs(np.load(run / "rotation_corrections.npy")).max() > 0  # refined in epoch 2
    mean, var = rd.read_latents()[:2]
    assert mean.shape == var.shape == (48, 2)
    vol = drgn_volume(rd, mean.mean(0))
    with mrcfile.open(run / "mean.mrc") as m:
        np.testing.assert_allclose(m.data, vol, rtol=1e-5, atol=1e-5 * np.abs(vol).max())
        assert float(m.voxel_size.x) == pytest.approx(8.0)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("latents", ["amortised", "explicit"])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny, tmp_path, monkeypatch, latents) -> None:
    full = tmp_path / "full"
    _fit(tiny, full, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1)
    cut = tmp_path / "cut"
    calls = {"n": 0}
    original = ParticleBatches.batch

    def interrupted(self, idx):
        calls["n"] += 1
        if calls["n"] == 5:  # the 2nd batch of epoch 2 (3 batches per epoch)
            raise KeyboardInterrupt
        return original(self, idx)

    monkeypatch.setattr(ParticleBatches, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny, cut, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1)
    monkeypatch.setattr(ParticleBatches, "batch", original)
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    assert not (cut / "weights.pt").exists()
    res = _fit(tiny, cut, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1, resume=True)
    assert res.epochs_run == 2
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(np.load(full / "latents.npy"), np.load(cut / "latents.npy"))
    assert "resumed" in (cut / "log.txt").read_text()


def test_resume_with_other_settings_is_refused(tiny, tmp_path) -> None:
    _fit(tiny, tmp_path / "r", epochs=1)
    with pytest.raises(InputError, match="zdim") as exc:
        _fit(tiny, tmp_path / "r", epochs=2, zdim=3, resume=True)
    assert "\n" not in str(exc.value)
    more = _fit(tiny, tmp_path / "r", epochs=2, resume=True)  # epochs may grow
    assert more.epochs_run == 1 and len(more.history["loss"]) == 2


# ------------------------------------------------------------------ pickles are never executed
class _Payload:
    """Unpickling this creates the marker folder (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _evil(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a cryoDRGN-style pickled checkpoint with a payload
        pickle.dump({"epoch": 3, "model_state_dict": {}, "payload": _Payload(marker)}, fh)
    torch.save({"epoch": 3, "payload": _Payload(marker)}, path.with_suffix(".pt"))
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoints_are_refused_unread(tiny, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    _fit(tiny, run, epochs=1)
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "weights.9.pkl", marker)
    for given in (evil, evil.with_suffix(".pt")):
        rc = main(["fit", "drgn", str(tiny), "-o", str(run), "--zdim", "2", "--epochs", "2", "--resume", str(given),
                   "--no-progress"])
        assert rc == 2
        one_line_error(capsys, str(given), "refused")
        assert not marker.exists()
    # the same file placed as the run's latest checkpoint
    (run / "checkpoints" / "epoch_0005.pt").write_bytes(evil.with_suffix(".pt").read_bytes())
    rc = main(["fit", "drgn", str(tiny), "-o", str(run), "--zdim", "2", "--epochs", "6", "--resume", "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "epoch_0005.pt", "refused")
    assert not marker.exists()


# ------------------------------------------------------------------ command line
def test_cli_fit_and_volumes_from_a_z_file(tiny, tmp_path, capsys) -> None:
    run = tmp_path / "cli_run"
    rc = main(["fit", "drgn", str(tiny), "-o", str(run), "--zdim", "2", "--epochs", "1", "--latents", "explicit",
               "--dec-hidden", "16", "--dec-layers", "2", "--pe-dim", "4", "--batch-size", "16", "--no-progress"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    z = np.array([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])
    np.savetxt(tmp_path / "z.txt", z)
    rc = main(["volume", str(run), "--z-file", str(tmp_path / "z.txt"), "-o", str(tmp_path / "vols")])
    assert rc == 0
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.drgn import drgn_volume

    rd = RunDirectory.open(run)
    for j, row in enumerate(z):
        with mrcfile.open(tmp_path / "vols" / f"vol_{j:03d}.mrc") as m:
            assert m.data.shape == (16, 16, 16) and float(m.voxel_size.x) == pytest.approx(8.0)
            np.testing.assert_allclose(m.data, drgn_volume(rd, row), rtol=1e-6, atol=1e-6)
    with mrcfile.open(tmp_path / "vols" / "vol_000.mrc") as a, mrcfile.open(tmp_path / "vols" / "vol_001.mrc") as b:
        assert not np.allclose(a.data, b.data)  # the latent changes the volume
    rc = main(["volume", str(run), "--z", "1", "2", "3", "-o", str(tmp_path / "bad.mrc")])
    assert rc == 2
    one_line_error(capsys, "2-D latents")


def test_cli_refuses_particles_without_poses(tiny, tmp_path, capsys) -> None:
    star = starfile.read(tiny)
    parts = star["particles"].drop(columns=[c for c in star["particles"].columns if c.startswith("rlnAngle")])
    star["particles"] = parts
    bare = tiny.parent / "no_poses.star"
    starfile.write(star, bare, overwrite=True)
    rc = main(["fit", "drgn", str(bare), "-o", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "orientations", "fit drgn")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--zdim", "0"], "--zdim"),
    (["--max-freq", "1.5"], "--max-freq"),
    (["--epochs", "0"], "--epochs"),
    (["--device", "cuda"], "cuda"),
    (["--beta", "-1"], "--beta"),
])
def test_cli_errors_are_one_line(tiny, tmp_path, capsys, argv, needle) -> None:
    if argv[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    box_ok = ["--epochs", "1"] if "--epochs" not in argv else []
    rc = main(["fit", "drgn", str(tiny), "-o", str(tmp_path / "r"), "--no-progress", *box_ok, *argv])
    assert rc == 2
    one_line_error(capsys, needle)


def test_cli_refuses_an_existing_run_without_force(tiny, tmp_path, capsys) -> None:
    run = tmp_path / "r"
    _fit(tiny, run, epochs=1)
    rc = main(["fit", "drgn", str(tiny), "-o", str(run), "--epochs", "1", "--no-progress"])
    assert rc == 2
    one_line_error(capsys, "--force")

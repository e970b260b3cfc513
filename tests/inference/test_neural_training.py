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
from _particle_data import two_state_adk

TINY = {"dec_hidden": 16, "enc_hidden": 16, "dec_layers": 2, "enc_layers": 2, "pe_dim": 4, "batch_size": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """48 particles of two AdK conformations, box 16."""
    return two_state_adk(tmp_path_factory.mktemp("drgn_tiny") / "sim", 48, seed=1)


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
    return run_drgn(star, out, opts.pop("latent_dim", 2), opts.pop("epochs", 2), opts.pop("latents", "amortised"),
                    progress=False, **opts)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("latents", ["amortised", "explicit", "explicit-warmup"])
def test_latents_separate_two_conformations(two_states, tmp_path, latents) -> None:
    kw = {"amortised": {"beta": 0.1}, "explicit": {"latent_lr": 0.3},
          "explicit-warmup": {"latent_lr": 0.3, "warmup_epochs": 5}}[latents]
    out = _fit(two_states.star_path, tmp_path / latents, latent_dim=1, epochs=10, latents=latents.split("-")[0],
               dec_hidden=64, enc_hidden=64, pe_dim=8, batch_size=32, lr=3e-3, **kw)
    label = two_states.truth["conformation"].astype(np.float64)
    z = out.latents[:, 0]
    assert abs(np.corrcoef(z, label)[0, 1]) > 0.8
    assert out.history["loss"][-1] < out.history["loss"][0]
    assert np.all(out.latents_var > 0) and np.all(np.isfinite(out.latents_var))


def test_warmup_starts_the_table_at_the_encoder_means(tiny, tmp_path) -> None:
    """After the amortised warm-up epoch the table holds the encoder's means; one epoch of
    Adam (first step per row: at most ``latent_lr`` per coordinate) then moves each row little."""
    from cryoscape.inference.vae import _encoder_latents, fit_points
    from cryoscape.io.run_dir import RunDirectory
    from cryoscape.methods.drgn import _load_particles, settings_from_params, build_model

    lr = 0.01
    out = _fit(tiny, tmp_path / "w", epochs=2, latents="explicit", warmup_epochs=1, latent_lr=lr,
               latent_refine_steps=0)
    rd = RunDirectory.open(tmp_path / "w")
    after_warmup = build_model(rd.params, rd.box, rd.n_particles)
    state = rd.load_checkpoint(tmp_path / "w" / "checkpoints" / "epoch_0001.pt")
    after_warmup.load_state_dict(state["model"])
    np.testing.assert_array_equal(after_warmup.latents.weight.detach().numpy(),
                                  build_model(rd.params, rd.box, rd.n_particles).latents.weight.detach().numpy())
    s = settings_from_params(rd.params)
    data = ParticleBatches(_load_particles(tiny, None, s), fit_points(rd.box, s.max_freq, s.encoder_max_freq),
                           rd.params["norm_scale"], s.use_ctf, s.invert, s.encoder_phase_flip, "cpu",
                           encoder_residual=s.encoder_residual)
    mu, _ = _encoder_latents(after_warmup, data, s.train_settings(), progress=False)
    moved = np.abs(out.latents - mu)
    assert moved.max() <= lr * 1.01
    assert moved.max() > 0.5 * lr  # the table was trained in epoch 2
    assert np.abs(mu - after_warmup.latents.weight.detach().numpy()).max() > 10 * lr  # not the random start
    assert "warm-up" in (tmp_path / "w" / "log.txt").read_text()


def _tiny_model_and_batch(star: Path, seed: int = 0):
    """A small explicit model with a non-zero output layer (so ``z`` matters) and one batch of 16."""
    from cryoscape.inference.vae import LatentModel, fit_points
    from cryoscape.methods.drgn import _load_particles
    from cryoscape.methods.drgn import DrgnSettings
    from cryoscape.models.neural import build_decoder

    torch.manual_seed(seed)
    s = DrgnSettings(latent_dim=3, latents="explicit", base="none", dec_hidden=16, dec_layers=2, pe_dim=4, batch_size=16,
                     beta=0.3)
    ps = _load_particles(star, None, s)
    dec = build_decoder(s.decoder_spec(int(ps.box)))
    with torch.no_grad():
        dec.output.weight.normal_(0, 0.3)
    model = LatentModel(dec, None, len(ps), init_std=1.0)
    data = ParticleBatches(ps, fit_points(int(ps.box), 0.8, 0.5), 1000.0, True, False, False, "cpu")
    return model, data, data.batch(np.arange(16)), s.train_settings()


def test_gauss_newton_matrix_matches_an_autograd_jacobian(tiny) -> None:
    from cryoscape.inference.vae import _gauss_newton_hessian

    model, data, batch, s = _tiny_model_and_batch(tiny)
    z = model.latents(batch.idx).detach()
    H = _gauss_newton_hessian(model, data, batch, z, s.beta, False)
    for b in (0, 7):
        def pred(zb, b=b):
            out = model.decoder.slice_half(batch.R[b:b + 1], zb[None], points=data.fit_idx)[0]
            out = out * data.phase(batch.shifts_A[b:b + 1])[0] * batch.ctf[b]
            return torch.view_as_real(out)  # [P, 2]
        J = torch.autograd.functional.jacobian(pred, z[b].double().float())  # [P, 2, d]
        ref = torch.einsum("pri,prj,p->ij", J.double(), J.double(), data.weights.double()) + s.beta * torch.eye(3)
        torch.testing.assert_close(H[b].double(), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


def test_refine_latents_lowers_every_objective_and_reaches_a_stationary_point(tiny) -> None:
    from cryoscape.inference.vae import _image_objective, refine_latents

    model, data, batch, s = _tiny_model_and_batch(tiny)
    s.batch_size = 16

    def state():
        z = model.latents(batch.idx).detach().clone().requires_grad_(True)
        f = _image_objective(model, data, batch, z, s.beta, False)
        g, = torch.autograd.grad(f.sum(), z)
        return z.detach(), f.detach(), g.norm(dim=-1)

    z0, f0, g0 = state()
    acc = refine_latents(model, data, s, 8, progress=False)
    z1, f1, g1 = state()
    assert acc.shape == (8,) and acc[0] > 0.5
    assert torch.all(f1 <= f0) and torch.any(f1 < f0)
    assert not torch.equal(z0, z1)  # the table itself was written
    assert float(g1.median()) < 0.05 * float(g0.median())  # Newton-like convergence, not a few small moves
    untouched = model.latents.weight[16:]
    assert refine_latents(model, data, s, 0, progress=False).shape == (0,)
    assert torch.equal(model.latents.weight[16:], untouched)


def test_polished_amortised_latents_start_at_the_encoder_and_leave_the_model_alone(tiny) -> None:
    from cryoscape.inference.vae import LatentModel, _encoder_latents, _image_objective, polished_latents
    from cryoscape.models.encoder import MLPEncoder

    explicit, data, batch, s = _tiny_model_and_batch(tiny)
    torch.manual_seed(1)
    model = LatentModel(explicit.decoder, MLPEncoder(int(data.enc_idx.numel()), 3, 16, 2), len(data))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mu, _ = _encoder_latents(model, data, s, progress=False)
    mean, var, acc = polished_latents(model, data, s, 3, progress=False)
    assert model.latents is None and mean.shape == var.shape == mu.shape and acc.shape == (3,)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        f_mu = _image_objective(model, data, batch, torch.as_tensor(mu[:16]), s.beta, False)
        f_pol = _image_objective(model, data, batch, torch.as_tensor(mean[:16]), s.beta, False)
    assert torch.all(f_pol <= f_mu) and torch.any(f_pol < f_mu)
    assert np.all(var > 0) and np.all(np.isfinite(var))


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
    m = rd.read_metrics()
    assert len(m["loss"]) == 2 and m["train_s"] > 0 and m["latents_s"] > 0
    assert m["elapsed_s"] == pytest.approx(m["train_s"] + m["latents_s"], rel=1e-6)
    vol = drgn_volume(rd, mean.mean(0))
    with mrcfile.open(run / "mean.mrc") as m:
        np.testing.assert_allclose(m.data, vol, rtol=1e-5, atol=1e-5 * np.abs(vol).max())
        assert float(m.voxel_size.x) == pytest.approx(8.0)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("latents", ["amortised", "explicit", "explicit-warmup"])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny, tmp_path, monkeypatch, latents) -> None:
    # explicit-warmup: the switch to the table (start of epoch 2) happens after the resume
    warm = {"warmup_epochs": 1} if latents == "explicit-warmup" else {}
    latents = latents.split("-")[0]
    full = tmp_path / "full"
    _fit(tiny, full, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1, **warm)
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
        _fit(tiny, cut, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1, **warm)
    monkeypatch.setattr(ParticleBatches, "batch", original)
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["epoch_0001.pt"]
    assert not (cut / "weights.pt").exists()
    res = _fit(tiny, cut, epochs=3, latents=latents, refine_poses=True, refine_start_epoch=1, resume=True, **warm)
    assert res.epochs_run == 2
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(np.load(full / "latents.npy"), np.load(cut / "latents.npy"))
    assert "resumed" in (cut / "log.txt").read_text()


def test_resume_with_other_settings_is_refused(tiny, tmp_path) -> None:
    _fit(tiny, tmp_path / "r", epochs=1)
    with pytest.raises(InputError, match="latent_dim") as exc:
        _fit(tiny, tmp_path / "r", epochs=2, latent_dim=3, resume=True)
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
    (["--latents", "explicit", "--warmup-epochs", "1"], "--warmup-epochs"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--warmup-epochs", "2", "--epochs", "5"], "--warmup-epochs"),  # amortised latents
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

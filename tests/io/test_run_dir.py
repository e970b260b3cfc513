"""Run directory: config round trip, force/resume, latents, weights, checkpoints, RNG, safety."""

from __future__ import annotations

import json
import pathlib
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cryoscape.analysis.run_particles import run_particles
from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.mrc import write_mrc
from cryoscape.io.run_dir import RunDirectory, capture_rng_state, restore_rng_state, to_plain
from cryoscape.io.star import write_star

N, D, APIX = 6, 8, 2.5


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _particles(folder: Path) -> Path:
    """A tiny RELION 3.1 STAR with N images of D² in one stack."""
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / "stack.mrcs", np.zeros((N, D, D), np.float32), APIX)
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@stack.mrcs" for i in range(N)], "rlnOpticsGroup": [1] * N})
    optics = pd.DataFrame(
        {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [APIX], "rlnImageSize": [D],
         "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
         "rlnImageDimensionality": [2]}
    )
    return write_star(folder / "particles.star", optics, parts)


def _config(**extra: object) -> dict:
    return {"n_particles": N, "box": D, "apix": APIX, "n_components": 3, "lr": 1e-3, "epochs": 5, **extra}


def _create(tmp_path: Path, **kw: object) -> RunDirectory:
    return RunDirectory.create(tmp_path / "run", "pca", _config(), **kw)


# ----------------------------------------------------------------- config, create, open


def test_create_open_round_trip(tmp_path: Path) -> None:
    star = _particles(tmp_path / "data")
    run = RunDirectory.create(tmp_path / "run", "pca", _config(particles=star, datadir=tmp_path / "data"))
    again = RunDirectory.open(tmp_path / "run")
    assert again.config == run.config
    assert (again.method, again.n_particles, again.box, again.apix) == ("pca", N, D, APIX)
    assert again.params == {"n_components": 3, "lr": 1e-3, "epochs": 5}
    cfg = again.config
    assert cfg["data"]["particles"] == str(star.resolve())
    assert cfg["data"]["particles_relative"] == "../data/particles.star"
    assert cfg["cryoscape_version"]
    assert "started pca run" in (tmp_path / "run" / "log.txt").read_text()


def test_open_refuses_a_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        RunDirectory.open(tmp_path)
    msg = _one_line(exc)
    assert "is not a cryoscape run directory (no config.yaml)" in msg and "cryoscape fit" in msg
    assert not RunDirectory.is_run_directory(tmp_path)


def test_config_with_numpy_values_is_plain_yaml(tmp_path: Path) -> None:
    cfg = _config(
        n_particles=np.int64(N), apix=np.float32(APIX), betas=(np.float64(0.9), 0.999),
        shape=np.array([2, 3]), mask=Path("/tmp/mask.mrc"), flag=np.bool_(True), nested={"k": np.arange(2)},
    )
    RunDirectory.create(tmp_path / "run", "vae", cfg)
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "!!" not in text  # no python/numpy tags
    loaded = yaml.safe_load(text)
    params = loaded["params"]
    assert params["betas"] == [0.9, 0.999] and params["shape"] == [2, 3] and params["flag"] is True
    assert params["mask"] == "/tmp/mask.mrc" and params["nested"] == {"k": [0, 1]}
    assert loaded["data"]["n_particles"] == N and loaded["data"]["apix"] == pytest.approx(APIX)
    with pytest.raises(TypeError, match="config.obj"):
        to_plain({"obj": object()})


# ----------------------------------------------------------------- force and resume


def test_existing_run_is_refused_without_force_or_resume(tmp_path: Path) -> None:
    _create(tmp_path)
    with pytest.raises(OutputExistsError) as exc:
        _create(tmp_path)
    assert "--resume" in _one_line(exc) and "--force" in str(exc.value)
    with pytest.raises(InputError) as exc:
        _create(tmp_path, force=True, resume=True)
    _one_line(exc)


def test_force_overwrites_and_clears_stale_outputs(tmp_path: Path) -> None:
    run = _create(tmp_path)
    run.write_latents(np.zeros((N, 3)))
    run.save_checkpoint(1, {"x": torch.zeros(1)})
    run.write_metrics({"loss": 1.0})
    new = RunDirectory.create(tmp_path / "run", "vae", _config(lr=0.5), force=True)
    assert new.method == "vae" and RunDirectory.open(tmp_path / "run").params["lr"] == 0.5
    assert new.latest_checkpoint() is None and new.read_metrics() == {}
    assert not (tmp_path / "run" / "latents.npy").exists()


def test_force_on_a_non_run_folder_keeps_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "latents.npy").write_text("not ours")
    _create(tmp_path, force=True)
    assert (tmp_path / "run" / "latents.npy").read_text() == "not ours"


def test_resume_accepts_same_config_and_more_epochs(tmp_path: Path) -> None:
    run = _create(tmp_path)
    run.save_checkpoint(3, {"x": torch.ones(2)})
    resumed = RunDirectory.create(tmp_path / "run", "pca", _config(epochs=20), resume=True)
    assert resumed.params["epochs"] == 20
    assert RunDirectory.open(tmp_path / "run").params["epochs"] == 20
    assert resumed.latest_checkpoint()[0] == 3
    assert "resumed; changed: params.epochs" in (tmp_path / "run" / "log.txt").read_text()


def test_runs_written_with_old_latent_names_open_and_resume(tmp_path: Path) -> None:
    """``components`` (pca) and ``zdim`` (gradient fits) read as ``latent_dim``; a pca run resumes."""
    RunDirectory.create(tmp_path / "pca", "pca", _config(components=2))
    resumed = RunDirectory.create(tmp_path / "pca", "pca", _config(latent_dim=2, epochs=9), resume=True)
    assert resumed.params["latent_dim"] == 2 and "components" not in resumed.params
    with pytest.raises(InputError, match="latent_dim: 2 -> 3"):
        RunDirectory.create(tmp_path / "pca", "pca", _config(latent_dim=3), resume=True)
    RunDirectory.create(tmp_path / "drgn", "drgn", _config(zdim=4))
    assert RunDirectory.open(tmp_path / "drgn").params["latent_dim"] == 4
    RunDirectory.create(tmp_path / "other", "drgn", _config(components=4))
    assert RunDirectory.open(tmp_path / "other").params["components"] == 4  # only pca called it so


def test_resume_reports_differences_in_one_line(tmp_path: Path) -> None:
    _create(tmp_path)
    with pytest.raises(InputError) as exc:
        RunDirectory.create(tmp_path / "run", "pca", _config(lr=0.01, n_components=4, n_particles=7), resume=True)
    msg = _one_line(exc)
    assert "params.lr: 0.001 -> 0.01" in msg and "params.n_components: 3 -> 4" in msg
    assert "data.n_particles: 6 -> 7" in msg and "params.epochs" not in msg
    with pytest.raises(InputError) as exc:
        RunDirectory.create(tmp_path / "run", "vae", _config(), resume=True)
    assert "'pca' run, not 'vae'" in _one_line(exc)
    with pytest.raises(InputError) as exc:
        RunDirectory.create(tmp_path / "other", "pca", _config(), resume=True)
    assert "no config.yaml" in _one_line(exc)


# ----------------------------------------------------------------- latents


def test_latents_round_trip_float32(tmp_path: Path) -> None:
    run = _create(tmp_path)
    rng = np.random.default_rng(1)
    mean, var = rng.normal(size=(N, 3)), rng.uniform(size=(N, 3))
    run.write_latents(mean, var=torch.from_numpy(var))
    m, v, c = run.read_latents()
    assert m.dtype == np.float32 and v.dtype == np.float32 and c is None
    np.testing.assert_allclose(m, mean, rtol=1e-6)
    np.testing.assert_allclose(v, var, rtol=1e-6)
    cov = np.broadcast_to(np.eye(3), (N, 3, 3))
    run.write_latents(mean, cov=cov)  # replaces var by cov
    m, v, c = RunDirectory.open(tmp_path / "run").read_latents()
    assert v is None and c.shape == (N, 3, 3)


def test_latent_shape_mismatch(tmp_path: Path) -> None:
    run = _create(tmp_path)
    with pytest.raises(ValueError, match="5 latent rows but the run has 6"):
        run.write_latents(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="variances"):
        run.write_latents(np.zeros((N, 2)), var=np.zeros((N, 3)))
    with pytest.raises(ValueError, match="covariances"):
        run.write_latents(np.zeros((N, 2)), cov=np.zeros((N, 2)))
    np.save(tmp_path / "run" / "latents.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(InputError) as exc:
        run.read_latents()
    assert "4 latent rows but the run has 6" in _one_line(exc)


def test_pickled_latents_are_refused(tmp_path: Path) -> None:
    run = _create(tmp_path)
    np.save(tmp_path / "run" / "latents.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(InputError) as exc:
        run.read_latents()
    assert "pickled" in _one_line(exc)


# ----------------------------------------------------------------- weights and checkpoints


def test_weights_round_trip(tmp_path: Path) -> None:
    run = _create(tmp_path)
    model = torch.nn.Linear(3, 2)
    run.save_weights(model.state_dict())
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(run.load_weights())
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(InputError) as exc:
        RunDirectory.create(tmp_path / "b", "pca", _config()).load_weights()
    _one_line(exc)


def test_checkpoints_keep_last_and_latest(tmp_path: Path) -> None:
    run = _create(tmp_path)
    assert run.latest_checkpoint() is None
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    for epoch in range(1, 6):
        run.save_checkpoint(epoch, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "latents": np.full((N, 2), epoch, np.float32)}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_0004.pt", "epoch_0005.pt"]
    epoch, path = run.latest_checkpoint()
    assert epoch == 5 and path.name == "epoch_0005.pt"
    ck = run.load_checkpoint(None)
    assert ck["epoch"] == 5 and torch.equal(ck["latents"], torch.full((N, 2), 5.0))
    opt2 = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    opt2.load_state_dict(ck["optimizer"])
    assert run.load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0004.pt")["epoch"] == 4
    run.save_checkpoint(6, {"loss": np.float64(0.5), "step": np.int64(3), "tag": Path("a")})
    assert run.load_checkpoint() == {"loss": 0.5, "step": 3, "tag": "a", "epoch": 6}
    run.save_checkpoint(12000, {}, keep_last=1)
    assert run.latest_checkpoint()[0] == 12000 and len(run.checkpoints()) == 1


def test_checkpoint_refuses_objects_on_save(tmp_path: Path) -> None:
    run = _create(tmp_path)
    with pytest.raises(TypeError, match=r"checkpoint\['bad'\]"):
        run.save_checkpoint(1, {"bad": object()})
    assert run.latest_checkpoint() is None


class _Evil:
    """Unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_unsafe_checkpoint_is_refused_unread(tmp_path: Path) -> None:
    run = _create(tmp_path)
    marker = tmp_path / "code_ran"
    (tmp_path / "run" / "checkpoints").mkdir()
    torch.save({"epoch": 7, "obj": _Evil(marker)}, tmp_path / "run" / "checkpoints" / "epoch_0007.pt")
    with pytest.raises(InputError) as exc:
        run.load_checkpoint()
    msg = _one_line(exc)
    assert "epoch_0007.pt" in msg and "refused" in msg
    assert not marker.exists()
    shutil.copy(tmp_path / "run" / "checkpoints" / "epoch_0007.pt", tmp_path / "run" / "weights.pt")
    with pytest.raises(InputError) as exc:
        run.load_weights()
    _one_line(exc)
    assert not marker.exists()


def test_rng_state_round_trip(tmp_path: Path) -> None:
    run = _create(tmp_path)
    gen = np.random.default_rng(123)
    gen.normal(size=3)
    run.save_checkpoint(1, {"rng": capture_rng_state(gen)})
    first = (torch.rand(4), gen.normal(size=4), np.random.rand(2), random.random())
    restore_rng_state(run.load_checkpoint()["rng"], gen)
    second = (torch.rand(4), gen.normal(size=4), np.random.rand(2), random.random())
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[2], second[2])
    assert first[3] == second[3]
    legacy = np.random.Generator(np.random.MT19937(5))
    state = capture_rng_state(legacy)
    a = legacy.random(3)
    restore_rng_state(state, legacy)
    np.testing.assert_array_equal(a, legacy.random(3))


# ----------------------------------------------------------------- log, metrics, analysis, particles


def test_log_lines_and_timer(tmp_path: Path) -> None:
    run = _create(tmp_path)
    run.log("epoch 1\nloss 0.5")
    with run.log("fit"):
        pass
    with pytest.raises(RuntimeError), run.log("boom"):
        raise RuntimeError("bad")
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert lines[1].endswith("  epoch 1 loss 0.5") and lines[1][:4].isdigit() and "T" in lines[1].split()[0]
    assert "fit: done in" in lines[3] and "boom: failed after" in lines[-1] and "RuntimeError: bad" in lines[-1]


def test_metrics_merge_and_nan(tmp_path: Path) -> None:
    run = _create(tmp_path)
    run.write_metrics({"loss": np.float32(0.25), "fsc": [1.0, float("nan")]})
    run.write_metrics({"epochs": 5})
    assert run.read_metrics() == {"loss": 0.25, "fsc": [1.0, None], "epochs": 5}
    json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.write_metrics({"a": 1}, merge=False) and run.read_metrics() == {"a": 1}


def test_analysis_dir_on_demand(tmp_path: Path) -> None:
    run = _create(tmp_path)
    assert not (tmp_path / "run" / "analysis").exists()
    assert run.analysis_dir.is_dir()


def test_particles_relative_then_absolute_then_clear_error(tmp_path: Path) -> None:
    star = _particles(tmp_path / "proj" / "data")
    RunDirectory.create(tmp_path / "proj" / "run", "pca", _config(particles=star))
    ps = run_particles(RunDirectory.open(tmp_path / "proj" / "run"))
    assert len(ps) == N and ps.box == D
    shutil.move(tmp_path / "proj", tmp_path / "moved")  # found through the relative path
    assert len(run_particles(RunDirectory.open(tmp_path / "moved" / "run"))) == N
    shutil.move(tmp_path / "moved" / "data", tmp_path / "elsewhere")
    run = RunDirectory.open(tmp_path / "moved" / "run")
    with pytest.raises(InputError) as exc:
        run_particles(run)
    assert "--particles" in _one_line(exc)
    assert len(run_particles(run, particles=tmp_path / "elsewhere" / "particles.star")) == N


def test_run_particles_refuses_a_file_with_another_particle_count(tmp_path: Path) -> None:
    star = _particles(tmp_path / "data")
    run = RunDirectory.create(tmp_path / "run", "pca", {**_config(particles=star), "n_particles": N + 1})
    with pytest.raises(InputError) as exc:
        run_particles(run)
    assert f"{N} particles" in _one_line(exc) and str(N + 1) in _one_line(exc)

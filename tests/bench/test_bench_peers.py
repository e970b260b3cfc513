"""Peer programs in the benchmark: locating them, their command lines, reading their outputs, their volumes.

cryoDRGN itself is not needed: a stand-in ``cryodrgn`` program written here
records its arguments and writes the files the real one writes (``z.pkl``
with means then log-variances, ``weights.pkl``, ``config.yaml``; ``eval_vol``
volumes ``vol_001.mrc``...), each volume filled with the first coordinate of
its latent point so the order can be checked.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from cryoscape.bench import peers
from cryoscape.bench.datasets import build_dataset
from cryoscape.bench.runner import METHODS, check_methods, sample_particles
from cryoscape.errors import InputError
from cryoscape.io.cryodrgn import read_ctf_pkl, read_pose_pkl
from cryoscape.io.run_dir import RunDirectory

N, BOX = 120, 16

FAKE = r'''#!{python}
"""Stand-in for cryoDRGN: records argv, writes what train_vae / eval_vol write."""
import json, os, pickle, sys
from pathlib import Path
import numpy as np

argv = sys.argv[1:]
with open(os.environ["FAKE_DRGN_LOG"], "a") as fh:
    fh.write(json.dumps(argv) + "\n")
if os.environ.get("FAKE_DRGN_FAIL") == argv[0]:
    print("Traceback: something broke", file=sys.stderr)
    print("RuntimeError: fake failure", file=sys.stderr)
    sys.exit(3)
opt = lambda name: argv[argv.index(name) + 1]
if argv[0] == "train_vae":
    out = Path(opt("-o")); out.mkdir(parents=True)
    rot, trans = pickle.load(open(opt("--poses"), "rb"))
    n, zdim = rot.shape[0], int(opt("--zdim"))
    mu = (np.arange(n * zdim, dtype=np.float32).reshape(n, zdim) / n).astype(np.float32)
    with open(out / "z.pkl", "wb") as f:
        pickle.dump(mu, f); pickle.dump(np.full_like(mu, -2.0), f)
    (out / "weights.pkl").write_bytes(b"weights")
    (out / "config.yaml").write_text("version: 9.9.9\n")
elif argv[0] == "eval_vol":
    import mrcfile
    z = np.loadtxt(opt("--zfile")).reshape(-1, 8)
    with open(os.environ["FAKE_DRGN_LOG"], "a") as fh:
        fh.write(json.dumps(["points", len(z)]) + "\n")
    out = Path(opt("-o")); out.mkdir(parents=True)
    for i, zz in enumerate(z, start=1):
        with mrcfile.new(out / f"vol_{{i:03d}}.mrc") as m:
            m.set_data(np.full((16, 16, 16), zz[0], dtype=np.float32))
            m.voxel_size = float(opt("--Apix"))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """A tiny adk-1d data set (N = 120, box 16)."""
    return build_dataset("adk-1d", tmp_path_factory.mktemp("cache"), n_particles=N, box=BOX, progress=False)


@pytest.fixture
def fake_drgn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cryoDRGN venv ``tmp/env/bin/cryodrgn``; ``$CRYOSCAPE_CRYODRGN`` points at it. Returns the call log."""
    exe = tmp_path / "env" / "bin" / "cryodrgn"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CRYOSCAPE_CRYODRGN", str(tmp_path / "env"))
    monkeypatch.setenv("FAKE_DRGN_LOG", str(calls))
    peers.clear_volume_cache()
    return calls


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ----------------------------------------------------------------------------- availability


def test_registered_with_the_runner() -> None:
    assert "cryodrgn" in METHODS and "recovar" in METHODS
    assert METHODS["cryodrgn"].pair is None and METHODS["cryodrgn"].volume is peers.cryodrgn_volume


def test_peer_runs_get_the_peer_tables_volume_function() -> None:
    from cryoscape.bench.method_table import method_volume_function

    assert method_volume_function("cryodrgn", "cryodrgn") is peers.cryodrgn_volume
    assert method_volume_function("recovar", "recovar") is peers.recovar_volume
    assert set(peers.PEERS) == {"cryodrgn", "recovar"}


def test_peers_do_not_import_the_runner() -> None:
    import subprocess

    code = ("import sys, cryoscape.bench.peers; "
            "assert 'cryoscape.bench.runner' not in sys.modules and 'cryoscape.bench.method_table' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_env_var_target_gives_one_line_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYOSCAPE_CRYODRGN", str(tmp_path / "nowhere"))
    reason = METHODS["cryodrgn"].unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert "CRYOSCAPE_CRYODRGN" in reason and str(tmp_path / "nowhere") in reason
    with pytest.raises(InputError, match="cannot run here: cryodrgn not found"):
        check_methods(["cryodrgn"])


def test_default_location_is_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYOSCAPE_CRYODRGN", raising=False)
    monkeypatch.chdir(tmp_path)
    reason = peers.unavailable_reason(peers.CRYODRGN)
    assert reason is not None and str(tmp_path / "benchmarks" / "_envs" / "cryodrgn") in reason
    exe = tmp_path / "benchmarks" / "_envs" / "cryodrgn" / "bin" / "cryodrgn"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    assert peers.unavailable_reason(peers.CRYODRGN) is not None  # not executable yet
    exe.chmod(0o755)
    assert peers.unavailable_reason(peers.CRYODRGN) is None
    assert peers.find_program(peers.CRYODRGN) == exe


def test_env_var_may_name_the_program_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "my-cryodrgn"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("CRYOSCAPE_CRYODRGN", str(exe))
    assert peers.find_program(peers.CRYODRGN) == exe


# ----------------------------------------------------------------------------- latents


def test_read_latents_takes_the_means_of_a_cryodrgn_z_pkl(tmp_path: Path) -> None:
    mu = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    path = tmp_path / "z.pkl"
    with open(path, "wb") as fh:  # as cryoDRGN writes it: means, then log-variances
        pickle.dump(mu, fh)
        pickle.dump(np.zeros_like(mu), fh)
    z = peers.read_cryodrgn_latents(path, n_particles=5)
    assert z.dtype == np.float32 and np.array_equal(z, mu)
    with pytest.raises(InputError, match="holds 5 latents but the particle file has 6"):
        peers.read_cryodrgn_latents(path, n_particles=6)


def test_read_latents_refuses_code_and_bad_shapes(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(os.system))  # names a function: not plain numeric data
    with pytest.raises(InputError, match="refusing to load"):
        peers.read_cryodrgn_latents(bad)
    flat = tmp_path / "flat.pkl"
    flat.write_bytes(pickle.dumps(np.zeros(4, dtype=np.float32)))
    with pytest.raises(InputError, match=r"expected \(N, zdim\)"):
        peers.read_cryodrgn_latents(flat)


# ----------------------------------------------------------------------------- options and commands


def test_options_map_iterations_to_epochs_and_refuse_unknown_keys() -> None:
    assert peers.CryodrgnSettings.from_options({"iterations": 3}).epochs == 3
    with pytest.raises(InputError, match="unknown cryodrgn option 'zdims'"):
        peers.CryodrgnSettings.from_options({"zdims": 3})
    with pytest.raises(InputError, match="epochs is 0"):
        peers.CryodrgnSettings.from_options({"epochs": 0})


def test_train_command_line() -> None:
    s = peers.CryodrgnSettings(zdim=8, epochs=2, extra_args=["--lazy"])
    cmd = peers.cryodrgn_train_command("/x/cryodrgn", "/d/p.star", "/d", "/w/pose.pkl", "/w/ctf.pkl", "/w/out", s,
                                       checkpoint_every=1)
    assert cmd[:3] == ["/x/cryodrgn", "train_vae", "/d/p.star"]
    pairs = dict(zip(cmd[3::2], cmd[4::2]))
    assert pairs["--datadir"] == "/d" and pairs["--poses"] == "/w/pose.pkl" and pairs["--ctf"] == "/w/ctf.pkl"
    assert pairs["--zdim"] == "8" and pairs["-n"] == "2" and pairs["-o"] == "/w/out"
    assert (pairs["--enc-layers"], pairs["--enc-dim"], pairs["--dec-layers"], pairs["--dec-dim"]) == ("3", "256", "3", "256")
    assert "--no-analysis" in cmd and cmd[-1] == "--lazy" and cmd[cmd.index("--checkpoint") + 1] == "1"
    assert "--uninvert-data" not in cmd  # RELION-extracted particles: cryoDRGN's default sign is right


# ----------------------------------------------------------------------------- the runner, end to end with the stand-in


def test_run_writes_a_run_directory_and_feeds_cryodrgn_our_poses(dataset, fake_drgn: Path, tmp_path: Path) -> None:
    out = peers.run_cryodrgn(dataset, tmp_path / "run", epochs=2)
    (train,) = _calls(fake_drgn)
    assert train[0] == "train_vae" and Path(train[1]) == Path(dataset.star_path).resolve()
    assert train[train.index("-n") + 1] == "2" and train[train.index("--zdim") + 1] == "8"
    rot, trans = read_pose_pkl(train[train.index("--poses") + 1])
    from cryoscape.particles import ParticleSet

    ps = ParticleSet.from_file(dataset.star_path)
    np.testing.assert_allclose(rot, ps.rotations, atol=1e-6)
    np.testing.assert_allclose(trans * BOX * ps.apix, ps.shifts_A, atol=1e-4)
    np.testing.assert_allclose(read_ctf_pkl(train[train.index("--ctf") + 1])[:, 2], ps.ctf_table()["defocus_u_A"],
                               rtol=1e-6)
    run = RunDirectory.open(out)
    assert run.method == "cryodrgn" and run.n_particles == N and run.box == BOX
    z = run.read_latents()[0]
    expected = np.arange(N * 8, dtype=np.float32).reshape(N, 8) / N
    np.testing.assert_array_equal(z, expected)
    assert run.read_metrics()["peer_version"] == "9.9.9"
    hints = np.load(out / peers.PEER_DIR / peers.VOLUME_HINTS)
    np.testing.assert_array_equal(hints, z[sample_particles(dataset.truth)])


def test_volume_function_batches_the_hints_in_one_eval_vol_and_caches(dataset, fake_drgn: Path,
                                                                      tmp_path: Path) -> None:
    volume_fn = peers.cryodrgn_volume
    out = peers.run_cryodrgn(dataset, tmp_path / "run", epochs=1)
    run = RunDirectory.open(out)
    z = run.read_latents()[0]
    idx = sample_particles(dataset.truth)
    vol = volume_fn(run, z[idx[3]])
    assert vol.shape == (BOX, BOX, BOX) and np.allclose(vol, z[idx[3], 0])
    evals = [c for c in _calls(fake_drgn) if c[0] == "eval_vol"]
    assert len(evals) == 1
    points = [c[1] for c in _calls(fake_drgn) if c[0] == "points"]
    assert points == [len(set(map(tuple, z[idx])))] and points[0] > 50  # the asked point and the other hints at once
    assert evals[0][evals[0].index("--Apix") + 1] == repr(float(run.apix))
    for i in idx[::7]:  # every sampled particle now comes from the cache, in the right order
        assert np.allclose(volume_fn(run, z[i]), z[i, 0])
    assert len([c for c in _calls(fake_drgn) if c[0] == "eval_vol"]) == 1
    other = volume_fn(run, z[idx[0]] + 1.0)  # not a hint: a second run of eval_vol for it alone
    assert np.allclose(other, z[idx[0], 0] + 1.0)
    assert [c[1] for c in _calls(fake_drgn) if c[0] == "points"][1:] == [1]


def test_failure_of_the_program_is_one_line_with_the_log(dataset, fake_drgn: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DRGN_FAIL", "train_vae")
    with pytest.raises(peers.PeerError) as err:
        peers.run_cryodrgn(dataset, tmp_path / "run", epochs=1)
    msg = str(err.value)
    assert "\n" not in msg and "exit 3" in msg and "RuntimeError: fake failure" in msg
    assert str(tmp_path / "run" / peers.PEER_DIR / "train.log") in msg


# ----------------------------------------------------------------------------- RECOVAR

FAKE_RECOVAR = r'''#!{python}
"""Stand-in for RECOVAR: records argv, writes what pipeline / compute_state write."""
import json, os, pickle, sys
from pathlib import Path
import numpy as np

argv = sys.argv[1:]
with open(os.environ["FAKE_RECOVAR_LOG"], "a") as fh:
    fh.write(json.dumps(argv) + "\n")
opt = lambda name: argv[argv.index(name) + 1]
if argv[0] == "pipeline":
    rot, trans = pickle.load(open(opt("--poses"), "rb"))
    zdim = int(opt("--zdim"))
    model = Path(opt("-o")) / "model" / f"zdim_{{zdim}}"
    model.mkdir(parents=True)
    np.save(model / "latent_coords.npy", np.linspace(-1, 1, rot.shape[0] * zdim).reshape(-1, zdim).astype(np.float32))
elif argv[0] == "compute_state":
    import mrcfile
    z = np.loadtxt(opt("--latent-points")).reshape(-1, 4)
    out = Path(opt("-o")); out.mkdir(parents=True)
    for k, zz in enumerate(z):
        with mrcfile.new(out / f"state{{k:03d}}.mrc") as m:
            m.set_data(np.full((16, 16, 16), zz[0], dtype=np.float32))
'''


@pytest.fixture
def fake_recovar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake RECOVAR program; ``$CRYOSCAPE_RECOVAR`` names it directly. Returns the call log."""
    exe = tmp_path / "recovar"
    exe.write_text(FAKE_RECOVAR.format(python=sys.executable))
    exe.chmod(0o755)
    calls = tmp_path / "recovar_calls.jsonl"
    monkeypatch.setenv("CRYOSCAPE_RECOVAR", str(exe))
    monkeypatch.setenv("FAKE_RECOVAR_LOG", str(calls))
    peers.clear_volume_cache()
    return calls


def test_recovar_command_lines() -> None:
    s = peers.RecovarSettings.from_options({"zdim": 4})
    cmd = peers.recovar_pipeline_command("/x/recovar", "/d/p.star", "/d", "/w/pose.pkl", "/w/ctf.pkl", "/w/out", s)
    pairs = dict(zip(cmd[3::2], cmd[4::2]))
    assert cmd[1:3] == ["pipeline", "/d/p.star"] and "--accept-cpu" in cmd
    assert (pairs["--zdim"], pairs["--mask"], pairs["--uninvert-data"]) == ("4", "sphere", "true")
    state = peers.recovar_state_command("/x/recovar", "/w/out", "/t/z.txt", "/t/s", 50, zdim=1)
    assert state[1:3] == ["compute_state", "/w/out"] and "--zdim1" in state and "--n-bins" in state
    with pytest.raises(InputError, match="unknown recovar option 'iterations'"):
        peers.RecovarSettings.from_options({"iterations": 3})


def test_read_recovar_latents_refuses_pickled_arrays(tmp_path: Path) -> None:
    d = tmp_path / "model" / "zdim_2"
    d.mkdir(parents=True)
    np.save(d / "latent_coords.npy", np.array([[1.0, 2.0]] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain .npy"):
        peers.read_recovar_latents(tmp_path, 2)
    np.save(d / "latent_coords.npy", np.ones((3, 2)))
    assert peers.read_recovar_latents(tmp_path, 2, n_particles=3).shape == (3, 2)
    with pytest.raises(peers.PeerError, match="no 4-D embedding"):
        peers.read_recovar_latents(tmp_path, 4)


def test_recovar_run_and_volume_function(dataset, fake_recovar: Path, tmp_path: Path) -> None:
    volume_fn = peers.recovar_volume
    out = peers.run_recovar(dataset, tmp_path / "run", zdim=4)
    run = RunDirectory.open(out)
    z = run.read_latents()[0]
    assert run.method == "recovar" and z.shape == (N, 4)
    idx = sample_particles(dataset.truth)
    assert np.allclose(volume_fn(run, z[idx[5]]), z[idx[5], 0])
    assert np.allclose(volume_fn(run, z[idx[-1]]), z[idx[-1], 0])
    assert [c[0] for c in _calls(fake_recovar)] == ["pipeline", "compute_state"]  # one state run for all hints


def test_recovar_is_refused_by_the_benchmark_with_the_reason(fake_recovar: Path) -> None:
    with pytest.raises(InputError, match="do not match the ground truth"):
        check_methods(["recovar"])

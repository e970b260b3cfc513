"""``cryoscape fit pca`` and ``fit drgn`` killed with SIGKILL after their first checkpoint, then ``--resume``:
the same latents as an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryoscape.simulate import simulate_dataset

N, BOX, APIX, ITERATIONS = 240, 32, 4.0, 6
DRGN_SMALL = ("--dec-hidden", "16", "--enc-hidden", "16", "--dec-layers", "2", "--enc-layers", "2", "--pe-dim", "4",
              "--batch-size", "16", "--latent-refine-steps", "1")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("killpca") / "sim"
    return simulate_dataset("adk", n_particles=N, box=BOX, apix=APIX, snr=0.5, conformations="0,97",
                            out_dir=out, progress=False, seed=0)


def _command(method: str, star: Path, out: Path, *extra: str) -> list[str]:
    head = [sys.executable, "-m", "cryoscape.cli.main", "fit", method, str(star), "-o", str(out), "--no-progress"]
    if method == "pca":
        return [*head, "--components", "2", "--iterations", str(ITERATIONS), "--init", "random",
                "--spectral-components", "0", "--batch-size", "64", *extra]
    return [*head, "--zdim", "2", "--epochs", str(ITERATIONS), *DRGN_SMALL, *extra]


def _env() -> dict[str, str]:
    """One thread per process, so the killed run and the reference do not compete for cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_after_first_checkpoint(cmd: list[str], out: Path) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``out/checkpoints`` holds a checkpoint; the iterations it had saved."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder = out / "checkpoints"
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not (folder.is_dir() and any(p.name.startswith("epoch_") for p in folder.iterdir())):
            assert proc.poll() is None, f"the fit ended (rc {proc.returncode}) before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the fit finished before it could be killed"
    return max(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.pt"))


@pytest.mark.parametrize("method", ["pca", "drgn"])
def test_sigkill_then_resume_gives_the_uninterrupted_latents(sim, tmp_path, method):
    whole, part = tmp_path / "whole", tmp_path / "part"
    reference = subprocess.Popen(_command(method, sim.star_path, whole), env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    saved = _kill_after_first_checkpoint(_command(method, sim.star_path, part), part)
    assert 1 <= saved < ITERATIONS
    assert not (part / "latents.npy").exists()
    _run(_command(method, sim.star_path, part, "--resume"))
    _, err = reference.communicate(timeout=TIMEOUT_S)
    assert reference.returncode == 0, err[-2000:]
    assert f"resuming after {'iteration' if method == 'pca' else 'epoch'} {saved}" in (part / "log.txt").read_text()
    resumed, uninterrupted = np.load(part / "latents.npy"), np.load(whole / "latents.npy")
    assert resumed.shape == uninterrupted.shape == (N, 2)
    difference = float(np.abs(resumed - uninterrupted).max())
    print(f"{method}: killed after {saved} of {ITERATIONS}, max |latent difference| after --resume {difference:.3g}")
    assert difference <= 1e-4

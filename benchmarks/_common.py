"""Helpers shared by the benchmark scripts (not part of the cryoscape package).

* simulated datasets: made once with ``cryoscape simulate`` and reused
  (a cache keyed on the simulation parameters);
* running a command in a child process and measuring its wall time and peak
  resident memory;
* cryoDRGN, run only as a separate program from its own virtual environment
  (``benchmarks/_envs/cryodrgn``, made by ``setup_envs.sh``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CRYODRGN_VENV = HERE / "_envs" / "cryodrgn"
DEFAULT_WORKDIR = ROOT / "bench_out"


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays pure JSON."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON on stdout (and write it to ``out`` if given)."""
    text = json.dumps(result, indent=2, default=_json_default)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# --------------------------------------------------------------------------
# child processes


_MEASURE = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
r = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1] + ".out", "w"), stderr=open(sys.argv[1] + ".err", "w"))
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"returncode": r.returncode, "wall_s": wall, "peak_rss_MB": ru.ru_maxrss / 1024.0,
           "user_s": ru.ru_utime, "sys_s": ru.ru_stime}, open(sys.argv[1], "w"))
"""


def measure(cmd: Sequence[str], log_prefix: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh wrapper process; wall time, peak RSS (MB) and CPU time of ``cmd`` alone.

    The wrapper has exactly one child, so ``RUSAGE_CHILDREN.ru_maxrss`` is the
    peak resident set of ``cmd`` (Linux reports it in kB). stdout/stderr of
    ``cmd`` go to ``<log_prefix>.json.out`` / ``.err``.
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    stats = Path(str(log_prefix) + ".json")
    subprocess.run([sys.executable, "-c", _MEASURE, str(stats), *map(str, cmd)], check=True, env=env)
    res = json.loads(stats.read_text())
    res["stdout_path"] = str(stats) + ".out"
    res["stderr_path"] = str(stats) + ".err"
    if res["returncode"] != 0:
        tail = Path(res["stderr_path"]).read_text()[-3000:]
        res["stderr_tail"] = tail
    return res


def thread_env(threads: int) -> dict[str, str]:
    """Environment limiting BLAS/OpenMP/torch threads in a child process."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[k] = str(threads)
    return env


# --------------------------------------------------------------------------
# simulated data


def cryoscape_exe() -> list[str]:
    """The ``cryoscape`` command of the interpreter running the benchmark."""
    exe = Path(sys.executable).parent / "cryoscape"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "cryoscape.cli.main"]


def simulate_cached(
    out_dir: Path,
    n_particles: int,
    box: int,
    apix: float,
    snr: float,
    seed: int = 0,
    structure: str = "adk",
    conformation: int = 0,
    threads: int = 2,
    force: bool = False,
) -> dict[str, Any]:
    """Simulate a single-conformation dataset with ``cryoscape simulate`` unless a matching one exists.

    Returns the parameters, paths and the simulation wall time (``None`` when reused).
    """
    params = {"structure": structure, "n_particles": n_particles, "box": box, "apix": apix,
              "snr": snr, "seed": seed, "conformation": conformation}
    key = out_dir / "bench_params.json"
    star = out_dir / "particles.star"
    info: dict[str, Any] = {"dir": str(out_dir), "params": params, "star": str(star),
                            "stack": str(out_dir / "particles.mrcs"), "truth": str(out_dir / "truth.npz")}
    if not force and key.exists() and star.exists() and json.loads(key.read_text()) == params:
        log(f"reusing simulated dataset {out_dir}")
        info["simulate_wall_s"] = None
        return info
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    cmd = [*cryoscape_exe(), "simulate", "--structure", structure, "--n-particles", str(n_particles),
           "--box", str(box), "--apix", str(apix), "--snr", str(snr), "--seed", str(seed),
           "--conformations", str(conformation), "-o", str(out_dir), "--force"]
    log("simulating: " + " ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=thread_env(threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info["simulate_cmd"] = " ".join(cmd)
    if r.returncode != 0 and "ModuleNotFoundError" in r.stderr and "cryoscape.cli" in r.stderr:
        # the command-line front end is incomplete; the same simulation through the library
        log("cryoscape CLI unavailable; simulating through cryoscape.simulate.simulate_dataset")
        info["simulate_via"] = "library (CLI failed: " + r.stderr.strip().splitlines()[-1] + ")"
        code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
                "from cryoscape.simulate import simulate_dataset; "
                "simulate_dataset(sys.argv[2], n_particles=int(sys.argv[3]), box=int(sys.argv[4]), "
                "apix=float(sys.argv[5]), snr=float(sys.argv[6]), seed=int(sys.argv[7]), "
                "conformations=sys.argv[8], out_dir=sys.argv[9], force=True, progress=False)")
        r = subprocess.run([sys.executable, "-c", code, str(threads), structure, str(n_particles), str(box),
                            str(apix), str(snr), str(seed), str(conformation), str(out_dir)],
                           env=thread_env(threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cryoscape simulate failed ({r.returncode}):\n{r.stderr[-3000:]}")
    info["simulate_wall_s"] = time.perf_counter() - t0
    key.write_text(json.dumps(params))
    return info


def read_map(path: str | Path) -> tuple[Any, float]:
    """A map written by any program as float64 ``[D, D, D]`` and its voxel size (Å), read permissively."""
    import mrcfile
    import numpy as np

    with mrcfile.open(path, permissive=True) as m:
        return np.asarray(m.data, dtype=np.float64).copy(), float(m.voxel_size.x)


def ground_truth(truth_path: str | Path, conformation: int = 0):
    """Ground-truth volume ``[D,D,D]`` float32 and apix (Å) of one conformation of a simulation."""
    from cryoscape.simulate import ground_truth_volume

    return ground_truth_volume(truth_path, conformation)


# --------------------------------------------------------------------------
# cryoDRGN (separate program, separate venv)


def cryodrgn_exe(venv: Path) -> Path:
    exe = Path(venv) / "bin" / "cryodrgn"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found: run benchmarks/setup_envs.sh first")
    return exe


def cryodrgn_version(venv: Path) -> str:
    r = subprocess.run([str(Path(venv) / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('cryodrgn'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or f"unknown ({r.stderr.strip()[-200:]})"


def cryodrgn_parse(venv: Path, star: Path, work: Path, threads: int) -> dict[str, Any]:
    """cryoDRGN's own parse of our STAR into its pose.pkl / ctf.pkl."""
    exe = cryodrgn_exe(venv)
    work.mkdir(parents=True, exist_ok=True)
    pose, ctf = work / "pose.pkl", work / "ctf.pkl"
    out: dict[str, Any] = {"pose_pkl": str(pose), "ctf_pkl": str(ctf)}
    for name, cmd in (("parse_pose_star", [exe, "parse_pose_star", star, "-o", pose]),
                      ("parse_ctf_star", [exe, "parse_ctf_star", star, "-o", ctf])):
        res = measure(cmd, work / name, env=thread_env(threads))
        out[name] = {"cmd": " ".join(map(str, cmd)), "wall_s": res["wall_s"], "returncode": res["returncode"]}
        if res["returncode"] != 0:
            raise RuntimeError(f"cryodrgn {name} failed:\n{res.get('stderr_tail', '')}")
    return out


def cryodrgn_backproject(venv: Path, star: Path, pkls: dict[str, Any], work: Path, threads: int,
                         first: int | None = None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``cryodrgn backproject_voxel`` on our STAR (images found with ``--datadir``)."""
    exe = cryodrgn_exe(venv)
    outdir = work / "backproject"
    cmd: list[Any] = [exe, "backproject_voxel", star, "--datadir", star.parent, "--poses", pkls["pose_pkl"],
                      "--ctf", pkls["ctf_pkl"], "-o", outdir, *extra]
    if first:
        cmd += ["--first", str(first)]
    log("running: " + " ".join(map(str, cmd)))
    res = measure(cmd, work / "backproject_voxel", env=thread_env(threads))
    res["cmd"] = " ".join(map(str, cmd))
    res["volume"] = str(outdir / "backproject.mrc")
    if res["returncode"] != 0:
        raise RuntimeError(f"cryodrgn backproject_voxel failed:\n{res.get('stderr_tail', '')}")
    return res

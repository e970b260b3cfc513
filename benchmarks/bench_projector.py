#!/usr/bin/env python
"""Projector and backprojector throughput at equal accuracy (CPU).

Compares cryoscape's ``FourierProjector`` with torch-fourier-slice's
``project_3d_to_2d`` on the same smooth test volume and the same rotations.

Accuracy
    Every method's images are compared with an exact reference: the
    non-uniform DFT (finufft ``nufft3d2``, eps 1e-12, float64) of the voxel
    volume evaluated at the rotated 2D grid frequencies ``Rᵀ (kx, ky, 0)``,
    brought back to real space with a centred inverse FFT. This is the image
    every Fourier-slice projector approximates; the remaining difference is
    interpolation error. Reported as relative L2 error over the Fourier
    coefficients inside the Nyquist circle (``rel_err_circle``, primary) and
    over the full image (``rel_err_full``).

Throughput (images/s, median of repeats after warm-up)
    * cryoscape: volume FT precomputed once (``FourierProjector``); timed
      ``.project`` (slice + inverse FFT to real images) and ``.slice`` (slice
      only).
    * torch-fourier-slice: ``project_3d_to_2d`` as its API is called (pads and
      transforms the volume on every call), and the same pipeline with the
      volume transform precomputed once (slice + inverse FFT, and slice
      only), at several pad factors (2.0 is its default). Note that it
      samples the slice on the *padded* 2D grid and crops the image after the
      inverse FFT, while cryoscape samples the ``D x D`` grid directly: at the
      same padding it does ~pad² more interpolations but is more accurate.
    * ``comparisons``: for each torch-fourier-slice setting, the fastest
      cryoscape oversampling that is at least as accurate, and speed ratios.
    * backprojection: cryoscape ``insert_slices`` (and torch-fourier-slice's
      ``insert_central_slices_rfft_3d`` for reference).

Prints one JSON object. torch-fourier-slice is a benchmark-only dependency
(``benchmarks/setup_envs.sh``); cryoscape never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------
# test data and exact reference


def smooth_volume(D: int, n_blobs: int = 40, seed: int = 0) -> np.ndarray:
    """Sum of Gaussian blobs, [z,y,x] float64, support well inside radius D/2.

    Blob centres lie within radius 0.3·D of voxel D//2; widths 0.04–0.07·D.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres *= (0.3 * D) * rng.uniform(0.0, 1.0, size=(n_blobs, 1)) ** (1 / 3)
    sigmas = rng.uniform(0.04, 0.07, size=n_blobs) * D
    amps = rng.uniform(0.5, 1.5, size=n_blobs)
    g = np.arange(D) - D // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    vol = np.zeros((D, D, D))
    for (cx, cy, cz), s, a in zip(centres, sigmas, amps):
        vol += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return vol


def random_rotations(n: int, seed: int) -> np.ndarray:
    """Haar-random rotations (n,3,3) float64 (cryoscape convention: volume -> particle frame)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=seed).as_matrix()


def exact_slices(vol: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Exact centred 2D FTs [B,D,D] complex128 of the projections of ``vol``.

    Entry [b, i, j] is the DTFT of the voxel volume (origin at voxel D//2) at
    the 3D frequency Rᵀ (kx, ky, 0), kx = (j − D//2)/D, ky = (i − D//2)/D
    cycles/px.
    """
    import finufft

    D = vol.shape[-1]
    k = (np.arange(D) - D // 2) / D
    ky, kx = np.meshgrid(k, k, indexing="ij")
    k2 = np.stack([kx.ravel(), ky.ravel(), np.zeros(kx.size)], axis=0)  # (3, D²) xyz
    k3 = np.einsum("bji,jn->bin", rotations, k2)  # Rᵀ k : (B, 3, D²) xyz
    kx3, ky3, kz3 = (2 * np.pi * k3[:, i].ravel() for i in range(3))
    # finufft: first point coordinate pairs with the first array axis (z).
    vals = finufft.nufft3d2(kz3, ky3, kx3, vol.astype(np.complex128), isign=-1, eps=1e-12)
    return vals.reshape(len(rotations), D, D)


def fft2_c(img: np.ndarray) -> np.ndarray:
    """Centred 2D FFT over the last two axes (DC at D//2)."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1))), axes=(-2, -1))


def ifft2_c(ft: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ft, axes=(-2, -1))), axes=(-2, -1))


def nyquist_circle(D: int) -> np.ndarray:
    g = np.arange(D) - D // 2
    y, x = np.meshgrid(g, g, indexing="ij")
    return (x * x + y * y) <= (D // 2) ** 2


def errors(images: np.ndarray, ref_ft: np.ndarray) -> dict[str, float]:
    """Relative L2 errors of real images [B,D,D] against the exact slices."""
    D = images.shape[-1]
    ft = fft2_c(images.astype(np.float64))
    m = nyquist_circle(D)
    circ = np.linalg.norm((ft - ref_ft)[:, m]) / np.linalg.norm(ref_ft[:, m])
    ref_img = ifft2_c(ref_ft).real
    full = np.linalg.norm(images - ref_img) / np.linalg.norm(ref_img)
    return {"rel_err_circle": float(circ), "rel_err_full": float(full)}


# --------------------------------------------------------------------------
# timing


#: "median" or "min" of the repeats (set from --statistic)
STATISTIC = "median"


def timeit(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Wall time (s) of ``fn``: median (or min, see ``STATISTIC``) over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if STATISTIC == "min" else statistics.median(times)


# --------------------------------------------------------------------------
# torch-fourier-slice, called as its README/API describes


class TFSPrecomputed:
    """torch-fourier-slice's projection pipeline with the volume FT computed once.

    Same steps as ``project_3d_to_2d`` (edge-value removal, zero padding,
    sinc² grid correction, rfft), but the volume transform is kept between
    batches, like cryoscape's projector does.
    """

    def __init__(self, volume: torch.Tensor, pad_factor: float) -> None:
        from torch_fourier_slice.volume_utils import (
            compute_cube_face_averages,
            separable_sinc2_correction,
        )

        self.d = volume.shape[-1]
        self.edge = compute_cube_face_averages(volume, n=4)
        v = volume - self.edge
        self.p = int((self.d * (pad_factor - 1.0)) // 2)
        if self.p > 0:
            v = F.pad(v, pad=[self.p] * 6)
        self.shape = tuple(v.shape[-3:])
        v = v / separable_sinc2_correction(self.shape)
        dft = torch.fft.rfftn(torch.fft.ifftshift(v, dim=(-3, -2, -1)), dim=(-3, -2, -1))
        self.dft = torch.fft.fftshift(dft, dim=(-3, -2))

    def slice(self, rot_xyz: torch.Tensor) -> torch.Tensor:
        from torch_fourier_slice import extract_central_slices_rfft_3d

        return extract_central_slices_rfft_3d(volume_rfft=self.dft, rotation_matrices=rot_xyz)

    def project(self, rot_xyz: torch.Tensor) -> torch.Tensor:
        s = self.slice(rot_xyz)
        s = torch.fft.ifftshift(s, dim=(-2,))
        img = torch.fft.irfftn(s, dim=(-2, -1), s=self.shape[-2:])
        img = torch.fft.fftshift(img, dim=(-2, -1))
        if self.p > 0:
            img = F.pad(img, pad=[-self.p] * 4)
        return img + self.edge * self.d


def tfs_rotations(R: torch.Tensor) -> torch.Tensor:
    """torch-fourier-slice samples V̂(M k) for xyz matrices M; cryoscape samples V̂(Rᵀ k)."""
    return R.transpose(-1, -2).contiguous()


# --------------------------------------------------------------------------


def compare_settings(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed ratios at equal or better accuracy, both ways round.

    ``vs_<their setting>``: the fastest cryoscape setting whose error is at most
    that torch-fourier-slice setting's error (cryoscape at least as accurate).
    Ratios are cryoscape images/s over theirs.
    """
    out: dict[str, Any] = {}
    for t in theirs:
        ok = [o for o in ours if o["rel_err_circle"] <= t["rel_err_circle"]]
        key = f"vs_tfs_pad_{t['pad_factor']:g}"
        if not ok:
            out[key] = {"cryoscape_setting": None, "note": "no cryoscape oversampling tried is as accurate"}
            continue
        o = max(ok, key=lambda e: e["project_images_per_s"])
        out[key] = {
            "cryoscape_oversampling": o["oversampling"],
            "cryoscape_rel_err": o["rel_err_circle"],
            "tfs_rel_err": t["rel_err_circle"],
            "project_vs_tfs_api": o["project_images_per_s"] / t["api_project_images_per_s"],
            "project_vs_tfs_precomputed": o["project_images_per_s"] / t["precomputed_project_images_per_s"],
            "slice_vs_tfs_precomputed_slice": o["slice_images_per_s"] / t["precomputed_slice_images_per_s"],
        }
    return out


def bench_box(D: int, args: argparse.Namespace) -> dict[str, Any]:
    from cryoscape.imaging.projector import FourierProjector, insert_slices

    dtype = torch.float32
    vol_np = smooth_volume(D, seed=args.seed)
    vol = torch.as_tensor(vol_np, dtype=dtype)
    R_all = random_rotations(args.batch, seed=args.seed + 1)
    R = torch.as_tensor(R_all, dtype=dtype)
    n_acc = min(args.n_accuracy, args.batch)
    R_acc_np = R_all[:n_acc]
    R_acc = R[:n_acc]
    ref = exact_slices(vol_np, R_acc_np)
    out: dict[str, Any] = {"box": D, "batch": args.batch, "n_accuracy_images": n_acc}

    # ---- cryoscape, one entry per oversampling factor
    ours_list = []
    for os_ in args.oversampling:
        ours: dict[str, Any] = {"oversampling": os_}
        t0 = time.perf_counter()
        proj = FourierProjector(vol, oversampling=os_)
        ours["setup_s"] = time.perf_counter() - t0
        with torch.no_grad():
            ours.update(errors(proj.project(R_acc).double().numpy(), ref))
            t_proj = timeit(lambda: proj.project(R), args.repeats, args.warmup)
            t_slice = timeit(lambda: proj.slice(R), args.repeats, args.warmup)
        ours["project_images_per_s"] = args.batch / t_proj
        ours["slice_images_per_s"] = args.batch / t_slice
        ours_list.append(ours)
    out["cryoscape"] = ours_list

    # ---- torch-fourier-slice, one entry per pad factor
    try:
        import torch_fourier_slice as tfs
        from torch_fourier_slice import project_3d_to_2d
    except ImportError as exc:
        out["torch_fourier_slice"] = {"error": f"not installed ({exc}); run benchmarks/setup_envs.sh"}
        tfs = None
    if tfs is not None:
        Rt = tfs_rotations(R)
        Rt_acc = tfs_rotations(R_acc)
        settings = []
        for pad in args.tfs_pad_factors:
            entry: dict[str, Any] = {"pad_factor": pad}
            with torch.no_grad():
                entry.update(errors(project_3d_to_2d(vol, Rt_acc, pad_factor=pad).double().numpy(), ref))
                t_api = timeit(lambda: project_3d_to_2d(vol, Rt, pad_factor=pad), args.repeats, args.warmup)
                pre = TFSPrecomputed(vol, pad)
                entry["precomputed_max_abs_diff_vs_api"] = float(
                    (pre.project(Rt_acc) - project_3d_to_2d(vol, Rt_acc, pad_factor=pad)).abs().max()
                )
                t_pre = timeit(lambda: pre.project(Rt), args.repeats, args.warmup)
                t_pre_slice = timeit(lambda: pre.slice(Rt), args.repeats, args.warmup)
            entry["api_project_images_per_s"] = args.batch / t_api
            entry["precomputed_project_images_per_s"] = args.batch / t_pre
            entry["precomputed_slice_images_per_s"] = args.batch / t_pre_slice
            settings.append(entry)
        out["torch_fourier_slice"] = {"version": tfs.__version__, "default_pad_factor": 2.0,
                                      "settings": settings}
        out["comparisons"] = compare_settings(ours_list, settings)
    # ---- backprojection
    bp: dict[str, Any] = {"oversampling": args.oversampling[0]}
    with torch.no_grad():
        slices = FourierProjector(vol, oversampling=args.oversampling[0]).slice(R)
        t_ins = timeit(
            lambda: insert_slices(slices, R, D, args.oversampling[0]), args.repeats, args.warmup
        )
    bp["cryoscape_insert_slices_images_per_s"] = args.batch / t_ins
    try:
        from torch_fourier_slice import insert_central_slices_rfft_3d

        pad_d = int(D * args.oversampling[0])
        img_rfft = torch.randn(args.batch, pad_d, pad_d // 2 + 1, dtype=torch.complex64)
        Rt = tfs_rotations(R)
        with torch.no_grad():
            t_tfs = timeit(
                lambda: insert_central_slices_rfft_3d(
                    image_rfft=img_rfft, volume_shape=(pad_d,) * 3, rotation_matrices=Rt
                ),
                args.repeats,
                args.warmup,
            )
        bp["tfs_insert_central_slices_rfft_3d_images_per_s"] = args.batch / t_tfs
        bp["tfs_padded_box"] = pad_d
        bp["speed_ratio"] = bp["cryoscape_insert_slices_images_per_s"] / bp[
            "tfs_insert_central_slices_rfft_3d_images_per_s"
        ]
    except ImportError:
        pass
    out["backprojection"] = bp
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, nargs="+", default=[64, 128], help="box sizes (px, even)")
    p.add_argument("--batch", type=int, default=256, help="images per call")
    p.add_argument("--n-accuracy", type=int, default=32, help="images used for the accuracy check")
    p.add_argument("--oversampling", type=float, nargs="+", default=[2.0, 3.0, 4.0],
                   help="cryoscape projector oversampling factors to try (the first is used for backprojection)")
    p.add_argument(
        "--tfs-pad-factors", type=float, nargs="+", default=[1.5, 2.0, 3.0],
        help="torch-fourier-slice pad factors to try (2.0 is its default)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="summary of the repeats (min is more robust on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-ratio", type=float, default=5.0)
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global STATISTIC
    STATISTIC = args.statistic
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "benchmark": "projector",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "timing": f"{args.statistic} of {args.repeats} calls after {args.warmup} warm-up call(s), batch {args.batch}",
        "target": f"cryoscape project ≥ {args.target_ratio}× torch-fourier-slice at equal or better accuracy",
        "boxes": [],
    }
    if hasattr(os, "getloadavg"):
        result["machine"]["loadavg_at_start"] = os.getloadavg()
    for D in args.boxes:
        print(f"[bench_projector] box {D} ...", file=sys.stderr, flush=True)
        result["boxes"].append(bench_box(D, args))
    if hasattr(os, "getloadavg"):
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

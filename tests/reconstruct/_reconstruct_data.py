"""Synthetic single-conformation datasets with ground truth for the reconstruction tests.

Images are exact Fourier-slice projections (:class:`FourierProjector`) of a
volume of Gaussian blobs, translated by −origin, multiplied by RELION's CTF
(written out here independently of the library) and given white noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryoscape.particles import ParticleSet


def blob_volume(D: int, apix: float, n_blobs: int = 24, sigma_px: float = 1.2, seed: int = 0) -> np.ndarray:
    """Sum of Gaussian blobs within ~0.3 D of the centre, ``[D, D, D]`` float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.14 * D, (n_blobs, 3)).clip(-0.3 * D, 0.3 * D)
    amps = rng.uniform(0.5, 1.5, n_blobs)
    c = np.arange(D) - D // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((D, D, D))
    for (cx, cy, cz), a in zip(centres, amps):
        vol += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma_px**2))
    return vol.astype(np.float32)


def relion_ctf(D: int, apix: float, dfu, dfv, ang_deg, kv=300.0, cs=2.7, q=0.1) -> np.ndarray:
    """RELION's CTF ``[n, D, D]`` on the centred grid (independent of the library).

    RELION evaluates ``−sin(χ)`` with ``χ = π λ (−Δf) k² + π/2 Cs λ³ k⁴ − φ − w``
    (its defocus enters negated), i.e. ``sin(π λ Δf k² − π/2 Cs λ³ k⁴ + φ + w)``.
    """
    k = (np.arange(D) - D // 2) / (D * apix)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    k2 = kx**2 + ky**2
    alpha = np.arctan2(ky, kx)
    volts = kv * 1e3
    lam = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    dfu, dfv, ang = (np.asarray(v, dtype=np.float64)[:, None, None] for v in (dfu, dfv, np.deg2rad(ang_deg)))
    df = 0.5 * (dfu + dfv) + 0.5 * (dfu - dfv) * np.cos(2 * (alpha - ang))
    w = math.atan(q / math.sqrt(1 - q * q))
    chi = math.pi * lam * (-df) * k2 + 0.5 * math.pi * cs * 1e7 * lam**3 * k2**2 - w
    return -np.sin(chi)


@dataclass
class Synthetic:
    particles: ParticleSet
    volume: np.ndarray
    apix: float


def make_dataset(
    D: int = 32,
    n: int = 2000,
    apix: float = 4.0,
    snr: float = math.inf,
    with_ctf: bool = True,
    shift_px: float = 1.5,
    seed: int = 0,
    volume: np.ndarray | None = None,
    half_set: np.ndarray | None = None,
) -> Synthetic:
    """Images of ``volume`` (default :func:`blob_volume`) with random poses, shifts, CTF and noise."""
    from cryoscape.imaging.projector import FourierProjector

    rng = np.random.default_rng(seed)
    vol = blob_volume(D, apix, seed=seed) if volume is None else volume
    proj = FourierProjector(torch.as_tensor(vol), oversampling=2)
    R = Rotation.random(n, random_state=seed + 1).as_matrix().transpose(0, 2, 1).copy()
    shifts = rng.normal(0.0, shift_px, (n, 2)) * apix
    dfu = rng.uniform(8000.0, 20000.0, n)
    dfv = dfu - rng.uniform(0.0, 300.0, n)
    ang = rng.uniform(0.0, 180.0, n)
    k = (np.arange(D) - D // 2) / (D * apix)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    images = np.empty((n, D, D), dtype=np.float32)
    for s in range(0, n, 500):
        sl = slice(s, min(s + 500, n))
        F = proj.slice(torch.as_tensor(R[sl], dtype=torch.float32)).numpy().astype(np.complex128)
        # content moves by -origin: translate by t = -o, i.e. multiply by exp(+2πi k·o)
        o = shifts[sl]
        F *= np.exp(2j * np.pi * (kx[None] * o[:, 0, None, None] + ky[None] * o[:, 1, None, None]))
        if with_ctf:
            F *= relion_ctf(D, apix, dfu[sl], dfv[sl], ang[sl])
        img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(F, axes=(-2, -1))), axes=(-2, -1)).real
        images[sl] = img
    if np.isfinite(snr):
        r = np.hypot(*np.meshgrid(np.arange(D) - D // 2, np.arange(D) - D // 2, indexing="ij"))
        signal_var = float(images[:, r < D // 2].var())
        images += rng.normal(0.0, math.sqrt(signal_var / snr), images.shape).astype(np.float32)
    ctf = dict(defocus_u_A=dfu, defocus_v_A=dfv, defocus_angle_deg=ang) if with_ctf else {}
    ps = ParticleSet.from_arrays(images, R, shifts, apix=apix, half_set=half_set, **ctf)
    return Synthetic(ps, vol, apix)

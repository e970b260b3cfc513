"""Rendering a simulated stack: clean CTF-modulated images, the noise level, the batched MRC writer.

:class:`_Imager` makes clean images ``IFT(CTF · shift(−origin) · FT(projection))``
for batches of particles; :func:`_noise_level` sets the one noise std of the
dataset from the clean-signal variance of the first images;
:func:`_render_stack` adds the noise and writes each batch at its offset in
the stack (:class:`_StackWriter`), so memory does not grow with N.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import mrcfile
import numpy as np
import torch

from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.imaging import FourierProjector, add_noise, compute_ctf, phase_shift, project_atoms
from cryoscape.imaging.noise import circle_mask_2d, masked_variance
from cryoscape.io.atomic import atomic_path
from cryoscape.simulate.draws import _Draws
from cryoscape.simulate.sources import _AtomSource, _VolumeSource

PILOT_SIZE = 256
#: images per project_atoms chunk: small enough that its work arrays are reused, not re-mapped
ATOM_CHUNK = 32


class _Imager:
    """Clean, CTF-modulated, shifted images for batches of particles (torch float32)."""

    def __init__(self, source: _AtomSource | _VolumeSource, box: int, apix: float, voltage_kV: float,
                 cs_mm: float, amplitude_contrast: float, bfactor_A2: float) -> None:
        self.source, self.D, self.apix = source, int(box), float(apix)
        self.voltage_kV, self.cs_mm, self.Q, self.B = voltage_kV, cs_mm, amplitude_contrast, bfactor_A2
        if isinstance(source, _VolumeSource):
            self.projector = FourierProjector(torch.as_tensor(source.volume))
        else:
            self.frames = torch.as_tensor(source.frames_A)
            self.amplitudes = torch.as_tensor(source.amplitudes)
            self.sigma = torch.as_tensor(source.sigma_A)

    def projection_ft(self, idx: np.ndarray, d: _Draws) -> torch.Tensor:
        """Centred FT of the projections, complex [B, D, D]."""
        rot = torch.as_tensor(d.rotations[idx], dtype=torch.float32)
        if isinstance(self.source, _VolumeSource):
            return self.projector.slice(rot)
        coords = self.frames[torch.as_tensor(d.conformation[idx])]
        proj = project_atoms(coords, self.amplitudes, self.sigma, rot, self.D, self.apix, batch_size=ATOM_CHUNK)
        return fftn_c(proj, 2)

    def images(self, idx: np.ndarray, d: _Draws) -> torch.Tensor:
        """Clean observed images real [B, D, D]: IFT(CTF · shift(−origin) · projection FT)."""
        n = len(idx)
        f32 = dict(dtype=torch.float32)
        ctf = compute_ctf(
            self.D, self.apix,
            torch.as_tensor(d.defocus_u_A[idx], **f32), torch.as_tensor(d.defocus_v_A[idx], **f32),
            torch.as_tensor(d.defocus_angle_deg[idx], **f32), torch.full((n,), self.voltage_kV, **f32),
            torch.full((n,), self.cs_mm, **f32), torch.full((n,), self.Q, **f32),
            torch.zeros(n, **f32), torch.full((n,), self.B, **f32),
        )
        shift = phase_shift(self.D, torch.as_tensor(-d.shifts_A[idx], **f32), self.apix)
        ft = self.projection_ft(idx, d) * shift * ctf
        return ifftn_c(ft, 2).real.to(torch.float32)


def _batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


class _StackWriter:
    """Write a float32 MRC image stack batch by batch with plain file writes.

    The header is made by :mod:`mrcfile`; pixel data are written at their
    offsets, so memory use does not grow with the number of images. Header
    statistics are accumulated per batch and stored on :meth:`close`.
    """

    def __init__(self, path: Path, n: int, box: int, apix: float) -> None:
        self.path = path
        with mrcfile.new_mmap(str(path), shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = float(apix)
            mrc.header.origin = (0.0, 0.0, 0.0)
            # a fixed label instead of mrcfile's timestamp keeps stacks byte-identical for a seed
            mrc.header.label[0] = b"cryoscape simulate"
            mrc.header.nlabl = 1
            self.dtype = mrc.data.dtype
            self.offset = int(mrc.header.nbytes) + int(mrc.header.nsymbt)
        self.image_bytes = box * box * self.dtype.itemsize
        self.fh = open(path, "r+b")
        self.count = 0
        self.lo, self.hi, self.s1, self.s2 = np.inf, -np.inf, 0.0, 0.0

    def write(self, idx: np.ndarray, images: np.ndarray) -> None:
        """Write images ``[b, D, D]`` for consecutive particle indices ``idx``."""
        self.fh.seek(self.offset + int(idx[0]) * self.image_bytes)
        self.fh.write(np.ascontiguousarray(images, dtype=self.dtype).tobytes())
        x = images.astype(np.float64)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.s1 += float(x.sum())
        self.s2 += float((x * x).sum())
        self.count += x.size

    def close(self) -> None:
        """Close the file and store min, max, mean and rms in the header."""
        self.fh.close()
        mean = self.s1 / max(self.count, 1)
        with mrcfile.mmap(str(self.path), mode="r+") as mrc:
            h = mrc.header
            h.dmin, h.dmax, h.dmean = self.lo, self.hi, mean
            h.rms = math.sqrt(max(self.s2 / max(self.count, 1) - mean * mean, 0.0))


def _render_stack(path: Path, imager: _Imager, draws: _Draws, batch_size: int, noise_std: float,
                  noise_rng: np.random.Generator, progress: bool, force: bool) -> None:
    """Render every particle batch by batch (clean image + white noise) into the MRC stack."""
    n = len(draws.conformation)
    gen = torch.Generator().manual_seed(int(noise_rng.integers(0, 2**63 - 1)))
    with torch.inference_mode(), atomic_path(path, force) as tmp:
        writer = _StackWriter(tmp, n, imager.D, imager.apix)
        try:
            for idx in _progress(_batches(n, batch_size), n, progress):
                img = imager.images(idx, draws)
                if noise_std > 0:
                    img = add_noise(img, None, generator=gen, noise_std=noise_std)
                writer.write(idx, img.numpy())
        finally:
            writer.close()


def _noise_level(imager: _Imager, d: _Draws, n: int, snr: float, radius_px: float) -> tuple[float, float]:
    """Mean clean-signal variance inside the particle circle (first images) and the noise std."""
    with torch.inference_mode():
        img = imager.images(np.arange(min(n, PILOT_SIZE)), d)
    signal_var = float(masked_variance(img, circle_mask_2d(imager.D, radius_px)).mean())
    noise_std = 0.0 if math.isinf(snr) else math.sqrt(signal_var / snr)
    return signal_var, noise_std


def _progress(it: Iterator[np.ndarray], n: int, enabled: bool) -> Iterator[np.ndarray]:
    if not enabled:
        yield from it
        return
    from tqdm.auto import tqdm

    with tqdm(total=n, unit="img", desc="simulate") as bar:
        for idx in it:
            yield idx
            bar.update(len(idx))

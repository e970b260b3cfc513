"""Particles as batches for gradient fits: fitted frequencies, image normalisation, poses and CTF on the device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cryoscape.errors import InputError

__all__ = ['FitPoints', 'fit_points', 'Batch', 'estimate_norm_scale', 'ParticleBatches']


@dataclass(frozen=True)
class FitPoints:
    """Half-set points the loss and the encoder use.

    ``fit``: indices into ``slice_points(D, half=True)`` with ``|k| < max_freq·D/2``;
    ``weights``: Hermitian weights ``[P_fit]`` (1 at DC, 2 elsewhere);
    ``encoder``: indices of the encoder's input points (``|k| < encoder_max_freq·D/2``).
    """

    D: int
    fit: torch.Tensor
    weights: torch.Tensor
    encoder: torch.Tensor

    @property
    def n_disc(self) -> float:
        """Number of disc pixels the fitted points stand for (``Σ weights``)."""
        return float(self.weights.sum())


def _disc_indices(D: int, frac: float) -> torch.Tensor:
    from cryoscape.imaging._grid import slice_points

    pts = slice_points(D, True)
    r2 = pts.kx ** 2 + pts.ky ** 2
    return torch.nonzero(r2 < (frac * D / 2) ** 2).reshape(-1)


def fit_points(D: int, max_freq: float = 1.0, encoder_max_freq: float = 1.0) -> FitPoints:
    """:class:`FitPoints` for box ``D``; frequencies as fractions of Nyquist (``(0, 1]``)."""
    from cryoscape.imaging._grid import slice_points

    for name, v in (("max_freq", max_freq), ("encoder_max_freq", encoder_max_freq)):
        if not 0 < v <= 1:
            raise InputError(f"{name} must be a fraction of Nyquist in (0, 1]; got {v}")
    fit = _disc_indices(D, max_freq)
    w = 2.0 * slice_points(D, True).insert_weight[fit]
    return FitPoints(D, fit, w, _disc_indices(D, encoder_max_freq))


@dataclass
class Batch:
    """One batch on the compute device.

    idx ``(B,)`` int64 particle indices; y complex ``[B, P_fit]`` normalised image
    FT; y_enc complex ``[B, P_enc]`` the same on the encoder's points with the shift
    removed; R ``[B, 3, 3]``; shifts_A ``[B, 2]``; ctf ``[B, P_fit]`` and ctf_enc
    ``[B, P_enc]`` or None.
    """

    idx: torch.Tensor
    y: torch.Tensor
    y_enc: torch.Tensor
    R: torch.Tensor
    shifts_A: torch.Tensor
    ctf: torch.Tensor | None
    ctf_enc: torch.Tensor | None = None


def estimate_norm_scale(particles: Any, n_images: int = 1000, invert: bool = False, batch_size: int = 256) -> float:
    """Root-mean-square of the images' half-set Fourier values (Hermitian-weighted, whole disc).

    Read from ``n_images`` evenly spaced particles (deterministic).
    """
    from cryoscape.imaging._grid import slice_points
    from cryoscape.imaging.projector import image_to_half

    N = len(particles)
    idx = np.unique(np.linspace(0, N - 1, min(N, n_images)).round().astype(np.int64))
    w = 2.0 * slice_points(particles.box, True).insert_weight.double()
    total, count = 0.0, 0.0
    for a in range(0, idx.size, batch_size):
        img = torch.as_tensor(particles.read_images(idx[a:a + batch_size]), dtype=torch.float64)
        y = image_to_half(-img if invert else img)
        total += float(((y.abs() ** 2) * w).sum())
        count += float(w.sum()) * y.shape[0]
    scale = math.sqrt(total / count)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError("the particle images are constant or not finite; check the image stack")
    return scale


class ParticleBatches:
    """Per-particle poses and CTF plus batch reading, on the compute device.

    Args:
        particles: a posed :class:`~cryoscape.particles.ParticleSet`.
        points: :class:`FitPoints` for the particles' box.
        norm_scale: the images are divided by it (see :func:`estimate_norm_scale`).
        use_ctf: apply the particles' CTF (they must have one).
        invert: negate the images (stacks stored dark on white).
        encoder_phase_flip: multiply the encoder input by the sign of the CTF.
        device: compute device.
        encoder_residual: give the encoder the image minus the representation's
            reference part (its ``reference_slices``, e.g. a consensus map ``V₀``)
            rendered at the particle's consensus pose (when it has one).
    """

    def __init__(self, particles: Any, points: FitPoints, norm_scale: float, use_ctf: bool = True,
                 invert: bool = False, encoder_phase_flip: bool = False, device: str | torch.device = "cpu",
                 encoder_residual: bool = False) -> None:
        self.particles = particles
        self.points = points
        self.D, self.apix = int(particles.box), float(particles.apix)
        self.norm_scale, self.invert = float(norm_scale), bool(invert)
        self.device = torch.device(device)
        self.use_ctf = bool(use_ctf)
        self.encoder_phase_flip = bool(encoder_phase_flip) and self.use_ctf
        self.encoder_residual = bool(encoder_residual)
        self.rotations = torch.as_tensor(particles.rotations, dtype=torch.float32)
        sh = particles.shifts_A if particles.shifts_A is not None else np.zeros((len(particles), 2))
        self.shifts_A = torch.as_tensor(sh, dtype=torch.float32)
        self.ctf = None
        if self.use_ctf:
            from cryoscape.imaging.ctf import CTF_FIELDS

            table = particles.ctf_table()
            self.ctf = {k: torch.tensor(np.asarray(table[k], dtype=np.float64)) for k in CTF_FIELDS}
        from cryoscape.imaging._grid import half_points_subset

        self._fit_points = half_points_subset(self.D, points.fit, self.device)
        self._enc_points = half_points_subset(self.D, points.encoder, self.device)
        self.fit_idx = points.fit.to(self.device)
        self.enc_idx = points.encoder.to(self.device)
        self.weights = points.weights.to(self.device)

    def __len__(self) -> int:
        return len(self.particles)

    def ctf_at(self, idx: torch.Tensor, encoder: bool = False) -> torch.Tensor | None:
        """CTF ``[B, P]`` of particles ``idx`` on the fit (or encoder) points, or None without CTF."""
        if self.ctf is None:
            return None
        from cryoscape.imaging.forward import transfer_at

        params = {k: v[idx.cpu()].to(self.device, torch.float32) for k, v in self.ctf.items()}
        return transfer_at(self._enc_points if encoder else self._fit_points, self.apix, ctf_params=params)[0]

    def phase(self, shifts_A: torch.Tensor, encoder: bool = False) -> torch.Tensor:
        """Forward shift phase ``exp(−2πi k·(−origin))`` ``[B, P]`` on the fit (or encoder) points."""
        from cryoscape.imaging.forward import transfer_at

        return transfer_at(self._enc_points if encoder else self._fit_points, self.apix, shifts_A)[1]

    def batch(self, idx: np.ndarray) -> Batch:
        """Read and prepare particles ``idx`` (read in increasing order, returned in that order)."""
        from cryoscape.imaging.projector import image_to_half

        idx = np.asarray(idx, dtype=np.int64)
        img = torch.as_tensor(self.particles.read_images(idx), dtype=torch.float32).to(self.device)
        if self.invert:
            img = -img
        y_all = image_to_half(img) / self.norm_scale
        t = torch.as_tensor(idx)
        shifts = self.shifts_A[t].to(self.device)
        y_enc = y_all[:, self.enc_idx] * self.phase(shifts, encoder=True).conj()
        return Batch(t.to(self.device), y_all[:, self.fit_idx], y_enc, self.rotations[t].to(self.device), shifts,
                     self.ctf_at(t), self.ctf_at(t, encoder=True))

    def encoder_input(self, decoder: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's inputs: half-set values ``[B, P_enc]`` and the pose ``[B, 6]`` (first two rows of ``R``).

        The values are the re-centred image, minus ``CTF · V̂₀(Rᵀ k)`` with
        ``encoder_residual``, times ``sign(CTF)`` with ``encoder_phase_flip``.
        """
        y = batch.y_enc
        ref = decoder.reference_slices(batch.R, self.enc_idx) if self.encoder_residual else None
        if ref is not None:
            y = y - (ref if batch.ctf_enc is None else ref * batch.ctf_enc)
        if self.encoder_phase_flip and batch.ctf_enc is not None:
            y = y * torch.sign(batch.ctf_enc)
        return y, batch.R[:, :2, :].reshape(-1, 6)

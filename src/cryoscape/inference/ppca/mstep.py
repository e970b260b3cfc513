"""PPCA M-step: the streaming per-voxel sums of one pass and their regularised per-voxel solve.

:class:`MStepAccumulator` keeps, on the padded Fourier grid, the right-hand sides and
the (pairwise) weights of the ``(K+1) x (K+1)`` system of every voxel, fed batch by
batch with each image's contrast and posterior moments, and solves them a few planes
at a time. Formulas: the M-step section of :mod:`cryoscape.inference.ppca_em`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from cryoscape.imaging import image_to_half, insert_half, wiener_volume
from cryoscape.imaging._grid import padded_size, recon_points, slice_points
from cryoscape.imaging.forward import _fine_dft, _fine_ok, transfer_at
from cryoscape.inference.ppca.estep import Posterior

__all__ = ["MStepAccumulator"]


def _pairs(K1: int) -> list[tuple[int, int]]:
    return [(p, q) for p in range(K1) for q in range(p, K1)]


class MStepAccumulator:
    """Streaming sums of the PPCA M-step on the padded grid.

    Channels of the raw half-plane accumulator ``[C, M, M, M]``: ``2p`` and ``2p + 1``
    hold Re and Im of ``Σ_i a_i E[b̃_ip] Pᵀ(conj(T_i) y_i)`` (``p = 0..K``), then one
    channel per pair ``p <= q`` (order of :func:`_pairs`) holding
    ``Σ_i a_i² E[b̃_ip b̃_iq] Pᵀ|T_i|²``; ``K`` is ``latent_dim``, the number of components.
    """

    def __init__(self, D: int, latent_dim: int, oversampling: float = 2.0, device=None,
                 dtype: torch.dtype = torch.float32, fine_radius: int = 8) -> None:
        K = int(latent_dim)
        self.D, self.latent_dim, self.oversampling = D, K, float(oversampling)
        self.fine_radius = int(fine_radius)
        self.N = padded_size(D, oversampling)
        self.pairs = _pairs(K + 1)
        M = self.N + 1
        self.acc = torch.zeros(2 * (K + 1) + len(self.pairs), M, M, M, device=device, dtype=dtype)

    def insert(self, images: torch.Tensor, rotations, shifts_A, ctf_params: Mapping | None, apix: float,
               contrast: torch.Tensor, post: Posterior) -> None:
        """Add one batch: real images ``[B, D, D]``, rotations ``[B, 3, 3]``, shifts ``[B, 2]`` Å or None,
        CTF fields ``(B,)`` or None, and the batch's contrasts ``[B]`` and posterior."""
        Eb, Ebb = post.moments()
        a = contrast.to(Eb.dtype)
        u = a[:, None] * Eb  # [B, K+1]
        v = (a * a)[:, None, None] * Ebb
        pq = torch.stack([v[:, p, q] for p, q in self.pairs], dim=-1)  # [B, npair]
        x = images.to(device=self.acc.device, dtype=self.acc.dtype)
        R = torch.as_tensor(rotations, dtype=x.dtype, device=x.device).reshape(-1, 3, 3)
        for y, pts, wts in self._parts(x, ctf_params, apix):
            shifts = None if shifts_A is None else torch.as_tensor(shifts_A, dtype=x.dtype, device=x.device)
            ctf, phase = transfer_at(pts, apix, shifts, ctf_params, x.dtype)
            if phase is not None:
                y = y * phase.conj()  # the adjoint of the forward shift
            t2 = torch.ones_like(y.real)
            if ctf is not None:
                y, t2 = y * ctf, (ctf * ctf).expand_as(t2)
            num = u[:, None, :, None] * torch.stack([y.real, y.imag], dim=-1)[:, :, None, :]  # [B, P, K+1, 2]
            vals = torch.cat([num.reshape(*num.shape[:2], -1), t2[:, :, None] * pq[:, None, :]], dim=-1)
            if wts is not None:
                vals = vals * wts[:, None, None]
            insert_half(vals.contiguous(), R, self.D, self.oversampling, out=self.acc, points=pts)

    def _parts(self, x: torch.Tensor, ctf_params: Mapping | None, apix: float) -> list:
        """``(values [B, P'], points, per-image mask [B] or None)`` to insert, as in
        :func:`~cryoscape.imaging.backproject_images`: ``D``-spaced half-set samples beyond
        padded radius ``fine_radius``, the zero-padded image FT inside it (where the CTF is
        sampled finely enough, else the ``D``-spaced samples)."""
        D, N = self.D, self.N
        y_half = image_to_half(x)
        if self.fine_radius <= 0 or N <= D:
            return [(y_half, slice_points(D, True, x.device), None)]
        keep, coarse, inner_idx, inner, fine = recon_points(D, N, self.fine_radius, x.device)
        use_fine = _fine_ok(x.shape[0], D, N, apix, self.fine_radius, ctf_params, 1.0, x)
        return [(y_half[:, keep], coarse, None),
                (_fine_dft(x, fine.kx, fine.ky), fine, use_fine),
                (y_half[:, inner_idx], inner, 1.0 - use_fine)]

    def add(self, other: "MStepAccumulator") -> "MStepAccumulator":
        """Add ``other``'s sums (same box, latent dimension and grid) into this accumulator; returns self."""
        if other.acc.shape != self.acc.shape:
            raise ValueError(f"accumulators differ: {tuple(self.acc.shape)} and {tuple(other.acc.shape)}")
        self.acc += other.acc
        return self

    def solve(self, ridge: float, apix: float, resolution_limit_A: float | None = None,
              ssnr: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-voxel ridge solve and inverse FFT: ``(mean [D, D, D], components [K, D, D, D])`` real.

        ``ssnr`` ``[K + 1, D//2 + 1]`` (mean first, then the components): adds the
        per-channel Wiener term ``⟨weight of channel p⟩_k / SSNR_p(k)`` to the
        diagonal (see the module docstring); None: the ridge alone.
        """
        from cryoscape.reconstruct.wiener import regulariser_from_ssnr

        K1, N, h = self.latent_dim + 1, self.N, self.N // 2
        diag = [2 * K1 + self.pairs.index((p, p)) for p in range(K1)]
        means = self._shell_means(diag)  # [K1, D//2 + 1]; row 0: the mean's weight channel
        n_sh = means.shape[1]
        ridge_lam = regulariser_from_ssnr(means[0], np.full(n_sh, 1.0 / ridge)).to(torch.float64)
        lam_t = ridge_lam.expand(K1, n_sh)  # [K1, n_sh]
        if ssnr is not None:
            wiener = torch.stack([regulariser_from_ssnr(means[p], np.asarray(ssnr[p])) for p in range(K1)])
            lam_t = lam_t + wiener.to(torch.float64)
        shell, radius = self._shells(self.acc.device)
        keep = radius <= self.D / 2
        if resolution_limit_A is not None:
            keep &= radius / (self.D * apix) <= 1.0 / resolution_limit_A
        cdtype = torch.complex128 if self.acc.dtype == torch.float64 else torch.complex64
        out = torch.zeros(K1, N, N, h + 1, dtype=cdtype, device=self.acc.device)
        # with the SSNR term: each channel's mean gain B / (B + λ_ssnr) over the ridge solve (B: weight + ridge)
        gain = _ShellMeans(self.D, self.oversampling, K1, self.acc.device) if ssnr is not None else None
        for z0, z1 in self._plane_chunks():
            half = self._completed_planes(z0, z1)  # [C, dz, N, h + 1]
            A = torch.zeros(*half.shape[1:], K1, K1, dtype=torch.float64, device=half.device)
            for c, (p, q) in enumerate(self.pairs):
                A[..., p, q] = half[2 * K1 + c]
                A[..., q, p] = half[2 * K1 + c]
            sh = shell[z0:z1].clamp(max=n_sh - 1)
            reg = lam_t[:, sh]  # [K1, dz, N, h + 1]
            if gain is not None:
                base = torch.stack([half[i] for i in diag]).double() + ridge_lam[sh]
                gain.add(z0, z1, base / (base + reg - ridge_lam[sh]).clamp(min=1e-300))
            A += torch.diag_embed(reg.permute(1, 2, 3, 0))
            rhs = half[: 2 * K1].double().permute(1, 2, 3, 0).reshape(*half.shape[1:], K1, 2)
            X = torch.linalg.solve(A, rhs) * keep[z0:z1, ..., None, None]  # [dz, N, h+1, K1, 2]
            out[:, z0:z1] = torch.complex(X[..., 0], X[..., 1]).permute(3, 0, 1, 2).to(cdtype)
        if gain is None:
            vols = [self._to_real(out[p]) for p in range(K1)]
        else:  # the Wiener level of each channel goes on after the crop (see reconstruct.wiener)
            from cryoscape.geometry.fourier import scale_shells

            g = gain.means()  # [K1, n_sh]
            g = torch.where(g > 0, g, torch.ones_like(g))
            vols = [scale_shells(self._to_real(out[p] / g[p][shell.clamp(max=n_sh - 1)].to(out.real.dtype)), g[p])
                    for p in range(K1)]
        return vols[0], torch.stack(vols[1:]) if self.latent_dim else vols[0].new_zeros(0, *vols[0].shape)

    def _signs(self) -> torch.Tensor:
        """Hermitian completion sign per channel: −1 for the imaginary parts of the numerators, else +1."""
        sign = torch.ones(self.acc.shape[0], dtype=self.acc.dtype, device=self.acc.device)
        sign[1: 2 * (self.latent_dim + 1): 2] = -1
        return sign

    def _completed_planes(self, z0: int, z1: int, channels: list[int] | None = None) -> torch.Tensor:
        """Hermitian-completed sums on planes ``z0:z1`` of the ``kx >= 0`` slab, ``[C, z1 − z0, N, N/2 + 1]``.

        Equals ``complete_channels(acc)[:, z0:z1, :N, N/2:]`` without completing the whole grid:
        the Friedel mate of index ``j`` is ``N − j`` on every axis of the ``M = N + 1`` grid.
        """
        N, h = self.N, self.N // 2
        acc, sign = self.acc, self._signs()
        if channels is not None:
            acc, sign = acc[channels], sign[channels]
        mate = torch.flip(acc[:, N - z1 + 1: N - z0 + 1, 1:, : h + 1], dims=(1, 2, 3))
        return acc[:, z0:z1, :N, h:] + sign[:, None, None, None] * mate

    def _plane_chunks(self, budget_bytes: float = 64e6) -> list[tuple[int, int]]:
        """``(z0, z1)`` ranges whose per-voxel systems take about ``budget_bytes`` (float64)."""
        K1, N = self.latent_dim + 1, self.N
        per_plane = N * (N // 2 + 1) * (K1 * K1 + 4 * K1) * 8
        step = max(1, int(budget_bytes // per_plane))
        return [(z, min(z + step, N)) for z in range(0, N, step)]

    def _shell_means(self, channels: list[int]) -> torch.Tensor:
        """Mean over each shell ``0 .. D//2`` (inside Nyquist) of the completed ``channels``, ``[len, D//2 + 1]`` float64.

        The same numbers as :func:`cryoscape.reconstruct.wiener.shell_mean_weight` of each completed channel.
        """
        means = _ShellMeans(self.D, self.oversampling, len(channels), self.acc.device)
        for z0, z1 in self._plane_chunks():
            means.add(z0, z1, self._completed_planes(z0, z1, channels))
        return means.means()

    def _shells(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Shell index ``round(|q|)`` and radius ``|q|`` (cycles per box ``D``) on the ``[N, N, N/2+1]`` slab."""
        N, D = self.N, self.D
        q = (torch.arange(N, dtype=torch.float64, device=device) - N // 2) * (D / N)
        qx = torch.arange(N // 2 + 1, dtype=torch.float64, device=device) * (D / N)
        r = torch.sqrt(q[:, None, None] ** 2 + q[None, :, None] ** 2 + qx[None, None, :] ** 2)
        return torch.round(r).long(), r

    def _to_real(self, slab: torch.Tensor) -> torch.Tensor:
        """Real ``[D, D, D]`` volume from its FT on the ``kx >= 0`` slab (padded grid, grid-corrected)."""
        N, h = self.N, self.N // 2
        M = N + 1
        full = slab.new_zeros(M, M, M)
        full[:N, :N, h:] = slab
        ones = torch.ones(M, M, M, dtype=slab.real.dtype, device=slab.device)
        vol = wiener_volume(full, ones, 0.0, self.D, self.oversampling)
        return vol.to(self.acc.dtype)


class _ShellMeans:
    """Means over each shell ``0 .. D//2`` (voxels inside Nyquist, half-grid plane weights) of per-voxel
    values on the ``kx >= 0`` slab ``[C, N, N, N/2 + 1]``, added plane chunk by plane chunk."""

    def __init__(self, D: int, oversampling: float, channels: int, device) -> None:
        from cryoscape.imaging.wiener import half_shells

        self.g = half_shells(D, oversampling, device)
        self.sums = torch.zeros(channels, D // 2 + 1, dtype=torch.float64, device=device)

    def add(self, z0: int, z1: int, values: torch.Tensor) -> None:
        """Planes ``z0:z1`` of every channel, ``[C, z1 − z0, N, N/2 + 1]``."""
        w = values.double() * self.g.plane_weight
        inside = self.g.inside[z0:z1]
        idx = self.g.shell[z0:z1][inside]
        for c in range(w.shape[0]):
            self.sums[c].index_add_(0, idx, w[c][inside])

    def means(self) -> torch.Tensor:
        """``[C, D//2 + 1]`` float64 (0 in a shell without voxels)."""
        return self.sums / self.g.counts.clamp(min=1)

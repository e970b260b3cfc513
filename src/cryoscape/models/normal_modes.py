"""The normal-mode representation: an atomic model deformed along its elastic-network modes (survey §6).

Conformation ``z`` (``latent_dim`` = the number of modes ``K``) moves the
reference model along the ``K`` softest ANM modes of its network nodes (C-alpha
atoms, :mod:`cryoscape.models.elastic_network`), each scaled so that
``z_k ~ N(0, 1)`` is the elastic prior (RMS ``spread_k = rms_A · sqrt(λ₁/λ_k)``
Å per node). A linear mode moves atoms along straight lines, which stretches a
domain that rotates about a hinge once the amplitude is large. Here, as in
nonlinear normal-mode methods, every node carries a rigid block (the nodes
within a few Å, :func:`~cryoscape.models.elastic_network.block_twists`) whose
least-squares rigid velocity under mode ``k`` is the twist ``(ω_ik, v_ik)``;
at amplitudes ``z`` block ``i`` moves by the exponential of
``Σ_k z_k (ω_ik, v_ik)`` (a rotation by ``Ω_i = Σ z_k ω_ik`` about node ``i``
plus the translation ``J(Ω_i) V_i``, the SE(3) exponential map), and each atom
moves with the block of its residue's node. To first order in ``z`` this is the
linear mode; at large ``z`` the blocks of a rotating domain travel on arcs. The density
is the deformed model drawn as Gaussian atoms (pixel-integrated projections,
their Fourier coefficients computed analytically by
:func:`cryoscape.imaging.atoms_fourier.atom_coefficients`)
times one trainable contrast ``exp(log_scale)``, the only parameter a
gradient scheme changes; the modes are fixed by the model.

Coordinates are in Å from the box centre (voxel ``D // 2``), ordered (x, y, z).
Slices are the centred DFT of the projection image on the half set, as the
contract (:mod:`cryoscape.models.representation`) asks, so every inference
scheme fits this representation like any other. ``atoms``, ``amplitudes``,
the nodes, the atoms' owners and the twists are buffers: a run's ``weights.pt`` holds them, and
:meth:`NormalModeModel.from_config` builds an empty shell of the right shape.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cryoscape.imaging import rasterize_atoms
from cryoscape.imaging.atoms_fourier import atom_coefficient_derivatives, atom_coefficients

__all__ = ["NormalModeModel"]


class NormalModeModel(nn.Module):
    """Atoms ``[A, 3]`` moved by ``K`` modes as rigid blocks around ``n`` nodes, drawn as Gaussian atoms.

    Args:
        box, apix: image box ``D`` (px, even) and pixel size (Å/px).
        n_atoms, latent_dim, n_nodes: the shapes of the buffers (filled by :meth:`set_model`).
    """

    def __init__(self, box: int, apix: float, n_atoms: int, latent_dim: int, n_nodes: int) -> None:
        super().__init__()
        self.D = int(box)
        self._apix = float(apix)
        A, K, n = int(n_atoms), int(latent_dim), int(n_nodes)
        self.register_buffer("atoms", torch.zeros(A, 3))
        self.register_buffer("amplitudes", torch.zeros(A))
        self.register_buffer("sigmas_A", torch.ones(A))
        self.register_buffer("owner", torch.zeros(A, dtype=torch.int64))
        self.register_buffer("centres", torch.zeros(n, 3))
        self.register_buffer("omega", torch.zeros(K, n, 3))
        self.register_buffer("velocity", torch.zeros(K, n, 3))
        self.log_scale = nn.Parameter(torch.zeros(()))

    # ---------------------------------------------------------------- contract
    @property
    def box(self) -> int:
        return self.D

    @property
    def apix(self) -> float:
        return self._apix

    @property
    def latent_dim(self) -> int:
        return int(self.omega.shape[0])

    def config(self) -> dict[str, Any]:
        return {"kind": "normal-modes", "box": self.D, "apix": self._apix, "n_atoms": int(self.atoms.shape[0]),
                "latent_dim": self.latent_dim, "n_nodes": int(self.centres.shape[0])}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "NormalModeModel":
        """An empty model of the configured shapes (its buffers come from :meth:`set_model` or a state dict)."""
        return cls(int(config["box"]), float(config["apix"]), int(config["n_atoms"]), int(config["latent_dim"]),
                   int(config["n_nodes"]))

    def step_scale(self) -> float:
        """1: the one parameter is a log-contrast of order one."""
        return 1.0

    def set_model(self, atoms_A: np.ndarray, amplitudes: np.ndarray, sigmas_A: np.ndarray, owner: np.ndarray,
                  centres_A: np.ndarray, omega: np.ndarray, velocity_A: np.ndarray, scale: float = 1.0) -> None:
        """Fill the buffers: atoms ``[A, 3]`` (Å from the box centre), amplitudes and widths (Å) ``[A]``, each
        atom's node ``owner [A]``, the nodes ``centres_A [n, 3]``, the blocks' twists per unit amplitude
        ``omega [K, n, 3]`` (rad) and ``velocity_A [K, n, 3]`` (Å), and the starting contrast ``scale`` (> 0)."""
        dev = self.atoms.device
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)
        with torch.no_grad():
            self.atoms.copy_(as_t(atoms_A))
            self.amplitudes.copy_(as_t(amplitudes))
            self.sigmas_A.copy_(as_t(sigmas_A))
            self.owner.copy_(torch.as_tensor(np.asarray(owner, dtype=np.int64), device=dev))
            self.centres.copy_(as_t(centres_A))
            self.omega.copy_(as_t(omega))
            self.velocity.copy_(as_t(velocity_A))
            self.log_scale.fill_(float(np.log(scale)))

    def coordinates(self, z: torch.Tensor | None) -> torch.Tensor:
        """Moved atom positions ``[B, A, 3]`` (Å) at latents ``z [B, K]`` (``None``: the reference ``[1, A, 3]``)."""
        if z is None or self.latent_dim == 0:
            return self.atoms[None]
        z = z.reshape(-1, self.latent_dim).to(self.atoms.dtype)
        rot, trans = _se3_exp(torch.einsum("bk,knc->bnc", z, self.omega), torch.einsum("bk,knc->bnc", z, self.velocity))
        c = self.centres[self.owner]  # [A, 3]
        moved = torch.einsum("baij,aj->bai", rot[:, self.owner], self.atoms - c)
        return c[None] + moved + trans[:, self.owner]

    def _points(self, device, points: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        from cryoscape.imaging._grid import slice_points

        pts = slice_points(self.D, True, device)
        return (pts.kx, pts.ky) if points is None else (pts.kx[points], pts.ky[points])

    def slice_half(self, rotations: torch.Tensor, z: torch.Tensor | None = None,
                   points: torch.Tensor | None = None) -> torch.Tensor:
        """Centred DFT of the projections ``[B, P']`` on the half set (or ``points`` of it), computed
        analytically (:func:`cryoscape.imaging.atoms_fourier.atom_coefficients`); differentiable."""
        kx, ky = self._points(self.atoms.device, points)
        coef = atom_coefficients(self.coordinates(z), self.amplitudes, self.sigmas_A, rotations, self.D,
                                 self._apix, kx, ky)
        return coef * torch.exp(self.log_scale)

    def latent_jacobian(self, rotations: torch.Tensor, z: torch.Tensor,
                        points: torch.Tensor | None = None) -> torch.Tensor:
        """``∂ slice_half / ∂ z``: complex ``[B, P', K]`` (detached): the atoms' velocities along each latent
        (central differences of :meth:`coordinates` in float64, step 1e-4, error ~1e-8 Å), then the analytic
        derivative of the coefficients (:func:`~cryoscape.imaging.atoms_fourier.atom_coefficient_derivatives`)."""
        kx, ky = self._points(self.atoms.device, points)
        z = z.reshape(-1, self.latent_dim).detach()
        with torch.no_grad():
            coords = self.coordinates(z)
            dirs = _coordinate_velocities(self, z)
            d = atom_coefficient_derivatives(coords, self.amplitudes, self.sigmas_A, rotations, self.D, self._apix,
                                             kx, ky, dirs.to(coords.dtype))
            return d * torch.exp(self.log_scale)

    def reference_slices(self, rotations: torch.Tensor, points: torch.Tensor | None = None
                         ) -> torch.Tensor | None:
        """Slices of the undeformed model (the reference every conformation is a deformation of)."""
        with torch.no_grad():
            return self.slice_half(rotations, None, points)

    @torch.no_grad()
    def volumes(self, z: torch.Tensor | None) -> torch.Tensor:
        """Voxel-integrated volumes ``[B, D, D, D]`` of the deformed model at ``z [B, K]`` (``None``: the reference)."""
        coords = self.coordinates(None if z is None else torch.as_tensor(z, device=self.atoms.device))
        scale = torch.exp(self.log_scale)
        return torch.stack([rasterize_atoms(c, self.amplitudes, self.sigmas_A, self.D, self._apix) * scale
                            for c in coords])


def _se3_exp(omega: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation ``exp([Ω]×)`` ``[..., 3, 3]`` and translation ``J(Ω) v`` ``[..., 3]`` of the twist ``(Ω, v)``.

    ``J(Ω) v = a v + b Ω × v + c Ω (Ω · v)`` with ``a = sin θ / θ``, ``b = (1 − cos θ) / θ²``,
    ``c = (θ − sin θ) / θ³`` (``θ = |Ω|``; series below 1e-4 rad, so derivatives exist at ``Ω = 0``).
    """
    t2 = (omega * omega).sum(-1)
    small = t2 < 1e-8
    t = torch.sqrt(t2.clamp_min(1e-12))
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / t2.clamp_min(1e-12))
    c = torch.where(small, 1.0 / 6 - t2 / 120, (t - torch.sin(t)) / (t2 * t).clamp_min(1e-18))
    x, y, zc = omega.unbind(-1)
    zero = torch.zeros_like(x)
    W = torch.stack([zero, -zc, y, zc, zero, -x, -y, x, zero], dim=-1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    rot = eye + a[..., None, None] * W + b[..., None, None] * (W @ W)
    trans = a[..., None] * v + b[..., None] * torch.cross(omega, v, dim=-1) + \
        c[..., None] * omega * (omega * v).sum(-1, keepdim=True)
    return rot, trans


def _coordinate_velocities(rep: NormalModeModel, z: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """``∂ coordinates / ∂ z_k`` ``[B, K, A, 3]`` (float64).

    Per node, with ``Ω, V`` the twist at ``z`` and ``J`` the SO(3) left Jacobian of :func:`_se3_exp`: the
    rotation contributes ``(J(Ω) ω_k) × (R(Ω) r)`` for an atom at ``r`` from its node, the translation
    ``J(Ω) v_k + (∂J/∂Ω · ω_k) V`` (that last term by central differences at the nodes, step ``h``).
    """
    omega, velocity = rep.omega.double(), rep.velocity.double()
    z = z.double()
    Om = torch.einsum("bk,knc->bnc", z, omega)  # [B, n, 3]
    V = torch.einsum("bk,knc->bnc", z, velocity)
    rot, _ = _se3_exp(Om, V)
    Omk = Om[:, None].expand(-1, omega.shape[0], -1, -1)  # [B, K, n, 3]
    Vk = V[:, None].expand_as(Omk)
    u = _se3_exp(Omk, omega[None].expand_as(Omk))[1]  # J(Ω) ω_k
    dJ = (_se3_exp(Omk + h * omega[None], Vk)[1] - _se3_exp(Omk - h * omega[None], Vk)[1]) / (2 * h)
    dT = _se3_exp(Omk, velocity[None].expand_as(Omk))[1] + dJ  # [B, K, n, 3]
    rel = rep.atoms.double() - rep.centres.double()[rep.owner]  # [A, 3]
    turned = torch.einsum("baij,aj->bai", rot[:, rep.owner], rel)  # [B, A, 3]
    return torch.cross(u[:, :, rep.owner], turned[:, None].expand(-1, omega.shape[0], -1, -1), dim=-1) + \
        dT[:, :, rep.owner]

"""A neural hyper-molecule: an MLP over positional encodings of 3D frequencies and a latent (survey §7.2).

Representation
--------------
``V̂(τ, q) = MLP(PE(q / D), τ)`` gives the centred 3D DFT of the volume of
conformation ``τ`` at frequency ``q = (qx, qy, qz)`` in cycles per box ``D``
(the scale of :func:`cryoscape.geometry.fourier.fftn_c`, up to the global
factor ``scale`` the caller keeps, e.g. the image normalisation). The network
works in the **Fourier domain** with two outputs ``(a, b)`` and uses Hermitian
symmetry so that every coefficient is evaluated once:

* the *canonical half space* is ``qz > 0``, or ``qz = 0, qy > 0``, or
  ``qz = qy = 0, qx >= 0`` (it holds DC);
* at a canonical ``q`` the network gives ``V̂(q) = a + i b``; at any other ``q``
  it is evaluated at ``-q`` (canonical) and conjugated: ``V̂(q) = a - i b``;
* at DC ``b`` is dropped, so ``V̂(0)`` is real.

Hence ``V̂(τ, -q) = conj V̂(τ, q)`` exactly, for every ``q`` and every network
(the volume is real), and the Hartley transform is ``H(q) = Re V̂(q) - Im V̂(q)``
(``a - b`` on the canonical side, ``a + b`` on the other).

Images
------
A particle with rotation ``R`` (volume → particle frame) has central slice
``V̂(Rᵀ k)`` at image frequency ``k = (kx, ky)``. :meth:`NeuralHyperMolecule.slice_half`
evaluates it only on the half set ``H`` of in-circle frequencies
(:func:`cryoscape.imaging._grid.slice_points`, ``P`` points, DC first; the
other half are the conjugates), optionally only on a sub-set of those points
(e.g. a low-pass disc). CTF and shifts are applied by the caller with the
shared forward model (:func:`cryoscape.imaging.forward.transfer_half`). Because
no interpolation is involved, these slices equal the slices of
:meth:`~NeuralHyperMolecule.volume`'s DFT exactly wherever ``Rᵀ k`` falls on
the grid (tests compare both with the shared projector).

Reference volume (optional)
---------------------------
With ``base=True`` the hyper-molecule is ``V(τ) = V₀ + ΔV(τ)``: a fixed real
volume ``V₀`` (a buffer, e.g. the consensus reconstruction, saved with the
weights) plus the network ``ΔV̂(τ, q)`` above. ``V₀``'s slices come from the
shared projector (:func:`cryoscape.imaging.padded_volume_ft`, trilinear
interpolation on a grid oversampled ``base_oversampling`` times), so the
network only has to learn how the conformations differ from ``V₀``; its
output layer starts at zero, so training starts from ``V₀``.

Positional encodings
--------------------
The MLP sees ``u = q / D`` through a positional encoding
(:mod:`cryoscape.models.positional`: geometric or Gaussian random features).

The decoder keeps the :class:`~cryoscape.models.representation.Representation`
contract (``box``, ``apix``, ``latent_dim``, ``slice_half``,
``latent_jacobian``, ``reference_slices``, ``volumes``, ``config``), so any
gradient inference scheme fits it.

Build a model from its plain-type description with :func:`build_decoder`
(the same dict goes into a run's ``config.yaml``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from cryoscape.geometry.fourier import ifftn_c
from cryoscape.models.positional import ENCODINGS, GaussianEncoding, GeometricEncoding

__all__ = [
    "GeometricEncoding",
    "GaussianEncoding",
    "NeuralHyperMolecule",
    "canonical_sign",
    "slice_coordinates",
    "build_decoder",
    "decoder_spec",
    "ENCODINGS",
]

def canonical_sign(q: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``q`` ``[..., 3]`` (x, y, z) lies in the canonical half space, else ``-1``.

    Canonical: ``qz > 0``, or ``qz == 0 and qy > 0``, or ``qz == qy == 0 and qx >= 0``.
    """
    qx, qy, qz = q.unbind(-1)
    canon = (qz > 0) | ((qz == 0) & ((qy > 0) | ((qy == 0) & (qx >= 0))))
    return torch.where(canon, 1.0, -1.0).to(q.dtype)


def slice_coordinates(rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """``q = Rᵀ (kx, ky, 0)`` ``[B, P, 3]`` (x, y, z) for rotations ``[B, 3, 3]`` and points ``(P,)``.

    Units follow ``kx``/``ky`` (cycles per box here). ``R`` maps volume
    coordinates to the particle frame, so ``q_j = R[0, j] kx + R[1, j] ky``.
    """
    R = rotations
    return R[:, 0, None, :] * kx[None, :, None] + R[:, 1, None, :] * ky[None, :, None]


class NeuralHyperMolecule(nn.Module):
    """``V̂(τ, q)``: an MLP over ``PE(q / D)`` and the latent ``τ`` (see the module docstring).

    Args:
        D: box (even), px; frequencies are in cycles per box ``D``.
        latent_dim: latent dimension (0: a homogeneous model).
        encoding: a positional encoding module with ``out_dim``.
        hidden: width of the hidden layers.
        layers: number of hidden layers (``>= 1``); layers after the first are
            residual (``h + relu(W h + c)``).
    """

    def __init__(self, D: int, latent_dim: int, encoding: nn.Module, hidden: int = 256, layers: int = 3,
                 base: bool = False, base_oversampling: float = 2.0, apix: float = 1.0) -> None:
        super().__init__()
        self._apix = float(apix)
        self._spec: dict[str, Any] | None = None
        if D % 2 or D < 4:
            raise ValueError(f"box must be even and at least 4; got {D}")
        if layers < 1 or hidden < 1 or latent_dim < 0:
            raise ValueError(f"need layers >= 1, hidden >= 1, latent_dim >= 0; got {layers}, {hidden}, {latent_dim}")
        self.D, self._latent_dim = int(D), int(latent_dim)
        self.encoding = encoding
        self.input_pe = nn.Linear(encoding.out_dim, hidden)
        self.input_z = nn.Linear(latent_dim, hidden, bias=False) if latent_dim > 0 else None
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.output = nn.Linear(hidden, 2)
        self.base_oversampling = float(base_oversampling)
        self._base_cache: tuple[int, torch.Tensor] | None = None
        if base:
            self.register_buffer("base_volume", torch.zeros(D, D, D))
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        else:
            self.base_volume = None

    # ------------------------------------------------------------ the Representation contract
    @property
    def box(self) -> int:
        """Box size ``D`` (px)."""
        return self.D

    @property
    def latent_dim(self) -> int:
        """Latent dimension ``d`` (0: homogeneous)."""
        return self._latent_dim

    @property
    def apix(self) -> float:
        """Pixel size (Å/px) of the images it describes."""
        return self._apix

    def config(self) -> dict[str, Any]:
        """The :func:`decoder_spec` description it was built from, with ``kind`` and ``apix``."""
        if self._spec is None:
            raise ValueError("this decoder was not built by build_decoder; its config is unknown")
        return {"kind": "neural", **self._spec, "apix": self.apix}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "NeuralHyperMolecule":
        """A fresh decoder from :meth:`config` (torch's default init)."""
        return build_decoder(config)

    def step_scale(self) -> float:
        """1: the parameters are network weights of order one."""
        return 1.0

    def reference_slices(self, rotations: torch.Tensor, points: torch.Tensor | None = None
                         ) -> torch.Tensor | None:
        """Slices of the fixed reference ``V₀`` (detached), or None without one."""
        if self.base_volume is None:
            return None
        return self.base_slice_half(rotations, points).detach()

    @torch.no_grad()
    def volumes(self, z: torch.Tensor | None) -> torch.Tensor:
        """Real volumes ``[B, D, D, D]`` at latents ``z [B, latent_dim]`` (``[1, D, D, D]`` for None)."""
        if z is None:
            return self.volume(None)[None]
        zz = torch.as_tensor(z, dtype=torch.float32).reshape(-1, self.latent_dim)
        return torch.stack([self.volume(row) for row in zz])

    def latent_jacobian(self, rotations: torch.Tensor, z: torch.Tensor,
                        points: torch.Tensor | None = None) -> torch.Tensor:
        """``∂V̂(z_b, R_bᵀ k)/∂z_b``: complex ``[B, P', d]`` on the half set (or ``points`` of it), detached.

        The latent enters only through the first layer (``W_z z``), so the Jacobian is
        the gradient at the first pre-activation times ``W_z``, one backward pass per output.
        """
        from cryoscape.imaging._grid import slice_points

        pts = slice_points(self.D, True, rotations.device)
        kx, ky = (pts.kx, pts.ky) if points is None else (pts.kx[points], pts.ky[points])
        q = slice_coordinates(rotations.float().reshape(-1, 3, 3), kx.float(), ky.float())
        sgn = canonical_sign(q)
        u = q * (sgn / self.D)[..., None]
        with torch.enable_grad():
            pre = (self.input_pe(self.encoding(u)) + self.input_z(z)[:, None, :]).detach().requires_grad_(True)
            h = torch.relu(pre)
            for layer in self.hidden:
                h = h + torch.relu(layer(h))
            o = self.output(h)
            ga, = torch.autograd.grad(o[..., 0].sum(), pre, retain_graph=True)
            gb, = torch.autograd.grad(o[..., 1].sum(), pre)
        Wz = self.input_z.weight  # [H, d]
        not_dc = (q != 0).any(-1).float()
        return torch.complex(ga @ Wz, (gb @ Wz) * (sgn * not_dc)[..., None]).detach()

    # ------------------------------------------------------------ the reference volume
    @torch.no_grad()
    def set_base(self, volume: torch.Tensor) -> None:
        """Set ``V₀`` (real ``[D, D, D]``, in the decoder's units); only for ``base=True`` decoders."""
        if self.base_volume is None:
            raise ValueError("this decoder was built without a reference volume (base=False)")
        self.base_volume.copy_(torch.as_tensor(volume, dtype=self.base_volume.dtype))
        self._base_cache = None

    def _base_ft(self) -> torch.Tensor:
        """Padded FT of ``V₀`` for the shared projector, cached until the buffer changes."""
        key = (self.base_volume._version, self.base_volume.data_ptr(), self.base_volume.device)
        if self._base_cache is None or self._base_cache[0] != key:
            from cryoscape.imaging.projector import padded_volume_ft

            self._base_cache = (key, padded_volume_ft(self.base_volume.float(), self.base_oversampling).detach())
        return self._base_cache[1]

    def base_slice_half(self, rotations: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """Slices of ``V₀`` on the half set (or ``points`` of it), complex ``[B, P']``; 0 without a base."""
        from cryoscape.imaging.projector import extract_slices_half

        vals = extract_slices_half(self._base_ft(), rotations.float(), self.D, self.base_oversampling)
        return vals if points is None else vals[:, points]

    # ------------------------------------------------------------ the network
    def _latent_term(self, z: torch.Tensor | None, lead: int) -> torch.Tensor | int:
        """``W_z z`` ``[lead, 1, H]`` (added to every point of that latent), or 0."""
        if self.input_z is None:
            return 0
        if z is None:
            raise ValueError(f"this decoder takes a {self.latent_dim}-D latent; none was given")
        return self.input_z(z.reshape(lead, self.latent_dim).to(self.input_pe.weight.dtype))[:, None, :]

    def _mlp(self, u: torch.Tensor, z_term: torch.Tensor | int) -> torch.Tensor:
        """Raw outputs ``(a, b)`` ``[L, P, 2]`` at canonical ``u`` ``[L, P, 3]``."""
        h = torch.relu(self.input_pe(self.encoding(u)) + z_term)
        for layer in self.hidden:
            h = h + torch.relu(layer(h))
        return self.output(h)

    def evaluate(self, q: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``V̂(z, q)``: complex ``[L, P]`` for frequencies ``q`` ``[L, P, 3]`` (cycles per box, x, y, z).

        ``z`` is ``[L, latent_dim]`` (one latent per leading row) or None when ``latent_dim == 0``.
        The network runs in its parameters' dtype (or under an enclosing autocast);
        the result is complex64 (complex128 for float64 parameters).
        """
        if q.ndim != 3 or q.shape[-1] != 3:
            raise ValueError(f"q must be [L, P, 3]; got {tuple(q.shape)}")
        s = canonical_sign(q)
        u = q * (s / self.D)[..., None]
        out = self._mlp(u.to(self.input_pe.weight.dtype), self._latent_term(z, q.shape[0]))
        out = out.to(torch.promote_types(self.input_pe.weight.dtype, torch.float32))
        a, b = out[..., 0], out[..., 1]
        not_dc = (q != 0).any(-1).to(b.dtype)
        return torch.complex(a, b * s.to(b.dtype) * not_dc)

    def slice_half(self, rotations: torch.Tensor, z: torch.Tensor | None = None,
                   points: torch.Tensor | None = None) -> torch.Tensor:
        """Central-slice values ``V̂(z_b, R_bᵀ k)`` on the half set: complex ``[B, P']``.

        Args:
            rotations: ``[B, 3, 3]`` (gradients flow to them).
            z: ``[B, latent_dim]`` latents (None for ``latent_dim == 0``).
            points: indices into ``slice_points(D, half=True)`` to evaluate (default:
                all ``P``, DC first), e.g. the points of a low-pass disc.
        """
        from cryoscape.imaging._grid import slice_points

        pts = slice_points(self.D, True, rotations.device)
        kx, ky = pts.kx, pts.ky
        if points is not None:
            kx, ky = kx[points], ky[points]
        R = rotations.reshape(-1, 3, 3).to(torch.promote_types(self.input_pe.weight.dtype, torch.float32))
        q = slice_coordinates(R, kx.to(R.dtype), ky.to(R.dtype))
        vals = self.evaluate(q, z)
        if self.base_volume is not None:
            vals = vals + self.base_slice_half(R, points).to(vals.dtype)
        return vals

    # ------------------------------------------------------------ volumes
    @torch.no_grad()
    def volume_ft(self, z: torch.Tensor | None = None, max_freq: float = 1.0, chunk: int = 1 << 15) -> torch.Tensor:
        """The network's centred 3D DFT ``[D, D, D]`` (kz, ky, kx) complex at latent ``z`` ``(latent_dim,)``.

        Evaluated once per pair ``±q`` (canonical ``q`` only, the mirror is its
        conjugate), strictly inside the sphere ``|q| < max_freq · D/2`` (a fraction
        of Nyquist: the frequencies the decoder was fitted on); zero outside
        (always including the unpaired index-0 planes). ``V₀`` is not included.
        """
        D, dev = self.D, self.input_pe.weight.device
        f = torch.arange(D, device=dev, dtype=torch.float32) - D // 2
        gz, gy, gx = torch.meshgrid(f, f, f, indexing="ij")
        q = torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)
        inside = 4 * (q * q).sum(-1) < (min(float(max_freq), 1.0) * D) ** 2
        canon = inside & (canonical_sign(q) > 0)
        idx = torch.nonzero(canon).reshape(-1)
        zz = None if z is None else torch.as_tensor(z, dtype=torch.float32, device=dev).reshape(1, -1)
        vals = [self.evaluate(q[idx[a:a + chunk]][None], zz)[0] for a in range(0, idx.numel(), chunk)]
        v = torch.cat(vals) if vals else torch.zeros(0, dtype=torch.complex64, device=dev)
        out = torch.zeros(D * D * D, dtype=v.dtype, device=dev)
        out[idx] = v
        mq = (-q[idx]).long() + D // 2  # mirrors, all inside the grid (|q| < D/2)
        out[(mq[:, 2] * D + mq[:, 1]) * D + mq[:, 0]] = v.conj()
        return out.reshape(D, D, D)

    @torch.no_grad()
    def volume(self, z: torch.Tensor | None = None, scale: float = 1.0, max_freq: float = 1.0) -> torch.Tensor:
        """Real volume ``[D, D, D]`` (z, y, x), centre voxel ``D//2``:
        ``scale · (V₀ + ifftn_c(volume_ft(z, max_freq)))``.

        Its projections have centred 2D DFTs equal to the decoder's slices (times
        ``scale``), by the Fourier-slice theorem in the unnormalised-DFT convention.
        """
        ft = self.volume_ft(z, max_freq)
        vol = ifftn_c(ft, 3).real
        if self.base_volume is not None:
            vol = vol + self.base_volume.to(vol.dtype)
        return vol * float(scale)


# ------------------------------------------------------------------ building from a description
def decoder_spec(D: int, latent_dim: int, hidden: int = 256, layers: int = 3, pe: str = "geometric",
                 pe_dim: int | None = None, pe_min_px: float = 0.5, pe_max_px: float | None = None,
                 pe_sigma_px: float | None = None, pe_seed: int = 0, base: bool = False) -> dict[str, Any]:
    """The plain-type description of a decoder (what ``config.yaml`` stores), with defaults filled in.

    ``pe_dim``: frequencies per axis (geometric, default ``D // 2``) or features
    (gaussian, default ``3 D // 2``, the same input width). ``pe_max_px``
    (geometric, default ``D / 8``) and ``pe_sigma_px`` (gaussian, default
    ``D / 16``) in pixels; see the module docstring. ``base``: add a fixed
    reference volume ``V₀``.
    """
    if pe not in ENCODINGS:
        raise ValueError(f"unknown positional encoding {pe!r}; choose from {', '.join(ENCODINGS)}")
    if pe == "geometric":
        pe_dim = int(pe_dim) if pe_dim is not None else D // 2
        extra = {"pe_min_px": float(pe_min_px), "pe_max_px": float(pe_max_px if pe_max_px is not None else D / 8)}
    else:
        pe_dim = int(pe_dim) if pe_dim is not None else 3 * D // 2
        extra = {"pe_sigma_px": float(pe_sigma_px if pe_sigma_px is not None else D / 16), "pe_seed": int(pe_seed)}
    return {"box": int(D), "latent_dim": int(latent_dim), "hidden": int(hidden), "layers": int(layers), "pe": pe,
            "pe_dim": pe_dim, "base": bool(base), **extra}


def build_decoder(spec: Mapping[str, Any]) -> NeuralHyperMolecule:
    """A fresh :class:`NeuralHyperMolecule` from :func:`decoder_spec`'s dict (weights: torch's default init)."""
    if spec["pe"] == "geometric":
        enc: nn.Module = GeometricEncoding(int(spec["pe_dim"]), float(spec["pe_min_px"]), float(spec["pe_max_px"]))
    elif spec["pe"] == "gaussian":
        enc = GaussianEncoding(int(spec["pe_dim"]), float(spec["pe_sigma_px"]), int(spec.get("pe_seed", 0)))
    else:
        raise ValueError(f"unknown positional encoding {spec['pe']!r}; choose from {', '.join(ENCODINGS)}")
    model = NeuralHyperMolecule(int(spec["box"]), _latent_dim(spec), enc, int(spec["hidden"]), int(spec["layers"]),
                                base=bool(spec.get("base", False)), apix=float(spec.get("apix", 1.0)))
    model._spec = {k: v for k, v in spec.items() if k not in ("kind", "apix")}
    return model


def _latent_dim(spec: Mapping[str, Any]) -> int:
    """The spec's latent dimension (``latent_dim``; ``zdim`` in specs written before the name was unified)."""
    for key in ("latent_dim", "zdim"):
        if key in spec:
            return int(spec[key])
    raise ValueError(f"the spec {dict(spec)} has no latent_dim")

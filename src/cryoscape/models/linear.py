"""Mean plus principal volumes: the linear hyper-molecule ``V(z) = X0 + Σ_k z_k X_k``.

This is the representation of probabilistic PCA (survey §5; Remark 7.2 of the
survey calls it the simplest hyper-molecule). A latent ``z`` (``latent_dim``
numbers) picks a volume from a ``latent_dim``-dimensional affine subspace of
volumes. It keeps the :class:`~cryoscape.models.representation.Representation`
contract and the :class:`~cryoscape.models.representation.LinearInLatent`
capability, so it can be fitted by EM over closed-form posteriors as well as
by gradient schemes (an amortised encoder, explicit latents).

Layouts
-------
* ``mean``: real ``[D, D, D]`` (z, y, x), centre voxel ``D // 2``.
* ``components``: real ``[d, D, D, D]``; component ``k`` is ``X_{k+1}``.
* Slices come from the shared forward model
  (:func:`cryoscape.imaging.padded_volume_ft`,
  :func:`cryoscape.imaging.extract_slices_half`): complex values on the half set
  ``H`` of in-circle frequencies (``slice_points(D, half=True)``, ``P`` points,
  DC first), in the unnormalised centred-DFT scale of the projections.

Both volumes are :class:`torch.nn.Parameter` s, frozen unless the model is
built with ``trainable=True`` (or :meth:`requires_grad_` is called). When no
gradient is needed the padded FTs of the ``d + 1`` volumes are computed once
and cached until the volumes change (:meth:`set_volumes`, or an in-place update
such as an optimiser step: the cache is keyed on the tensors' versions); when one is, they
are recomputed on every call so the gradient reaches the volumes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cryoscape.imaging import extract_slices_half, extract_slices_half_stack, half_to_full, padded_volume_ft
from cryoscape.imaging.padding import padded_volume_ft_band

__all__ = ["LinearHyperMolecule"]

KIND = "linear"


def _tensor(x, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """``x`` (tensor or array) as a tensor (float32 for arrays unless ``dtype``)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device or x.device, dtype=dtype or x.dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float32, device=device)


class LinearHyperMolecule(nn.Module):
    """``V(z) = X0 + Σ_k z_k X_k`` with its slices through the shared Fourier projector.

    Args:
        mean: real ``[D, D, D]`` mean volume ``X0``.
        components: real ``[d, D, D, D]`` principal volumes ``X_1 .. X_d`` (``d >= 0``).
        oversampling: zero-padding factor of the padded FTs used for slicing.
        eigenvalues: optional ``[d]`` variance of each latent coordinate (set by
            :meth:`orthonormalise_components`); ``None`` for the PPCA
            parametrisation ``z ~ N(0, I_d)``.
        apix: pixel size (Å/px) of the images the model describes.
        trainable: whether gradient schemes may move the volumes.
    """

    def __init__(self, mean, components, oversampling: float = 2.0,
                 eigenvalues: torch.Tensor | None = None, apix: float = 1.0, trainable: bool = False) -> None:
        super().__init__()
        self.oversampling = float(oversampling)
        self._apix = float(apix)
        self.trainable = bool(trainable)
        self._fts: torch.Tensor | None = None
        self._fts_key: tuple | None = None
        self.set_volumes(mean, components)
        ev = None if eigenvalues is None else _tensor(eigenvalues, self.mean.dtype, self.mean.device)
        self.register_buffer("eigenvalues", ev)

    # ------------------------------------------------------------ building
    @classmethod
    def empty(cls, box: int, latent_dim: int, apix: float = 1.0, oversampling: float = 2.0,
              trainable: bool = False) -> "LinearHyperMolecule":
        """Zero volumes of box ``box`` and ``latent_dim`` components (a template for :meth:`with_volumes`)."""
        D, d = int(box), int(latent_dim)
        return cls(torch.zeros(D, D, D), torch.zeros(d, D, D, D), oversampling, apix=apix, trainable=trainable)

    def with_volumes(self, mean, components) -> "LinearHyperMolecule":
        """A new model with these volumes and this one's settings (oversampling, pixel size, trainable)."""
        return type(self)(mean, components, self.oversampling, apix=self.apix, trainable=self.trainable)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "LinearHyperMolecule":
        """Zero volumes from :meth:`config` (weights come from :meth:`load_state_dict`)."""
        return cls.empty(int(config["box"]), int(config["latent_dim"]), float(config.get("apix", 1.0)),
                         float(config.get("oversampling", 2.0)), bool(config.get("trainable", False)))

    def config(self) -> dict[str, Any]:
        """``kind``, ``box``, ``latent_dim``, ``apix``, ``oversampling``, ``trainable`` (plain types)."""
        return {"kind": KIND, "box": self.box, "latent_dim": self.latent_dim, "apix": self.apix,
                "oversampling": self.oversampling, "trainable": self.trainable}

    # ------------------------------------------------------------ volumes
    def set_volumes(self, mean, components) -> None:
        """Replace ``X0`` (``[D, D, D]``) and ``X_1..d`` (``[d, D, D, D]``); clears the FT cache."""
        m = _tensor(mean)
        c = _tensor(components, m.dtype, m.device)
        if m.ndim != 3 or len(set(m.shape)) != 1 or m.shape[0] % 2:
            raise ValueError(f"mean must be an even cube [D, D, D], got {tuple(m.shape)}")
        if c.ndim != 4 or tuple(c.shape[1:]) != tuple(m.shape):
            raise ValueError(f"components must be [K, {m.shape[0]}, {m.shape[0]}, {m.shape[0]}], got {tuple(c.shape)}")
        self.mean = nn.Parameter(m, requires_grad=self.trainable)
        self.components = nn.Parameter(c, requires_grad=self.trainable)
        self._fts = None

    @property
    def box(self) -> int:
        """Box size ``D`` in voxels."""
        return int(self.mean.shape[-1])

    @property
    def latent_dim(self) -> int:
        """Number of principal volumes ``d``."""
        return int(self.components.shape[0])

    @property
    def apix(self) -> float:
        """Pixel size (Å/px)."""
        return self._apix

    D = box
    K = latent_dim

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def _apply(self, fn, *args, **kwargs):
        self._fts = None
        return super()._apply(fn, *args, **kwargs)

    def requires_grad_(self, requires_grad: bool = True) -> "LinearHyperMolecule":
        self.trainable = bool(requires_grad)
        self._fts = None
        return super().requires_grad_(requires_grad)

    def volume(self, b) -> torch.Tensor:
        """``X0 + Σ_k b_k X_k`` for latents ``b [..., d]`` -> real ``[..., D, D, D]``."""
        b = _tensor(b, self.dtype, self.device)
        if b.shape[-1] != self.latent_dim:
            raise ValueError(f"latents have {b.shape[-1]} coordinates but the model has {self.latent_dim} components")
        return self.mean + torch.tensordot(b, self.components, dims=([-1], [0]))

    @torch.no_grad()
    def volumes(self, z) -> torch.Tensor:
        """Volumes ``[B, D, D, D]`` at latents ``z [B, d]`` (the protocol's batch form of :meth:`volume`)."""
        if z is None:
            return self.mean.detach()[None].clone()
        return self.volume(_tensor(z, self.dtype, self.device).reshape(-1, self.latent_dim)).detach()

    def step_scale(self) -> float:
        """RMS voxel value of the mean (of the components when the mean is zero; 1 when all are zero)."""
        for v in (self.mean, self.components):
            rms = float(v.detach().double().pow(2).mean().sqrt())
            if rms > 0:
                return rms
        return 1.0

    # ------------------------------------------------------------- slices
    def _needs_grad(self) -> bool:
        return torch.is_grad_enabled() and (self.mean.requires_grad or self.components.requires_grad)

    def padded_fts(self) -> torch.Tensor:
        """Padded FTs ``[d + 1, M, M, M]`` complex of ``X0, X_1 .. X_d`` (index 0 = the mean).

        Cached while no gradient is needed; recomputed (differentiable) otherwise.
        """
        if self._needs_grad():
            vols = torch.cat([self.mean[None], self.components], dim=0)
            return torch.stack([padded_volume_ft(v, self.oversampling) for v in vols])
        key = (self.mean._version, self.components._version, self.mean.data_ptr(), self.components.data_ptr())
        if self._fts is None or self._fts_key != key:
            with torch.no_grad():
                vols = torch.cat([self.mean[None], self.components], dim=0)
                self._fts = torch.stack([padded_volume_ft(v, self.oversampling) for v in vols])
            self._fts_key = key
        return self._fts

    def component_slices(self, rotations, points: torch.Tensor | None = None) -> torch.Tensor:
        """Half-set slices of every volume: complex ``[B, d + 1, P]`` (``[:, 0]`` the mean).

        ``rotations``: ``[B, 3, 3]`` (volume -> particle frame); slice ``b`` samples ``X̂(R_bᵀ k)``.
        ``points``: optional indices into the half set (``[B, d + 1, P']``).
        """
        R = _tensor(rotations, self.dtype, self.device).reshape(-1, 3, 3) if not isinstance(rotations, torch.Tensor) \
            else rotations.to(device=self.device, dtype=self.dtype).reshape(-1, 3, 3)
        band = self._band(points) if self._needs_grad() else None
        if band is not None:  # training on low frequencies: the central cube of the FTs by DFT matrices
            vols = torch.cat([self.mean[None], self.components], dim=0)
            fts = padded_volume_ft_band(vols, self.oversampling, band)
        else:
            fts = self.padded_fts()
            if points is None:  # every point: one volume at a time is the faster gather
                return torch.stack([extract_slices_half(ft, R, self.box, self.oversampling) for ft in fts], dim=1)
        return extract_slices_half_stack(fts, R, self.box, self.oversampling, points, band)

    def _band(self, points: torch.Tensor | None) -> int | None:
        """Half-width (padded units) of the central FT cube that holds ``points``' slices; None: use the whole FT."""
        if points is None:
            return None
        from cryoscape.imaging._grid import padded_size, slice_points

        half = slice_points(self.box, True, self.device)
        radius = float(torch.sqrt(half.kx[points] ** 2 + half.ky[points] ** 2).max()) if points.numel() else 0.0
        N = padded_size(self.box, self.oversampling)
        band = int(np.floor(radius * N / self.box)) + 2
        return band if band < N // 2 // 2 else None  # the cube pays only when it is well inside the padded grid

    def _coefficients(self, z, B: int, dtype: torch.dtype) -> torch.Tensor:
        if z is None:
            if self.latent_dim:
                raise ValueError(f"this model takes a {self.latent_dim}-D latent; none was given")
            return torch.ones(B, 1, dtype=dtype, device=self.device)
        b = z.to(self.dtype) if isinstance(z, torch.Tensor) else _tensor(z, self.dtype, self.device)
        b = b.reshape(B, self.latent_dim)
        return torch.cat([torch.ones_like(b[:, :1]), b], dim=1).to(dtype)

    def slice_half(self, rotations, z=None, points: torch.Tensor | None = None) -> torch.Tensor:
        """Central slices of ``V(z_b)``: complex ``[B, P']`` on the half set (or its ``points``); differentiable."""
        s = self.component_slices(rotations, points)
        return torch.einsum("bkp,bk->bp", s, self._coefficients(z, s.shape[0], s.dtype))

    def slices(self, rotations, b, full: bool = False) -> torch.Tensor:
        """Central slices of ``V(b_i)``: ``[B, P]`` half-set values (or ``[B, D, D]`` centred with ``full``)."""
        vals = self.slice_half(rotations, b)
        return half_to_full(vals, self.box) if full else vals

    def latent_jacobian(self, rotations, z, points: torch.Tensor | None = None) -> torch.Tensor:
        """``∂ slice / ∂ z`` = the components' slices: complex ``[B, P', d]`` (detached)."""
        with torch.no_grad():
            return self.component_slices(rotations, points)[:, 1:].transpose(1, 2).contiguous()

    def reference_slices(self, rotations, points: torch.Tensor | None = None) -> torch.Tensor:
        """Slices of the mean ``X0``: complex ``[B, P']`` (detached)."""
        with torch.no_grad():
            fts = self.padded_fts()[:1]
            R = rotations.to(device=self.device, dtype=self.dtype).reshape(-1, 3, 3)
            out = extract_slices_half(fts[0], R, self.box, self.oversampling)
        return out if points is None else out[:, points]

    # ---------------------------------------------------- orthonormalising
    @torch.no_grad()
    def orthonormalise_components(self, mask=None, second_moment=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the principal volumes orthonormal and ordered by latent variance.

        With ``W`` the ``[n, d]`` matrix of (masked) flattened components, the thin
        SVD ``W = U S Vᵀ`` and the latent second moment ``C = E[b bᵀ]``
        (``second_moment`` ``[d, d]``, default the prior ``I``), the new latents are
        ``b' = T b`` with ``T = Qᵀ S Vᵀ``, where ``Q`` diagonalises ``S Vᵀ C V S``,
        and the new components are ``U Q`` (unit L2 norm over voxels, mutually
        orthogonal). ``Σ_k b_k X_k`` is unchanged inside the mask; the components
        are multiplied by ``mask`` first (values in ``[0, 1]``, ``[D, D, D]``).
        Signs are fixed so each component's voxel sum is non-negative.

        Returns:
            ``(T [d, d], eigenvalues [d])``: map latents with ``b' = b @ T.T`` and
            covariances with ``T Σ Tᵀ``; ``eigenvalues`` (descending) are the
            variances ``E[b'_k²]`` of the new latents, also stored on the model.
        """
        K, D = self.latent_dim, self.box
        comps = self.components.detach()
        if mask is not None:
            comps = comps * _tensor(mask, self.dtype, self.device)
        W = comps.reshape(K, -1).T.double()  # [n, K]
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        C = torch.eye(K, dtype=torch.float64, device=W.device) if second_moment is None else \
            _tensor(second_moment, torch.float64, W.device)
        SV = S[:, None] * Vh  # S Vᵀ  [K, K]
        evals, Q = torch.linalg.eigh(SV @ C @ SV.T)
        order = torch.argsort(evals, descending=True)
        evals, Q = evals[order], Q[:, order]
        new = U @ Q  # [n, K]
        sign = torch.where(new.sum(0) < 0, -1.0, 1.0).to(new.dtype)
        new, Q = new * sign, Q * sign
        T = Q.T @ SV
        self.set_volumes(self.mean, new.T.reshape(K, D, D, D).to(self.dtype))
        self.eigenvalues = evals.clamp(min=0).to(self.dtype)
        return T.to(self.dtype), self.eigenvalues

    # --------------------------------------------------------- persistence
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "oversampling"] = torch.tensor(self.oversampling, dtype=torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "oversampling"
        if key in state_dict:
            self.oversampling = float(state_dict[key])
        ev = state_dict.get(prefix + "eigenvalues")
        if ev is not None and self.eigenvalues is None:
            self.eigenvalues = torch.zeros_like(ev)
        for name in ("mean", "components"):
            v = state_dict.get(prefix + name)
            if v is not None and tuple(v.shape) != tuple(getattr(self, name).shape):
                self.set_volumes(torch.zeros_like(state_dict[prefix + "mean"]),
                                 torch.zeros_like(state_dict[prefix + "components"]))
                break
        state = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(state, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._fts = None

    def state_dict(self, *args, **kwargs):
        """Tensors only: ``mean``, ``components``, ``oversampling`` (0-d), and ``eigenvalues`` when set (detached)."""
        out = super().state_dict(*args, **kwargs)
        for k, v in list(out.items()):
            if isinstance(v, torch.Tensor):
                out[k] = v.detach()
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], device=None) -> "LinearHyperMolecule":
        """Rebuild from :meth:`state_dict` (e.g. loaded with ``torch.load(..., weights_only=True)``)."""
        model = cls(state["mean"], state["components"], float(state["oversampling"]), state.get("eigenvalues"))
        return model.to(device) if device is not None else model

    def __repr__(self) -> str:
        return (f"LinearHyperMolecule(D={self.box}, K={self.latent_dim}, oversampling={self.oversampling}, "
                f"dtype={self.dtype})")

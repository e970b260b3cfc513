"""Mean plus principal volumes: the linear hyper-molecule ``V(b) = X0 + Σ_k b_k X_k``.

This is the representation of probabilistic PCA (survey §5; Remark 7.2 of the
survey calls it the simplest hyper-molecule). A latent ``b`` (``K`` numbers)
picks a volume from a ``K``-dimensional affine subspace of volumes.

Layouts
-------
* ``mean``: real ``[D, D, D]`` (z, y, x), centre voxel ``D // 2``.
* ``components``: real ``[K, D, D, D]``; component ``k`` is ``X_{k+1}``.
* Slices come from the shared forward model
  (:func:`cryoscape.imaging.padded_volume_ft`,
  :func:`cryoscape.imaging.extract_slices_half`): complex values on the half set
  ``H`` of in-circle frequencies (``slice_points(D, half=True)``, ``P`` points,
  DC first), in the unnormalised centred-DFT scale of the projections.

The padded FTs of the ``K + 1`` volumes are computed once and cached until the
volumes change (:meth:`LinearHyperMolecule.set_volumes`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from cryoscape.imaging import extract_slices_half, half_to_full, padded_volume_ft

__all__ = ["LinearHyperMolecule"]


def _tensor(x, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """``x`` (tensor or array) as a tensor (float32 for arrays unless ``dtype``)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device or x.device, dtype=dtype or x.dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float32, device=device)


class LinearHyperMolecule:
    """``V(b) = X0 + Σ_k b_k X_k`` with its slices through the shared Fourier projector.

    Args:
        mean: real ``[D, D, D]`` mean volume ``X0``.
        components: real ``[K, D, D, D]`` principal volumes ``X_1 .. X_K`` (``K >= 0``).
        oversampling: zero-padding factor of the padded FTs used for slicing.
        eigenvalues: optional ``[K]`` variance of each latent coordinate (set by
            :meth:`orthonormalise_components`); ``None`` for the PPCA
            parametrisation ``b ~ N(0, I_K)``.
    """

    def __init__(self, mean, components, oversampling: float = 2.0,
                 eigenvalues: torch.Tensor | None = None) -> None:
        self.oversampling = float(oversampling)
        self._fts: torch.Tensor | None = None
        self.set_volumes(mean, components)
        self.eigenvalues = None if eigenvalues is None else _tensor(eigenvalues, self.mean.dtype, self.mean.device)

    # ------------------------------------------------------------ volumes
    def set_volumes(self, mean, components) -> None:
        """Replace ``X0`` (``[D, D, D]``) and ``X_1..K`` (``[K, D, D, D]``); clears the FT cache."""
        m = _tensor(mean)
        c = _tensor(components, m.dtype, m.device)
        if m.ndim != 3 or len(set(m.shape)) != 1 or m.shape[0] % 2:
            raise ValueError(f"mean must be an even cube [D, D, D], got {tuple(m.shape)}")
        if c.ndim != 4 or tuple(c.shape[1:]) != tuple(m.shape):
            raise ValueError(f"components must be [K, {m.shape[0]}, {m.shape[0]}, {m.shape[0]}], got {tuple(c.shape)}")
        self.mean = m
        self.components = c
        self._fts = None

    @property
    def D(self) -> int:
        """Box size in voxels."""
        return int(self.mean.shape[-1])

    @property
    def K(self) -> int:
        """Number of principal volumes."""
        return int(self.components.shape[0])

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> "LinearHyperMolecule":
        """Move the volumes (and drop the FT cache) in place; returns ``self``."""
        ev = self.eigenvalues
        self.set_volumes(self.mean.to(device=device, dtype=dtype), self.components.to(device=device, dtype=dtype))
        self.eigenvalues = None if ev is None else ev.to(device=device, dtype=dtype)
        return self

    def volume(self, b) -> torch.Tensor:
        """``X0 + Σ_k b_k X_k`` for latents ``b [..., K]`` -> real ``[..., D, D, D]``."""
        b = _tensor(b, self.dtype, self.device)
        if b.shape[-1] != self.K:
            raise ValueError(f"latents have {b.shape[-1]} coordinates but the model has {self.K} components")
        return self.mean + torch.tensordot(b, self.components, dims=([-1], [0]))

    # ------------------------------------------------------------- slices
    def padded_fts(self) -> torch.Tensor:
        """Cached padded FTs ``[K + 1, M, M, M]`` complex of ``X0, X_1 .. X_K`` (index 0 = mean)."""
        if self._fts is None:
            vols = torch.cat([self.mean[None], self.components], dim=0)
            self._fts = torch.stack([padded_volume_ft(v, self.oversampling) for v in vols])
        return self._fts

    def component_slices(self, rotations) -> torch.Tensor:
        """Half-set slices of every volume: complex ``[B, K + 1, P]`` (``[:, 0]`` the mean).

        ``rotations``: ``[B, 3, 3]`` (volume -> particle frame); slice ``b`` samples ``X̂(R_bᵀ k)``.
        """
        fts = self.padded_fts()
        R = _tensor(rotations, self.dtype, self.device).reshape(-1, 3, 3)
        return torch.stack([extract_slices_half(ft, R, self.D, self.oversampling) for ft in fts], dim=1)

    def slices(self, rotations, b, full: bool = False) -> torch.Tensor:
        """Central slices of ``V(b_i)`` for a batch: ``[B, P]`` half-set values (or ``[B, D, D]`` centred with ``full``).

        ``rotations [B, 3, 3]``, ``b [B, K]``. Computed by linearity from :meth:`component_slices`.
        """
        s = self.component_slices(rotations)
        b = _tensor(b, self.dtype, self.device).reshape(s.shape[0], self.K)
        coef = torch.cat([torch.ones_like(b[:, :1]), b], dim=1).to(s.dtype)
        vals = torch.einsum("bkp,bk->bp", s, coef)
        return half_to_full(vals, self.D) if full else vals

    # ---------------------------------------------------- orthonormalising
    def orthonormalise_components(self, mask=None, second_moment=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the principal volumes orthonormal and ordered by latent variance.

        With ``W`` the ``[n, K]`` matrix of (masked) flattened components, the thin
        SVD ``W = U S Vᵀ`` and the latent second moment ``C = E[b bᵀ]``
        (``second_moment`` ``[K, K]``, default the prior ``I``), the new latents are
        ``b' = T b`` with ``T = Qᵀ S Vᵀ``, where ``Q`` diagonalises ``S Vᵀ C V S``,
        and the new components are ``U Q`` (unit L2 norm over voxels, mutually
        orthogonal). ``Σ_k b_k X_k`` is unchanged inside the mask; the components
        are multiplied by ``mask`` first (values in ``[0, 1]``, ``[D, D, D]``).
        Signs are fixed so each component's voxel sum is non-negative.

        Returns:
            ``(T [K, K], eigenvalues [K])``: map latents with ``b' = b @ T.T`` and
            covariances with ``T Σ Tᵀ``; ``eigenvalues`` (descending) are the
            variances ``E[b'_k²]`` of the new latents, also stored on the model.
        """
        K, D = self.K, self.D
        comps = self.components
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
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only: ``mean``, ``components``, ``oversampling`` (0-d), and ``eigenvalues`` when set."""
        out = {"mean": self.mean.detach().cpu(), "components": self.components.detach().cpu(),
               "oversampling": torch.tensor(self.oversampling, dtype=torch.float64)}
        if self.eigenvalues is not None:
            out["eigenvalues"] = self.eigenvalues.detach().cpu()
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], device=None) -> "LinearHyperMolecule":
        """Rebuild from :meth:`state_dict` (e.g. loaded with ``torch.load(..., weights_only=True)``)."""
        model = cls(state["mean"], state["components"], float(state["oversampling"]), state.get("eigenvalues"))
        return model.to(device) if device is not None else model

    def __repr__(self) -> str:
        return f"LinearHyperMolecule(D={self.D}, K={self.K}, oversampling={self.oversampling}, dtype={self.dtype})"

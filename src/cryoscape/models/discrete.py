"""K discrete volumes (3D classes, survey §2.2) as a representation.

The latent of a particle is its vector of class probabilities ``z`` (``K``
numbers on the simplex; one-hot for a hard assignment), and the volume at ``z``
is the mixture ``V(z) = Σ_k z_k V_k``: a one-hot ``z`` gives class ``k``'s map,
and the posterior mean of the volume under class posteriors ``z`` is ``V(z)``.
The representation is linear in ``z`` without a mean; it is fitted by EM over
the class posteriors (:mod:`cryoscape.inference.classes_em`), which needs the
slices of every class at once (:meth:`DiscreteVolumes.class_slices`) and sets
the maps in closed form (:meth:`DiscreteVolumes.set_volumes`). It has no
trainable parameters: gradient schemes do not fit it.

Conventions as in :mod:`cryoscape.models.representation` (volumes ``[D, D, D]``
z, y, x, centre ``D // 2``; slices on the half set of ``slice_points``).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch

from cryoscape.imaging import FourierProjector

__all__ = ["DiscreteVolumes"]


class DiscreteVolumes:
    """``K`` class maps ``[K, D, D, D]`` sliced through one Fourier projector each.

    Args:
        volumes: real ``[K, D, D, D]`` (tensor or array), ``K >= 1``, ``D`` even.
        apix: pixel size (Å/px) of the images they describe.
        oversampling: zero-padding factor of the slicing (default 2).
    """

    def __init__(self, volumes: Any, apix: float, oversampling: float = 2.0) -> None:
        vols = torch.as_tensor(np.asarray(volumes) if not isinstance(volumes, torch.Tensor) else volumes)
        if vols.ndim != 4 or vols.shape[0] < 1 or len(set(vols.shape[1:])) != 1 or vols.shape[-1] % 2:
            raise ValueError(f"volumes must be [K, D, D, D] with K >= 1 and D even, got {tuple(vols.shape)}")
        self._apix = float(apix)
        self.oversampling = float(oversampling)
        self.set_volumes(vols)

    # -- the contract -----------------------------------------------------------------------------

    @property
    def box(self) -> int:
        """Box size ``D`` (px)."""
        return int(self._volumes.shape[-1])

    @property
    def apix(self) -> float:
        """Pixel size (Å/px)."""
        return self._apix

    @property
    def latent_dim(self) -> int:
        """Number of classes ``K`` (the latent is the vector of class probabilities)."""
        return int(self._volumes.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return self.latent_dim

    @property
    def device(self) -> torch.device:
        return self._volumes.device

    @property
    def dtype(self) -> torch.dtype:
        return self._volumes.dtype

    def class_slices(self, rotations: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """Half-set slices of every class map: complex ``[B, K, P]`` (``P'`` with ``points``)."""
        R = torch.as_tensor(rotations).to(device=self.device, dtype=self.dtype).reshape(-1, 3, 3)
        out = torch.stack([p.slice_half(R) for p in self._projectors], dim=1)
        return out if points is None else out[..., points]

    def slice_half(self, rotations: torch.Tensor, z: torch.Tensor | None = None,
                   points: torch.Tensor | None = None) -> torch.Tensor:
        """Slices of ``V(z_b) = Σ_k z_bk V_k``: complex ``[B, P]`` (``z`` None: the classes averaged)."""
        S = self.class_slices(rotations, points)
        w = self._weights(z, S.shape[0])
        return torch.einsum("bkp,bk->bp", S, w.to(S.dtype))

    def latent_jacobian(self, rotations: torch.Tensor, z: torch.Tensor,
                        points: torch.Tensor | None = None) -> torch.Tensor:
        """``∂ slice_half / ∂ z``: the class slices, complex ``[B, P', K]`` (the model is linear in ``z``)."""
        return self.class_slices(rotations, points).transpose(1, 2).detach()

    def reference_slices(self, rotations: torch.Tensor, points: torch.Tensor | None = None) -> None:
        """None: there is no latent-independent part."""
        return None

    def volumes(self, z: torch.Tensor | None) -> torch.Tensor:
        """``[B, D, D, D]`` mixtures ``Σ_k z_bk V_k`` (``z`` None: the classes averaged, ``[1, D, D, D]``)."""
        w = self._weights(z, 1)
        return torch.einsum("bk,kzyx->bzyx", w.to(self.dtype), self._volumes)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """None: the maps are set in closed form by EM, not trained by gradient."""
        return iter(())

    def step_scale(self) -> float:
        """RMS of the class maps."""
        return float(self._volumes.pow(2).mean().sqrt())

    def config(self) -> dict[str, Any]:
        return {"kind": "discrete", "box": self.box, "apix": self.apix, "n_classes": self.n_classes,
                "oversampling": self.oversampling}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DiscreteVolumes":
        """Zero maps of the configured size (``load_state_dict`` fills them)."""
        D, K = int(config["box"]), int(config["n_classes"])
        return cls(torch.zeros(K, D, D, D), float(config["apix"]), float(config.get("oversampling", 2.0)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"volumes": self._volumes.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        vols = torch.as_tensor(state["volumes"])
        if vols.shape != self._volumes.shape:
            raise ValueError(f"state holds volumes {tuple(vols.shape)}, the model {tuple(self._volumes.shape)}")
        if strict and set(state) != {"volumes"}:
            raise ValueError(f"unexpected keys in the state: {sorted(set(state) - {'volumes'})}")
        self.set_volumes(vols.to(device=self.device, dtype=self.dtype))

    # -- EM's access --------------------------------------------------------------------------------

    @property
    def class_volumes(self) -> torch.Tensor:
        """The class maps ``[K, D, D, D]`` (do not modify in place; use :meth:`set_volumes`)."""
        return self._volumes

    def set_volumes(self, volumes: torch.Tensor) -> None:
        """Replace the class maps (same ``K`` and ``D``; kept on the model's device) and rebuild their projectors."""
        vols = torch.as_tensor(volumes).detach()
        if not vols.is_floating_point():
            vols = vols.to(torch.float32)
        if hasattr(self, "_volumes"):
            if vols.shape != self._volumes.shape:
                raise ValueError(f"volumes must be {tuple(self._volumes.shape)}, got {tuple(vols.shape)}")
            vols = vols.to(device=self._volumes.device, dtype=self._volumes.dtype)
        self._volumes = vols.contiguous()
        self._projectors = [FourierProjector(v, self.oversampling) for v in self._volumes]

    def to(self, device: str | torch.device) -> "DiscreteVolumes":
        """Move the maps (and projectors) to ``device``; returns self."""
        vols = self._volumes.to(device)
        del self._volumes
        self.set_volumes(vols)
        return self

    def _weights(self, z: torch.Tensor | None, batch: int) -> torch.Tensor:
        K = self.n_classes
        if z is None:
            return torch.full((batch, K), 1.0 / K, device=self.device)
        w = torch.as_tensor(z, device=self.device).reshape(-1, K)
        return w.expand(batch, K) if w.shape[0] == 1 and batch > 1 else w

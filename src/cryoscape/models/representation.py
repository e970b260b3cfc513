"""The one contract between representations of conformations and the schemes that fit them.

A *representation* (a hyper-molecule, survey §7) maps a latent ``z`` (``latent_dim``
numbers) to a volume, and, cheaper, to the central slices of that volume's
Fourier transform at a batch of poses. An *inference scheme* (EM over
posteriors, an amortised encoder, explicit per-particle latents, ...) fits a
representation to images through this protocol only: no scheme imports a
concrete model class, so any pair that makes sense can be run.

Conventions shared by every representation
------------------------------------------
* ``box``: the even box size ``D`` in pixels; ``apix``: the pixel size in Å/px of
  the images it is fitted to (only used to label outputs and convert shifts).
* Volumes are real ``[D, D, D]`` (z, y, x), centre voxel ``D // 2``, in the
  units of the images the representation is fitted to.
* Slices are complex values of the centred 3D DFT at ``Rᵀ k`` for image
  frequencies ``k`` on the half set of in-circle frequencies
  (:func:`cryoscape.imaging._grid.slice_points` with ``half=True``, ``P``
  points, DC first), or on a subset given as ``points`` (indices into that
  set); ``R`` ``[B, 3, 3]`` maps volume coordinates into the particle frame.
  Their scale is the unnormalised centred DFT of the projection (the
  Fourier-slice theorem), so ``slice_half`` equals the DFT of the projection of
  ``volumes(z)`` (up to the representation's interpolation).
* ``config()`` returns plain types (what a run's ``config.yaml`` stores);
  :func:`cryoscape.models.build_representation` rebuilds an untrained model
  from it and ``load_state_dict`` restores the weights (tensors only).

Capabilities
------------
:class:`LinearInLatent` is the extra contract of representations that are
affine in the latent, ``V(z) = X0 + Σ_k z_k X_k``: their posteriors under a
Gaussian prior are closed-form, which is what EM over posteriors needs.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import torch

__all__ = ["Representation", "LinearInLatent", "is_linear_in_latent", "describe"]


@runtime_checkable
class Representation(Protocol):
    """A hyper-molecule: latents ``[B, latent_dim]`` -> slices and volumes (see the module docstring)."""

    @property
    def box(self) -> int:
        """Box size ``D`` (px, even)."""

    @property
    def apix(self) -> float:
        """Pixel size (Å/px) of the images it describes."""

    @property
    def latent_dim(self) -> int:
        """Number of latent coordinates ``d`` (0: homogeneous)."""

    def slice_half(self, rotations: torch.Tensor, z: torch.Tensor | None = None,
                   points: torch.Tensor | None = None) -> torch.Tensor:
        """Central slices ``V̂(z_b, R_bᵀ k)``: complex ``[B, P']``; differentiable in the parameters and ``z``."""

    def latent_jacobian(self, rotations: torch.Tensor, z: torch.Tensor,
                        points: torch.Tensor | None = None) -> torch.Tensor:
        """``∂ slice_half / ∂ z``: complex ``[B, P', d]`` (detached)."""

    def reference_slices(self, rotations: torch.Tensor, points: torch.Tensor | None = None
                         ) -> torch.Tensor | None:
        """Slices of the latent-independent reference part (e.g. a consensus map), or None if there is none."""

    def volumes(self, z: torch.Tensor | None) -> torch.Tensor:
        """Real volumes ``[B, D, D, D]`` at latents ``[B, d]`` (``None`` for ``d = 0``: one volume ``[1, D, D, D]``)."""

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The trainable tensors (what a gradient scheme optimises)."""

    def step_scale(self) -> float:
        """Typical magnitude of the parameters: a gradient scheme multiplies its learning rate for this
        representation by it (1 for network weights; the volumes' RMS for a representation that stores volumes)."""

    def config(self) -> dict[str, Any]:
        """Plain-type description that :func:`cryoscape.models.build_representation` rebuilds."""

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        """Tensors only (saved with ``torch.save``, loaded with ``weights_only=True``)."""

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        """Restore :meth:`state_dict`."""


@runtime_checkable
class LinearInLatent(Representation, Protocol):
    """A representation affine in its latent: ``V(z) = X0 + Σ_k z_k X_k`` (``X0`` the mean).

    ``mean`` ``[D, D, D]`` and ``components`` ``[d, D, D, D]`` are the volumes;
    ``oversampling`` the zero-padding factor of its slicing.
    """

    mean: torch.Tensor
    components: torch.Tensor
    oversampling: float

    def component_slices(self, rotations: torch.Tensor) -> torch.Tensor:
        """Half-set slices of ``X0, X_1..X_d``: complex ``[B, d + 1, P]`` (``[:, 0]`` the mean)."""

    def set_volumes(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        """Replace ``X0`` and ``X_1..X_d`` in place."""

    def with_volumes(self, mean: torch.Tensor, components: torch.Tensor) -> "LinearInLatent":
        """A new representation of the same kind and settings with these volumes."""

    def orthonormalise_components(self, mask=None, second_moment=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Orthonormal components ordered by latent variance; returns the latent map ``T`` and the variances."""


def is_linear_in_latent(rep: Any) -> bool:
    """Whether ``rep`` offers the :class:`LinearInLatent` capability."""
    return isinstance(rep, LinearInLatent)


def describe(rep: Any) -> str:
    """One line naming a representation for logs: kind, box, pixel size, latent dimension."""
    kind = rep.config().get("kind", type(rep).__name__)
    return f"{kind} representation, box {rep.box} px at {rep.apix:g} Å/px, {rep.latent_dim}-D latent"

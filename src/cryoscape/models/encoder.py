"""Amortised encoders ``image -> q(z | image) = N(μ, diag σ²)`` for the neural hyper-molecule.

Both encoders read the same input: the image's centred DFT on a set of
half-plane in-circle frequencies (a subset of ``slice_points(D, half=True)``,
``P`` points, complex ``[B, P]``), already normalised, re-centred (shift
removed) and optionally phase-flipped by the caller
(:mod:`cryoscape.inference.vae`). Restricting the points to a disc of radius
``r`` is a low-pass filter of the encoder's view.

* :class:`MLPEncoder` flattens ``(Re, Im)`` of those ``P`` values (``2P``
  numbers: for a real image they carry the whole in-circle spectrum), plus,
  optionally, the particle's pose (the first two rows of ``R``, 6 numbers)
  into an MLP.
* :class:`CNNEncoder` turns them back into a real image ``[D, D]`` (zero
  outside the points, conjugate-symmetric completion) and runs a small
  stride-2 convolutional network.

Both are called as ``encoder(y, pose)`` with ``pose`` ``[B, 6]`` (ignored unless
the MLP was built with ``pose=True``). Output: ``(mu [B, latent_dim], logvar [B, latent_dim])``,
``logvar`` clamped to [-12, 6].
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["MLPEncoder", "CNNEncoder", "build_encoder", "ENCODER_KINDS"]

ENCODER_KINDS = ("mlp", "cnn")
_LOGVAR_RANGE = (-12.0, 6.0)


def _split(out: torch.Tensor, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = out[..., :latent_dim], out[..., latent_dim:]
    return mu, logvar.clamp(*_LOGVAR_RANGE)


class MLPEncoder(nn.Module):
    """MLP over ``(Re, Im)`` of ``n_points`` half-set Fourier values.

    Args:
        n_points: ``P`` (input width ``2P``). latent_dim: latent dimension.
        hidden: hidden width. layers: hidden layers (``>= 1``; later ones residual).
        pose: also read the pose (6 numbers).
    """

    def __init__(self, n_points: int, latent_dim: int, hidden: int = 256, layers: int = 3, pose: bool = False) -> None:
        super().__init__()
        if layers < 1 or latent_dim < 1:
            raise ValueError(f"need layers >= 1 and latent_dim >= 1; got {layers}, {latent_dim}")
        self.latent_dim, self.pose = int(latent_dim), bool(pose)
        self.inp = nn.Linear(2 * n_points + (6 if pose else 0), hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, y: torch.Tensor, pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y``: complex ``[B, P]``, ``pose`` ``[B, 6]`` -> ``(mu, logvar)`` ``[B, latent_dim]`` each."""
        parts = [y.real, y.imag] + ([pose.to(y.real.dtype)] if self.pose else [])
        x = torch.cat(parts, dim=-1).to(self.inp.weight.dtype)
        h = torch.relu(self.inp(x))
        for layer in self.hidden:
            h = h + torch.relu(layer(h))
        return _split(self.out(h).float(), self.latent_dim)


class CNNEncoder(nn.Module):
    """Small CNN over the real image rebuilt from the half-set values.

    Four 3×3 stride-2 convolutions (``channels``, doubling to at most 8×),
    then one hidden linear layer of width ``hidden``.

    Args:
        D: box (divisible by 16). points: indices into ``slice_points(D, half=True)``
            of the ``P`` input values. latent_dim: latent dimension.
    """

    def __init__(self, D: int, points: torch.Tensor, latent_dim: int, hidden: int = 256, channels: int = 16) -> None:
        super().__init__()
        if D % 16:
            raise ValueError(f"the CNN encoder needs a box divisible by 16; got {D}")
        self.D, self.latent_dim = int(D), int(latent_dim)
        self.register_buffer("points", torch.as_tensor(points, dtype=torch.int64).clone(), persistent=False)
        c = [1, channels, 2 * channels, 4 * channels, 8 * channels]
        self.convs = nn.ModuleList(nn.Conv2d(c[i], c[i + 1], 3, stride=2, padding=1) for i in range(4))
        self.fc = nn.Linear(c[-1] * (D // 16) ** 2, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def _image(self, y: torch.Tensor) -> torch.Tensor:
        from cryoscape.imaging._grid import slice_points
        from cryoscape.imaging.projector import half_to_image

        n = slice_points(self.D, True, y.device).n
        full = y.new_zeros(y.shape[0], n)
        full[:, self.points.to(y.device)] = y
        return half_to_image(full, self.D) / self.D  # DFT scale back to pixel scale

    def forward(self, y: torch.Tensor, pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y``: complex ``[B, P]`` -> ``(mu, logvar)`` ``[B, latent_dim]`` each (``pose`` is not used)."""
        h = self._image(y)[:, None].to(self.fc.weight.dtype)
        for conv in self.convs:
            h = torch.relu(conv(h))
        h = torch.relu(self.fc(h.flatten(1)))
        return _split(self.out(h).float(), self.latent_dim)


def build_encoder(spec: Mapping[str, Any], points: torch.Tensor) -> nn.Module:
    """Encoder from its plain description ``{"kind", "latent_dim", "hidden", "layers", "box", "pose"}`` and input points."""
    kind = spec["kind"]
    if kind == "mlp":
        return MLPEncoder(int(points.numel()), _latent_dim(spec), int(spec["hidden"]), int(spec["layers"]),
                          pose=bool(spec.get("pose", False)))
    if kind == "cnn":
        return CNNEncoder(int(spec["box"]), points, _latent_dim(spec), int(spec["hidden"]))
    raise ValueError(f"unknown encoder {kind!r}; choose from {', '.join(ENCODER_KINDS)}")


def _latent_dim(spec: Mapping[str, Any]) -> int:
    """The spec's latent dimension (``latent_dim``; ``zdim`` in specs written before the name was unified)."""
    for key in ("latent_dim", "zdim"):
        if key in spec:
            return int(spec[key])
    raise ValueError(f"the spec {dict(spec)} has no latent_dim")

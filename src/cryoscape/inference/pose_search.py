"""Pose search: the likelihood of every candidate pose of an image, over a global grid or around a pose.

Model and score
---------------
At pose ``(R, o)`` (rotation, RELION origin ``o`` in Å) the image is modelled as
``y = a · C · φ_o · S_R + ε``: ``S_R`` the representation's central slice
(:meth:`~cryoscape.models.representation.Representation.slice_half`), ``C`` the
CTF, ``φ_o`` the shift phase of :func:`cryoscape.imaging.forward.transfer_at`,
``a ≥ 0`` a free per-image scale (a map from elsewhere has its own scale, and ice
thickness varies), and Gaussian noise of variance ``s²`` per Fourier coefficient
(per shell). With ``w = h / s²`` (``h`` the Hermitian weights: 1 at DC, 2
elsewhere) on the search points,

    cross(R, o) = Re Σ_p conj(S_R,p) · w_p C_p conj(φ_o,p) y_p,    norm(R) = Σ_p w_p C_p² |S_R,p|²,

and the log-likelihood maximised over ``a`` is ``score = max(cross, 0)² / (2 norm)``
(up to a constant), so the posterior over the candidate poses is
``softmax(score)``. Only the points of shells ``<= kmax`` are used
(:func:`search_points`), which is what makes coarse searches cheap.

The global search scores every rotation of a grid against every shift of a grid
with one real matrix product (``[M, 2P] x [2P, B T]``); the local search scores,
per image, rotations near its current one (:func:`local_rotations`) against shifts
near its current one, with batched products. Both return the best pose, its
posterior probability and the few most probable poses with their weights (what
an M-step backprojects: the marginal over poses, not only the best).

This scheme sees its representation only through ``slice_half(R, z, points)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoscape.geometry.rotations import axis_angle_to_matrix
from cryoscape.imaging._grid import half_points_subset, slice_points
from cryoscape.imaging.forward import transfer_at

__all__ = ["search_points", "shift_grid_A", "local_rotations", "PoseHits", "pose_scores", "global_search",
           "local_search", "TOP_POSES"]

#: Most probable poses kept per image for the M-step.
TOP_POSES = 5


def search_points(D: int, kmax: float, device=None) -> torch.Tensor:
    """Indices ``[P']`` of the half-set points with ``|k| <= kmax`` (cycles per box)."""
    pts = slice_points(D, True, device)
    r = torch.sqrt(pts.kx.double() ** 2 + pts.ky.double() ** 2)
    return torch.nonzero(r <= float(kmax)).reshape(-1)


def shift_grid_A(max_px: float, step_px: float, apix: float) -> np.ndarray:
    """Origins ``[T, 2]`` (x, y) Å on a square grid of ``step_px`` within a disc of ``max_px`` pixels."""
    n = int(np.floor(max_px / step_px + 1e-9))
    g = np.arange(-n, n + 1) * step_px
    xx, yy = np.meshgrid(g, g, indexing="xy")
    keep = xx ** 2 + yy ** 2 <= max_px ** 2 + 1e-9
    return np.stack([xx[keep], yy[keep]], axis=-1) * apix


def local_rotations(step_deg: float, reach: int = 1, vectors: bool = False):
    """Small rotations ``[J, 3, 3]``: axis-angle vectors on the cube grid ``{-reach..reach}³ · step``
    (``J = (2 reach + 1)³``, the identity first); with ``vectors`` also those vectors ``[J, 3]`` (radians)."""
    r = np.arange(-reach, reach + 1)
    v = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)
    v = np.deg2rad(step_deg) * v[np.argsort(np.sum(v ** 2, axis=1), kind="stable")]
    return (axis_angle_to_matrix(v), v) if vectors else axis_angle_to_matrix(v)


@dataclass
class PoseHits:
    """The search result per image: ``rotations [B, 3, 3]`` and ``origins_A [B, 2]`` of the best pose,
    ``confidence [B]`` its posterior probability, ``scale [B]`` the fitted scale ``a``, and the
    :data:`TOP_POSES` most probable poses ``top_rotations [B, n, 3, 3]``, ``top_origins_A [B, n, 2]`` with
    ``top_weights [B, n]`` (their posteriors, renormalised)."""

    rotations: torch.Tensor
    origins_A: torch.Tensor
    confidence: torch.Tensor
    scale: torch.Tensor
    top_rotations: torch.Tensor
    top_origins_A: torch.Tensor
    top_weights: torch.Tensor


def _weighted_data(y: torch.Tensor, ctf: torch.Tensor | None, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w C y`` ``[B, P]`` complex and ``w C²`` ``[B, P]`` real."""
    c = torch.ones_like(y.real) if ctf is None else ctf
    return w * c * y, w * c * c


def pose_scores(cross: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, scale)`` from ``cross`` and ``norm`` (broadcast): ``max(cross, 0)² / (2 norm)`` and ``a``."""
    n = norm.clamp(min=1e-30)
    c = cross.clamp(min=0.0)
    return c * c / (2.0 * n), c / n


def _top(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``scores [B, Q]``: indices and renormalised posteriors of the ``n`` best, and the best's posterior."""
    logz = torch.logsumexp(scores, dim=1, keepdim=True)
    vals, idx = torch.topk(scores, min(n, scores.shape[1]), dim=1)
    p = torch.exp(vals - logz)
    return idx, p / p.sum(1, keepdim=True).clamp(min=1e-30), p[:, 0]


def global_search(model, rotations: torch.Tensor, origins_A: torch.Tensor, y: torch.Tensor,
                  ctf: torch.Tensor | None, w: torch.Tensor, points: torch.Tensor, apix: float,
                  chunk: int = 32, slices: torch.Tensor | None = None) -> PoseHits:
    """Every rotation ``[M, 3, 3]`` against every origin ``[T, 2]`` (Å) for images ``y [B, P']``.

    ``y``, ``ctf`` ``[B, P']`` and ``w`` ``[P']`` at the search ``points``; ``slices`` ``[M, P']`` may be
    passed in (they depend only on the model and the grid).
    """
    D = int(model.box)
    if slices is None:
        slices = model.slice_half(rotations, None, points)
    S = torch.cat([slices.real, slices.imag], dim=1).to(torch.float32)  # [M, 2P]
    S2 = (slices.real ** 2 + slices.imag ** 2).to(torch.float32)  # [M, P]
    sub = half_points_subset(D, points, y.device)
    _, phase = transfer_at(sub, apix, origins_A, None, torch.float32)  # [T, P]
    u, c2 = _weighted_data(y, ctf, w)
    M, T = S.shape[0], phase.shape[0]
    out = []
    for a in range(0, y.shape[0], chunk):
        ub = u[a:a + chunk, None, :] * phase.conj()[None]  # [b, T, P]
        U = torch.cat([ub.real, ub.imag], dim=2).reshape(-1, S.shape[1])  # [bT, 2P]
        cross = (S @ U.T).reshape(M, -1, T).permute(1, 0, 2)  # [b, M, T]
        norm = (S2 @ c2[a:a + chunk].to(torch.float32).T).T  # [b, M]
        score, scale = pose_scores(cross, norm[:, :, None])
        out.append(_hits_from_grid(score.reshape(score.shape[0], -1), scale.reshape(score.shape[0], -1),
                                   rotations, origins_A, T))
    return _cat_hits(out)


def _hits_from_grid(score: torch.Tensor, scale: torch.Tensor, rotations: torch.Tensor, origins: torch.Tensor,
                    T: int) -> PoseHits:
    idx, wts, conf = _top(score.double(), TOP_POSES)
    m, t = idx // T, idx % T
    return PoseHits(rotations[m[:, 0]], origins[t[:, 0]], conf.float(), scale.gather(1, idx[:, :1])[:, 0],
                    rotations[m], origins[t], wts.float())


def _cat_hits(parts: list[PoseHits]) -> PoseHits:
    return PoseHits(*[torch.cat([getattr(p, f) for p in parts]) for f in PoseHits.__dataclass_fields__])


def local_search(model, centres: torch.Tensor, origins_A: torch.Tensor, offsets: torch.Tensor,
                 shift_offsets_A: torch.Tensor, y: torch.Tensor, ctf: torch.Tensor | None, w: torch.Tensor,
                 points: torch.Tensor, apix: float, offset_vectors: torch.Tensor | None = None) -> PoseHits:
    """Rotations ``centres[b] · offsets[j]`` against origins ``origins_A[b] + shift_offsets_A[t]`` per image.

    ``centres [B, 3, 3]``, ``offsets [J, 3, 3]`` (small rotations, the identity among them),
    ``origins_A [B, 2]``, ``shift_offsets_A [T, 2]``; data as in :func:`global_search`. With
    ``offset_vectors [J, 3]`` (the offsets' axis-angle vectors, radians) the returned pose is the
    posterior mean instead of the most probable candidate: ``centres · exp(Σ_j p_j v_j)`` and the
    mean origin. Where the posterior is wider than the steps (noisy images) the most probable of a
    few candidates is mostly noise and moves every particle by a step each pass; the mean does not.
    """
    B, J, T = centres.shape[0], offsets.shape[0], shift_offsets_A.shape[0]
    D = int(model.box)
    R = (centres[:, None] @ offsets[None]).reshape(-1, 3, 3)  # a small turn of the volume frame
    S = model.slice_half(R, None, points).reshape(B, J, -1)  # [B, J, P]
    origins = (origins_A[:, None, :] + shift_offsets_A[None]).reshape(-1, 2)  # [B T, 2]
    sub = half_points_subset(D, points, y.device)
    _, phase = transfer_at(sub, apix, origins, None, torch.float32)
    phase = phase.reshape(B, T, -1)
    u, c2 = _weighted_data(y, ctf, w)
    ub = u[:, None, :] * phase.conj()  # [B, T, P]
    cross = torch.cat([S.real, S.imag], 2).to(torch.float32) @ torch.cat([ub.real, ub.imag], 2).transpose(1, 2)
    norm = ((S.real ** 2 + S.imag ** 2).to(torch.float32) * c2[:, None, :].to(torch.float32)).sum(-1)  # [B, J]
    score, scale = pose_scores(cross, norm[:, :, None])  # [B, J, T]
    if offset_vectors is not None:  # the posterior mean as the pose (see the docstring)
        return _posterior_mean_hits(score, scale, centres, origins_A, offset_vectors, shift_offsets_A, R, origins)
    idx, wts, conf = _top(score.reshape(B, -1).double(), TOP_POSES)
    j, t = idx // T, idx % T
    Rj = R.reshape(B, J, 3, 3)
    top_R = torch.gather(Rj, 1, j[:, :, None, None].expand(-1, -1, 3, 3))
    top_o = torch.gather(origins.reshape(B, T, 2), 1, t[:, :, None].expand(-1, -1, 2))
    best_scale = scale.reshape(B, -1).gather(1, idx[:, :1])[:, 0]
    return PoseHits(top_R[:, 0], top_o[:, 0], conf.float(), best_scale, top_R, top_o, wts.float())

def _posterior_mean_hits(score, scale, centres, origins_A, vectors, shift_offsets_A, R, origins) -> PoseHits:
    """:class:`PoseHits` whose best pose is the posterior mean over the local candidates."""
    from cryoscape.geometry.rotations import axis_angle_to_matrix

    B, J, T = score.shape
    p = torch.softmax(score.reshape(B, -1).double(), dim=1).reshape(B, J, T)
    pj, pt = p.sum(2), p.sum(1)  # [B, J], [B, T]
    v = pj @ vectors.double()  # [B, 3]
    turn = torch.as_tensor(axis_angle_to_matrix(v.cpu().numpy()), dtype=centres.dtype, device=centres.device)
    mean_R = centres @ turn
    mean_o = origins_A + (pt @ shift_offsets_A.double()).to(origins_A.dtype)
    idx, wts, conf = _top(score.reshape(B, -1).double(), TOP_POSES)
    j, t = idx // T, idx % T
    top_R = torch.gather(R.reshape(B, J, 3, 3), 1, j[:, :, None, None].expand(-1, -1, 3, 3))
    top_o = torch.gather(origins.reshape(B, T, 2), 1, t[:, :, None].expand(-1, -1, 2))
    best_scale = scale.reshape(B, -1).gather(1, idx[:, :1])[:, 0]
    return PoseHits(mean_R, mean_o, conf.float(), best_scale, top_R, top_o, wts.float())

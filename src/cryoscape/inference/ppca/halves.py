"""Gold-standard half sets in the PPCA EM: which model serves which image, which sums it feeds,
and the half-set FSC filter of the M-step.

See the half-set filter paragraphs of :mod:`cryoscape.inference.ppca_em`.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import torch

from cryoscape.inference.ppca.estep import Posterior
from cryoscape.inference.ppca.mstep import MStepAccumulator
from cryoscape.models.representation import LinearInLatent

__all__ = ["half_set_fsc", "m_step", "insert_by_half", "passes"]


def half_set_fsc(halves: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> np.ndarray:
    """Masked FSC ``[K + 1, D//2 + 1]`` between two half-set solves ``(mean, components)``, mean first."""
    from cryoscape.validate.fsc import fsc

    (m0, c0), (m1, c1) = halves
    curves = [fsc(m0, m1, mask)] + [fsc(c0[k], c1[k], mask) for k in range(c0.shape[0])]
    return np.stack(curves)


def m_step(accs: list[MStepAccumulator], ridge: float, apix: float, resolution_limit_A: float | None,
           mask: torch.Tensor, halves_too: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, list | None]:
    """Volumes from the sums: ``(mean, components, half-set FSC or None, half models or None)``; two
    accumulators get the FSC filter, and with ``halves_too`` each half's ``(mean, components)`` is
    solved with its half-map Wiener term as well."""
    if len(accs) == 1:
        mean, comps = accs[0].solve(ridge, apix, resolution_limit_A)
        return mean, comps, None, None
    from cryoscape.reconstruct.wiener import ssnr_from_fsc

    curves = half_set_fsc([a.solve(ridge, apix, resolution_limit_A) for a in accs], mask)
    half_models = None
    if halves_too:
        half_ssnr = ssnr_from_fsc(curves, full=False)
        half_models = [a.solve(ridge, apix, resolution_limit_A, ssnr=half_ssnr) for a in accs]
    full = accs[0].add(accs[1])
    mean, comps = full.solve(ridge, apix, resolution_limit_A, ssnr=ssnr_from_fsc(curves, full=True))
    return mean, comps, curves, half_models


def _take(x, sel: torch.Tensor):
    """Rows ``sel`` of a batch tensor, of every field of a CTF mapping, or None."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _take(v, sel) for k, v in x.items()}
    return x[sel]


def insert_by_half(accs: list[MStepAccumulator], halves: torch.Tensor | None, images: torch.Tensor, R, sh, ctf,
                   apix: float, a: torch.Tensor, post: Posterior) -> None:
    """Add a batch to ``accs[0]`` (``halves`` None) or to ``accs[0]``/``accs[1]`` by each image's half set."""
    if halves is None:
        accs[0].insert(images, R, sh, ctf, apix, a, post)
        return
    for label, acc in enumerate(accs):
        sel = torch.nonzero(halves == label).reshape(-1)
        if sel.numel():
            on = sel.to(R.device)
            acc.insert(images[sel], _take(R, on), _take(sh, on), _take(ctf, on), apix, a[sel.to(a.device)],
                       post.rows(sel))


def passes(particles, model: LinearInLatent, halves: np.ndarray | None, cross: list[LinearInLatent] | None,
           batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, LinearInLatent]]:
    """``(indices, images, model for their posteriors)`` batches: all with ``model``, or with ``cross``
    each half set's images with the other half's model."""
    if cross is None:
        for idx, images in particles.iter_batches(batch_size):
            yield np.asarray(idx), images, model
        return
    for label in (0, 1):
        for idx, images in particles.iter_batches(batch_size, np.flatnonzero(halves == label)):
            yield np.asarray(idx), images, cross[1 - label]

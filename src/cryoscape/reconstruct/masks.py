"""Real-space masks for the masked FSC of a reconstruction: the default soft sphere or a user mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryoscape.errors import InputError

__all__ = ["default_mask", "load_mask"]


def default_mask(box: int) -> np.ndarray:
    """Soft spherical mask ``[D, D, D]`` float32 for the masked FSC.

    Radius ``0.4·D`` px (80 % of the half box) with a raised-cosine edge of
    ``max(3, D/16)`` px, so the mask reaches 0 inside the box.
    """
    from cryoscape.geometry.masks import default_volume_mask

    return default_volume_mask(box).numpy().astype(np.float32)


def load_mask(mask: str | Path | np.ndarray | torch.Tensor | None, box: int, apix: float) -> np.ndarray:
    """The real-space mask ``[D, D, D]`` float32: :func:`default_mask` for ``None``, else an array or MRC path.

    An MRC mask must match the box; a voxel size differing by more than 1 % is an error.
    """
    if mask is None:
        return default_mask(box)
    if isinstance(mask, (str, Path)):
        from cryoscape.io.mrc import read_mrc

        data, mask_apix = read_mrc(mask)
        if mask_apix > 0 and abs(mask_apix - apix) > 0.01 * apix:
            raise InputError(f"{mask} has voxel size {mask_apix:g} Å but the particles have {apix:g} Å/px; resample the mask")
        where = str(mask)
    else:
        data = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        where = "the mask"
    if data.shape != (box, box, box):
        raise InputError(f"{where} is {tuple(data.shape)} but the reconstruction box is {box}³; give a mask of the same box")
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)) or float(data.max()) <= 0:
        raise InputError(f"{where} is empty or holds NaN/Inf; give a soft mask with values in [0, 1]")
    return data

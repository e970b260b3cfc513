"""Ground-truth volumes of a simulated dataset.

``truth.npz`` written by :func:`cryoscape.simulate.simulate_dataset` holds
either the input volume (``kind == "volume"``) or the superposed, centred atom
coordinates of every frame with their Gaussian amplitudes and widths
(``kind == "atoms"``). A conformation's volume is the rasterised Gaussian-atom
density on the simulation's grid, i.e. the same density the images were
projected from (:func:`cryoscape.imaging.rasterize_atoms`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cryoscape.errors import InputError


def load_truth(truth: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Read ``truth.npz`` (or pass a dict through) as a dict of numpy arrays."""
    if isinstance(truth, Mapping):
        return {k: np.asarray(v) for k, v in truth.items()}
    p = Path(truth)
    if p.is_dir():
        p = p / "truth.npz"
    if not p.is_file():
        raise InputError(f"{p}: ground-truth file not found; give the truth.npz written by cryoscape simulate")
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read ground truth ({exc}); give a truth.npz from cryoscape simulate") from None


def ground_truth_volume(truth: str | os.PathLike | Mapping[str, Any], conformation: int = 0,
                        box: int | None = None, apix: float | None = None) -> tuple[np.ndarray, float]:
    """Rebuild one conformation's ground-truth volume.

    Args:
        truth: path to ``truth.npz`` (or its folder), or its contents as a dict.
        conformation: frame index (0 for a volume input).
        box, apix: grid to rasterise on (atom models only); default the
            simulation's own box (px) and pixel size (Å/px).

    Returns:
        ``(volume [D, D, D] float32 indexed [z, y, x], apix in Å)``; the
        molecule's centre is at voxel ``D//2``.
    """
    t = load_truth(truth)
    kind = str(t.get("kind", "atoms"))
    n_frames = int(t.get("n_frames", 1))
    c = int(conformation)
    if not 0 <= c < n_frames:
        raise InputError(f"conformation {conformation} is out of range; this dataset has frames 0..{n_frames - 1}")
    if kind == "volume":
        if (box is not None and int(box) != int(t["box"])) or (apix is not None and float(apix) != float(t["apix"])):
            raise InputError("a simulation from a volume has its volume on one grid only; omit box/apix")
        return np.asarray(t["volume"], dtype=np.float32), float(t["apix"])
    import torch

    from cryoscape.imaging import rasterize_atoms

    D = int(t["box"]) if box is None else int(box)
    a = float(t["apix"]) if apix is None else float(apix)
    vol = rasterize_atoms(torch.as_tensor(t["frames_A"][c]), torch.as_tensor(t["amplitudes"]),
                          torch.as_tensor(t["sigma_A"]), D, a)
    if isinstance(vol, torch.Tensor):
        vol = vol.detach().cpu().numpy()
    return np.asarray(vol, dtype=np.float32), a


def conformation_coordinate(truth: str | os.PathLike | Mapping[str, Any]) -> np.ndarray:
    """Per-particle continuous ground-truth coordinate in [0, 1] (frame / (F − 1))."""
    return np.asarray(load_truth(truth)["coordinate"], dtype=np.float64)

"""The fields of a particle set built from cryoDRGN files or from arrays in memory.

:func:`cryodrgn_fields` and :func:`array_fields` return the keyword
arguments of :class:`~cryoscape.particles.ParticleSet` (as the readers of
:mod:`.readers` do for STAR and ``.cs`` files); the constructors
:meth:`ParticleSet.from_cryodrgn` and :meth:`ParticleSet.from_arrays` wrap them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cryoscape.errors import InputError
from cryoscape.io import cryodrgn as _drgn
from cryoscape.io.mrc import read_stack_header
from cryoscape.particles.columns import CTF_FIELDS
from cryoscape.particles.image_source import ArrayImageSource, ImageSource, StackImageSource

__all__ = ["array_fields", "cryodrgn_fields"]


def _image_source(images: Any, square: bool = False) -> tuple[ImageSource | None, int, float]:
    """``(source, header box, header apix)`` of an MRC stack path, an in-memory ``[N, D, D]`` array, or None."""
    if images is None:
        return None, 0, 0.0
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):
        src = ArrayImageSource(images)
        return src, int(src.images.shape[-1]), 0.0
    h = read_stack_header(images)
    if square and h.nx != h.ny:
        raise InputError(f"{images} holds non-square images ({h.nx}×{h.ny} px); crop them to a square box first")
    return StackImageSource([Path(images)], np.zeros(h.n, np.int32), np.arange(h.n)), h.nx, h.apix


def cryodrgn_fields(
    images: str | os.PathLike | np.ndarray | None = None,
    poses: str | os.PathLike | None = None,
    ctf: str | os.PathLike | None = None,
    apix: float | None = None,
) -> dict[str, Any]:
    """Fields from an MRC stack, ``pose.pkl`` and ``ctf.pkl`` (see :meth:`ParticleSet.from_cryodrgn`)."""
    src, hdr_box, hdr_apix = _image_source(images)
    name = "cryoDRGN particles" if src is None or isinstance(src, ArrayImageSource) else str(images)
    fields: dict[str, np.ndarray] | None = None
    if ctf is not None:
        fields = _drgn.ctf_array_to_fields(_drgn.read_ctf_pkl(ctf))
        name = name if images is not None else str(ctf)
    rot = trans = None
    if poses is not None:
        rot, trans = _drgn.read_pose_pkl(poses)
        name = name if images is not None or ctf is not None else str(poses)
    n_candidates = {len(x) for x in (src, rot, None if fields is None else fields["box"]) if x is not None}
    if not n_candidates:
        raise InputError("from_cryodrgn needs at least one of images, poses or ctf; pass the cryoDRGN files")
    if len(n_candidates) > 1:
        raise InputError(f"cryoDRGN inputs disagree on the number of particles {sorted(n_candidates)}; pass matching files")
    n = n_candidates.pop()
    box = fields["box"] if fields is not None else np.full(n, hdr_box, np.int64)
    ap = np.full(n, float(apix)) if apix is not None else fields["apix"] if fields is not None else np.full(n, hdr_apix or np.nan)
    shifts = None
    if rot is not None:
        trans = np.zeros((n, 2)) if trans is None else trans
        if np.any(box <= 0):
            raise InputError(f"{poses}: translations are box fractions but the box size is unknown; pass the image stack or ctf.pkl")
        shifts = trans * box[:, None] * ap[:, None]
    ctf_fields = None if fields is None else {f: fields[f] for f in CTF_FIELDS}
    return dict(n=n, images=src, rotations=rot, shifts_A=shifts, ctf=ctf_fields, apix_per_particle=ap,
                box_per_particle=box, name=name)


def _count(src: ImageSource | None, rotations: Any, shifts_A: Any, n: int | None, ctf: Mapping[str, Any] | None,
           defocus_u_A: Any) -> int:
    """The number of particles the inputs of :func:`array_fields` agree on (InputError if they do not)."""
    sizes = {len(x) for x in (src, rotations, shifts_A) if x is not None}
    if n is not None:
        sizes.add(int(n))
    if ctf is not None and "defocus_u_A" in ctf:
        sizes.add(len(np.atleast_1d(ctf["defocus_u_A"])))
    elif defocus_u_A is not None and np.ndim(defocus_u_A) > 0:
        sizes.add(len(defocus_u_A))
    if len(sizes) != 1:
        raise InputError(f"from_arrays: inputs disagree on the number of particles ({sorted(sizes) or 'none given'}); pass n or matching arrays")
    return sizes.pop()


def array_fields(
    image_path: str | os.PathLike | np.ndarray | None,
    rotations: np.ndarray | None,
    shifts_A: np.ndarray | None,
    ctf: Mapping[str, Any] | None,
    ctf_keywords: Mapping[str, Any],
    apix: Any,
    box: int | None,
    n: int | None,
    name: str,
) -> dict[str, Any]:
    """Fields from arrays (see :meth:`ParticleSet.from_arrays`); ``ctf_keywords`` holds its keyword CTF fields."""
    src, hdr_box, hdr_apix = _image_source(image_path, square=True)
    if isinstance(src, StackImageSource):
        name = name if name != "particle set" else str(image_path)
    defocus_u_A = ctf_keywords.get("defocus_u_A")
    count = _count(src, rotations, shifts_A, n, ctf, defocus_u_A)
    fields: dict[str, Any] | None = None
    if ctf is not None:
        fields = dict(ctf)
    elif defocus_u_A is not None:
        fields = dict(ctf_keywords)
        if fields.get("defocus_v_A") is None:
            fields["defocus_v_A"] = defocus_u_A
    if apix is None:
        apix = hdr_apix if hdr_apix > 0 else np.nan
    if shifts_A is None and rotations is not None:
        shifts_A = np.zeros((count, 2))
    return dict(n=count, images=src, rotations=rotations, shifts_A=shifts_A, ctf=fields, apix_per_particle=apix,
                box_per_particle=box if box is not None else hdr_box, name=name)

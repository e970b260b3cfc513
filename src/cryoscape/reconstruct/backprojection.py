"""CTF-weighted direct Fourier backprojection with known poses.

Each image contributes its centred 2D Fourier transform, re-centred by its
shift and multiplied by its CTF, to a numerator accumulator, and the squared
CTF to a weight accumulator, both on an oversampled 3D Fourier grid
(Fourier slice theorem). A regularised division of the two (see
:mod:`cryoscape.reconstruct.wiener`) gives the volume.

The insertion itself is :func:`cryoscape.imaging.backproject_images` (with
the CTF of :mod:`cryoscape.imaging.ctf`); this module streams particle sets
through it, one accumulator per particle subset (e.g. gold-standard half
sets), with optional per-particle weights.

Grids and layouts
-----------------
* Images ``[b, D, D]`` (``[y, x]``, centre pixel ``D//2``), float32.
* Accumulators live on the centred, oversampled 3D grid of the padded box
  ``N = oversampling · D``, stored with ``M = N + 1`` points per axis
  (``[z, y, x]``, DC at index ``N/2``; index ``j`` holds frequency
  ``(j − N/2) / (N · apix)`` cycles/Å; plane ``j = N`` is the periodic copy
  of ``j = 0``), the layout of :func:`cryoscape.imaging.new_accumulator`.
* Each image's half plane is inserted; the Friedel mate of every contribution
  is added once at the end (:meth:`Backprojector.sums`).
* Beyond a padded radius of ``fine_radius`` voxels the image's own
  ``D``-spaced samples are inserted (the adjoint of
  :class:`~cryoscape.imaging.FourierProjector`'s slice extraction); inside it
  the FT of the zero-padded image is used, which removes the low-frequency
  bias of the plain adjoint (``fine_radius = 0`` gives the plain adjoint).

A particle with rotation ``R`` contributes its 2D frequency ``(kx, ky)`` at
the 3D frequency ``Rᵀ (kx, ky, 0)``; its observed transform is
``CTF · exp(-2πi k·(-o)) · slice`` for origin ``o`` (Å), so the slice is
estimated from ``CTF · exp(-2πi k·o) · image`` (translating the image by
``+o`` centres it).

Layout
------
The accumulators are in :mod:`.accumulate`, the particle loop and half-set
labels in :mod:`.stream`, masks in :mod:`.masks`, output file names in
:mod:`.outputs` and the gold-standard reconstruction in :mod:`.homogeneous`;
this module re-exports them.
"""

from __future__ import annotations

from cryoscape.imaging.ctf import CTF_FIELDS
from cryoscape.reconstruct.accumulate import BackprojectionSums, Backprojector
from cryoscape.reconstruct.homogeneous import FSC_THRESHOLD, Reconstruction, check_reconstruction_inputs, reconstruct
from cryoscape.reconstruct.masks import default_mask, load_mask
from cryoscape.reconstruct.outputs import check_outputs, output_paths
from cryoscape.reconstruct.stream import assign_half_sets, backproject

__all__ = [
    "CTF_FIELDS",
    "FSC_THRESHOLD",
    "BackprojectionSums",
    "Backprojector",
    "backproject",
    "assign_half_sets",
    "Reconstruction",
    "reconstruct",
    "check_reconstruction_inputs",
    "default_mask",
    "load_mask",
    "output_paths",
    "check_outputs",
]

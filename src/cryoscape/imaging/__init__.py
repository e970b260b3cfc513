"""Image formation: ``I = C ∘ T ∘ P ∘ R (V) + noise``.

Batched, differentiable torch functions (device and dtype follow the inputs):
Fourier-slice projection and its exact adjoint (:mod:`.projector`), Wiener
division of the backprojected sums to a volume (:mod:`.wiener`), the CTF
(:mod:`.ctf`), Fourier shifts (:mod:`.shift`), noise (:mod:`.noise`), an exact
real-space projector for Gaussian atoms (:mod:`.gaussian_atoms`) and the
assembled forward model (:mod:`.forward`).
"""

from .ctf import compute_ctf, ctf_from_freqs, electron_wavelength_A
from .forward import backproject_images, render, render_half
from .gaussian_atoms import project_atoms, rasterize_atoms
from .noise import add_noise, noise_std_for_snr
from .projector import (
    FourierProjector,
    complete_channels,
    extract_slices,
    extract_slices_half,
    grid_correction,
    half_to_full,
    half_to_image,
    hermitian_complete,
    image_to_half,
    insert_half,
    insert_slices,
    insert_weights,
    new_accumulator,
    padded_volume_ft,
)
from .shift import phase_shift, translate_images
from .slicing import extract_slices_half_stack
from .wiener import wiener_volume

__all__ = [
    "FourierProjector", "extract_slices", "extract_slices_half", "extract_slices_half_stack", "insert_slices", "insert_weights",
    "insert_half", "new_accumulator", "hermitian_complete", "complete_channels", "wiener_volume",
    "grid_correction", "padded_volume_ft", "half_to_full", "half_to_image", "image_to_half",
    "compute_ctf", "ctf_from_freqs", "electron_wavelength_A", "phase_shift", "translate_images",
    "add_noise", "noise_std_for_snr", "project_atoms", "rasterize_atoms",
    "render", "render_half", "backproject_images",
]

"""The forward model ``I = C ∘ T ∘ P ∘ R (V)`` and its backprojection.

All work is done on the half set of slice frequencies (see :mod:`._grid`):
the slice values of the volume, the CTF and the shift phase are evaluated only
for ``kx > 0`` (and ``kx = 0, ky >= 0``), and images come back through a single
``irfft2``. Frequencies outside the Nyquist circle are zero.

``ctf_params`` is a mapping with the canonical per-particle CTF fields
(:data:`cryoscape.imaging.ctf.CTF_FIELDS`: ``defocus_u_A``, ``defocus_v_A``,
``defocus_angle_deg``, ``voltage_kV``, ``cs_mm``, ``amplitude_contrast``, and
optionally ``phase_shift_deg``, ``bfactor_A2``), each ``(B,)`` or scalar, or
``None`` for no CTF. ``shifts_A`` are RELION origins ``[B, 2]`` (x, y) Å: the
rendered image is the centred projection translated by ``−origin``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ._grid import padded_size, recon_points, slice_points
from .ctf import CTF_FIELDS, ctf_from_freqs, electron_wavelength_A
from .insertion import insert_ctf_weighted, new_accumulator
from .projector import FourierProjector, half_to_image, image_to_half
from .shift import phase_shift_at

__all__ = ["render", "render_half", "transfer_half", "transfer_at", "backproject_images"]


def _ctf_kwargs(ctf_params: Mapping) -> dict:
    missing = [k for k in CTF_FIELDS[:6] if k not in ctf_params]
    if missing:
        raise KeyError(f"ctf_params lacks {missing}")
    return {k: ctf_params[k] for k in CTF_FIELDS if k in ctf_params}


def transfer_half(D: int, apix: float, shifts_A=None, ctf_params: Mapping | None = None,
                  device=None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """CTF ``[B, P]`` (real) and forward shift phase ``[B, P]`` (complex) on the half set.

    The phase translates by ``−shifts_A`` (RELION origin). Either is ``None`` when
    its input is ``None``.
    """
    return transfer_at(slice_points(D, True, device), apix, shifts_A, ctf_params, dtype)


def transfer_at(pts: Any, apix: float, shifts_A=None, ctf_params: Mapping | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """CTF ``[B, P]`` and forward shift phase ``[B, P]`` at the points ``pts`` (a
    :class:`~cryoscape.imaging._grid.SlicePoints`, e.g. a sub-set or a fine grid): the
    image-formation transfer every layer uses. Either is ``None`` when its input is.
    """
    kx, ky = pts.freqs_A(apix, dtype)
    ctf = None if ctf_params is None else ctf_from_freqs(kx, ky, **_ctf_kwargs(ctf_params))
    ph = None
    if shifts_A is not None:
        s = shifts_A if isinstance(shifts_A, torch.Tensor) else torch.as_tensor(shifts_A)
        ph = phase_shift_at(kx, ky, -s.to(device=kx.device, dtype=dtype))
    return ctf, ph


def render_half(projector: FourierProjector, rotations, shifts_A=None,
                ctf_params: Mapping | None = None, apix: float = 1.0) -> torch.Tensor:
    """Half-set FT values ``[B, P]`` of the rendered images (CTF · shift · slice)."""
    vals = projector.slice_half(rotations)
    vals = vals.reshape(-1, vals.shape[-1])
    ctf, ph = transfer_half(projector.D, apix, shifts_A, ctf_params, projector.device, projector.dtype)
    if ph is not None:
        vals = vals * ph
    if ctf is not None:
        vals = vals * ctf
    return vals


def render(projector: FourierProjector, rotations, shifts_A=None, ctf_params: Mapping | None = None,
           apix: float = 1.0) -> torch.Tensor:
    """Noise-free images ``[B, D, D]``: project, translate by ``−shifts_A``, apply the CTF.

    Args:
        projector: :class:`FourierProjector` of the volume (its device/dtype are used).
        rotations: ``[B, 3, 3]``. shifts_A: ``[B, 2]`` RELION origins in Å or None.
        ctf_params: mapping of CTF fields (``(B,)`` each) or None. apix: Å/px.
    """
    return half_to_image(render_half(projector, rotations, shifts_A, ctf_params, apix), projector.D)


def _fine_dft(images: torch.Tensor, fine_kx: torch.Tensor, fine_ky: torch.Tensor) -> torch.Tensor:
    """Centred DFT of real images ``[B, D, D]`` at fractional frequencies (cycles per box), ``[B, F]``.

    Separable: ``X(kx, ky) = Σ_y e^{-2πi ky y/D} Σ_x e^{-2πi kx x/D} img[y, x]`` with
    ``x, y`` measured from pixel ``D//2``; evaluated on the small grid of distinct
    ``kx``/``ky`` values, then gathered.
    """
    D = images.shape[-1]
    ex, ey, ix, iy = _fine_dft_factors(D, images.dtype, fine_kx, fine_ky)
    # real images times the (re, im)-interleaved columns of ex: one real product, read as complex
    ex_ri = torch.view_as_real(ex).reshape(D, -1)  # [D, 2 Kx]
    t = torch.view_as_complex(torch.matmul(images, ex_ri).reshape(*images.shape[:-1], -1, 2))  # [B, D, Kx]
    g = torch.matmul(ey, t)  # [B, Ky, Kx]
    return g[:, iy, ix]


_FINE_FACTORS: dict = {}


def _fine_dft_factors(D: int, dtype: torch.dtype, fine_kx: torch.Tensor, fine_ky: torch.Tensor):
    """``(ex [D, Kx], ey [Ky, D], ix, iy)`` of :func:`_fine_dft` for these frequencies (cached: few point sets)."""
    key = (D, dtype, str(fine_kx.device), fine_kx.detach().cpu().numpy().tobytes(),
           fine_ky.detach().cpu().numpy().tobytes())
    hit = _FINE_FACTORS.get(key)
    if hit is None:
        device = fine_kx.device
        c = torch.arange(D, device=device, dtype=dtype) - D // 2
        ux, ix = torch.unique(fine_kx.to(dtype), return_inverse=True)
        uy, iy = torch.unique(fine_ky.to(dtype), return_inverse=True)
        ex = torch.polar(torch.ones(D, ux.shape[0], device=device, dtype=dtype),
                         -2 * math.pi * c[:, None] * ux[None, :] / D)  # [D, Kx]
        ey = torch.polar(torch.ones(uy.shape[0], D, device=device, dtype=dtype),
                         -2 * math.pi * uy[:, None] * c[None, :] / D)  # [Ky, D]
        if len(_FINE_FACTORS) >= 8:
            _FINE_FACTORS.clear()
        hit = _FINE_FACTORS[key] = (ex, ey, ix, iy)
    return hit


def backproject_images(images: torch.Tensor, rotations, shifts_A=None, ctf_params: Mapping | None = None,
                       apix: float = 1.0, oversampling: float = 2.0,
                       out: torch.Tensor | None = None, fine_radius: int = 8,
                       max_ctf_step_rad: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Accumulate ``Σ Pᵀ(CTF · T* · Î)`` and ``Σ Pᵀ(CTF²)`` for a batch of real images.

    This is the reconstruction backprojector (for :func:`~.wiener.wiener_volume`).
    Beyond padded radius ``fine_radius`` it scatters the image's own ``D``-spaced
    half-plane FT samples, exactly like :func:`~.projector.insert_slices`. Inside it,
    ``D``-spaced samples are too sparse on the padded grid (they occur only at a few
    discrete radii, which biases the low-frequency ratio estimate), so there the
    FT of the zero-padded image is used instead (spacing ``D/N``; RELION pads
    images for the same reason), each sample weighted by the area it represents,
    ``(D/N)²``, so the sample density is continuous across ``fine_radius``. Set
    ``fine_radius=0`` for the plain adjoint.

    Args:
        images: real ``[B, D, D]`` observed images (white on dark).
        rotations, shifts_A, ctf_params, apix: as in :func:`render`.
        oversampling: padded-grid factor (must match :func:`~.wiener.wiener_volume`).
        out: channels-first accumulator ``[3, M, M, M]`` from
            :func:`~.projector.new_accumulator` (created if None), added in place.
        fine_radius: radius (padded voxels) of the finely sampled low-frequency disc.
        max_ctf_step_rad: the padded-image samples interpolate the image FT between
            ``D``-spaced frequencies, which is only valid where the CTF is well sampled;
            particles whose CTF phase changes by more than this per ``D``-spacing at
            the disc edge (high defocus in a small box) use their ``D``-spaced samples
            there instead.
        weights: optional per-image weights ``[B]`` (any sign) multiplying both the
            numerator and the ``CTF²`` contributions (default 1).
    Returns:
        the *raw half-plane* accumulator (channels: Re num, Im num, Σ CTF²). After the
        last batch call ``acc = complete_channels(acc)`` and then
        ``wiener_volume(torch.complex(acc[0], acc[1]), acc[2], reg, D, oversampling)``.
    """
    D = images.shape[-1]
    N = padded_size(D, oversampling)
    x = images.reshape(-1, D, D)
    B = x.shape[0]
    R = rotations if isinstance(rotations, torch.Tensor) else torch.as_tensor(rotations)
    R = R.to(device=x.device, dtype=x.dtype).reshape(-1, 3, 3)
    wts = None if weights is None else _image_weights(weights, B, x)
    y_half = image_to_half(x)
    if fine_radius > 0 and N > D:
        keep, coarse, inner_idx, inner, fine = recon_points(D, N, fine_radius, x.device)
        use_fine = _fine_ok(B, D, N, apix, fine_radius, ctf_params, max_ctf_step_rad, x)
        parts = [(y_half[:, keep], coarse, wts),
                 (_fine_dft(x, fine.kx, fine.ky), fine, _times(use_fine, wts)),
                 (y_half[:, inner_idx], inner, _times(1.0 - use_fine, wts))]
    else:
        parts = [(y_half, slice_points(D, True, x.device), wts)]
    for y, pts, mask in parts:
        if mask is not None and not bool((mask != 0).any()):
            continue
        ctf, phase = transfer_at(pts, apix, shifts_A, ctf_params, x.dtype)
        if phase is not None:
            y = y * phase.conj()  # the adjoint of the forward shift
        if out is None:
            out = new_accumulator(D, oversampling, 3, x.device, x.dtype)
        out = insert_ctf_weighted(y, ctf, mask, R, D, oversampling, out, pts)
    return out


def _image_weights(weights, B: int, like: torch.Tensor) -> torch.Tensor:
    """Per-image weights as a ``[B]`` tensor in ``like``'s dtype and device."""
    w = weights if isinstance(weights, torch.Tensor) else torch.as_tensor(weights)
    w = w.to(device=like.device, dtype=like.dtype).reshape(-1)
    if w.shape[0] != B:
        raise ValueError(f"{w.shape[0]} weights for {B} images")
    return w


def _times(mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``mask * weights`` (``[B]`` each); ``mask`` when there are no weights."""
    return mask if weights is None else mask * weights


def _fine_ok(B: int, D: int, N: int, apix: float, fine_radius: int, ctf_params, max_step: float,
             like: torch.Tensor) -> torch.Tensor:
    """``[B]`` 1.0 where the CTF phase changes by < ``max_step`` rad per ``D``-spacing in the fine disc."""
    if ctf_params is None:
        return torch.ones(B, device=like.device, dtype=like.dtype)
    kw = _ctf_kwargs(ctf_params)
    t = lambda v: torch.as_tensor(v, dtype=like.dtype).to(like.device).reshape(-1)
    df = torch.maximum(t(kw["defocus_u_A"]).abs(), t(kw["defocus_v_A"]).abs())
    lam = electron_wavelength_A(t(kw["voltage_kV"]))
    k_edge = fine_radius / (N * apix)
    step = 2 * math.pi * lam * df * k_edge / (D * apix)
    return (step < max_step).to(like.dtype).expand(B).contiguous()

"""Image and volume preprocessing: Fourier cropping/padding, background normalisation, contrast.

Images are ``[..., D, D]`` (``[y, x]``), volumes ``[D, D, D]`` (``[z, y, x]``),
numpy or torch; each function returns the type it was given (numpy float
inputs keep their dtype). Fourier cropping works on the centred FT (DC at
``D//2``) and keeps real-space values: a blob keeps its peak height and
mean, so the pixel size becomes ``apix · D / new_D`` while intensities stay
comparable.

:func:`downsample_particles` streams a whole particle set through
:func:`fourier_crop_images` in batches (memory independent of the number of
particles) into a new MRC stack and STAR file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.geometry.fourier import fftn_c, ifftn_c
from cryoscape.geometry.masks import circle_mask

if TYPE_CHECKING:  # pragma: no cover
    from cryoscape.particles.particle_set import ParticleSet

__all__ = [
    "fourier_crop",
    "fourier_pad",
    "fourier_crop_images",
    "fourier_crop_volume",
    "fourier_pad_images",
    "fourier_pad_volume",
    "normalise_background",
    "invert_contrast",
    "downsample_particles",
    "downsample_volume_file",
]


def _to_torch(x: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Tensor view of ``x`` and a function turning a result back into ``x``'s type."""
    if isinstance(x, torch.Tensor):
        return x, lambda t: t.to(x.dtype) if x.is_floating_point() else t
    arr = np.asarray(x)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    t = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float64 if dtype == np.float64 else np.float32))
    return t, lambda r: r.detach().cpu().numpy().astype(dtype, copy=False)


def _box_of(x: torch.Tensor, ndim: int) -> int:
    grid = tuple(x.shape[-ndim:]) if x.ndim >= ndim else ()
    if len(grid) != ndim or len(set(grid)) != 1:
        raise InputError(f"expected {'images [..., D, D]' if ndim == 2 else 'a volume [D, D, D]'} with equal sides; got shape {tuple(x.shape)}")
    return grid[0]


def fourier_crop(x: Any, new_D: int, ndim: int) -> Any:
    """Crop the centred FT of the last ``ndim`` axes from ``D`` to ``new_D`` (even, ``< D``).

    The kept frequencies are ``-new_D/2 .. new_D/2 - 1`` (in units of
    ``1 / (D · apix)``); the result is real and scaled by ``(new_D / D)^ndim``
    so real-space values (means, peak heights of smooth features) are kept.
    """
    t, back = _to_torch(x)
    D = _box_of(t, ndim)
    new_D = int(new_D)
    if new_D % 2 or not 0 < new_D < D:
        raise InputError(f"new box {new_D} must be even and smaller than the current box {D}; choose an even box below {D}")
    X = fftn_c(t, ndim)
    lo = D // 2 - new_D // 2
    sl = (Ellipsis,) + (slice(lo, lo + new_D),) * ndim
    out = ifftn_c(X[sl], ndim).real * (new_D / D) ** ndim
    return back(out)


def fourier_pad(x: Any, new_D: int, ndim: int) -> Any:
    """Zero-pad the centred FT of the last ``ndim`` axes from ``D`` to ``new_D`` (even, ``> D``).

    The inverse of :func:`fourier_crop` for maps band-limited below the
    small box's Nyquist frequency; real-space values are kept (sinc
    interpolation onto a finer grid, pixel size ``apix · D / new_D``).
    """
    t, back = _to_torch(x)
    D = _box_of(t, ndim)
    new_D = int(new_D)
    if new_D % 2 or new_D <= D:
        raise InputError(f"new box {new_D} must be even and larger than the current box {D}")
    X = fftn_c(t, ndim)
    big = torch.zeros(*X.shape[:-ndim], *([new_D] * ndim), dtype=X.dtype, device=X.device)
    lo = new_D // 2 - D // 2
    big[(Ellipsis,) + (slice(lo, lo + D),) * ndim] = X
    out = ifftn_c(big, ndim).real * (new_D / D) ** ndim
    return back(out)


def fourier_crop_images(images: Any, new_D: int) -> Any:
    """Fourier-crop images ``[..., D, D]`` to ``[..., new_D, new_D]``; new pixel size ``apix · D / new_D``.

    ``new_D`` must be even and smaller than ``D`` (else :class:`InputError`).
    """
    return fourier_crop(images, new_D, ndim=2)


def fourier_crop_volume(vol: Any, new_D: int) -> Any:
    """Fourier-crop a volume ``[D, D, D]`` (leading batch dims allowed) to ``new_D³``; voxel ``apix · D / new_D``."""
    return fourier_crop(vol, new_D, ndim=3)


def fourier_pad_images(images: Any, new_D: int) -> Any:
    """Fourier-pad (upsample) images ``[..., D, D]`` to ``[..., new_D, new_D]``."""
    return fourier_pad(images, new_D, ndim=2)


def fourier_pad_volume(vol: Any, new_D: int) -> Any:
    """Fourier-pad (upsample) a volume ``[D, D, D]`` to ``new_D³``."""
    return fourier_pad(vol, new_D, ndim=3)


def normalise_background(images: Any, radius_px: float | None = None) -> Any:
    """Shift and scale each image ``[..., D, D]`` so pixels outside the circle have mean 0, std 1.

    The circle is centred on ``D//2`` with radius ``radius_px`` (default
    ``D//2``); pixels at a distance ``> radius_px`` form the background. An
    image whose background is constant is only shifted (std taken as 1).
    """
    t, back = _to_torch(images)
    D = _box_of(t, 2)
    outside = ~circle_mask(D, radius_px)
    if int(outside.sum()) < 2:
        raise InputError(f"no background pixels outside radius {radius_px} in a {D}-px box; choose a smaller radius")
    work = t.to(torch.float64)
    bg = work[..., outside]
    mean = bg.mean(dim=-1)
    std = bg.std(dim=-1)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return back((work - mean[..., None, None]) / std[..., None, None])


def invert_contrast(images: Any) -> Any:
    """Negate images (dark-on-white <-> white-on-dark)."""
    t, back = _to_torch(images)
    return back(-t)


def _check_new_box(new_box: int, D: int, what: str) -> int:
    new_box = int(new_box)
    if new_box % 2 or not 0 < new_box < D:
        raise InputError(f"--box {new_box} must be even and smaller than the box {D} of {what}; choose an even box below {D}")
    return new_box


def _write_stack_streaming(
    path: Path,
    n: int,
    D: int,
    apix: float,
    batches: Any,
    force: bool,
) -> None:
    """Write ``n`` images ``[D, D]`` float32 from ``(indices, images)`` batches into an MRC stack, atomically."""
    import mrcfile

    from cryoscape.io.atomic import atomic_path

    with atomic_path(path, force) as tmp:
        with mrcfile.new_mmap(str(tmp), shape=(n, D, D), mrc_mode=2, overwrite=True) as mrc:
            mrc.set_image_stack()
            lo, hi, total, total_sq = np.inf, -np.inf, 0.0, 0.0
            for idx, imgs in batches:
                imgs = np.asarray(imgs, dtype=np.float32)
                mrc.data[np.asarray(idx)] = imgs
                lo, hi = min(lo, float(imgs.min())), max(hi, float(imgs.max()))
                total += float(imgs.sum(dtype=np.float64))
                total_sq += float(np.square(imgs, dtype=np.float64).sum())
            mrc.voxel_size = float(apix)
            count = max(n * D * D, 1)
            mean = total / count
            mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
            mrc.header.rms = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
            mrc.flush()


def downsample_particles(
    ps: "ParticleSet",
    new_box: int,
    out_dir: str | os.PathLike,
    force: bool = False,
    batch_size: int = 1024,
    progress: bool = True,
    stack_name: str = "particles.mrcs",
    star_name: str = "particles.star",
    normalise: bool = False,
    invert: bool = False,
) -> "ParticleSet":
    """Fourier-crop every particle image to ``new_box`` and write a new stack and STAR file.

    ``new_box`` equal to the current box keeps the size (useful with
    ``normalise``/``invert`` alone). ``normalise`` scales each cropped image to
    zero mean and unit standard deviation outside the particle circle
    (:func:`normalise_background`); ``invert`` negates it
    (:func:`invert_contrast`), for stacks stored dark on white.

    Writes ``out_dir/particles.mrcs`` (float32 MRC stack, voxel size
    ``apix · D / new_box``) and ``out_dir/particles.star`` (RELION 3.1: optics
    ``_rlnImagePixelSize`` and ``_rlnImageSize`` updated, ``_rlnImageName``
    pointing at the new stack as ``NNNNNN@particles.mrcs`` relative to the STAR
    file, every other column kept). Images are streamed in batches of
    ``batch_size``; both files are written atomically. Returns the new
    particle set read back from the written STAR file.
    """
    from cryoscape.particles.particle_set import ParticleSet

    D, apix, n = int(ps.box), float(ps.apix), len(ps)
    crop = int(new_box) != D
    if crop:
        new_box = _check_new_box(new_box, D, "the particle stack")
    new_apix = apix * D / new_box
    out = Path(out_dir)
    stack_path, star_path = out / stack_name, out / star_name
    _refuse_existing([stack_path, star_path], force)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file; pass a folder for the downsampled particles")
    ps.check_images()  # missing stacks fail here, before the progress bar
    out.mkdir(parents=True, exist_ok=True)

    def batches() -> Any:
        bar = _progress(n, "downsampling", progress)
        try:
            for idx, imgs in ps.iter_batches(batch_size):
                imgs = np.asarray(imgs, dtype=np.float32)
                if crop:
                    imgs = fourier_crop_images(imgs, new_box)
                if normalise:
                    imgs = normalise_background(imgs)
                if invert:
                    imgs = invert_contrast(imgs)
                yield idx, imgs
                bar.update(len(idx))
        finally:
            bar.close()

    _write_stack_streaming(stack_path, n, new_box, new_apix, batches(), force)
    _write_downsampled_star(ps, star_path, stack_name, new_box, new_apix, D, force)
    return ParticleSet.from_file(star_path)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    from cryoscape.errors import OutputExistsError

    for p in paths:
        if p.exists() and not force:
            raise OutputExistsError(f"{p} already exists; pass --force to overwrite it or choose another output folder")


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def _col(df: Any, name: str) -> str | None:
    """The column of ``df`` called ``name`` with or without the leading underscore."""
    for c in (name, name.lstrip("_"), "_" + name.lstrip("_")):
        if c in df.columns:
            return c
    return None


def _write_downsampled_star(
    ps: "ParticleSet",
    star_path: Path,
    stack_name: str,
    new_box: int,
    new_apix: float,
    old_box: int,
    force: bool,
) -> None:
    """Write ``ps`` as RELION 3.1 STAR, then point it at the new stack and box."""
    import tempfile
    import warnings

    from cryoscape.io.star import read_star, write_star

    with tempfile.TemporaryDirectory(dir=star_path.parent) as tmpdir:
        tmp_star = Path(tmpdir) / "source.star"
        with warnings.catch_warnings():  # the image names are replaced below, so their absence is no news
            warnings.filterwarnings("ignore", message=".*images are not in a stack file")
            ps.write_star(tmp_star, force=True)
        star = read_star(tmp_star)
    optics, parts = star.optics, star.particles.copy()
    n = len(parts)
    name_col = _col(parts, "rlnImageName") or "rlnImageName"
    parts[name_col] = [f"{i + 1:06d}@{stack_name}" for i in range(n)]
    scale = new_box / old_box
    for px_col in ("rlnOriginX", "rlnOriginY"):
        c = _col(parts, px_col)
        if c is not None:
            parts[c] = parts[c].astype(float) * scale
    # The pixel size and box live in the optics table (RELION >= 3.1) or, without
    # one, in the particle table; add the columns where missing.
    home = optics if optics is not None else parts
    for t in [t for t in (optics, parts) if t is not None]:
        for name, value in (("rlnImagePixelSize", new_apix), ("rlnImageSize", new_box)):
            c = _col(t, name)
            if c is not None or (t is home and (name == "rlnImagePixelSize" or optics is not None)):
                t[c or name] = value
        c = _col(t, "rlnDetectorPixelSize")
        if c is not None and _col(t, "rlnMagnification") is not None:
            t[c] = t[c].astype(float) / scale
    write_star(star_path, optics, parts, force=force)


def downsample_volume_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    new_box: int,
    force: bool = False,
    apix: float | None = None,
) -> float:
    """Fourier-crop the volume in the MRC file ``in_path`` to ``new_box³`` and write it to ``out_path``.

    ``apix`` (Å) overrides the header's voxel size; a header without one and
    no ``apix`` is an InputError. Returns the new voxel size in Å (``apix · D / new_box``).
    """
    from cryoscape.io.mrc import read_mrc, write_mrc

    vol, header_apix = read_mrc(in_path)
    apix = header_apix if apix is None else apix
    if not apix > 0:
        raise InputError(f"{in_path} records no voxel size (0 in its MRC header); pass --apix")
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise InputError(f"{in_path} holds an array of shape {vol.shape}, not a cubic volume; pass a particle STAR/.cs file for image stacks")
    new_box = _check_new_box(new_box, vol.shape[0], str(in_path))
    new_apix = float(apix) * vol.shape[0] / new_box
    small = fourier_crop_volume(np.asarray(vol, dtype=np.float32), new_box)
    write_mrc(out_path, small, new_apix, force=force)
    return new_apix

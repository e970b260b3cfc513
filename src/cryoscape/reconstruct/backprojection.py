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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from cryoscape.errors import InputError
from cryoscape.imaging import backproject_images, complete_channels
from cryoscape.imaging.ctf import CTF_FIELDS

__all__ = [
    "CTF_FIELDS",
    "FSC_THRESHOLD",
    "BackprojectionSums",
    "Backprojector",
    "backproject",
    "assign_half_sets",
    "Reconstruction",
    "reconstruct",
    "default_mask",
    "load_mask",
    "output_paths",
    "check_outputs",
]

#: Images handed to :func:`cryoscape.imaging.backproject_images` at once by
#: :meth:`Backprojector.insert`; bounds its per-call temporaries.
_CHUNK = 512


@dataclass
class BackprojectionSums:
    """Accumulated Fourier sums on the oversampled grid, per particle subset.

    ``numerator [S, M, M, M]`` complex64 holds ``Σ w_i CTF_i · (shifted image FT)``
    and ``weights [S, M, M, M]`` float32 ``Σ w_i CTF_i²`` (both Friedel-symmetric,
    centred; ``M = oversampling · box + 1``, see the module docstring); ``S`` is 2
    for half sets ``(0, 1)`` or 1.
    ``n_particles (S,)`` counts inserted particles and ``weight_sum (S,)`` their
    summed particle weights; ``n_skipped`` counts images left out for NaN/Inf.
    """

    numerator: torch.Tensor
    weights: torch.Tensor
    box: int
    apix: float
    oversampling: int
    n_particles: np.ndarray
    weight_sum: np.ndarray
    n_skipped: int = 0

    @property
    def n_sets(self) -> int:
        """Number of accumulated subsets ``S``."""
        return int(self.numerator.shape[0])

    def subset(self, index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(numerator, weights)`` of subset ``index``, or of all subsets summed (``None``)."""
        if index is None:
            return self.numerator.sum(0), self.weights.sum(0)
        return self.numerator[index], self.weights[index]

    def volume(self, index: int | None = None, regulariser: float | np.ndarray | torch.Tensor = 1e-3) -> np.ndarray:
        """Regularised volume ``[D, D, D]`` float32 of one subset (or all, ``None``).

        ``regulariser`` is the per-shell ``λ(k)`` added to the weights, ``(D//2+1,)``,
        or a scalar taken *relative* to each shell's mean weight (the default,
        ``1e-3``, is a nearly unregularised inverse). See
        :func:`cryoscape.reconstruct.wiener.wiener_volume`.
        """
        from cryoscape.reconstruct.wiener import relative_regulariser, wiener_volume

        num, den = self.subset(index)
        if np.ndim(regulariser) == 0:
            lam = relative_regulariser(den, self.box, self.oversampling, float(regulariser))
        else:
            lam = torch.as_tensor(np.asarray(regulariser), dtype=torch.float32)
        return wiener_volume(num, den, lam, self.box, self.oversampling)


class Backprojector:
    """Streaming CTF-weighted insertion into ``n_sets`` accumulators.

    A thin wrapper around :func:`cryoscape.imaging.backproject_images` holding one
    raw half-plane accumulator ``[3, M, M, M]`` (Re, Im of the numerator, Σ CTF²)
    per subset.

    Parameters
    ----------
    box, apix:
        Image side ``D`` (even, px) and pixel size (Å/px).
    oversampling:
        Fourier-grid oversampling factor (integer, default 2): the accumulators
        have side ``M = oversampling · D + 1``.
    n_sets:
        Number of independent accumulators (2 for gold-standard half sets).
    device:
        Torch device for the accumulators and all per-batch work.
    fine_radius:
        Padded radius (voxels) of the low-frequency disc filled from the
        zero-padded image FT (see :func:`cryoscape.imaging.backproject_images`);
        0 gives the plain adjoint of slice extraction.

    Call :meth:`insert` for each batch, then :meth:`sums`.
    """

    def __init__(self, box: int, apix: float, oversampling: int = 2, n_sets: int = 2,
                 device: str | torch.device = "cpu", fine_radius: int = 8):
        if box % 2:
            raise InputError(f"box size {box} is odd; cryoscape needs an even box (re-extract or crop the particles)")
        if oversampling < 1 or int(oversampling) != oversampling:
            raise ValueError(f"oversampling must be a positive integer; got {oversampling}")
        self.box = int(box)
        self.apix = float(apix)
        self.oversampling = int(oversampling)
        self.n_sets = int(n_sets)
        self.device = torch.device(device)
        self.fine_radius = int(fine_radius)
        self.N = self.box * self.oversampling
        self.M = self.N + 1
        M = self.M
        self._acc = torch.zeros(self.n_sets, 3, M, M, M, dtype=torch.float32, device=self.device)
        self._count = np.zeros(self.n_sets, dtype=np.int64)
        self._wsum = np.zeros(self.n_sets, dtype=np.float64)

    def _tensor(self, x, dtype=torch.float32) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=dtype)
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def insert(
        self,
        images: np.ndarray | torch.Tensor,
        rotations: np.ndarray | torch.Tensor,
        shifts_A: np.ndarray | torch.Tensor | None = None,
        ctf: Mapping[str, np.ndarray | torch.Tensor] | None = None,
        sets: np.ndarray | torch.Tensor | None = None,
        weights: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Add a batch of particles.

        images ``[b, D, D]``; rotations ``[b, 3, 3]`` (volume -> particle frame);
        shifts_A ``[b, 2]`` RELION origins (x, y) in Å or ``None`` (zero);
        ctf: the :data:`CTF_FIELDS` as ``(b,)`` arrays (the first six required), or
        ``None`` for no CTF; sets ``(b,)`` ints in ``0 .. n_sets-1`` (default 0);
        weights ``(b,)`` non-negative particle weights (default 1).
        """
        b = int(images.shape[0])
        if b == 0:
            return
        if tuple(images.shape[-2:]) != (self.box, self.box):
            raise InputError(f"images are {tuple(images.shape[-2:])} but the reconstruction box is {self.box}")
        set_idx = np.zeros(b, dtype=np.int64) if sets is None else _numpy(sets).astype(np.int64).reshape(b)
        if np.any((set_idx < 0) | (set_idx >= self.n_sets)):
            raise ValueError(f"set indices must lie in 0..{self.n_sets - 1}")
        wts = None if weights is None else _numpy(weights).astype(np.float64).reshape(b)
        for start in range(0, b, _CHUNK):
            sl = slice(start, min(start + _CHUNK, b))
            for s in np.unique(set_idx[sl]):
                rows = np.flatnonzero(set_idx[sl] == s) + start
                self._insert_rows(images, rotations, shifts_A, ctf, wts, rows, int(s))
        counts = np.bincount(set_idx, minlength=self.n_sets)
        self._count += counts
        self._wsum += counts if wts is None else np.bincount(set_idx, weights=wts, minlength=self.n_sets)

    def _insert_rows(self, images, rotations, shifts_A, ctf, wts, rows: np.ndarray, s: int) -> None:
        """Insert the particles ``rows`` (indices into the batch) into accumulator ``s``."""
        pick = lambda x: None if x is None else self._tensor(_take(x, rows))
        backproject_images(
            pick(images),
            pick(rotations),
            pick(shifts_A),
            None if ctf is None else {k: pick(v) for k, v in ctf.items()},
            apix=self.apix,
            oversampling=float(self.oversampling),
            out=self._acc[s],
            fine_radius=self.fine_radius,
            weights=pick(wts),
        )

    def sums(self) -> BackprojectionSums:
        """The accumulated sums with every contribution's Friedel mate added."""
        done = [complete_channels(acc) for acc in self._acc]
        return BackprojectionSums(
            numerator=torch.stack([torch.complex(c[0], c[1]) for c in done]),
            weights=torch.stack([c[2] for c in done]),
            box=self.box,
            apix=self.apix,
            oversampling=self.oversampling,
            n_particles=self._count.copy(),
            weight_sum=self._wsum.copy(),
        )


def _numpy(x) -> np.ndarray:
    """``x`` as a numpy array (tensors are moved to the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _take(x, rows: np.ndarray):
    """Rows ``rows`` of an array or tensor along its first axis (a view for a contiguous range)."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return x[int(rows[0]) : int(rows[-1]) + 1]
    if isinstance(x, torch.Tensor):
        return x.index_select(0, torch.as_tensor(rows, device=x.device))
    return np.asarray(x)[rows]


def assign_half_sets(half_set: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    """Half-set labels ``(n,)`` int64 in {0, 1}.

    Labels 0/1 given in ``half_set`` (e.g. from ``_rlnRandomSubset``) are kept;
    particles marked −1 (or all, when ``half_set`` is ``None``) are split at
    random into two halves of equal size (±1) with ``np.random.default_rng(seed)``.
    """
    out = np.full(n, -1, dtype=np.int64) if half_set is None else np.asarray(half_set, dtype=np.int64).copy()
    if out.shape != (n,):
        raise ValueError(f"half_set has shape {out.shape}; expected ({n},)")
    unknown = np.flatnonzero((out != 0) & (out != 1))
    if unknown.size:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(unknown)
        # balance the halves, counting the labels already given
        n0 = int(np.sum(out == 0))
        n1 = int(np.sum(out == 1))
        n_to_0 = int(np.clip((n1 - n0 + unknown.size + rng.integers(0, 2)) // 2, 0, unknown.size))
        out[perm[:n_to_0]] = 0
        out[perm[n_to_0:]] = 1
    return out


def _ctf_columns(particles) -> dict[str, np.ndarray]:
    """The :data:`CTF_FIELDS` of every particle as ``(N,)`` float64 arrays (absent fields 0)."""
    table = particles.ctf_table()
    n = len(particles)
    out = {}
    for name in CTF_FIELDS:
        col = table.get(name)
        out[name] = np.zeros(n) if col is None else np.broadcast_to(np.asarray(col, dtype=np.float64), (n,))
    return out


def backproject(
    particles,
    *,
    particle_weights: np.ndarray | None = None,
    half_sets: bool | np.ndarray = True,
    use_ctf: bool = True,
    batch_size: int = 1024,
    oversampling: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    skip_bad: bool = False,
) -> BackprojectionSums:
    """Stream a :class:`~cryoscape.particles.ParticleSet` through a :class:`Backprojector`.

    Images are read batch by batch with ``particles.iter_batches(batch_size)``
    (memory-mapped; memory does not grow with the number of particles).

    particle_weights:
        Optional ``(N,)`` non-negative weights (e.g. kernel weights of a local
        reconstruction in a latent space); particles with weight 0 are skipped
        without reading their images.
    half_sets:
        ``True``: two accumulators from ``particles.half_set`` (random halves
        with ``seed`` where unknown); ``False``: one accumulator; or an explicit
        ``(N,)`` array of subset labels ``0 .. S-1``.
    use_ctf:
        Multiply by the CTF when the particles have CTF parameters.
    skip_bad:
        Images with NaN/Inf pixels raise InputError; with ``skip_bad`` they are
        left out (counted in ``n_skipped``) instead.

    Returns the Friedel-symmetrised :class:`BackprojectionSums`.
    """
    particles.require_poses("backprojection")
    n = len(particles)
    keep = np.arange(n)
    weights = None
    if particle_weights is not None:
        weights = np.asarray(particle_weights, dtype=np.float64).reshape(-1)
        if weights.shape != (n,):
            raise InputError(f"particle_weights has {weights.size} entries but there are {n} particles")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InputError("particle_weights must be finite and non-negative")
        keep = np.flatnonzero(weights > 0)
    if isinstance(half_sets, np.ndarray):
        labels = np.asarray(half_sets, dtype=np.int64)
        n_sets = int(labels.max()) + 1 if labels.size else 1
    elif half_sets:
        labels = assign_half_sets(getattr(particles, "half_set", None), n, seed)
        n_sets = 2
    else:
        labels = np.zeros(n, dtype=np.int64)
        n_sets = 1
    sub = particles if keep.size == n else particles[keep]
    bp = Backprojector(int(particles.box), float(particles.apix), oversampling, n_sets, device)
    with_ctf = use_ctf and bool(particles.has_ctf)
    rotations = np.asarray(sub.rotations)
    shifts = None if getattr(sub, "shifts_A", None) is None else np.asarray(sub.shifts_A)
    ctf_cols = _ctf_columns(sub) if with_ctf else None
    batches: Iterable = sub.iter_batches(batch_size)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(sub), unit="img", desc="backprojecting", leave=False)
    n_skipped = 0
    first_bad = -1
    for idx, images in batches:
        idx = np.asarray(idx)
        good = np.isfinite(images).all(axis=(1, 2))
        if not good.all():
            if first_bad < 0:
                first_bad = int(keep[idx[~good][0]])
            n_skipped += int((~good).sum())
            idx, images = idx[good], images[good]
        if n_skipped and not skip_bad:
            if bar is not None:
                bar.update(int(good.size))
            continue  # only count the remaining bad images, then refuse below
        orig = keep[idx]
        bp.insert(
            images,
            rotations[idx],
            None if shifts is None else shifts[idx],
            None if ctf_cols is None else {k: v[idx] for k, v in ctf_cols.items()},
            labels[orig],
            None if weights is None else weights[orig],
        )
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    if n_skipped and not skip_bad:
        raise InputError(
            f"{getattr(particles, 'name', 'the particle set')}: {n_skipped} image(s) have NaN or Inf pixels"
            f" (the first is particle {first_bad}); remove them or pass --skip-bad to leave them out"
        )
    sums = bp.sums()
    sums.n_skipped = n_skipped
    return sums


# --------------------------------------------------------------------------
# Homogeneous reconstruction: half maps, Wiener filter, FSC, outputs
# --------------------------------------------------------------------------

#: FSC threshold for the reported resolution (gold standard).
FSC_THRESHOLD = 0.143


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


def output_paths(out_path: str | Path) -> dict[str, Path]:
    """Files written by :meth:`Reconstruction.save` for ``out_path`` (``consensus.mrc``).

    ``volume`` ``consensus.mrc``, ``half1``/``half2`` ``consensus_half{1,2}.mrc``,
    ``fsc_txt``/``fsc_json``/``fsc_png`` ``consensus_fsc.{txt,json,png}``.
    """
    p = Path(out_path)
    stem = p.with_suffix("") if p.suffix.lower() in (".mrc", ".map") else p
    base = stem.name
    folder = stem.parent
    return {
        "volume": p if p.suffix.lower() in (".mrc", ".map") else p.with_suffix(".mrc"),
        "half1": folder / f"{base}_half1.mrc",
        "half2": folder / f"{base}_half2.mrc",
        "fsc_txt": folder / f"{base}_fsc.txt",
        "fsc_json": folder / f"{base}_fsc.json",
        "fsc_png": folder / f"{base}_fsc.png",
    }


def check_outputs(out_path: str | Path, force: bool = False) -> dict[str, Path]:
    """Raise :class:`~cryoscape.errors.OutputExistsError` if any output of ``out_path`` exists (unless ``force``)."""
    from cryoscape.io.atomic import check_output_path

    paths = output_paths(out_path)
    for p in paths.values():
        check_output_path(p, force)
    return paths


@dataclass
class Reconstruction:
    """A homogeneous reconstruction with gold-standard validation.

    volume, half_a, half_b: ``[D, D, D]`` float32 (``[z, y, x]``), the Wiener-
    filtered full map and half maps; apix: Å/voxel; fsc: FSC between the
    half maps per shell ``0 .. D//2``; fsc_masked: the phase-randomisation
    corrected masked FSC; resolution_A / resolution_masked_A: where they cross
    0.143; shell_frequencies: cycles/Å per shell; n_particles: particles used
    (n_half: per half set; n_skipped: left out for NaN/Inf pixels); ssnr: the full-map SSNR per shell used for the
    Wiener filter; mask: the real-space mask of the masked FSC.
    """

    volume: np.ndarray
    half_a: np.ndarray
    half_b: np.ndarray
    apix: float
    fsc: np.ndarray
    fsc_masked: np.ndarray
    resolution_A: float
    resolution_masked_A: float
    shell_frequencies: np.ndarray
    n_particles: int
    n_half: tuple[int, int] = (0, 0)
    n_skipped: int = 0
    ssnr: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def box(self) -> int:
        """Box size ``D`` in voxels."""
        return int(self.volume.shape[0])

    def save(self, out_path: str | Path, force: bool = False) -> dict[str, Path]:
        """Write the maps and FSC curves next to ``out_path`` (see :func:`output_paths`).

        Every file is written atomically with voxel size :attr:`apix`; nothing
        is written if any output exists and ``force`` is false. The FSC table
        has columns shell, frequency (1/Å), resolution (Å), FSC unmasked, FSC
        masked (corrected). Returns the paths.
        """
        from cryoscape.io.mrc import write_mrc
        from cryoscape.validate.fsc import save_fsc_plot, write_fsc_table

        paths = check_outputs(out_path, force)
        write_mrc(paths["volume"], self.volume, self.apix, force=force)
        write_mrc(paths["half1"], self.half_a, self.apix, force=force)
        write_mrc(paths["half2"], self.half_b, self.apix, force=force)
        curves = {"fsc_unmasked": self.fsc, "fsc_masked": self.fsc_masked}
        write_fsc_table(paths["fsc_txt"], curves, self.box, self.apix, force=force)
        write_fsc_table(paths["fsc_json"], curves, self.box, self.apix, force=force)
        labels = {"half maps, unmasked": self.fsc, "half maps, masked (corrected)": self.fsc_masked}
        save_fsc_plot(paths["fsc_png"], labels, self.box, self.apix, thresholds=(FSC_THRESHOLD, 0.5), force=force)
        return paths


def reconstruct(
    particles,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    mask: str | Path | np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    oversampling: int = 2,
    n_iterations: int = 1,
    particle_weights: np.ndarray | None = None,
    skip_bad: bool = False,
) -> Reconstruction:
    """Reconstruct one map from particles with known poses (and CTF, when present).

    1. Stream the images once (:func:`backproject`) into two half-set
       accumulators (``particles.half_set``, e.g. ``_rlnRandomSubset``; random
       halves from ``seed`` where unknown).
    2. Wiener-filter the halves and the full map with ``λ(k)`` from the
       half-map SSNR (:func:`cryoscape.reconstruct.wiener.gold_standard`,
       ``n_iterations`` SSNR updates).
    3. FSC between the filtered halves, its 0.143 resolution, and the masked
       FSC corrected by phase randomisation (``mask``: ``None`` for a soft
       sphere, an array or an MRC path).

    ``particle_weights`` (N,) optionally weights or (0) excludes particles;
    ``skip_bad`` leaves out images with NaN/Inf pixels instead of failing.
    """
    from cryoscape.reconstruct.wiener import gold_standard
    from cryoscape.validate.fsc import corrected_masked_fsc, fsc, resolution_at, shell_frequencies

    particles.require_poses("reconstruction")
    box, apix = int(particles.box), float(particles.apix)
    mask_arr = load_mask(mask, box, apix)  # fail early, before reading images
    sums = backproject(
        particles,
        particle_weights=particle_weights,
        half_sets=True,
        batch_size=batch_size,
        oversampling=oversampling,
        device=device,
        seed=seed,
        progress=progress,
        skip_bad=skip_bad,
    )
    if np.any(sums.n_particles < 1):
        raise InputError(f"{getattr(particles, 'name', 'the particle set')}: a half set is empty; reconstruction needs particles in both halves")
    gs = gold_standard(
        (sums.numerator[0], sums.numerator[1]),
        (sums.weights[0], sums.weights[1]),
        box,
        oversampling,
        fsc,
        n_iterations=n_iterations,
    )
    masked = corrected_masked_fsc(gs.half_a, gs.half_b, mask_arr, rng=np.random.default_rng(seed))
    return Reconstruction(
        volume=gs.full,
        half_a=gs.half_a,
        half_b=gs.half_b,
        apix=apix,
        fsc=gs.fsc,
        fsc_masked=np.asarray(masked.corrected, dtype=np.float64),
        resolution_A=resolution_at(gs.fsc, box, apix, FSC_THRESHOLD),
        resolution_masked_A=resolution_at(masked.corrected, box, apix, FSC_THRESHOLD),
        shell_frequencies=shell_frequencies(box, apix),
        n_particles=int(sums.n_particles.sum()),
        n_half=(int(sums.n_particles[0]), int(sums.n_particles[1])),
        n_skipped=int(sums.n_skipped),
        ssnr=gs.ssnr_full,
        mask=mask_arr,
    )

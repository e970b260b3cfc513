"""CTF-weighted direct Fourier backprojection with known poses.

Each image contributes its centred 2D Fourier transform, re-centred by its
shift and multiplied by its CTF, to a numerator accumulator, and the squared
CTF to a weight accumulator, both on an oversampled 3D Fourier grid
(Fourier slice theorem). A regularised division of the two (see
:mod:`cryoscape.reconstruct.wiener`) gives the volume.

Grids and layouts
-----------------
* Images ``[b, D, D]`` (``[y, x]``, centre pixel ``D//2``), float32.
* Accumulators live on the centred, oversampled 3D grid of the padded box
  ``N = oversampling · D``, stored with ``M = N + 1`` points per axis
  (``[z, y, x]``, DC at index ``N/2``; index ``j`` holds frequency
  ``(j − N/2) / (N · apix)`` cycles/Å; plane ``j = N`` is the periodic copy
  of ``j = 0``), exactly the layout of
  :func:`cryoscape.imaging.projector.new_accumulator`: insertion here equals
  :func:`cryoscape.imaging.projector.insert_slices` (the adjoint of
  :class:`~cryoscape.imaging.FourierProjector`'s slice extraction).
* Only the half plane ``kx >= 0`` of each image (the rfft layout) is
  inserted, with weight ½ on the ``kx = 0`` column; the Friedel mate of every
  contribution is added once at the end (:meth:`Backprojector.sums`), which
  gives the same sums as inserting the full plane at half the cost.
* Frequencies strictly inside the Nyquist circle, ``|k| < D/2`` pixels, are
  inserted; with the symmetric ``N + 1`` grid every trilinear neighbour is on it.

A particle with rotation ``R`` contributes its 2D frequency ``(kx, ky)`` at
the 3D frequency ``Rᵀ (kx, ky, 0)``; its observed transform is
``CTF · exp(-2πi k·(-o)) · slice`` for origin ``o`` (Å), so the slice is
estimated from ``CTF · exp(-2πi k·o) · image`` (translating the image by
``+o`` centres it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from cryoscape.errors import InputError

__all__ = [
    "CTF_FIELDS",
    "FSC_THRESHOLD",
    "BackprojectionSums",
    "Backprojector",
    "backproject",
    "assign_half_sets",
    "ctf_at_points",
    "Reconstruction",
    "reconstruct",
    "default_mask",
    "load_mask",
    "output_paths",
    "check_outputs",
]

#: Per-particle CTF parameters, as in :meth:`ParticleSet.ctf_table`.
CTF_FIELDS: tuple[str, ...] = (
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "bfactor_A2",
)

#: Images processed together inside :meth:`Backprojector.insert`; bounds the
#: reused work buffers to ~250 MB at box 64 (fewer, larger operations).
_CHUNK = 512


def _electron_wavelength_A(voltage_kV: torch.Tensor) -> torch.Tensor:
    """Relativistic electron wavelength in Å for acceleration voltages ``(b,)`` in kV (same device)."""
    from cryoscape.imaging.ctf import electron_wavelength_A

    lam = np.asarray(electron_wavelength_A(voltage_kV.detach().cpu().double().numpy()), dtype=np.float64)
    return torch.as_tensor(lam, dtype=voltage_kV.dtype, device=voltage_kV.device).reshape(voltage_kV.shape)


class _Workspace:
    """Named work buffers reused across chunks.

    Fresh allocations of many MB per operation cost more than the arithmetic
    (page faults on first touch), so every per-chunk temporary is a view of a
    buffer kept for the life of the :class:`Backprojector`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buf: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._buf.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = torch.empty(n, dtype=dtype, device=self.device)
            self._buf[name] = buf
        return buf[:n].view(shape)


@dataclass(frozen=True)
class _HalfPlane:
    """The rfft half-plane frequencies that are inserted, for one box and pixel size.

    ``fft_index`` indexes the flattened ``[D, D//2+1]`` output of
    ``torch.fft.rfft2`` (rows in FFT order); ``sign`` is ``(-1)^(kx+ky)``
    (which centres the real-space origin at pixel ``D//2``) times ½ on the
    ``kx = 0`` column; ``kx_px``/``ky_px`` are frequencies in pixels of the ``D``
    grid; ``kx_A``/``ky_A`` (cycles/Å), ``k2`` (1/Å²), ``k4`` and ``angle`` (rad
    from +x) feed the shift and the CTF.
    """

    fft_index: torch.Tensor  # (P,) int64
    sign: torch.Tensor  # (P,) float32
    kx_px: torch.Tensor  # (P,) float32
    ky_px: torch.Tensor  # (P,) float32
    kx_A: torch.Tensor  # (P,) float32
    ky_A: torch.Tensor  # (P,) float32
    k2: torch.Tensor  # (P,) float32
    k4: torch.Tensor  # (P,) float32
    angle: torch.Tensor  # (P,) float32

    @property
    def n(self) -> int:
        return int(self.fft_index.numel())

    @staticmethod
    def build(D: int, apix: float, oversampling: int, device: torch.device) -> "_HalfPlane":
        ky, kx = torch.meshgrid(
            torch.arange(D, dtype=torch.int64) - D // 2,
            torch.arange(D // 2 + 1, dtype=torch.int64),
            indexing="ij",
        )
        ky, kx = ky.reshape(-1), kx.reshape(-1)
        r = torch.sqrt((kx * kx + ky * ky).double())
        keep = r < D / 2
        kx, ky = kx[keep], ky[keep]
        fft_index = torch.remainder(ky, D) * (D // 2 + 1) + kx
        sign = torch.where(torch.remainder(kx + ky, 2) == 0, 1.0, -1.0) * torch.where(kx == 0, 0.5, 1.0)
        kxa = kx.double() / (D * apix)
        kya = ky.double() / (D * apix)
        k2 = kxa * kxa + kya * kya
        f32 = dict(dtype=torch.float32, device=device)
        return _HalfPlane(
            fft_index=fft_index.to(device),
            sign=sign.to(**f32),
            kx_px=kx.to(**f32),
            ky_px=ky.to(**f32),
            kx_A=kxa.to(**f32),
            ky_A=kya.to(**f32),
            k2=k2.to(**f32),
            k4=(k2 * k2).to(**f32),
            angle=torch.atan2(kya, kxa).to(**f32),
        )


def ctf_at_points(
    plane: _HalfPlane, ctf: Mapping[str, torch.Tensor], out: torch.Tensor | None = None, work: torch.Tensor | None = None
) -> torch.Tensor:
    """RELION's CTF at the half-plane points, ``[b, P]`` float32.

    ``ctf`` maps the names in :data:`CTF_FIELDS` to ``(b,)`` tensors (Å, kV, mm,
    degrees, Å²). ``CTF = sin(γ + φ + w) · exp(−B k²/4)`` with
    ``γ = π λ Δf(α) k² − π/2 Cs λ³ k⁴``,
    ``Δf(α) = (Δf_u+Δf_v)/2 + (Δf_u−Δf_v)/2 · cos 2(α − α_ast)`` (underfocus
    positive), ``w = atan(Q/√(1−Q²))``, so ``CTF(0) = +Q`` for particles stored
    white on dark — the same function as
    :func:`cryoscape.imaging.ctf.ctf_from_freqs` (RELION's, which negates the
    defocus inside its ``−sin χ``), evaluated in place into ``out``/``work``
    (optional ``[b, P]`` buffers) to avoid large temporaries.
    """
    dfu, dfv = ctf["defocus_u_A"], ctf["defocus_v_A"]
    b = dfu.shape[0]
    lam = _electron_wavelength_A(ctf["voltage_kV"])
    q = ctf["amplitude_contrast"]
    mean_df = (0.5 * math.pi) * lam * (dfu + dfv)  # π λ (Δf_u+Δf_v)/2
    half_df = (0.5 * math.pi) * lam * (dfu - dfv)
    cs_term = (0.5 * math.pi) * ctf["cs_mm"] * 1e7 * lam**3
    offset = torch.deg2rad(ctf["phase_shift_deg"]) + torch.atan2(q, torch.sqrt(torch.clamp(1.0 - q * q, min=0.0)))
    out = torch.empty(b, plane.n, dtype=torch.float32, device=dfu.device) if out is None else out
    torch.sub(plane.angle[None, :], torch.deg2rad(ctf["defocus_angle_deg"])[:, None], out=out)
    out.mul_(2.0).cos_().mul_(half_df[:, None]).add_(mean_df[:, None]).mul_(plane.k2[None, :])  # π λ Δf(α) k²
    out.addcmul_(cs_term[:, None], plane.k4[None, :], value=-1.0).add_(offset[:, None])
    out.sin_()
    bfac = ctf["bfactor_A2"]
    if bool(torch.any(bfac != 0)):
        work = torch.empty_like(out) if work is None else work
        torch.mul(bfac[:, None], plane.k2[None, :], out=work)
        out.mul_(work.mul_(-0.25).exp_())
    return out


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
    """Streaming CTF-weighted trilinear insertion into ``n_sets`` accumulators.

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

    Call :meth:`insert` for each batch, then :meth:`sums`.
    """

    def __init__(self, box: int, apix: float, oversampling: int = 2, n_sets: int = 2, device: str | torch.device = "cpu"):
        if box % 2:
            raise InputError(f"box size {box} is odd; cryoscape needs an even box (re-extract or crop the particles)")
        if oversampling < 1 or int(oversampling) != oversampling:
            raise ValueError(f"oversampling must be a positive integer; got {oversampling}")
        self.box = int(box)
        self.apix = float(apix)
        self.oversampling = int(oversampling)
        self.n_sets = int(n_sets)
        self.device = torch.device(device)
        self.N = self.box * self.oversampling
        self.M = self.N + 1
        self.plane = _HalfPlane.build(self.box, self.apix, self.oversampling, self.device)
        size = self.n_sets * self.M**3
        self._re = torch.zeros(size, dtype=torch.float32, device=self.device)
        self._im = torch.zeros(size, dtype=torch.float32, device=self.device)
        self._w = torch.zeros(size, dtype=torch.float32, device=self.device)
        self._ws = _Workspace(self.device)
        self._count = np.zeros(self.n_sets, dtype=np.int64)
        self._wsum = np.zeros(self.n_sets, dtype=np.float64)
        M = self.M
        self._corner_offsets = torch.tensor(
            [(dz * M + dy) * M + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
            dtype=torch.int64,
            device=self.device,
        )

    # ------------------------------------------------------------------ input
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
        ctf: the :data:`CTF_FIELDS` as ``(b,)`` arrays, or ``None`` for no CTF;
        sets ``(b,)`` ints in ``0 .. n_sets-1`` (default 0); weights ``(b,)``
        non-negative particle weights (default 1).
        """
        b = int(images.shape[0])
        if b == 0:
            return
        if tuple(images.shape[-2:]) != (self.box, self.box):
            raise InputError(f"images are {tuple(images.shape[-2:])} but the reconstruction box is {self.box}")
        rot = self._tensor(rotations).reshape(b, 3, 3)
        set_idx = torch.zeros(b, dtype=torch.int64, device=self.device) if sets is None else self._tensor(sets, torch.int64)
        if bool(torch.any((set_idx < 0) | (set_idx >= self.n_sets))):
            raise ValueError(f"set indices must lie in 0..{self.n_sets - 1}")
        shifts = None if shifts_A is None else self._tensor(shifts_A).reshape(b, 2)
        ctf_t = None if ctf is None else {k: self._tensor(ctf[k]) for k in CTF_FIELDS}
        wts = None if weights is None else self._tensor(weights)
        for start in range(0, b, _CHUNK):
            sl = slice(start, min(start + _CHUNK, b))
            self._insert_chunk(
                self._tensor(images[sl]),
                rot[sl],
                None if shifts is None else shifts[sl],
                None if ctf_t is None else {k: v[sl] for k, v in ctf_t.items()},
                set_idx[sl],
                None if wts is None else wts[sl],
            )
        counts = torch.bincount(set_idx, minlength=self.n_sets).cpu().numpy()
        self._count += counts
        if wts is None:
            self._wsum += counts
        else:
            zeros = torch.zeros(self.n_sets, dtype=torch.float64, device=self.device)
            self._wsum += zeros.index_add_(0, set_idx, wts.double()).cpu().numpy()

    def _insert_chunk(
        self,
        imgs: torch.Tensor,
        rot: torch.Tensor,
        shifts: torch.Tensor | None,
        ctf: Mapping[str, torch.Tensor] | None,
        set_idx: torch.Tensor,
        wts: torch.Tensor | None,
    ) -> None:
        """Transform, re-centre and CTF-weight ``c`` images, then scatter them (all in work buffers)."""
        ws, pl = self._ws, self.plane
        c, D, P = imgs.shape[0], self.box, pl.n
        F = ws.get("fft", (c, D, D // 2 + 1), torch.complex64)
        torch.fft.rfft2(imgs, out=F)
        X = ws.get("X", (c, P), torch.complex64)
        torch.index_select(F.view(c, -1), 1, pl.fft_index, out=X)
        scale = ws.get("scale", (c, P))
        scale.copy_(pl.sign[None, :].expand(c, P))
        if wts is not None:
            scale.mul_(wts[:, None])
        if shifts is not None:
            # translate by +origin: multiply by exp(-2πi k·o)
            phase = ws.get("phase", (c, P))
            torch.mul(shifts[:, 0:1], pl.kx_A[None, :], out=phase)
            phase.addcmul_(shifts[:, 1:2], pl.ky_A[None, :]).mul_(-2.0 * math.pi)
            rot_c = ws.get("rotor", (c, P), torch.complex64)
            parts = torch.view_as_real(rot_c)
            torch.cos(phase, out=parts[..., 0])
            torch.sin(phase, out=parts[..., 1])
            X.mul_(rot_c)
        W = ws.get("W", (c, P))
        if ctf is not None:
            ctf_v = ctf_at_points(pl, ctf, out=ws.get("ctf", (c, P)), work=ws.get("ctf_work", (c, P)))
            scale.mul_(ctf_v)  # w · CTF (· sign)
            torch.mul(scale, ctf_v, out=W)  # w · CTF²
        else:
            torch.abs(scale, out=W)
        X.mul_(scale)
        W.abs_()  # the sign only re-centres the image; weights stay positive
        self._scatter(rot, set_idx, X, W)

    def _scatter(self, rot: torch.Tensor, set_idx: torch.Tensor, X: torch.Tensor, W: torch.Tensor) -> None:
        """Trilinear scatter of ``X [c, P]`` (complex) and ``W [c, P]`` at ``Rᵀ (kx, ky, 0)``."""
        ws, pl, M = self._ws, self.plane, self.M
        c, P = X.shape
        # padded-grid coordinates (x, y, z) of each point, origin at voxel M//2
        coords = ws.get("coords", (3, c, P))
        for a in range(3):
            torch.mul(pl.kx_px[None, :], rot[:, 0, a : a + 1], out=coords[a])
            coords[a].addcmul_(pl.ky_px[None, :], rot[:, 1, a : a + 1])
        coords.mul_(float(self.oversampling)).add_(float(M // 2))
        frac = ws.get("frac", (3, c, P))
        torch.floor(coords, out=frac)
        base = ws.get("base", (3, c, P), torch.int64)
        base.copy_(frac)
        torch.sub(coords, frac, out=frac)  # t in [0, 1)
        lower = ws.get("lower", (3, c, P))
        torch.neg(frac, out=lower).add_(1.0)  # 1 - t
        flat = ws.get("flat", (c, P), torch.int64)
        torch.mul(base[2], M, out=flat)
        flat.add_(base[1]).mul_(M).add_(base[0]).add_((set_idx * M**3)[:, None])
        kern = ws.get("kern", (8, c, P))
        zy = ws.get("zy", (c, P))
        k = 0
        for dz in (0, 1):
            wz = frac[2] if dz else lower[2]
            for dy in (0, 1):
                torch.mul(wz, frac[1] if dy else lower[1], out=zy)
                for dx in (0, 1):
                    torch.mul(zy, frac[0] if dx else lower[0], out=kern[k])
                    k += 1
        idx = ws.get("idx", (8, c, P), torch.int64)
        torch.add(flat[None], self._corner_offsets[:, None, None], out=idx)
        idx = idx.view(-1)
        vals = ws.get("vals", (8, c, P))
        torch.mul(kern, X.real[None], out=vals)
        self._re.index_add_(0, idx, vals.view(-1))
        torch.mul(kern, X.imag[None], out=vals)
        self._im.index_add_(0, idx, vals.view(-1))
        torch.mul(kern, W[None], out=vals)
        self._w.index_add_(0, idx, vals.view(-1))

    # ----------------------------------------------------------------- output
    def sums(self) -> BackprojectionSums:
        """The accumulated sums with every contribution's Friedel mate added."""
        M, S = self.M, self.n_sets
        num = torch.complex(self._re, self._im).reshape(S, M, M, M)
        den = self._w.reshape(S, M, M, M).clone()
        # index j <-> frequency j - N/2 (j = 0..N); its mate sits at N - j: a flip of every axis
        num = num + torch.flip(num, dims=(1, 2, 3)).conj()
        den = den + torch.flip(den, dims=(1, 2, 3))
        return BackprojectionSums(
            numerator=num,
            weights=den,
            box=self.box,
            apix=self.apix,
            oversampling=self.oversampling,
            n_particles=self._count.copy(),
            weight_sum=self._wsum.copy(),
        )


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
    from cryoscape.geometry.masks import soft_sphere_mask

    edge = max(3.0, box / 16.0)
    radius = min(0.4 * box, box / 2.0 - edge - 1.0)
    return soft_sphere_mask(box, radius, edge, ndim=3).numpy().astype(np.float32)


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

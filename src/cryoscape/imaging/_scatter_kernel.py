"""The compiled loops of :mod:`.scatter_cpu` (imported on first use: importing numba costs time).

Module-level functions, so that numba's on-disk cache finds them again in the
next process. See :mod:`.scatter_cpu` for the geometry and the slab tasks.
"""

import math

import numba

__all__ = ["scatter"]


@numba.njit(inline="always", fastmath=True)
def spread(acc, c, base, M, MM, lower, upper, w00, w01, w10, w11, u00, u01, u10, u11, v):  # pragma: no cover
    if lower:
        acc[c, base] += v * w00
        acc[c, base + 1] += v * w01
        acc[c, base + M] += v * w10
        acc[c, base + M + 1] += v * w11
    if upper:
        acc[c, base + MM] += v * u00
        acc[c, base + MM + 1] += v * u01
        acc[c, base + MM + M] += v * u10
        acc[c, base + MM + M + 1] += v * u11


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
def scatter(acc, M, tasks, rot, kx, ky, runs, vals, y, ctf, img_w, pt_w, mode,
            scale, centre):  # pragma: no cover - compiled
    C = acc.shape[0]
    MM = M * M
    B = rot.shape[0]
    n_runs = runs.shape[0] - 1
    hi = M - 2
    for t in numba.prange(tasks):
        zlo = t * (M - 1) // tasks
        zhi = M if t == tasks - 1 else (t + 1) * (M - 1) // tasks
        for i in range(B):
            r00 = rot[i, 0, 0] * scale
            r01 = rot[i, 0, 1] * scale
            r02 = rot[i, 0, 2] * scale
            r10 = rot[i, 1, 0] * scale
            r11 = rot[i, 1, 1] * scale
            r12 = rot[i, 1, 2] * scale
            for r in range(n_runs):
                ja = runs[r]
                jb = runs[r + 1]
                za = r02 * kx[ja] + r12 * ky[ja] + centre
                zb = r02 * kx[jb - 1] + r12 * ky[jb - 1] + centre
                # z is monotone along a run: skip it when its range misses the slab
                # (one plane of margin each way against rounding)
                if max(za, zb) < zlo - 2.0 or min(za, zb) >= zhi + 1.0:
                    continue
                for j in range(ja, jb):
                    z = r02 * kx[j] + r12 * ky[j] + centre
                    z0 = min(max(math.floor(z), 0), hi)
                    lower = zlo <= z0 < zhi
                    upper = zlo <= z0 + 1 < zhi
                    if not (lower or upper):
                        continue
                    x = r00 * kx[j] + r10 * ky[j] + centre
                    y_ = r01 * kx[j] + r11 * ky[j] + centre
                    x0 = min(max(math.floor(x), 0), hi)
                    y0 = min(max(math.floor(y_), 0), hi)
                    fx = x - x0
                    fy = y_ - y0
                    fz = z - z0
                    gx = 1.0 - fx
                    a = (1.0 - fz) * (1.0 - fy)
                    b = (1.0 - fz) * fy
                    e = fz * (1.0 - fy)
                    f = fz * fy
                    w00, w01, w10, w11 = a * gx, a * fx, b * gx, b * fx
                    u00, u01, u10, u11 = e * gx, e * fx, f * gx, f * fx
                    base = (int(z0) * M + int(y0)) * M + int(x0)
                    if mode == 0:  # the channel values as given
                        for c in range(C):
                            spread(acc, c, base, M, MM, lower, upper, w00, w01, w10, w11,
                                   u00, u01, u10, u11, vals[i, j, c])
                    else:  # CTF-weighted image values: (Re y c, Im y c, c²) times the weights
                        g = img_w[i] * pt_w[j]
                        cj = ctf[i, j] if mode == 2 else 1.0
                        gc = g * cj
                        spread(acc, 0, base, M, MM, lower, upper, w00, w01, w10, w11,
                               u00, u01, u10, u11, y[i, j, 0] * gc)
                        spread(acc, 1, base, M, MM, lower, upper, w00, w01, w10, w11,
                               u00, u01, u10, u11, y[i, j, 1] * gc)
                        spread(acc, 2, base, M, MM, lower, upper, w00, w01, w10, w11,
                               u00, u01, u10, u11, gc * cj)

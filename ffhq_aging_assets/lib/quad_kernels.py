"""The compiled loops of :mod:`ffhq_aging_assets.lib.quad_canvas`, in Pillow's arithmetic.

Kept apart so that only processes that align import Numba. Compiled on first use and cached on
disk by Numba (next to this file, or in the user's cache folder where that is read-only).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_HALF = float(1 << 21)
_UNIT = float(1 << 22)


@numba.njit(nogil=True, cache=True)
def clip8(total: float) -> float:
    """``Resample.c``'s ``clip8``: a fixed-point sum plus one half, shifted, clipped to 8 bits."""
    level = math.floor((total + _HALF) / _UNIT)
    return 0.0 if level < 0.0 else (255.0 if level > 255.0 else level)


@numba.njit(nogil=True, cache=True)
def left_and_step(src, row, c0, c1):
    """A source row's pixel at ``c0`` and its difference to the pixel at ``c1``, in double."""
    p0 = np.float64(src[row, c0, 0])
    p1 = np.float64(src[row, c0, 1])
    p2 = np.float64(src[row, c0, 2])
    return p0, p1, p2, src[row, c1, 0] - p0, src[row, c1, 1] - p1, src[row, c1, 2] - p2


@numba.njit(nogil=True, cache=True)
def bilinear(p, d, q, e, dx, dy):
    """``Geometry.c``'s BILINEAR: across both rows at ``dx``, then between them at ``dy``."""
    u = p + d * dx
    v = q + e * dx
    return u + (v - u) * dy


@numba.njit(nogil=True, cache=True)
def sample_row(src, a, y, line):
    """Row ``y`` of Pillow's bilinear QUAD canvas of ``src`` into ``line`` (canvas, 4)."""
    height, width = src.shape[0], src.shape[1]
    a0, a1, a2, a3, a4, a5, a6, a7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    fw, fh = float(width), float(height)
    yc = y + 0.5
    last_x, last_y = -2, -2
    p0 = p1 = p2 = d0 = d1 = d2 = q0 = q1 = q2 = e0 = e1 = e2 = 0.0
    for x in range(line.shape[0]):
        xc = x + 0.5
        xi = a0 + a1 * xc + a2 * yc + a3 * xc * yc
        yi = a4 + a5 * xc + a6 * yc + a7 * xc * yc
        if not (xi >= 0.0 and xi < fw and yi >= 0.0 and yi < fh):
            line[x, 0] = 0.0
            line[x, 1] = 0.0
            line[x, 2] = 0.0
            continue
        xi -= 0.5
        yi -= 0.5
        ix = int(xi) if xi >= 0.0 else -1
        iy = int(yi) if yi >= 0.0 else -1
        dx = xi - ix
        dy = yi - iy
        if ix != last_x or iy != last_y:
            last_x, last_y = ix, iy
            r0, r1 = max(iy, 0), min(iy + 1, height - 1)
            c0, c1 = max(ix, 0), min(ix + 1, width - 1)
            p0, p1, p2, d0, d1, d2 = left_and_step(src, r0, c0, c1)
            q0, q1, q2, e0, e1, e2 = left_and_step(src, r1, c0, c1)
        # Below the last row Pillow uses the row itself: v == u, so u + (v - u) * dy == u.
        line[x, 0] = math.floor(bilinear(p0, d0, q0, e0, dx, dy))
        line[x, 1] = math.floor(bilinear(p1, d1, q1, e1, dx, dy))
        line[x, 2] = math.floor(bilinear(p2, d2, q2, e2, dx, dy))


# Integer sums below 2**31 are exact in double in any order: these passes may be vectorized.
@numba.njit(nogil=True, cache=True, fastmath=True)
def across(line, bounds, weights, reduced, row):
    """The horizontal Lanczos pass of one canvas row into ``reduced[row]``, 8 bits per band.

    Four outputs at a time, each over its whole row of weights (zero past its window, and
    ``line`` has that many zero rows past the canvas), so that four sums of four bands advance
    side by side instead of one waiting on the last.
    """
    outputs, width = weights.shape
    for out in range(0, outputs - outputs % 4, 4):
        f0, f1, f2, f3 = bounds[out, 0], bounds[out + 1, 0], bounds[out + 2, 0], bounds[out + 3, 0]
        a = b = c = d = (0.0, 0.0, 0.0, 0.0)
        for x in range(width):
            a = add_weighted(a, line, f0 + x, weights[out, x])
            b = add_weighted(b, line, f1 + x, weights[out + 1, x])
            c = add_weighted(c, line, f2 + x, weights[out + 2, x])
            d = add_weighted(d, line, f3 + x, weights[out + 3, x])
        store(reduced, row, out, a)
        store(reduced, row, out + 1, b)
        store(reduced, row, out + 2, c)
        store(reduced, row, out + 3, d)
    for out in range(outputs - outputs % 4, outputs):
        first = bounds[out, 0]
        a = (0.0, 0.0, 0.0, 0.0)
        for x in range(width):
            a = add_weighted(a, line, first + x, weights[out, x])
        store(reduced, row, out, a)


@numba.njit(nogil=True, cache=True, fastmath=True)
def add_weighted(sums, line, j, k):
    """Four bands' running sums plus canvas pixel ``j`` of ``line`` times the weight ``k``."""
    return (
        sums[0] + line[j, 0] * k,
        sums[1] + line[j, 1] * k,
        sums[2] + line[j, 2] * k,
        sums[3] + line[j, 3] * k,
    )


@numba.njit(nogil=True, cache=True)
def store(reduced, row, out, sums):
    """The first three bands' fixed-point sums, rounded and clipped, into ``reduced[row, out]``."""
    reduced[row, out, 0] = np.uint8(clip8(sums[0]))
    reduced[row, out, 1] = np.uint8(clip8(sums[1]))
    reduced[row, out, 2] = np.uint8(clip8(sums[2]))


@numba.njit(nogil=True, cache=True, fastmath=True)
def down(reduced, bounds, weights, top, out):
    """The vertical Lanczos pass of the reduced rows (the first is canvas row ``top``)."""
    resolution = out.shape[0]
    rows = reduced.reshape(reduced.shape[0], -1)
    sums = np.empty(rows.shape[1], np.float64)
    for y_out in range(resolution):
        first, count = bounds[y_out, 0] - top, bounds[y_out, 1]
        sums[:] = 0.0
        for y in range(count):
            k = weights[y_out, y]
            source = rows[first + y]
            for j in range(sums.shape[0]):
                sums[j] += np.float64(source[j]) * k
        for x in range(resolution):
            for band in range(3):
                out[y_out, x, band] = np.uint8(clip8(sums[4 * x + band]))


@numba.njit(nogil=True, cache=True)
def quad_lanczos(src, a, canvas, bounds, weights, out):
    """Pillow's QUAD canvas of ``src`` (coefficients ``a``) reduced into ``out``, row by row."""
    resolution = out.shape[0]
    top = bounds[0, 0]
    bottom = bounds[resolution - 1, 0] + bounds[resolution - 1, 1]
    # Zero rows past the canvas: ``across`` reads each window to the width of the weights.
    line = np.zeros((canvas + weights.shape[1], 4), np.float64)
    reduced = np.zeros((bottom - top, resolution, 4), np.uint8)
    for y in range(top, bottom):
        sample_row(src, a, y, line[:canvas])
        across(line, bounds, weights, reduced, y - top)
    down(reduced, bounds, weights, top, out)

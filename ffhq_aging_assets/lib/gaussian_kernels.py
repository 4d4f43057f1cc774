"""The compiled loops of :mod:`ffhq_aging_assets.lib.gaussian_block`, in SciPy's arithmetic.

SciPy's ``correlate1d`` with a symmetric kernel of radius ``r`` (``ni_filters.c``) computes each
output in double as ``x[0] * w[0]``, then adds ``(x[-j] + x[j]) * w[j]`` for ``j`` from ``r``
down to 1, and stores it in the output's type. Both loops below keep that order for every
output; they run it for many outputs side by side (one output per vector lane), which changes
no output's arithmetic. Nothing is fused into FMA instructions (Numba's default keeps IEEE
semantics). Compiled on first use and cached on disk, as :mod:`quad_kernels` is.
"""

from __future__ import annotations

import numba
import numpy as np

# Outputs computed side by side down the columns: a tile's 2r + 1 input rows stay in cache.
_TILE = 256


@numba.njit(nogil=True, cache=True)
def filter_down(src, rows, first, half, out):
    """Filter down the columns ``first ...`` of ``src`` (lines, values) into ``out``.

    Output row ``i`` is centred on ``src[rows[i + r]]``; ``rows`` lists the input rows with the
    edges already reflected. ``half[j]`` is the kernel's weight at distance ``j``.
    """
    r = half.shape[0] - 1
    count, width = out.shape
    acc = np.empty(_TILE, np.float64)
    for k0 in range(0, width, _TILE):
        t = min(_TILE, width - k0)
        c0 = first + k0
        for i in range(count):
            centre = src[rows[i + r], c0 : c0 + t]
            w0 = half[0]
            for k in range(t):
                acc[k] = np.float64(centre[k]) * w0
            for j in range(r, 0, -1):
                lo = src[rows[i + r - j], c0 : c0 + t]
                hi = src[rows[i + r + j], c0 : c0 + t]
                wj = half[j]
                for k in range(t):
                    acc[k] += (np.float64(lo[k]) + np.float64(hi[k])) * wj
            line = out[i, k0 : k0 + t]
            for k in range(t):
                line[k] = np.float32(acc[k])


@numba.njit(nogil=True, cache=True)
def filter_across(src, columns, half, out):
    """Filter along the rows of ``src`` (rows, columns, bands) into ``out`` (rows, outputs, bands).

    Output ``c`` is centred on column ``columns[c + r]``; ``columns`` lists the input columns
    with the edges already reflected. Each row is first gathered into a line of doubles, as
    SciPy's line buffer holds it.
    """
    r = half.shape[0] - 1
    bands = src.shape[2]
    n = out.shape[1] * bands
    line = np.empty(columns.shape[0] * bands, np.float64)
    acc = np.empty(n, np.float64)
    flat = out.reshape(out.shape[0], n)
    base = r * bands
    for i in range(src.shape[0]):
        for c in range(columns.shape[0]):
            for b in range(bands):
                line[c * bands + b] = src[i, columns[c], b]
        centre = line[base : base + n]
        w0 = half[0]
        for k in range(n):
            acc[k] = centre[k] * w0
        for j in range(r, 0, -1):
            lo = line[base - j * bands : base - j * bands + n]
            hi = line[base + j * bands : base + j * bands + n]
            wj = half[j]
            for k in range(n):
                acc[k] += (lo[k] + hi[k]) * wj
        row = flat[i]
        for k in range(n):
            row[k] = np.float32(acc[k])

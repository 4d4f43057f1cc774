"""The blur-pad's Gaussian on one block of a frame, with SciPy's arithmetic, compiled.

The published blur-pad filters the whole padded frame with
``scipy.ndimage.gaussian_filter(float32(frame), [sigma, sigma, 0])``; the banded blur-pad needs
those values on the edge bands alone. :func:`gaussian_block` gives them, exactly:

- SciPy filters axis 0, then axis 1, each pass summing in double and storing float32, each
  output from the ``2 r + 1`` inputs around it on its axis, reflected at the array's edges
  (``r = int(4 sigma + 0.5)``, SciPy's default truncation, as the 2020 script used it). A block
  widened by ``r``, or reflected at the array's edge as SciPy reflects it, gives every output
  of the block the same inputs in the same order.
- The kernel is SciPy's ``_gaussian_kernel1d``: ``exp(-0.5 / sigma**2 * x**2)`` over
  ``x = -r .. r``, divided by its sum, all in double.
- The passes run compiled (:mod:`gaussian_kernels`) in ``correlate1d``'s order for a symmetric
  kernel, many outputs side by side; SciPy runs one output at a time.
- Reflect-padding copies whole columns, so the first pass runs only on the columns the block's
  inputs copy.

The first call in a process compares the compiled values with SciPy's on small frames, edges
included, and on windows whose sums show the order of the additions
(:func:`cancelling_windows`), and computes every block with SciPy (same values, slower) if they
differ, with a warning; the tests compare them on random frames, blocks and widths.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import scipy.ndimage

log = logging.getLogger(__name__)


def gaussian_block(
    u8: np.ndarray, rows: slice, cols: slice, sigma: float, copied: np.ndarray
) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(float32(u8), [sigma, sigma, 0])[rows, cols]``, exactly.

    Args:
        u8: an (H, W, bands) uint8 frame.
        rows: the block's rows, a non-empty slice with a step of 1 inside the frame.
        cols: the block's columns, likewise.
        sigma: the Gaussian's standard deviation, in pixels.
        copied: for each column of ``u8``, the column it is a copy of (itself if none).
    """
    if not _compiled_agrees():
        return scipy_gaussian_block(u8, rows, cols, sigma, copied)
    return compiled_gaussian_block(u8, rows, cols, sigma, copied)


def _radius(sigma: float) -> int:
    return int(4.0 * sigma + 0.5)  # SciPy's default truncate=4.0, as in the 2020 script


def scipy_gaussian_block(
    u8: np.ndarray, rows: slice, cols: slice, sigma: float, copied: np.ndarray
) -> np.ndarray:
    """:func:`gaussian_block` by SciPy's own filter, on the block widened by the radius."""
    radius = _radius(sigma)
    h, w = u8.shape[:2]
    r0, c0 = max(rows.start - radius, 0), max(cols.start - radius, 0)
    distinct, copies = np.unique(copied[c0 : min(cols.stop + radius, w)], return_inverse=True)
    first = scipy.ndimage.gaussian_filter1d(
        u8[r0 : min(rows.stop + radius, h), distinct],
        sigma,
        axis=0,
        output=np.float32,
        radius=radius,
    )
    second = scipy.ndimage.gaussian_filter1d(
        first[rows.start - r0 : rows.stop - r0, copies],
        sigma,
        axis=1,
        output=np.float32,
        radius=radius,
    )
    return second[:, cols.start - c0 : cols.stop - c0]


def scipy_kernel_half(sigma: float, radius: int) -> np.ndarray:
    """SciPy's normalised Gaussian kernel's weights at distances 0 .. ``radius``."""
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    phi = phi / phi.sum()
    return np.ascontiguousarray(phi[radius:])


def reflected(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start .. stop - 1`` of an axis of ``n``, reflected at its ends as SciPy does.

    SciPy's ``reflect`` mode is NumPy's ``symmetric`` padding (the edge value repeated), folded
    again where the reach passes the other end of a short axis.
    """
    before, after = max(-start, 0), max(stop - n, 0)
    return np.pad(np.arange(n), (before, after), "symmetric")[start + before : stop + before]


def compiled_gaussian_block(
    u8: np.ndarray, rows: slice, cols: slice, sigma: float, copied: np.ndarray
) -> np.ndarray:
    """:func:`gaussian_block` by the compiled passes."""
    from ffhq_aging_assets.lib import gaussian_kernels  # Numba: only aligning processes

    radius = _radius(sigma)
    h, w, bands = u8.shape
    half = scipy_kernel_half(sigma, radius)
    sources = copied[reflected(cols.start - radius, cols.stop + radius, w)]
    lo, hi = int(sources.min()), int(sources.max()) + 1
    first = np.empty((rows.stop - rows.start, (hi - lo) * bands), np.float32)
    gaussian_kernels.filter_down(
        np.ascontiguousarray(u8).reshape(h, w * bands),
        reflected(rows.start - radius, rows.stop + radius, h),
        lo * bands,
        half,
        first,
    )
    out = np.empty((rows.stop - rows.start, cols.stop - cols.start, bands), np.float32)
    gaussian_kernels.filter_across(
        first.reshape(first.shape[0], hi - lo, bands), sources - lo, half, out
    )
    return out


def cancelling_windows(half: np.ndarray, count: int) -> np.ndarray:
    """``count`` windows of ``2r + 1`` float32 values whose weighted sums nearly cancel.

    Each centre is chosen against its neighbours, so a sum of terms near a million ends near
    zero: its float32 rounding then shows the last bits of the double sum, which depend on the
    order of the additions and on whether multiply-adds are fused. (Frames of 8-bit values
    almost never show them.)
    """
    r = half.size - 1
    x = np.random.default_rng(0).uniform(-1e6, 1e6, (count, 2 * r + 1)).astype(np.float32)
    pairs = sum((np.float64(x[:, r - j]) + x[:, r + j]) * half[j] for j in range(1, r + 1))
    x[:, r] = np.float32(-pairs / half[0])
    return x


def _passes_agree(half: np.ndarray, windows: np.ndarray) -> bool:
    """Both compiled passes give SciPy's ``correlate1d`` at the centres of ``windows``."""
    from ffhq_aging_assets.lib import gaussian_kernels

    r = half.size - 1
    count, width = windows.shape
    kernel = np.concatenate([half[:0:-1], half])
    theirs = scipy.ndimage.correlate1d(windows, kernel, axis=1, output=np.float32)[:, r]
    across = np.empty((count, 1, 1), np.float32)
    gaussian_kernels.filter_across(windows[:, :, None], np.arange(width), half, across)
    down = np.empty((1, count), np.float32)
    gaussian_kernels.filter_down(np.ascontiguousarray(windows.T), np.arange(width), 0, half, down)
    return np.array_equal(across[:, 0, 0], theirs) and np.array_equal(down[0], theirs)


@functools.cache
def _compiled_agrees() -> bool:
    """The compiled passes give SciPy's values on small frames, and on sums that show order."""
    rng = np.random.default_rng(11)
    agree = True
    for height, width, sigma in ((23, 31, 2.7), (9, 6, 5.1)):
        u8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        copied = np.arange(width)
        whole = scipy.ndimage.gaussian_filter(np.float32(u8), [sigma, sigma, 0])
        for rows, cols in ((slice(0, height), slice(0, width)), (slice(2, 5), slice(1, 4))):
            mine = compiled_gaussian_block(u8, rows, cols, sigma, copied)
            agree = agree and np.array_equal(mine, whole[rows, cols])
    half = scipy_kernel_half(1.5, _radius(1.5))
    if agree and _passes_agree(half, cancelling_windows(half, 300)):
        return True
    log.warning(
        "this SciPy's Gaussian filter differs from the compiled one: the blur-pad's blur is "
        "computed by SciPy"
    )
    return False

import logging

import numpy as np
import pytest
import scipy.ndimage

from ffhq_aging_assets.lib import gaussian_block as gb
from ffhq_aging_assets.lib.gaussian_block import (
    cancelling_windows,
    compiled_gaussian_block,
    gaussian_block,
    reflected,
    scipy_gaussian_block,
    scipy_kernel_half,
)


def padded_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random frame reflect-padded left and right, and the column each column copies."""
    width, height = (int(v) for v in rng.integers(1, 40, 2))
    left, right = (int(v) for v in rng.integers(0, 50, 2))
    frame = rng.integers(0, 256, (height, width, 3), np.uint8)
    u8 = np.pad(frame, ((0, 0), (left, right), (0, 0)), "reflect")
    return u8, left + np.pad(np.arange(width), (left, right), "reflect")


def test_compiled_gaussian_agrees_with_scipy_here() -> None:
    gb._compiled_agrees.cache_clear()
    assert gb._compiled_agrees()


@pytest.mark.parametrize("block", [compiled_gaussian_block, scipy_gaussian_block])
@pytest.mark.parametrize("seed", range(8))
def test_a_block_is_the_whole_frame_filter_cut(block, seed: int) -> None:
    """Any block of a padded frame: frames from one pixel, radii past both ends of an axis."""
    rng = np.random.default_rng(seed)
    u8, copied = padded_frame(rng)
    sigma = float(rng.uniform(0.05, 15))
    whole = scipy.ndimage.gaussian_filter(np.float32(u8), [sigma, sigma, 0])
    h, w, _ = u8.shape
    for _ in range(20):
        r0, c0 = int(rng.integers(h)), int(rng.integers(w))
        rows = slice(r0, int(rng.integers(r0 + 1, h + 1)))
        cols = slice(c0, int(rng.integers(c0 + 1, w + 1)))
        values = block(u8, rows, cols, sigma, copied)
        assert values.dtype == np.float32
        assert np.array_equal(values, whole[rows, cols]), (u8.shape, rows, cols, sigma)


def test_wide_blocks_at_the_published_scale() -> None:
    # The compiled first pass runs in tiles of 256 values across: blocks several tiles wide,
    # with the radius of a large face's blur (qsize 2000: sigma 40, radius 160).
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (300, 260, 3), np.uint8)
    u8 = np.pad(frame, ((170, 170), (90, 200), (0, 0)), "reflect")
    copied = 90 + np.pad(np.arange(260), (90, 200), "reflect")
    for sigma in (7.3, 40.0):
        whole = scipy.ndimage.gaussian_filter(np.float32(u8), [sigma, sigma, 0])
        h, w, _ = u8.shape
        for rows, cols in ((slice(0, 60), slice(0, w)), (slice(60, h - 60), slice(w - 120, w))):
            values = compiled_gaussian_block(u8, rows, cols, sigma, copied)
            assert np.array_equal(values, whole[rows, cols]), (sigma, rows, cols)


def in_order(window: np.ndarray, half: np.ndarray, distances, split: bool = False) -> np.float32:
    r = half.size - 1
    total = float(window[r]) * half[0]
    for j in distances:
        lo, hi = float(window[r - j]), float(window[r + j])
        total += lo * half[j] + hi * half[j] if split else (lo + hi) * half[j]
    return np.float32(total)


def test_both_passes_add_in_scipys_order() -> None:
    half = scipy_kernel_half(1.5, 6)
    windows = cancelling_windows(half, 300)
    kernel = np.concatenate([half[:0:-1], half])
    theirs = scipy.ndimage.correlate1d(windows, kernel, axis=1, output=np.float32)[:, 6]
    # The windows tell the orders apart: from the nearest pair out, or each side on its own.
    for distances, split in ((range(1, 7), False), (range(6, 0, -1), True)):
        other = [in_order(w, half, distances, split) for w in windows]
        assert np.count_nonzero(other != theirs) > 10
    assert gb._passes_agree(half, windows)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_reflected_indices_fold_like_scipy(n: int) -> None:
    line = (1.0 + np.arange(n)) * 10.0 ** np.arange(n)
    reach = 3 * n + 2
    weights = np.zeros(2 * reach + 1)
    for shift in range(-reach, reach + 1):
        weights[:] = 0.0
        weights[reach + shift] = 1.0
        theirs = scipy.ndimage.correlate1d(line, weights, mode="reflect")
        assert np.array_equal(theirs, line[reflected(shift, n + shift, n)]), shift


def test_a_disagreeing_scipy_computes_the_blur(monkeypatch, caplog) -> None:
    calls = []
    theirs = scipy.ndimage.gaussian_filter

    def other_scipy(*args, **kwargs):
        calls.append(args[1])
        return np.float32(theirs(*args, **kwargs) + 1)

    monkeypatch.setattr(gb.scipy.ndimage, "gaussian_filter", other_scipy)
    gb._compiled_agrees.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=gb.__name__):
            u8, copied = padded_frame(np.random.default_rng(5))
            rows, cols = slice(0, u8.shape[0]), slice(0, u8.shape[1])
            values = gaussian_block(u8, rows, cols, 3.0, copied)
        assert "computed by SciPy" in caplog.text
        assert calls
        assert np.array_equal(values, scipy_gaussian_block(u8, rows, cols, 3.0, copied))
    finally:
        gb._compiled_agrees.cache_clear()

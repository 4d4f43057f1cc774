import logging
import math
from fractions import Fraction

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib import quad_canvas
from ffhq_aging_assets.lib.quad_canvas import (
    compiled_canvas,
    fused_sensitive_case,
    lanczos_coefficients,
    pillow_sample_quad,
    quad_coefficients,
    sample_quad,
)


def rotated_quad(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A square turned by a random angle around a point in or near the frame, or sheared."""
    cx, cy = rng.uniform(-10, width + 10), rng.uniform(-10, height + 10)
    half = rng.uniform(1, 60)
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle) * half, np.sin(angle) * half
    quad = np.array(
        [
            [cx - c + s, cy - s - c],
            [cx - c - s, cy - s + c],
            [cx + c - s, cy + s + c],
            [cx + c + s, cy + s - c],
        ]
    )
    return quad + rng.normal(0, 3, quad.shape) if rng.random() < 0.4 else quad


def noise(rng: np.random.Generator, width: int, height: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_compiled_canvas_agrees_with_pillow_here() -> None:
    quad_canvas._compiled_agrees.cache_clear()
    assert quad_canvas._compiled_agrees()


def test_no_multiply_add_is_fused() -> None:
    # Random frames almost never land within an ulp of a level, so they cannot tell a fused
    # multiply-add from Pillow's two roundings; this case can.
    img, quad = fused_sensitive_case()
    left, right = np.asarray(img)[0, 0], np.asarray(img)[0, 1]
    dx = (quad[0, 0] + 0.5) - 0.5  # the transform adds 0.5, the filter takes it off
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        plain = math.floor(a + (b - a) * dx)
        fused = math.floor(Fraction(a) + Fraction(b - a) * Fraction(dx))
        assert (plain, fused) == (a + 5, a + 4)
    for canvas, resolution in ((16, 4), (64, 48)):
        mine = compiled_canvas(img, quad, canvas, resolution)
        assert np.array_equal(mine, np.asarray(pillow_sample_quad(img, quad, canvas, resolution)))
        assert (mine == left + 5).all()


@pytest.mark.parametrize("seed", range(4))
def test_the_same_bytes_as_pillow_on_random_quads_frames_and_sizes(seed: int) -> None:
    # Frames from one pixel up, quads inside, across and outside their edges, canvases and
    # reductions of every ratio: each pixel goes through Pillow's bounds test, floor, edge
    # clamping and rounding, and each output through its Lanczos windows at the edges.
    rng = np.random.default_rng(seed)
    for _ in range(60):
        width, height = int(rng.integers(1, 80)), int(rng.integers(1, 80))
        img = noise(rng, width, height)
        quad = rotated_quad(rng, width, height)
        canvas = int(rng.integers(2, 300))
        resolution = int(rng.integers(1, canvas))
        mine = compiled_canvas(img, quad, canvas, resolution)
        theirs = np.asarray(pillow_sample_quad(img, quad, canvas, resolution))
        assert mine.shape == (resolution, resolution, 3)
        assert np.array_equal(mine, theirs), (width, height, quad.tolist(), canvas, resolution)


@pytest.mark.parametrize("resolution", [256, 1024])
def test_the_same_bytes_as_pillow_at_the_published_canvas(resolution: int) -> None:
    # The published case: a face quad about a fifth of a photo, magnified onto 4096 x 4096,
    # slightly turned, one corner outside the frame (zeros there, as Pillow fills them).
    rng = np.random.default_rng(resolution)
    img = noise(rng, 900, 700)
    quad = np.array([[-40.3, 120.7], [10.1, 760.2], [650.4, 710.9], [600.6, 70.1]])
    mine = compiled_canvas(img, quad, 4096, resolution)
    assert np.array_equal(mine, np.asarray(pillow_sample_quad(img, quad, 4096, resolution)))
    assert np.array_equal(np.asarray(sample_quad(img, quad, 4096, resolution)), mine)


def test_an_output_as_large_as_the_canvas_or_another_mode_is_pillows() -> None:
    rng = np.random.default_rng(3)
    img = noise(rng, 40, 30)
    quad = rotated_quad(rng, 40, 30)
    assert np.array_equal(
        np.asarray(sample_quad(img, quad, 64, 64)),
        np.asarray(pillow_sample_quad(img, quad, 64, 64)),
    )
    grey = img.convert("L")
    assert sample_quad(grey, quad, 64, 16).mode == "L"
    with pytest.raises(ValueError, match="L image and 16 from 64"):
        compiled_canvas(grey, quad, 64, 16)
    with pytest.raises(ValueError, match="64 from 64"):
        compiled_canvas(img, quad, 64, 64)


def test_lanczos_windows_cover_the_axis_and_weights_sum_to_one_in_fixed_point() -> None:
    bounds, weights = lanczos_coefficients(4096, 256)
    assert bounds[0, 0] == 0 and bounds[-1].sum() == 4096
    sums = weights.sum(axis=1)
    assert np.all(np.abs(sums - 2**22) <= bounds[:, 1])
    # A whole-number scale: every window away from the edges has the same weights.
    inner = weights[4:-4]
    assert np.array_equal(inner, np.broadcast_to(inner[0], inner.shape))


def test_quad_coefficients_are_pillows() -> None:
    # Pillow maps output (x + 0.5, y + 0.5) through these; the corners land on the quad.
    data = [10.5, 20.25, 12.0, 90.5, 95.75, 88.0, 93.5, 18.0]
    a = quad_coefficients(data, 64)
    corners = [(0, 0), (0, 64), (64, 64), (64, 0)]
    for (x, y), corner in zip(corners, np.reshape(data, (4, 2)), strict=True):
        xin = a[0] + a[1] * x + a[2] * y + a[3] * x * y
        yin = a[4] + a[5] * x + a[6] * y + a[7] * x * y
        assert (xin, yin) == pytest.approx(tuple(corner))


def test_a_pillow_that_disagrees_makes_pillow_compute_the_canvas(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As with a Pillow built to fuse multiply-adds: the first comparison fails, every canvas
    # then comes from Pillow, with a warning that says so.
    calls = []

    def other_pillow(img, quad, canvas, resolution):
        calls.append(canvas)
        out = np.array(pillow_sample_quad(img, quad, canvas, resolution))
        out[0, 0, 0] ^= 1
        return PIL.Image.fromarray(out, "RGB")

    monkeypatch.setattr(quad_canvas, "pillow_sample_quad", other_pillow)
    quad_canvas._compiled_agrees.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=quad_canvas.__name__):
            img = noise(np.random.default_rng(0), 40, 30)
            quad = np.array([[2.0, 3.0], [4.0, 25.0], [30.0, 24.0], [28.0, 1.0]])
            out = sample_quad(img, quad, 128, 32)
        assert "computed by Pillow" in caplog.text
        assert calls[-1] == 128
        assert out.getpixel((0, 0)) == other_pillow(img, quad, 128, 32).getpixel((0, 0))
    finally:
        quad_canvas._compiled_agrees.cache_clear()

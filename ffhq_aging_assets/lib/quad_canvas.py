"""The published canvas: Pillow's bilinear QUAD transform and its Lanczos reduction, row by row.

The published method samples the face quad onto a 4096 x 4096 canvas with
``img.transform((4096, 4096), QUAD, quad + 0.5, BILINEAR)`` and reduces it with
``resize((R, R), LANCZOS)``: two thirds of an aligned image's CPU time, and a 64 MB canvas per
image. :func:`sample_quad` gives the same bytes with Pillow's own arithmetic, compiled by Numba:

- the quad coefficients as ``Image.transform`` computes them (Python doubles);
- each canvas pixel's source point ``a0 + a1 x + a2 y + a3 x y`` in double, in Pillow's order,
  then its bilinear filter (``Geometry.c``): the same bounds test, floor, edge clamping, the
  two horizontal interpolations and the vertical one in double, truncated to 8 bits; nothing is
  fused into FMA instructions (Numba's default keeps IEEE semantics; :func:`fused_sensitive_case`
  shows the difference);
- the Lanczos reduction as ``Resample.c`` does it: coefficients computed in double and rounded
  to 22-bit fixed point per output pixel, a horizontal pass over the rows the vertical pass
  reads, rounded and clipped to 8 bits, then the vertical pass. Its sums are of integers below
  2**31, exact in double whatever their order, so these two passes may be vectorized.

Each canvas row is reduced horizontally as soon as it is sampled, so the canvas never exists.
Pixels whose four source neighbours are those of the pixel before (the canvas magnifies the
face four to eight times) reuse their values. The first call in a process compares the result
with Pillow's on a small case and falls back to Pillow (same bytes, slower) if they differ, as
they would with a Pillow built to fuse multiply-adds; the tests compare them on random quads,
sizes and frames.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import numpy as np
import PIL.Image

log = logging.getLogger(__name__)

# Resample.c: 32 bits less 8 for a pixel and 2 for the Lanczos lobes' overshoot.
_UNIT = float(1 << 22)


def pillow_sample_quad(
    img: PIL.Image.Image, quad: np.ndarray, canvas: int, resolution: int
) -> PIL.Image.Image:
    """The published computation: the quad onto a ``canvas`` square, reduced to ``resolution``."""
    img = img.transform(
        (canvas, canvas),
        PIL.Image.Transform.QUAD,
        (quad + 0.5).flatten().tolist(),
        PIL.Image.Resampling.BILINEAR,
    )
    if resolution < canvas:
        img = img.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    return img


def sample_quad(
    img: PIL.Image.Image, quad: np.ndarray, canvas: int, resolution: int
) -> PIL.Image.Image:
    """:func:`pillow_sample_quad`'s bytes, computed without the canvas where Numba agrees.

    Images in other modes than RGB, and outputs as large as the canvas, are Pillow's.

    Args:
        img: the frame to sample.
        quad: (4, 2) corners in ``img``'s pixels: top-left, bottom-left, bottom-right,
            top-right, as the published method lists them.
        canvas: the side of the square the quad is sampled onto.
        resolution: the output side, at most ``canvas``.
    """
    if img.mode != "RGB" or resolution >= canvas or not _compiled_agrees():
        return pillow_sample_quad(img, quad, canvas, resolution)
    return PIL.Image.fromarray(compiled_canvas(img, quad, canvas, resolution), "RGB")


def quad_coefficients(data: Sequence[float], size: int) -> np.ndarray:
    """``Image.transform``'s eight QUAD coefficients for corners ``data`` and a square output."""
    nw, sw, se, ne = data[0:2], data[2:4], data[4:6], data[6:8]
    x0, y0 = nw
    across = 1.0 / size
    down = 1.0 / size
    return np.array(
        (
            x0,
            (ne[0] - x0) * across,
            (sw[0] - x0) * down,
            (se[0] - sw[0] - ne[0] + x0) * across * down,
            y0,
            (ne[1] - y0) * across,
            (sw[1] - y0) * down,
            (se[1] - sw[1] - ne[1] + y0) * across * down,
        ),
        dtype=np.float64,
    )


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@functools.lru_cache(maxsize=16)
def lanczos_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``Resample.c``'s window (first input, count) and fixed-point weights per output pixel.

    For a reduction of a whole axis (box 0 to ``in_size``), in Pillow's order of operations;
    the weights are returned as doubles holding the fixed-point integers.
    """
    scale = float(np.float32(in_size)) / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inverse = 1.0 / filterscale
    bounds = np.zeros((out_size, 2), np.int64)
    weights = np.zeros((out_size, ksize), np.float64)
    for out in range(out_size):
        center = 0.0 + (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        row = [_lanczos((x + first - center + 0.5) * inverse) for x in range(count)]
        total = 0.0
        for w in row:
            total += w
        if total != 0.0:
            row = [w / total for w in row]
        weights[out, :count] = [
            int(-0.5 + w * _UNIT) if w < 0 else int(0.5 + w * _UNIT) for w in row
        ]
        bounds[out] = (first, count)
    return bounds, weights


def compiled_canvas(
    img: PIL.Image.Image, quad: np.ndarray, canvas: int, resolution: int
) -> np.ndarray:
    """The compiled computation for an RGB ``img`` and ``resolution < canvas``, as an array.

    Raises:
        ValueError: another mode than RGB, or no reduction to compute.
    """
    if img.mode != "RGB" or not 1 <= resolution < canvas:
        raise ValueError(
            f"the compiled canvas takes an RGB image and 1 <= resolution < canvas, not a "
            f"{img.mode} image and {resolution} from {canvas}"
        )
    bounds, weights = lanczos_coefficients(canvas, resolution)
    src = np.asarray(img)
    a = quad_coefficients((quad + 0.5).flatten().tolist(), canvas)
    out = np.empty((resolution, resolution, 3), np.uint8)
    # Imported here: Numba takes about 0.3 s to import, which only aligning processes pay.
    from ffhq_aging_assets.lib import quad_kernels

    quad_kernels.quad_lanczos(src, a, canvas, bounds, weights, out)
    return out


def fused_sensitive_case() -> tuple[PIL.Image.Image, np.ndarray]:
    """A frame and quad whose canvas shows whether the bilinear filter fuses a multiply-add.

    Every canvas pixel samples the same point of a 2 x 1 frame, at ``dx`` just under 1/3 between
    levels 15 apart: ``15 * dx`` rounds to 5 before Pillow adds it to the left level, and a fused
    multiply-add keeps it just under 5, one level lower after the floor.
    """
    img = PIL.Image.fromarray(np.array([[[124, 125, 126], [139, 140, 141]]], np.uint8), "RGB")
    x = float.fromhex("0x1.aaaaaaaaaaaa2p-1") - 0.5  # + 0.5 in the transform, exactly
    return img, np.array([[x, 0.0]] * 4)


@functools.cache
def _compiled_agrees() -> bool:
    """The compiled canvas gives Pillow's bytes on small cases (frame edges included)."""
    rng = np.random.default_rng(7)
    img = PIL.Image.fromarray(rng.integers(0, 256, (29, 37, 3), dtype=np.uint8), "RGB")
    quad = np.array([[-3.3, 2.1], [1.7, 33.9], [36.2, 30.4], [31.8, -4.6]])
    cases = [(img, quad, 96, 20), (img, quad, 64, 48), (*fused_sensitive_case(), 16, 4)]
    for frame, corners, canvas, resolution in cases:
        mine = compiled_canvas(frame, corners, canvas, resolution)
        theirs = pillow_sample_quad(frame, corners, canvas, resolution)
        if not np.array_equal(mine, np.asarray(theirs)):
            log.warning(
                "this Pillow's QUAD transform or Lanczos reduction differs from the compiled "
                "canvas: the alignment canvas is computed by Pillow"
            )
            return False
    return True

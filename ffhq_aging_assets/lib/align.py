"""The published FFHQ-Aging crop: face quad from 68 landmarks, shrink, crop, pad, transform.

``mode="reference"`` follows the 2020 method step by step (DESIGN.md, "Alignment") and
reproduces its outputs byte for byte, including the float32 arithmetic of its blur-pad step as
NumPy 1.x computed it; it computes the shrink only for the crop and the blur-pad only in the
edge bands where it changes pixels, with the published arithmetic in both. ``mode="fast"``
computes the same crop at the scale the output needs.

One module on purpose, although over 300 lines: the fast mode is the published steps rescaled,
built from the same border, crop-box, pad and quad-sampling helpers and held to the reference
output by the tests, so each fast step reads best next to the published step it stands for.
Split by mode, the fast half would import the reference half's private steps (and the reference
entry point the fast one); split by stage, the published method would no longer read top to
bottom in one file, as DESIGN.md lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image
import scipy.ndimage

from ffhq_aging_assets.lib.gaussian_block import gaussian_block
from ffhq_aging_assets.lib.quad_canvas import sample_quad

TRANSFORM_SIZE = 4096
Mode = Literal["reference", "fast"]
# Fast mode: the face spans at most this many output widths in the working frame (the
# published method keeps up to 4), and the quad is sampled onto a canvas of at least this many
# output widths (2 up to 512 px, 1.5 above; the published method always uses 4096 px). Chosen
# by benchmarks/align.py: 45 dB PSNR or better against the reference on every case.
FAST_WORKING_SPAN = 3.0
FAST_REDUCING_GAP = 3.0


def _fast_supersample(resolution: int) -> float:
    return 2.0 if resolution <= 512 else 1.5


class AlignmentError(ValueError):
    """The landmarks do not describe a face that can be cropped; the message says why."""


@dataclass(frozen=True)
class CropGeometry:
    """Everything the crop of one image is computed from, in the published method's terms.

    ``quad`` and ``qsize`` are in the original frame; ``shrink`` is the whole-frame downscale
    factor (1: none); ``crop`` is the box cut from the shrunk frame (None when the whole frame is
    kept); ``pad`` is (left, top, right, bottom) of the reflect-pad around the cropped frame, all
    zero when the blur-pad path does not run.
    """

    quad: np.ndarray
    qsize: float
    shrink: int
    crop: tuple[int, int, int, int] | None
    pad: tuple[int, int, int, int]
    blur_pad: bool


def face_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented crop square (4 corners) and its side, from 68 dlib landmarks.

    Raises:
        AlignmentError: for landmarks that are not 68 finite points, or eyes and mouth that
            coincide so no orientation exists.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise AlignmentError(f"landmarks must be 68 x 2 points, got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise AlignmentError("landmarks contain NaN or infinite coordinates")
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not norm > 1e-6:
        raise AlignmentError("eyes and mouth coincide: the face has no orientation")
    x /= norm
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 2.2)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(*x) * 2)
    if not qsize >= 2.0:
        raise AlignmentError(f"the face is {qsize:.2f} pixels wide: eyes and mouth nearly coincide")
    return quad, qsize


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )


def _crop_box(quad: np.ndarray, qsize: float, width: int, height: int) -> tuple[int, tuple]:
    """The published border, and the quad's box widened by it and clamped to the frame."""
    border = max(int(np.rint(qsize * 0.1)), 3)
    b = _bounds(quad)
    box = (
        max(b[0] - border, 0),
        max(b[1] - border, 0),
        min(b[2] + border, width),
        min(b[3] + border, height),
    )
    return border, box


def _pad_for(quad: np.ndarray, qsize: float, border: int, width: int, height: int) -> tuple:
    """The published reflect-pad around a (cropped) frame.

    All zero when the blur-pad path does not run.
    """
    b = _bounds(quad)
    pad = (
        max(-b[0] + border, 0),
        max(-b[1] + border, 0),
        max(b[2] - width + border, 0),
        max(b[3] - height + border, 0),
    )
    if max(pad) > border - 4:
        return tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))
    return (0, 0, 0, 0)


def crop_geometry(landmarks: np.ndarray, width: int, height: int, resolution: int) -> CropGeometry:
    """The published method's geometry for a ``width`` x ``height`` frame, without pixels.

    Raises:
        AlignmentError: degenerate landmarks, or a quad that lies outside the frame.
    """
    quad, qsize = face_quad(landmarks)
    left, top, right, bottom = _bounds(quad)
    if right <= 0 or bottom <= 0 or left >= width or top >= height:
        raise AlignmentError(
            f"the face quad ({left}, {top})-({right}, {bottom}) lies outside the "
            f"{width}x{height} frame"
        )
    original_quad, original_qsize = quad.copy(), qsize
    shrink = int(np.floor(qsize / resolution * 0.5))
    if shrink > 1:
        width = int(np.rint(float(width) / shrink))
        height = int(np.rint(float(height) / shrink))
        quad = quad / shrink
        qsize = qsize / shrink
    border, box = _crop_box(quad, qsize, width, height)
    crop = None
    if box[2] - box[0] < width or box[3] - box[1] < height:
        crop = box
        quad = quad - box[0:2]
        width, height = box[2] - box[0], box[3] - box[1]
    pad = _pad_for(quad, qsize, border, width, height)
    blur_pad = max(pad) > 0
    return CropGeometry(
        quad=original_quad,
        qsize=original_qsize,
        shrink=shrink if shrink > 1 else 1,
        crop=crop,
        pad=pad,
        blur_pad=blur_pad,
    )


def _mask_term(n: int, before: int, after: int) -> np.ndarray:
    """One axis's term of the published pad mask: ``1 - min(i / before, (n - 1 - i) / after)``.

    The mask is the larger of the two axes' terms at each pixel. float32 divisors: NumPy 1.x
    divided by the int pad values in float32, and the published images were made that way;
    NumPy 2 would promote to float64.
    """
    i = np.arange(n)
    return np.float32(1.0) - np.minimum(
        np.float32(i) / np.float32(before), np.float32(n - 1 - i) / np.float32(after)
    )


def _blur_weight(mask: np.ndarray) -> np.ndarray:
    return np.clip(mask * np.float32(3.0) + np.float32(1.0), np.float32(0.0), np.float32(1.0))


def _blended_edges(term: np.ndarray) -> tuple[int, int]:
    """How many leading and trailing lines of one axis have a non-zero blur weight.

    The weight is zero on one run in the middle (``term`` falls, then rises, and the float32
    steps from it to the weight keep that order), or nowhere: then every line counts as leading.
    """
    zero = np.flatnonzero(_blur_weight(term) == 0)
    if zero.size == 0:
        return term.size, 0
    return int(zero[0]), term.size - 1 - int(zero[-1])


def _median(interior: np.ndarray, blended: list[np.ndarray]) -> np.ndarray:
    """``np.median(frame, axis=(0, 1))``, the same float32, by selection.

    ``frame`` holds ``interior`` pixels that kept their uint8 values and ``blended`` (float32)
    ones elsewhere. Interior pixels are counted per level; the k-th smallest value lies in the
    unit interval ``[v, v + 1)`` where the running count of both kinds passes k, and sorted,
    that interval holds the interior pixels equal to v, then its blended values in order. The
    middle one or two values are averaged by ``np.mean`` as ``np.median`` does.
    """
    values = np.concatenate([a.reshape(-1, 3).T for a in blended], axis=1)
    low, high = min(int(np.floor(values.min())), 0), max(int(np.floor(values.max())), 255)
    n = interior.shape[0] * interior.shape[1] + values.shape[1]
    ranks = [n // 2 - 1, n // 2] if n % 2 == 0 else [n // 2]
    middle = np.empty((3, len(ranks)), np.float32)
    for c in range(3):
        counts = np.bincount(interior[..., c].ravel(), minlength=256)
        levels = np.floor(values[c])
        running = np.bincount((levels - low).astype(np.intp), minlength=high - low + 1)
        running[-low : 256 - low] += counts
        running = np.cumsum(running)
        inside: dict[int, np.ndarray] = {}
        for i, k in enumerate(ranks):
            b = int(np.searchsorted(running, k, side="right"))
            j = k - (int(running[b - 1]) if b else 0)
            level = b + low
            ties = int(counts[level]) if 0 <= level < 256 else 0
            if j < ties:
                middle[c, i] = level
                continue
            if level not in inside:
                inside[level] = values[c][levels == level]
            middle[c, i] = np.partition(inside[level], j - ties)[j - ties]
    return np.mean(middle, axis=-1)


def _blur_pad_bands(
    u8: np.ndarray, pad: tuple[int, int, int, int], qsize: float
) -> list[tuple[slice, slice, np.ndarray]]:
    """The published blur-pad's float32 values, computed only where they change pixels.

    ``u8`` is the reflect-padded frame. The blur weight ``clip(3m + 1)`` is zero more than 4/3
    of a pad width inside its edges, and the median weight ``clip(m)`` with it, so there the
    published arithmetic leaves every value as it was; only the edge bands are filtered
    (:mod:`~ffhq_aging_assets.lib.gaussian_block`) and blended, and the median of the whole
    frame comes from the bands' values and the interior's counts (:func:`_median`). Returns
    (rows, cols, values) per band; the bands do not overlap.
    """
    h, w, _ = u8.shape
    across, down = _mask_term(w, pad[0], pad[2]), _mask_term(h, pad[1], pad[3])
    left, right = _blended_edges(across)
    top, bottom = _blended_edges(down)
    middle = slice(top, h - bottom)
    bands = [
        (slice(0, top), slice(0, w)),
        (slice(h - bottom, h), slice(0, w)),
        (middle, slice(0, left)),
        (middle, slice(w - right, w)),
    ]
    bands = [(r, c) for r, c in bands if r.stop > r.start and c.stop > c.start]
    blur = qsize * 0.02
    copied = pad[0] + np.pad(np.arange(w - pad[0] - pad[2]), (pad[0], pad[2]), "reflect")
    masks, blended = [], []
    for rows, cols in bands:
        m = np.maximum(across[None, cols, None], down[rows, None, None])
        a = np.float32(u8[rows, cols])
        a += (gaussian_block(u8, rows, cols, blur, copied) - a) * _blur_weight(m)
        masks.append(m)
        blended.append(a)
    median = _median(u8[middle, left : w - right], blended)
    for a, m in zip(blended, masks, strict=True):
        a += (median - a) * np.clip(m, np.float32(0.0), np.float32(1.0))
    return [(rows, cols, a) for (rows, cols), a in zip(bands, blended, strict=True)]


def _blur_pad(
    img: PIL.Image.Image, pad: tuple[int, int, int, int], qsize: float
) -> PIL.Image.Image:
    """Reflect-pad, then blend the padding towards a blur and the median colour (float32).

    Byte for byte the published computation (:func:`_blur_pad_bands`).

    Raises:
        ValueError: a zero pad, for which the published mask divides 0 by 0 (the blur-pad
            step pads every side by at least ``rint(0.3 qsize)``, one pixel or more).
    """
    if min(pad) < 1:
        raise ValueError(f"every pad must be at least 1 pixel, got {pad}")
    u8 = np.pad(np.asarray(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    for rows, cols, values in _blur_pad_bands(u8, pad, qsize):
        u8[rows, cols] = np.uint8(np.clip(np.rint(values), 0, 255))
    return PIL.Image.fromarray(u8, "RGB")


def _blur_pad_fast(
    img: PIL.Image.Image, pad: tuple[int, int, int, int], qsize: float
) -> PIL.Image.Image:
    """:func:`_blur_pad`, computed only where it changes pixels, with a downsampled blur.

    Both blends vanish more than 4/3 of a pad width inside the padded frame's edges (the
    weights there are ``clip(3m + 1) = clip(m) = 0``), so only four edge strips are blended;
    the interior keeps its bytes. The wide Gaussian (sigma = 0.02 qsize) is computed on a
    box-reduced copy with its width reduced so the stages add up to the same variance, and
    upsampled bilinearly for the strips alone; the median comes from every third pixel.
    """
    u8 = np.pad(np.asarray(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = u8.shape
    sigma = qsize * 0.02
    factor = int(sigma / 2.5)
    if factor >= 2:
        small = np.asarray(PIL.Image.fromarray(u8).reduce(factor), dtype=np.float32)
        variance = sigma**2 - (factor**2 - 1) / 12 - factor**2 / 6
        small = scipy.ndimage.gaussian_filter(
            small, [np.sqrt(max(variance, 0.25 * factor**2)) / factor] * 2 + [0]
        )
        layers = [PIL.Image.fromarray(np.ascontiguousarray(small[..., k]), "F") for k in range(3)]

        def blurred(rows: slice, cols: slice) -> np.ndarray:
            # Block k of reduce() is centred on full-frame coordinate (k + 0.5) * factor.
            box = (cols.start / factor, rows.start / factor, cols.stop / factor, rows.stop / factor)
            size = (cols.stop - cols.start, rows.stop - rows.start)
            return np.stack(
                [
                    np.asarray(layer.resize(size, PIL.Image.Resampling.BILINEAR, box=box))
                    for layer in layers
                ],
                axis=-1,
            )
    else:
        full = scipy.ndimage.gaussian_filter(np.float32(u8), [sigma, sigma, 0])

        def blurred(rows: slice, cols: slice) -> np.ndarray:
            return full[rows, cols]

    bands = [
        min(int(np.ceil(4.0 / 3.0 * v)) + 1, n) for v, n in zip(pad, (w, h, w, h), strict=True)
    ]
    top, bottom = bands[1], min(bands[3], h - bands[1])
    left, right = bands[0], min(bands[2], w - bands[0])
    strips = [
        (slice(0, top), slice(0, w)),
        (slice(h - bottom, h), slice(0, w)),
        (slice(top, h - bottom), slice(0, left)),
        (slice(top, h - bottom), slice(w - right, w)),
    ]
    strips = [(r, c) for r, c in strips if r.stop > r.start and c.stop > c.start]
    p = [np.float32(v) for v in pad]
    blended, masks = [], []
    for rows, cols in strips:
        y, x, _ = np.ogrid[rows, cols, :1]
        m = np.maximum(
            np.float32(1.0) - np.minimum(np.float32(x) / p[0], np.float32(w - 1 - x) / p[2]),
            np.float32(1.0) - np.minimum(np.float32(y) / p[1], np.float32(h - 1 - y) / p[3]),
        )
        a = np.float32(u8[rows, cols])
        a += (blurred(rows, cols) - a) * np.clip(m * np.float32(3.0) + np.float32(1.0), 0, 1)
        blended.append(a)
        masks.append(m)
    interior = u8[top : h - bottom : 3, left : w - right : 3].reshape(-1, 3)
    sample = np.concatenate([np.float32(interior)] + [a[::3, ::3].reshape(-1, 3) for a in blended])
    median = np.median(sample, axis=0)
    for (rows, cols), a, m in zip(strips, blended, masks, strict=True):
        a += (median - a) * np.clip(m, np.float32(0.0), np.float32(1.0))
        u8[rows, cols] = np.uint8(np.clip(np.rint(a), 0, 255))
    return PIL.Image.fromarray(u8, "RGB")


def _shrunk_crop(
    img: PIL.Image.Image, shrink: int, crop: tuple[int, int, int, int] | None
) -> PIL.Image.Image:
    """The published shrink cut to ``crop`` (None: all of it), computing little more than the cut.

    The shrink is ``img.resize((rint(W / shrink), rint(H / shrink)), LANCZOS)``, which Pillow
    computes horizontally, then vertically (the 2020 Pillow always; Pillow 13 turns the order
    round for frames more than about twice as tall as wide, which changes pixels, so the two
    passes run here one at a time). Each output's fixed-point coefficients depend only on its
    centre, ``lo + (i + 0.5) * scale`` for a box from ``lo``, and on the frame's edges. Where an
    axis divides by ``shrink`` the scale is that whole number, so a box from ``shrink * first``
    gives every output of the cut the very centre it has in the whole shrunk frame; the
    horizontal pass runs on the rows the vertical one reads, cut with a margin beyond the
    Lanczos support (3 output pixels) so that no window is clipped by the cut. An axis that
    does not divide is resampled whole and cut afterwards.
    """
    width, height = img.size
    size = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
    box = crop if crop is not None else (0, 0, *size)
    spans = [
        (lo, hi) if n == m * shrink else (0, m)
        for n, m, lo, hi in ((width, size[0], box[0], box[2]), (height, size[1], box[1], box[3]))
    ]
    (x0, x1), (y0, y1) = spans
    if height == size[1] * shrink:
        top, bottom = max((y0 - 4) * shrink, 0), min((y1 + 4) * shrink, height)
    else:
        top, bottom = 0, height
    rows = img.crop((0, top, width, bottom)) if (top, bottom) != (0, height) else img
    across = rows.resize(
        (x1 - x0, bottom - top),
        PIL.Image.Resampling.LANCZOS,
        box=(x0 * width / size[0], 0, x1 * width / size[0], bottom - top),
    )
    down = across.resize(
        (x1 - x0, y1 - y0),
        PIL.Image.Resampling.LANCZOS,
        box=(0, y0 * height / size[1] - top, x1 - x0, y1 * height / size[1] - top),
    )
    cut = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    return down if cut == (0, 0, *down.size) else down.crop(cut)


def align_face(
    image: PIL.Image.Image, landmarks: np.ndarray, resolution: int, mode: Mode = "reference"
) -> PIL.Image.Image:
    """Crop a face the way FFHQ-Aging was made: an RGB ``resolution`` x ``resolution`` image.

    Args:
        image: the in-the-wild photo.
        landmarks: its (68, 2) dlib landmarks, in pixels.
        resolution: output size, 64 to 4096.
        mode: ``"reference"`` (byte-exact published method) or ``"fast"``.

    Raises:
        AlignmentError: degenerate landmarks, or a face outside the frame.
    """
    if mode not in ("reference", "fast"):
        raise ValueError(f"mode must be 'reference' or 'fast', not {mode!r}")
    if not 1 <= resolution <= TRANSFORM_SIZE:
        raise ValueError(f"resolution must be 1..{TRANSFORM_SIZE}, got {resolution}")
    img = image.convert("RGB") if image.mode != "RGB" else image
    geo = crop_geometry(landmarks, img.size[0], img.size[1], resolution)
    if mode == "fast":
        return _align_fast(img, geo, resolution)
    quad, qsize = geo.quad.copy(), geo.qsize
    if geo.shrink > 1:
        img = _shrunk_crop(img, geo.shrink, geo.crop)
        quad /= geo.shrink
        qsize /= geo.shrink
    elif geo.crop is not None:
        img = img.crop(geo.crop)
    if geo.crop is not None:
        quad -= geo.crop[0:2]
    if geo.blur_pad:
        img = _blur_pad(img, geo.pad, qsize)
        quad += geo.pad[:2]
    return sample_quad(img, quad, TRANSFORM_SIZE, resolution)


def _align_fast(img: PIL.Image.Image, geo: CropGeometry, resolution: int) -> PIL.Image.Image:
    """The same crop, computed at the scale the output needs rather than the source's.

    The published method shrinks the frame only by whole factors, keeping the face up to four
    times the output size, and samples it onto a 4096 x 4096 canvas whatever the output. Here
    the published (shrunk) frame is mapped, exactly, onto a working frame in which the face
    spans at most ``FAST_WORKING_SPAN`` times the output; only the crop box is resampled into
    it; the crop, pad and blur follow the published rules at that scale (the blur-pad as in
    :func:`_blur_pad_fast`); and the quad is sampled onto a canvas of a small multiple of the
    output size before the same Lanczos reduction.
    """
    width, height = img.size
    if geo.shrink > 1:
        frame = (int(np.rint(width / geo.shrink)), int(np.rint(height / geo.shrink)))
    else:
        frame = (width, height)
    # Source pixels per published-frame pixel: not exactly the shrink factor, as in the
    # published method, whose quad is divided by the shrink factor all the same.
    fx, fy = width / frame[0], height / frame[1]
    quad, qsize = geo.quad / geo.shrink, geo.qsize / geo.shrink
    step = max(1.0, qsize / (FAST_WORKING_SPAN * resolution))
    work = (max(int(np.rint(frame[0] / step)), 1), max(int(np.rint(frame[1] / step)), 1))
    tx, ty = frame[0] / work[0], frame[1] / work[1]
    quad, qsize = quad / (tx, ty), qsize / step
    border, box = _crop_box(quad, qsize, work[0], work[1])
    sx, sy = tx * fx, ty * fy
    if sx == 1.0 and sy == 1.0:
        img = img.crop(box)
    else:
        img = img.resize(
            (box[2] - box[0], box[3] - box[1]),
            PIL.Image.Resampling.LANCZOS,
            box=(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy),
            reducing_gap=FAST_REDUCING_GAP,
        )
    quad = quad - box[0:2]
    pad = _pad_for(quad, qsize, border, *img.size)
    if max(pad) > 0:
        img = _blur_pad_fast(img, pad, qsize)
        quad = quad + pad[:2]
    least = _fast_supersample(resolution)
    canvas = min(TRANSFORM_SIZE, int(np.ceil(max(least, qsize / resolution) * resolution)))
    return sample_quad(img, quad, canvas, resolution)

"""The 2020 alignment script's edge blur and shrink, kept as the oracle reference mode is held to.

``lib/align.py`` computes the blur-pad over the non-zero bands only and shrinks a close-up's crop
alone; the tests compare both with these whole-frame computations value for value, and
``benchmarks/align.py`` measures them side by side.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import scipy.ndimage


def published_blur_pad_values(
    img: PIL.Image.Image, pad: tuple[int, int, int, int], qsize: float
) -> np.ndarray:
    """The reference blur-pad as it stood before it was computed in bands: the oracle.

    Verbatim up to the float32 array it rounds (:func:`published_blur_pad` rounds it).
    """
    arr = np.pad(
        np.asarray(img, dtype=np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect"
    )
    h, w, _ = arr.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    # float32 divisors: NumPy 1.x divided by the int pad values in float32, and the published
    # images were made that way; NumPy 2 would promote to float64.
    p = [np.float32(v) for v in pad]
    mask = np.maximum(
        np.float32(1.0) - np.minimum(np.float32(x) / p[0], np.float32(w - 1 - x) / p[2]),
        np.float32(1.0) - np.minimum(np.float32(y) / p[1], np.float32(h - 1 - y) / p[3]),
    )
    blur = qsize * 0.02
    arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(
        mask * np.float32(3.0) + np.float32(1.0), np.float32(0.0), np.float32(1.0)
    )
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, np.float32(0.0), np.float32(1.0))
    return arr


def published_blur_pad(
    img: PIL.Image.Image, pad: tuple[int, int, int, int], qsize: float
) -> PIL.Image.Image:
    """The oracle's image: :func:`published_blur_pad_values` rounded as the published step does."""
    arr = published_blur_pad_values(img, pad, qsize)
    return PIL.Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")


def published_blur_weight(shape: tuple[int, int], pad: tuple[int, int, int, int]) -> np.ndarray:
    h, w = shape
    y, x = np.ogrid[:h, :w]
    p = [np.float32(v) for v in pad]
    mask = np.maximum(
        np.float32(1.0) - np.minimum(np.float32(x) / p[0], np.float32(w - 1 - x) / p[2]),
        np.float32(1.0) - np.minimum(np.float32(y) / p[1], np.float32(h - 1 - y) / p[3]),
    )
    return np.clip(mask * np.float32(3.0) + np.float32(1.0), np.float32(0.0), np.float32(1.0))


def published_shrink(img: PIL.Image.Image, shrink: int) -> PIL.Image.Image:
    """The 2020 shrink as its Pillow computed it: the horizontal pass, then the vertical one."""
    size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
    lanczos = PIL.Image.Resampling.LANCZOS
    return img.resize((size[0], img.size[1]), lanczos).resize(size, lanczos)

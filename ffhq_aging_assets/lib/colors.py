"""The CelebAMask-HQ colour palette, for masks people can read."""

from __future__ import annotations

import numpy as np

# background, skin, nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip,
# l_lip, hair, hat, ear_r, neck_l, neck, cloth: CelebAMask-HQ's own colours, in its class order.
PALETTE = np.array(
    [
        [0, 0, 0],
        [204, 0, 0],
        [76, 153, 0],
        [204, 204, 0],
        [51, 51, 255],
        [204, 0, 204],
        [0, 255, 255],
        [255, 204, 204],
        [102, 51, 0],
        [255, 0, 0],
        [102, 204, 0],
        [255, 255, 0],
        [0, 0, 153],
        [0, 0, 204],
        [255, 51, 153],
        [0, 204, 204],
        [0, 51, 0],
        [255, 153, 51],
        [0, 204, 0],
    ],
    dtype=np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """An (H, W, 3) RGB picture of an (H, W) class map; ids past 18 show white."""
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[: len(PALETTE)] = PALETTE
    return lut[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The face with its colour mask blended over it (background left untouched)."""
    colour = colorize(mask).astype(np.float32)
    out = image.astype(np.float32)
    blend = (mask > 0)[..., None] * alpha
    return np.clip(out * (1 - blend) + colour * blend + 0.5, 0, 255).astype(np.uint8)

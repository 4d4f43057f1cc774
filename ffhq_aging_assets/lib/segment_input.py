"""The published preprocessing of a face for DeepLab, and of its class map back to R x R.

RGB, PIL bilinear resize to 513 x 513, to [0, 1], ImageNet normalisation; the argmax comes back
to R x R as PIL's nearest resize reads it (DESIGN.md, "Segmentation").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import torch

INPUT_SIZE = 513
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def nearest_indices(size: int, out: int) -> np.ndarray:
    """Source rows PIL's nearest resize from ``size`` to ``out`` reads: floor((i + .5) * s / o)."""
    return np.minimum(((np.arange(out) + 0.5) * size / out).astype(np.int64), size - 1)


def published_input(image: np.ndarray) -> np.ndarray:
    """PIL bilinear resize of an RGB uint8 face to 513 x 513 (still uint8, HWC)."""
    img = PIL.Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    return np.array(img.resize((INPUT_SIZE, INPUT_SIZE), PIL.Image.Resampling.BILINEAR))


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC at 513 -> normalised float NCHW."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def read_face(item: np.ndarray | str | Path) -> np.ndarray:
    """An RGB uint8 array from an array or an image file; a file that fails is named."""
    if not isinstance(item, (str, Path)):
        return np.asarray(item)
    try:
        with PIL.Image.open(item) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{item}: cannot read this face: {exc}") from exc


def face_size_error(item: object, found: tuple[int, ...], expected: tuple[int, ...]) -> ValueError:
    """The error for a face whose size differs from its batch's (a file is named)."""
    name = str(item) if isinstance(item, (str, Path)) else "an array"
    return ValueError(
        f"{name}: a {found[1]}x{found[0]} face among {expected[1]}x{expected[0]} ones; "
        "a batch holds faces of one size"
    )

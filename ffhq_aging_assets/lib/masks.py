"""Segmentation masks on disk: the classes, which masks are valid, statistics, colour renderings.

No torch here, although the model (``lib/deeplab.py``) takes its class count from
:data:`NUM_CLASSES`: the CLI's colouring and the labels join read masks without the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa

from ffhq_aging_assets.lib.colors import colorize, overlay
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.images import is_valid_image

CLASS_NAMES = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)
NUM_CLASSES = len(CLASS_NAMES)

STATS_SCHEMA = pa.schema(
    [
        pa.field("image_number", pa.int32(), nullable=False),
        pa.field("classes_present", pa.int16(), nullable=False),
        pa.field("max_class", pa.int16(), nullable=False),
        *(pa.field(f"frac_{name}", pa.float32(), nullable=False) for name in CLASS_NAMES),
    ]
)
STATS_DESCRIPTIONS = {
    "image_number": "FFHQ image number",
    "classes_present": "how many of the 19 classes cover at least one pixel",
    "max_class": "largest class id in the mask (must be at most 18)",
    **{f"frac_{name}": f"fraction of pixels labelled {name}" for name in CLASS_NAMES},
}


def write_mask(mask: np.ndarray, dest: Path) -> None:
    """Save a class map as an 8-bit greyscale PNG through a temporary file."""
    with atomic_path(dest) as tmp:
        PIL.Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "L").save(tmp, format="PNG")


def read_mask(path: Path) -> np.ndarray:
    """A class map as an (H, W) uint8 array."""
    with PIL.Image.open(path) as img:
        return np.asarray(img)


@dataclass(frozen=True)
class MaskAudit:
    """A chunk's masks by state, as image numbers: absent, present but unreadable, valid."""

    missing: list[int]
    malformed: list[int]
    valid: list[int]


def audit_masks(numbers: Sequence[int], paths: Sequence[Path], resolution: int) -> MaskAudit:
    """Sort each image's mask: missing, malformed (not an R x R 8-bit greyscale PNG), valid."""
    audit = MaskAudit([], [], [])
    for number, path in zip(numbers, paths, strict=True):
        if not path.is_file():
            audit.missing.append(number)
        elif is_valid_image(path, resolution, "L"):
            audit.valid.append(number)
        else:
            audit.malformed.append(number)
    return audit


def mask_stats(numbers: Sequence[int], masks: Sequence[np.ndarray]) -> pa.Table:
    """Per-mask class fractions, classes present and largest class id."""
    rows = np.zeros((len(masks), 256), np.float64)
    for i, mask in enumerate(masks):
        rows[i] = np.bincount(mask.ravel(), minlength=256)[:256] / max(mask.size, 1)
    present = (rows > 0).sum(axis=1)
    top = np.array([np.flatnonzero(r).max() if r.any() else 0 for r in rows], dtype=np.int16)
    columns = {
        "image_number": pa.array(list(numbers), pa.int32()),
        "classes_present": pa.array(present.astype(np.int16)),
        "max_class": pa.array(top),
        **{
            f"frac_{name}": pa.array(rows[:, k].astype(np.float32))
            for k, name in enumerate(CLASS_NAMES)
        },
    }
    return pa.Table.from_pydict(columns, schema=STATS_SCHEMA)


def preview_grid(
    faces: Sequence[Path], masks: Sequence[Path], thumb: int = 96, columns: int = 6
) -> PIL.Image.Image:
    """Faces with their colour masks blended over them, in a grid."""
    count = min(len(faces), len(masks), columns * 2)
    rows = max(-(-count // columns), 1)
    grid = PIL.Image.new("RGB", (columns * thumb, rows * thumb), (255, 255, 255))
    for i in range(count):
        with PIL.Image.open(faces[i]) as face:
            face_arr = np.asarray(face.convert("RGB").resize((thumb, thumb)))
        mask = np.asarray(
            PIL.Image.fromarray(read_mask(masks[i])).resize(
                (thumb, thumb), PIL.Image.Resampling.NEAREST
            )
        )
        grid.paste(
            PIL.Image.fromarray(overlay(face_arr, mask)),
            (i % columns * thumb, i // columns * thumb),
        )
    return grid


def write_color(mask_path: Path, dest: Path, face: Path | None = None) -> None:
    """A colour rendering of a mask (over its face when given), through a temporary file."""
    mask = read_mask(mask_path)
    if face is not None:
        with PIL.Image.open(face) as img:
            picture = overlay(np.asarray(img.convert("RGB")), mask)
    else:
        picture = colorize(mask)
    with atomic_path(dest) as tmp:
        PIL.Image.fromarray(picture).save(tmp, format="PNG")

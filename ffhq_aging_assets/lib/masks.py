"""Segmentation masks on disk: per-mask statistics and the colour renderings people look at."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa

from ffhq_aging_assets.lib.colors import colorize, overlay
from ffhq_aging_assets.lib.files import atomic_path, atomic_write_bytes

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


def precision_record(
    previous: dict | None, precision: str, agreement: float | None, sampled: int
) -> dict | None:
    """What a chunk's masks are, after a step computes some in ``precision``.

    None means every mask is fp32 (the published numerics). A bf16 step records the lowest
    agreement with fp32 measured by any bf16 step whose masks are still there; an fp32 step
    leaves an earlier bf16 record standing, since those masks remain.
    """
    if precision == "fp32":
        return previous
    if previous is not None and previous.get("agreement") is not None:
        earlier = float(previous["agreement"])
        agreement = earlier if agreement is None else min(agreement, earlier)
        sampled = max(sampled, int(previous.get("sampled", 0)))
    return {"precision": "bf16", "agreement": agreement, "sampled": sampled}


def read_precision_record(path: Path) -> dict | None:
    """A chunk's precision record; None where there is none (every mask so far is fp32).

    A file that is not such a record raises ``ValueError`` naming it.
    """
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("precision") not in ("bf16", "fp32"):
            raise ValueError(f"precision {record.get('precision')!r}")
        return record
    except (ValueError, AttributeError) as exc:
        raise ValueError(
            f"{path}: unreadable precision record ({exc}); delete it together with the "
            "chunk's parsings/ to recompute the masks"
        ) from exc


def write_precision_record(path: Path, record: dict | None) -> None:
    """Store a chunk's precision record (temporary name, then rename); None removes it."""
    if record is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(record).encode())

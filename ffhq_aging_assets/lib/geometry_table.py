"""The ``alignments`` table: each image's crop geometry, computed from its metadata row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ffhq_aging_assets.lib.align import AlignmentError, crop_geometry

GEOMETRY_SCHEMA = pa.schema(
    [
        pa.field("image_number", pa.int32(), nullable=False),
        pa.field("quad", pa.list_(pa.float64(), 8), nullable=False),
        pa.field("qsize", pa.float64(), nullable=False),
        pa.field("shrink", pa.int32(), nullable=False),
        pa.field("crop_box", pa.list_(pa.int32(), 4)),
        pa.field("pad", pa.list_(pa.int32(), 4), nullable=False),
        pa.field("blur_pad", pa.bool_(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
GEOMETRY_DESCRIPTIONS = {
    "image_number": "FFHQ image number",
    "quad": "crop square in the in-the-wild photo: 4 corners, flattened x, y",
    "qsize": "side of the crop square in source pixels",
    "shrink": "whole-frame downscale before cropping (1: none)",
    "crop_box": "box cut from the (shrunk) frame, left, top, right, bottom; null: whole frame",
    "pad": "reflect-pad left, top, right, bottom; zeros when the blur-pad path does not run",
    "blur_pad": "whether the blur-pad path runs (face near the frame's edge)",
    "error": "why no geometry exists (degenerate landmarks); null otherwise",
}


def geometry_table(
    numbers: list[int], landmarks: np.ndarray, sizes: np.ndarray, resolution: int
) -> pa.Table:
    """One row per image; a degenerate face gets NaN geometry and its error, not an exception."""
    rows: dict[str, list] = {f.name: [] for f in GEOMETRY_SCHEMA}
    for number, lm, (width, height) in zip(numbers, landmarks, sizes, strict=True):
        rows["image_number"].append(number)
        try:
            geo = crop_geometry(lm, int(width), int(height), resolution)
        except AlignmentError as exc:
            rows["quad"].append([float("nan")] * 8)
            rows["qsize"].append(float("nan"))
            rows["shrink"].append(0)
            rows["crop_box"].append(None)
            rows["pad"].append([0, 0, 0, 0])
            rows["blur_pad"].append(False)
            rows["error"].append(f"{number:05d}: {exc}")
            continue
        rows["quad"].append(geo.quad.flatten().tolist())
        rows["qsize"].append(geo.qsize)
        rows["shrink"].append(geo.shrink)
        rows["crop_box"].append(list(geo.crop) if geo.crop is not None else None)
        rows["pad"].append(list(geo.pad))
        rows["blur_pad"].append(geo.blur_pad)
        rows["error"].append(None)
    return pa.Table.from_pydict(rows, schema=GEOMETRY_SCHEMA)

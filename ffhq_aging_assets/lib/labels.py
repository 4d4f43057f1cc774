"""FFHQ-Aging's labels CSV: schema, validation, and the published filter and split rules.

Columns (DESIGN.md, "Labels"): image_number, age_group, age_group_confidence, gender,
gender_confidence, head_pitch, head_roll, head_yaw, left_eye_occluded, right_eye_occluded,
glasses. Where the attribute service found nothing, pose, occlusion and glasses are all -1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

AGE_GROUPS = ("0-2", "3-6", "7-9", "10-14", "15-19", "20-29", "30-39", "40-49", "50-69", "70-120")
GENDERS = ("male", "female")
GLASSES = ("None", "Normal", "Dark")
COLUMNS = (
    "image_number",
    "age_group",
    "age_group_confidence",
    "gender",
    "gender_confidence",
    "head_pitch",
    "head_roll",
    "head_yaw",
    "left_eye_occluded",
    "right_eye_occluded",
    "glasses",
)
ATTRIBUTES = ("head_pitch", "head_roll", "head_yaw", "left_eye_occluded", "right_eye_occluded")
TEST_FROM = 69_000

LABEL_DESCRIPTIONS = {
    "image_number": "FFHQ image number",
    "age_group": "age group, years: " + ", ".join(AGE_GROUPS),
    "age_group_confidence": "confidence of the age group, 0..1",
    "gender": "male or female",
    "gender_confidence": "confidence of the gender, 0..1",
    "head_pitch": "degrees; -1 when no attributes were found",
    "head_roll": "degrees; -1 when no attributes were found",
    "head_yaw": "degrees; -1 when no attributes were found",
    "left_eye_occluded": "0..100; -1 when no attributes were found",
    "right_eye_occluded": "0..100; -1 when no attributes were found",
    "glasses": "None, Normal, Dark; -1 when no attributes were found",
    "attributes_found": "false where pose, occlusion and glasses are all -1",
}

LABELS_SCHEMA = pa.schema(
    [
        pa.field("image_number", pa.int32(), nullable=False),
        pa.field("age_group", pa.string(), nullable=False),
        pa.field("age_group_confidence", pa.float64(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("gender_confidence", pa.float64(), nullable=False),
        *(pa.field(name, pa.float64(), nullable=False) for name in ATTRIBUTES),
        pa.field("glasses", pa.string(), nullable=False),
        pa.field("attributes_found", pa.bool_(), nullable=False),
    ]
)


class LabelsError(ValueError):
    """The labels CSV is malformed; the message names the line, column and value."""


@dataclass(frozen=True)
class ParsedLabels:
    """Valid rows as a table, and one message per invalid value."""

    table: pa.Table
    errors: list[str]


def _number(text: str, lo: float, hi: float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if lo <= value <= hi else None


def parse_labels(
    text: str | Path, numbers: Iterable[int] | None = None, name: str = "labels"
) -> ParsedLabels:
    """Validate the CSV (a path or its text) and return the rows of ``numbers`` (all if None).

    Every row is checked, so a bad row anywhere is reported, with its line, column and value;
    duplicated image numbers are errors too.

    Raises:
        LabelsError: when the header is not the published one.
    """
    raw = text.read_text(encoding="utf-8") if isinstance(text, Path) else text
    reader = csv.reader(io.StringIO(raw))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise LabelsError(f"{name}: line 1: header {header!r} is not {', '.join(COLUMNS)}")
    wanted = None if numbers is None else set(numbers)
    errors: list[str] = []
    seen: dict[int, int] = {}
    rows: dict[str, list] = {f.name: [] for f in LABELS_SCHEMA}

    def bad(line: int, column: str, value: str, why: str) -> None:
        errors.append(f"{name}: line {line}, column {column}: {value!r} {why}")

    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(COLUMNS):
            bad(line, "*", ",".join(row)[:60], f"has {len(row)} fields, expected {len(COLUMNS)}")
            continue
        v = dict(zip(COLUMNS, (c.strip() for c in row), strict=True))
        ok = True
        number = v["image_number"]
        if not number.isdigit() or int(number) >= 70_000:
            bad(line, "image_number", number, "is not an image number 0..69999")
            continue
        n = int(number)
        if n in seen:
            bad(line, "image_number", number, f"repeats line {seen[n]}")
            continue
        seen[n] = line
        if wanted is not None and n not in wanted:
            continue
        if v["age_group"] not in AGE_GROUPS:
            bad(line, "age_group", v["age_group"], f"is not one of {', '.join(AGE_GROUPS)}")
            ok = False
        if v["gender"] not in GENDERS:
            bad(line, "gender", v["gender"], "is not male or female")
            ok = False
        conf = {}
        for col in ("age_group_confidence", "gender_confidence"):
            conf[col] = _number(v[col], 0.0, 1.0)
            if conf[col] is None:
                bad(line, col, v[col], "is not a confidence in [0, 1]")
                ok = False
        found = v["glasses"] != "-1"
        attrs = {}
        if found:
            if v["glasses"] not in GLASSES:
                bad(line, "glasses", v["glasses"], "is not None, Normal, Dark or -1")
                ok = False
            for col in ATTRIBUTES:
                lo, hi = (-180.0, 180.0) if col.startswith("head") else (0.0, 100.0)
                attrs[col] = _number(v[col], lo, hi)
                if attrs[col] is None:
                    bad(line, col, v[col], f"is not in [{lo:g}, {hi:g}] (glasses is set)")
                    ok = False
        else:
            for col in ATTRIBUTES:
                if _number(v[col], -1.0, -1.0) is None:
                    bad(line, col, v[col], "must be -1 when glasses is -1 (no attributes found)")
                    ok = False
                attrs[col] = -1.0
        if not ok:
            continue
        rows["image_number"].append(n)
        rows["age_group"].append(v["age_group"])
        rows["age_group_confidence"].append(conf["age_group_confidence"])
        rows["gender"].append(v["gender"])
        rows["gender_confidence"].append(conf["gender_confidence"])
        for col in ATTRIBUTES:
            rows[col].append(attrs[col])
        rows["glasses"].append(v["glasses"])
        rows["attributes_found"].append(found)
    table = pa.Table.from_pydict(rows, schema=LABELS_SCHEMA)
    return ParsedLabels(table.sort_by("image_number"), errors)


def published_filter(table: pa.Table) -> np.ndarray:
    """The rule the FFHQ-Aging training code keeps an image by (True: kept)."""
    c = {
        name: table.column(name).to_numpy(zero_copy_only=False)
        for name in ("age_group_confidence", "gender_confidence", *ATTRIBUTES)
    }
    glasses = np.asarray(table.column("glasses").to_pylist(), dtype=object)
    found = table.column("attributes_found").to_numpy(zero_copy_only=False)
    confident = (c["age_group_confidence"] > 0.6) & (c["gender_confidence"] > 0.66)
    left, right = c["left_eye_occluded"], c["right_eye_occluded"]
    eyes = ((left < 90) & (right < 50)) | ((left < 50) & (right < 90))
    pose = (np.abs(c["head_pitch"]) < 30) & (np.abs(c["head_yaw"]) < 40)
    return confident & (~found | (pose & eyes & (glasses != "Dark")))


def published_split(numbers: np.ndarray) -> np.ndarray:
    """``train`` below image 69,000, ``test`` from it on."""
    return np.where(np.asarray(numbers) < TEST_FROM, "train", "test")

"""FFHQ-Aging's labels: their columns, domains and schema, and the published filter and split.

Columns (DESIGN.md, "Labels"): image_number, age_group, age_group_confidence, gender,
gender_confidence, head_pitch, head_roll, head_yaw, left_eye_occluded, right_eye_occluded,
glasses. Where the attribute service found nothing, pose, occlusion and glasses are all -1.
Reading and validating the CSV itself is :mod:`ffhq_aging_assets.lib.labels_csv`.
"""

from __future__ import annotations

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
# The published filter keeps an image only when both confidences are above these.
AGE_CONFIDENCE = 0.6
GENDER_CONFIDENCE = 0.66

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


def confident_rows(age_confidence: np.ndarray, gender_confidence: np.ndarray) -> np.ndarray:
    """Rows whose age group and gender confidences both pass the published thresholds."""
    return (np.asarray(age_confidence) > AGE_CONFIDENCE) & (
        np.asarray(gender_confidence) > GENDER_CONFIDENCE
    )


def published_filter(table: pa.Table) -> np.ndarray:
    """The rule the FFHQ-Aging training code keeps an image by (True: kept)."""
    c = {
        name: table.column(name).to_numpy(zero_copy_only=False)
        for name in ("age_group_confidence", "gender_confidence", *ATTRIBUTES)
    }
    glasses = np.asarray(table.column("glasses").to_pylist(), dtype=object)
    found = table.column("attributes_found").to_numpy(zero_copy_only=False)
    confident = confident_rows(c["age_group_confidence"], c["gender_confidence"])
    left, right = c["left_eye_occluded"], c["right_eye_occluded"]
    eyes = ((left < 90) & (right < 50)) | ((left < 50) & (right < 90))
    pose = (np.abs(c["head_pitch"]) < 30) & (np.abs(c["head_yaw"]) < 40)
    return confident & (~found | (pose & eyes & (glasses != "Dark")))


def published_split(numbers: np.ndarray) -> np.ndarray:
    """``train`` below image 69,000, ``test`` from it on."""
    return np.where(np.asarray(numbers) < TEST_FROM, "train", "test")

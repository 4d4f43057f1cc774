import pytest

from ffhq_aging_assets.lib.labels import (
    LabelsError,
    parse_labels,
    published_filter,
    published_split,
)

HEADER = (
    "image_number,age_group,age_group_confidence,gender,gender_confidence,head_pitch,head_roll,"
    "head_yaw,left_eye_occluded,right_eye_occluded,glasses\n"
)


def csv(*rows: str) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


def test_good_rows_parse_with_types() -> None:
    parsed = parse_labels(
        csv(
            "0,0-2,0.99,male,0.9,-7.8,3.2,-13.5,0.0,1.0,None",
            "1,70-120,0.7,female,0.8,-1,-1,-1,-1,-1,-1",
        )
    )
    assert parsed.errors == []
    rows = parsed.table.to_pylist()
    assert rows[0]["head_yaw"] == -13.5 and rows[0]["attributes_found"]
    assert rows[1]["glasses"] == "-1" and not rows[1]["attributes_found"]


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("0,25-30,0.9,male,0.9,0,0,0,0,0,None", "age_group", "25-30"),
        ("0,0-2,1.5,male,0.9,0,0,0,0,0,None", "age_group_confidence", "1.5"),
        ("0,0-2,0.9,other,0.9,0,0,0,0,0,None", "gender", "other"),
        ("0,0-2,0.9,male,x,0,0,0,0,0,None", "gender_confidence", "x"),
        ("0,0-2,0.9,male,0.9,0,0,0,101,0,None", "left_eye_occluded", "101"),
        ("0,0-2,0.9,male,0.9,0,0,0,0,-1,None", "right_eye_occluded", "-1"),
        ("0,0-2,0.9,male,0.9,0,0,0,0,0,Sunglasses", "glasses", "Sunglasses"),
        ("0,0-2,0.9,male,0.9,5,-1,-1,-1,-1,-1", "head_pitch", "5"),
        ("70000,0-2,0.9,male,0.9,0,0,0,0,0,None", "image_number", "70000"),
    ],
)
def test_each_domain_names_line_column_and_value(row: str, column: str, value: str) -> None:
    parsed = parse_labels(csv("1,0-2,0.9,male,0.9,0,0,0,0,0,None", row), name="labels.csv")
    [error] = parsed.errors
    assert error.startswith(f"labels.csv: line 3, column {column}: {value!r}")
    assert parsed.table.column("image_number").to_pylist() == [1]


def test_duplicates_and_missing_rows() -> None:
    parsed = parse_labels(
        csv(
            "5,0-2,0.9,male,0.9,0,0,0,0,0,None",
            "5,0-2,0.9,male,0.9,0,0,0,0,0,None",
            "6,0-2,0.9,male,0.9,0,0,0,0,0,None",
        ),
        numbers=range(5, 8),
    )
    assert parsed.errors == ["labels: line 3, column image_number: '5' repeats line 2"]
    assert parsed.table.column("image_number").to_pylist() == [5, 6]  # 7 is missing


def test_rows_outside_the_chunk_are_skipped_but_checked_for_duplicates() -> None:
    parsed = parse_labels(
        csv(
            "1000,0-2,0.9,male,0.9,0,0,0,0,0,None",
            "5,bad,0.9,male,0.9,0,0,0,0,0,None",
        ),
        numbers=range(1000, 1001),
    )
    assert parsed.errors == [] and parsed.table.num_rows == 1


def test_wrong_header_is_refused() -> None:
    with pytest.raises(LabelsError, match="line 1"):
        parse_labels("image,age\n0,0-2\n")


@pytest.mark.parametrize(
    ("row", "kept"),
    [
        ("0,0-2,0.61,male,0.67,0,0,0,0,0,None", True),
        ("0,0-2,0.60,male,0.67,0,0,0,0,0,None", False),  # confidence must exceed 0.6
        ("0,0-2,0.9,male,0.66,0,0,0,0,0,None", False),  # and 0.66
        ("0,0-2,0.9,male,0.9,-1,-1,-1,-1,-1,-1", True),  # no attributes found: kept
        ("0,0-2,0.9,male,0.9,30,0,0,0,0,None", False),  # |pitch| < 30
        ("0,0-2,0.9,male,0.9,29.9,0,-39.9,0,0,None", True),
        ("0,0-2,0.9,male,0.9,0,0,40,0,0,None", False),  # |yaw| < 40
        ("0,0-2,0.9,male,0.9,0,0,0,89,49,None", True),  # left < 90 and right < 50
        ("0,0-2,0.9,male,0.9,0,0,0,49,89,Normal", True),  # or left < 50 and right < 90
        ("0,0-2,0.9,male,0.9,0,0,0,60,60,None", False),
        ("0,0-2,0.9,male,0.9,0,0,0,0,0,Dark", False),
    ],
)
def test_published_filter(row: str, kept: bool) -> None:
    table = parse_labels(csv(row)).table
    assert published_filter(table).tolist() == [kept]


def test_published_split() -> None:
    assert published_split([0, 68999, 69000, 69999]).tolist() == ["train", "train", "test", "test"]

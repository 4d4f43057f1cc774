from pathlib import Path

import pytest

from ffhq_aging_assets.lib.labels_csv import (
    LabelsError,
    check_labels_file,
    parse_labels,
    stray_rows,
)
from ffhq_aging_assets_tests.synthetic import write_labels_csv

HEADER = (
    "image_number,age_group,age_group_confidence,gender,gender_confidence,head_pitch,head_roll,"
    "head_yaw,left_eye_occluded,right_eye_occluded,glasses\n"
)


def csv(*rows: str) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


GOOD = "0,0-2,0.9,male,0.9,0,0,0,0,0,None"


def row(number: str, confidence: str = "0.9") -> str:
    return f"{number},0-2,{confidence},male,0.9,0,0,0,0,0,None"


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
        ("0,0-2,0.9,male,0.9,0,0,0,0,0", "*", "0,0-2,0.9,male,0.9,0,0,0,0,0"),
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


def test_rows_outside_the_chunk_are_not_checked() -> None:
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


def test_bom_and_crlf_are_accepted() -> None:
    data = ("\ufeff" + csv(GOOD, row("1"))).replace("\n", "\r\n").encode("utf-8")
    parsed = parse_labels(data, name="labels.csv")
    assert parsed.errors == []
    assert parsed.table.column("image_number").to_pylist() == [0, 1]
    assert stray_rows(data) == []


def test_bytes_that_are_not_utf8_fail_only_the_chunk_of_their_row(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    latin1 = "5,0-2,0.9,f\xe9male,0.9,0,0,0,0,0,None".encode("latin-1")
    path.write_bytes(csv(GOOD).encode() + latin1 + b"\n" + row("1000").encode() + b"\n")
    [error] = parse_labels(path, range(0, 1000), "labels.csv").errors
    assert error == "labels.csv: line 3, column gender: b'f\\xe9male' is not UTF-8 text"
    other = parse_labels(path, range(1000, 2000), "labels.csv")
    assert other.errors == [] and other.table.column("image_number").to_pylist() == [1000]
    assert stray_rows(path) == []


@pytest.mark.parametrize("digits", ["\u00b2", "\uff11", "\u0663"])  # ², fullwidth 1, Arabic-Indic 3
def test_non_ascii_digits_are_not_numbers(digits: str) -> None:
    parsed = parse_labels(csv(row("0", confidence=digits)), name="labels.csv")
    [error] = parsed.errors
    assert error.startswith(f"labels.csv: line 2, column age_group_confidence: {digits!r} is not")
    assert "non-ASCII" in error and parsed.table.num_rows == 0
    text = csv(GOOD, row(digits))
    assert parse_labels(text).errors == []
    [stray] = stray_rows(text, "labels.csv")
    assert stray.startswith(f"labels.csv: line 3, column image_number: {digits!r} is not an image")


@pytest.mark.parametrize("number", ["70000", "abc", "-1", "1.0", ""])
def test_rows_of_no_image_are_stray_not_errors_of_any_chunk(number: str) -> None:
    text = csv(GOOD, row(number), row("1000"))
    for numbers in (None, range(0, 1000), range(1000, 2000), range(69000, 70000)):
        assert parse_labels(text, numbers, "labels.csv").errors == []
    assert stray_rows(text, "labels.csv") == [
        f"labels.csv: line 3, column image_number: {number!r} is not an image number 0..69999 "
        "in ASCII digits; no image's row"
    ]


def test_undecodable_image_number_is_stray() -> None:
    data = csv(GOOD).encode() + b"\xe9" + row("").encode() + b"\n"
    assert parse_labels(data).errors == []
    assert stray_rows(data, "labels.csv") == [
        "labels.csv: line 3, column image_number: b'\\xe9' is not UTF-8 text"
    ]


def test_a_row_is_checked_only_by_its_own_chunk() -> None:
    text = csv(GOOD, "1500,0-2,0.9,male", row("7"), row("7"))
    assert parse_labels(text, range(0, 1000), "labels.csv").errors == [
        "labels.csv: line 5, column image_number: '7' repeats line 4"
    ]
    [error] = parse_labels(text, range(1000, 2000), "labels.csv").errors
    assert error.startswith("labels.csv: line 3, column *: '1500,0-2,0.9,male' has 4 fields")
    assert parse_labels(text, range(2000, 3000)).errors == []


def test_check_labels_file_counts_rows_and_strays(tmp_path: Path) -> None:
    path = tmp_path / "ffhq_aging_labels.csv"
    path.write_text(csv(GOOD, row("70000"), row("1")))
    summary = check_labels_file(path)
    assert summary.rows == 3
    [stray] = summary.stray
    assert stray.startswith("ffhq_aging_labels.csv: line 3, column image_number: '70000'")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"<!-- comment -->\n<html><body>Not Found</body></html>\n",
            "labels.csv: is not the FFHQ-Aging labels CSV: line 1 is '<!-- comment -->' "
            "(an HTML page?)",
        ),
        (b"", "labels.csv: is empty"),
        (b"\n \r\n", "labels.csv: is empty"),
        (b"\x1f\x8b\x08\x00\xff\xfe", "labels.csv: is not text: line 1 starts b'\\x1f\\x8b"),
        (b"number,age\n0,0-2\n", "labels.csv: is not the FFHQ-Aging labels CSV: line 1 is 'number"),
        (HEADER.encode(), "labels.csv: has the header but no rows"),
    ],
)
def test_check_labels_file_refuses_what_is_not_the_labels_csv(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(LabelsError) as raised:
        check_labels_file(path)
    assert str(raised.value).startswith(message)


def test_check_labels_file_reads_the_full_file(tmp_path: Path) -> None:
    path = tmp_path / "ffhq_aging_labels.csv"
    write_labels_csv(path, 70_000, seed=3)
    summary = check_labels_file(path)
    assert summary.rows == 70_000 and summary.stray == []

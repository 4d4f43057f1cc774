import pytest

from ffhq_aging_assets.lib.labels import COLUMNS, published_filter, published_split
from ffhq_aging_assets.lib.labels_csv import parse_labels


def csv(*rows: str) -> str:
    return "".join(line + "\n" for line in (",".join(COLUMNS), *rows))


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

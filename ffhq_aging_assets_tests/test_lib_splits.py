import os
from pathlib import Path

import pyarrow as pa
import pytest

from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.splits import INPUT_COLUMNS, write_splits

# Image 69001 is in the test split; 2 is not kept by the published filter.
ROWS = [
    (0, "20-29", "male", True, "train"),
    (1, "20-29", "male", True, "train"),
    (2, "3-6", "female", False, "train"),
    (3, "3-6", "female", True, "train"),
    (69001, "20-29", "male", True, "test"),
]


def labels() -> pa.Table:
    columns = list(zip(*ROWS, strict=True))
    return pa.table(dict(zip(INPUT_COLUMNS, columns, strict=True)))


def dataset(tmp_path: Path, numbers=(0, 1, 2, 3, 69001)) -> DatasetLayout:
    layout = DatasetLayout(tmp_path, 64)
    for n in numbers:
        for path in (layout.image(n), layout.mask(n)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"image {n} {path.parent.name}".encode())
    return layout


def test_lists_and_table(tmp_path: Path) -> None:
    layout = dataset(tmp_path)
    report = write_splits(labels(), layout)
    assert report.groups == {
        "males/train20-29": [0, 1],
        "females/train3-6": [3],
        "males/test20-29": [69001],
    }
    assert (report.images, report.kept, report.train_kept, report.test_kept) == (5, 4, 3, 1)
    assert layout.split_list("males/train20-29").read_text() == "00000.png\n00001.png\n"
    assert layout.split_list("males/test20-29").read_text() == "69001.png\n"
    table = layout.splits_table.read_text().splitlines()
    assert table[0] == "image_number,split,gender,age_group,kept"
    assert table[3] == "2,train,female,3-6,0"
    assert (report.links, report.copies, report.absent) == (0, 0, 0)
    assert not layout.split_folders.exists()


def test_stale_lists_go_and_links_only_with_folders(tmp_path: Path) -> None:
    layout = dataset(tmp_path)
    stale_list = layout.split_list("males/train200-300")
    stale_link = layout.split_file("males/train200-300", 2000)
    for path in (stale_list, stale_link):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("02000.png\n")
    report = write_splits(labels(), layout)
    assert report.stale_removed == 1
    assert not stale_list.exists() and stale_link.exists()
    report = write_splits(labels(), layout, folders=True)
    assert report.stale_removed == 1
    assert not stale_link.exists()


def test_folders_are_hard_links(tmp_path: Path) -> None:
    layout = dataset(tmp_path)
    report = write_splits(labels(), layout, folders=True)
    assert (report.links, report.copies, report.absent) == (8, 0, 0)
    image = layout.split_file("males/train20-29", 1)
    mask = layout.split_file("males/train20-29", 1, mask=True)
    assert mask == image.parent / "parsings" / "00001.png"
    assert os.path.samefile(image, layout.image(1)) and os.path.samefile(mask, layout.mask(1))
    assert not layout.split_file("females/train3-6", 2).exists()  # not kept


def test_folders_are_copies_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = dataset(tmp_path)

    def no_links(src: Path, dest: Path) -> None:
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    report = write_splits(labels(), layout, folders=True)
    assert (report.links, report.copies, report.absent) == (0, 8, 0)
    copy = layout.split_file("males/test20-29", 69001)
    assert copy.read_bytes() == layout.image(69001).read_bytes()
    assert not os.path.samefile(copy, layout.image(69001))


def test_absent_files_are_counted_and_left_out(tmp_path: Path) -> None:
    layout = dataset(tmp_path, numbers=(0, 3, 69001))
    layout.mask(3).unlink()
    report = write_splits(labels(), layout, folders=True)
    assert (report.links, report.absent) == (5, 3)
    assert not layout.split_file("males/train20-29", 1).exists()
    assert not layout.split_file("females/train3-6", 3, mask=True).exists()
    assert layout.split_file("females/train3-6", 3).exists()
    assert layout.split_list("males/train20-29").read_text() == "00000.png\n00001.png\n"

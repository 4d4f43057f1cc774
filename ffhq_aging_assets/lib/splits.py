"""Training splits: the published filter and train/test rule, written as lists and folders.

From the combined labels table: ``splits.csv`` (every image: split, gender, age group, kept),
one list per split, gender and age group of the kept images (``males/train20-29.txt``), and
optionally the folder layout the FFHQ-Aging training code reads
(``layout/males/train20-29/NNNNN.png`` with ``parsings/``), hard-linked to the dataset where
the file system allows and copied elsewhere.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ffhq_aging_assets.lib.chunks import image_name
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.layout import DatasetLayout

# The columns of the combined labels the splits are made from.
INPUT_COLUMNS = ("image_number", "age_group", "gender", "kept", "split")


@dataclass(frozen=True)
class SplitsReport:
    """What :func:`write_splits` wrote and removed.

    ``groups`` maps each list's name (``males/train20-29``) to its kept image numbers;
    ``links``, ``copies`` and ``absent`` count the files of the folder layout (all zero when it
    is not built): hard-linked, copied, and missing from the dataset so left out.
    """

    images: int
    groups: dict[str, list[int]]
    stale_removed: int
    links: int
    copies: int
    absent: int

    @property
    def kept(self) -> int:
        """Images the published filter keeps, over all lists."""
        return sum(len(v) for v in self.groups.values())

    @property
    def train_kept(self) -> int:
        """Kept images of the training split."""
        return sum(len(v) for k, v in self.groups.items() if "/train" in k)

    @property
    def test_kept(self) -> int:
        """Kept images of the test split."""
        return sum(len(v) for k, v in self.groups.items() if "/test" in k)


def group_name(gender: str, split: str, age_group: str) -> str:
    """The list a kept image goes in, as the training code names it: ``males/train20-29``."""
    return f"{gender}s/{split}{age_group}"


def write_splits(table: pa.Table, layout: DatasetLayout, *, folders: bool = False) -> SplitsReport:
    """Write the splits of ``table`` under ``layout.splits_dir``; remove what this build does not.

    A list or link left from an earlier build (a chunk now left out by its gates, a group now
    empty) would still reach training, so every list, and with ``folders`` every file of the
    layout, that this build does not write is removed. Images or masks missing from the dataset
    are counted and left out of the layout.

    Args:
        table: The combined labels, with at least the columns in :data:`INPUT_COLUMNS`.
        layout: Where the dataset and its splits lie.
        folders: Also build the folder layout.
    """
    rows = table.select(list(INPUT_COLUMNS)).to_pylist()
    groups = _write_lists(rows, layout)
    stale = _stale_files(layout, groups, folders)
    for path in stale:
        path.unlink()
    links, copies, absent = _link_folders(layout, groups) if folders else (0, 0, 0)
    return SplitsReport(
        images=len(rows),
        groups=groups,
        stale_removed=len(stale),
        links=links,
        copies=copies,
        absent=absent,
    )


def _write_lists(rows: Iterable[Mapping[str, Any]], layout: DatasetLayout) -> dict[str, list[int]]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image_number", "split", "gender", "age_group", "kept"])
    groups: dict[str, list[int]] = {}
    for r in rows:
        writer.writerow(
            [r["image_number"], r["split"], r["gender"], r["age_group"], int(r["kept"])]
        )
        if r["kept"]:
            name = group_name(r["gender"], r["split"], r["age_group"])
            groups.setdefault(name, []).append(r["image_number"])
    with atomic_path(layout.splits_table) as tmp:
        tmp.write_text(buf.getvalue())
    for name, numbers in groups.items():
        with atomic_path(layout.split_list(name)) as tmp:
            tmp.write_text("".join(f"{image_name(n)}\n" for n in numbers))
    return groups


def _stale_files(layout: DatasetLayout, groups: dict[str, list[int]], folders: bool) -> list[Path]:
    wanted = {layout.split_list(name) for name in groups}
    if folders:
        wanted |= {
            layout.split_file(name, n, mask)
            for name, numbers in groups.items()
            for n in numbers
            for mask in (False, True)
        }
    stale = [p for p in layout.splits_dir.glob("*/*.txt") if p not in wanted]
    if folders:
        stale += [p for p in layout.split_folders.rglob("*.png") if p not in wanted]
    return stale


def _link_folders(layout: DatasetLayout, groups: dict[str, list[int]]) -> tuple[int, int, int]:
    linked = copied = absent = 0
    for name, numbers in groups.items():
        for n in numbers:
            for mask, src in ((False, layout.image(n)), (True, layout.mask(n))):
                dest = layout.split_file(name, n, mask)
                if not src.is_file():
                    absent += 1
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    dest.unlink()
                try:
                    os.link(src, dest)
                    linked += 1
                except OSError:
                    # Another file system, or one without hard links: a copy serves as well.
                    shutil.copyfile(src, dest)
                    copied += 1
    return linked, copied, absent

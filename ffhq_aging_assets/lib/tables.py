"""Parquet tables: atomic writes and small text previews."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ffhq_aging_assets.lib.files import atomic_path, remove_orphan_temp_files


def write_table(table: pa.Table, dest: Path) -> int:
    """Write ``table`` to ``dest`` through a temporary file; returns the file's size.

    What a killed writer of the same file left is removed first.
    """
    remove_orphan_temp_files(dest.parent, dest.name)
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return dest.stat().st_size


def markdown_preview(table: pa.Table, columns: list[str], rows: int = 5) -> str:
    """The first ``rows`` rows of some columns as a Markdown table."""
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head:
        cells = (str(row[c]).replace("|", "\\|")[:60] for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""The parsed metadata on disk, and the readers every stage uses to get its chunk's rows.

One pass over the verified JSON per md5 writes each chunk's table under
``metadata/chunks-{md5}/`` with a record of what it found. ``image_metadata`` copies its
chunk's whole table to ``tables/image_metadata/``, and every later stage reads that table and
keeps the rows its limit needs: changing the limit never asks for a table to be rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.files import atomic_path, file_lock
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.metadata import MetadataError, convert
from ffhq_aging_assets.lib.tables import write_table


class MissingInputError(ValueError):
    """What a stage reads has not been materialized; the message says what to materialize."""


class ParsedRecord(TypedDict):
    """What the one pass over a metadata JSON found, kept beside its chunk tables."""

    md5: str
    entries: int
    rows: dict[str, int]
    errors: dict[str, str]
    tables: str


def parsed_metadata(
    layout: DatasetLayout, path: Path, md5: str, say: Callable[[str], object] | None = None
) -> ParsedRecord:
    """The record of the pass over the JSON at ``path`` (with this md5), making the pass if needed.

    The pass runs only when no record for this md5 exists or its tables are gone, and under a
    lock, so concurrent steps wait for one pass instead of each making their own. ``say`` is
    told when it starts (it takes seconds).

    Raises:
        MetadataError: when the file is not a usable metadata file (see :func:`convert`).
    """
    with file_lock(layout.parsed_record.with_name(f".{layout.parsed_record.name}.lock")):
        parsed = _stored_record(layout, md5)
        if parsed is None:
            if say is not None:
                say(f"parsing {path.name} in one streaming pass")
            parsed = _convert(layout, path, md5)
    return parsed


def _convert(layout: DatasetLayout, path: Path, md5: str) -> ParsedRecord:
    """One pass over the JSON: every chunk's table, then the record of them."""
    tables = layout.metadata_chunks_dir(md5)
    # Made even when no chunk is valid: the folder is what says this pass's tables exist.
    tables.mkdir(parents=True, exist_ok=True)
    result = convert(path, lambda chunk, table: write_table(table, tables / f"{chunk}.parquet"))
    parsed = ParsedRecord(
        md5=md5, entries=result.entries, rows=result.rows, errors=result.errors, tables=tables.name
    )
    with atomic_path(layout.parsed_record) as tmp:
        tmp.write_text(json.dumps(parsed, indent=1))
    return parsed


def _stored_record(layout: DatasetLayout, md5: str | None = None) -> ParsedRecord | None:
    """The last complete pass's record (for this md5, if given) when its tables still exist."""
    try:
        parsed = json.loads(layout.parsed_record.read_text())
        tables = layout.metadata_chunks_dir(str(parsed["md5"]))
        whole = isinstance(parsed["rows"], dict) and isinstance(parsed["errors"], dict)
        if not whole or md5 not in (None, parsed["md5"]) or not tables.is_dir():
            return None
        return ParsedRecord(
            md5=parsed["md5"],
            entries=int(parsed["entries"]),
            rows=parsed["rows"],
            errors=parsed["errors"],
            tables=tables.name,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def chunk_table(layout: DatasetLayout, chunk: str, limit: int | None) -> pa.Table:
    """Every row the verified JSON has for the chunk, as its one pass wrote them.

    Args:
        layout: the dataset's paths.
        chunk: the chunk key.
        limit: images per chunk the run needs (None or 0: all 1,000); the JSON must hold them.

    Raises:
        MissingInputError: when ``ffhq_metadata_json`` has not been materialized under this root.
        MetadataError: when the file has no entries for this chunk, a bad one, or fewer than
            ``limit`` needs.
    """
    parsed = _stored_record(layout)
    if parsed is None:
        raise MissingInputError(
            f"no parsed metadata at {layout.parsed_record}: materialize ffhq_metadata_json first"
        )
    name = layout.metadata_json.name
    if chunk in parsed["errors"]:
        raise MetadataError(parsed["errors"][chunk])
    if chunk not in parsed["rows"]:
        raise MetadataError(f"{name} has {parsed['entries']} entries: none for chunk {chunk}")
    path = layout.metadata_chunks_dir(parsed["md5"]) / f"{chunk}.parquet"
    try:
        table = pq.read_table(path)
    except OSError as exc:
        raise MissingInputError(
            f"cannot read {path} ({exc}): materialize ffhq_metadata_json again"
        ) from exc
    numbers = expected_numbers(chunk, limit)
    if table.num_rows < len(numbers):
        raise MetadataError(
            f"{name} ends after entry {numbers[0] + table.num_rows - 1}: "
            f"chunk {chunk} needs entries {numbers[0]}..{numbers[-1]}"
        )
    return table


def stored_chunk_metadata(layout: DatasetLayout, chunk: str) -> pa.Table:
    """The chunk's whole ``image_metadata`` table: every row the JSON has for the chunk.

    Raises:
        MissingInputError: when the table has not been materialized under this root.
    """
    path = layout.image_metadata_table(chunk)
    if not path.is_file():
        raise MissingInputError(
            f"no image_metadata table at {path}: materialize image_metadata first"
        )
    return pq.read_table(path)


def limit_rows(table: pa.Table, chunk: str, limit: int | None, source: Path | str) -> pa.Table:
    """The first rows of a chunk's metadata table: the images ``limit`` needs, in order.

    Args:
        table: the chunk's stored metadata (``source`` names it in errors).
        chunk: the chunk key.
        limit: images per chunk (None or 0: all 1,000).
        source: where the table was read from.

    Raises:
        MissingInputError: naming the images the table lacks, when it was written for a
            smaller limit (before tables held the whole chunk) or by another JSON.
    """
    wanted = expected_numbers(chunk, limit)
    held = table.column("image_number").slice(0, len(wanted)).to_pylist()
    lacking = [n for i, n in enumerate(wanted) if i >= len(held) or held[i] != n]
    if lacking:
        need = f"limit {limit}" if limit else "the whole chunk"
        span = f"{lacking[0]:05d}" + (
            f"..{lacking[-1]:05d} ({len(lacking)} images)" if len(lacking) > 1 else ""
        )
        raise MissingInputError(
            f"{source} holds {table.num_rows} rows, without images {span} that {need} needs: "
            f"materialize image_metadata for chunk {chunk} again"
        )
    return table.slice(0, len(wanted))


def chunk_metadata(layout: DatasetLayout, chunk: str, limit: int | None) -> pa.Table:
    """The chunk's ``image_metadata`` rows that ``limit`` needs (None or 0: the whole chunk).

    Raises:
        MissingInputError: when the table has not been materialized, or lacks images the
            limit needs; the message says which and what to materialize.
    """
    table = stored_chunk_metadata(layout, chunk)
    return limit_rows(table, chunk, limit, layout.image_metadata_table(chunk))


def landmarks_of(table: pa.Table) -> np.ndarray:
    """The (N, 68, 2) landmarks of a metadata table."""
    flat = table.column("face_landmarks").combine_chunks().flatten().to_numpy()
    return flat.reshape(table.num_rows, 68, 2)

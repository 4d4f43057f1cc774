"""The metadata stage: the verified FFHQ JSON, and one table of image metadata per chunk."""

import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import IMAGE_METADATA_GATES, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.files import atomic_path, file_lock, remove_orphan_temp_files
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.metadata import (
    COLUMN_DESCRIPTIONS,
    METADATA_SCHEMA,
    MetadataError,
    convert,
)
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations

JSON_NAME = "ffhq-dataset-v2.json"


@dg.asset(group_name="inputs", kinds={"json"}, automation_condition=NIGHTLY_MISSING)
def ffhq_metadata_json(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    metadata_locations: MetadataLocations,
    file_source: FileSourceResource,
) -> dg.MaterializeResult:
    """FFHQ's ``ffhq-dataset-v2.json`` (268 MB) and ``LICENSE.txt``, verified, parsed by chunk.

    Both files are fetched through the configured source (anonymous Drive, Drive with a Google
    account, or a local folder) and checked against the published size and md5; a copy is
    reused only for the same source (URL or path, checksums, a local file's size and time).
    One streaming pass then validates every entry and writes each chunk's rows to a Parquet
    file kept for that md5, so each chunk step reads only its own; an entry that is malformed
    or unsafe fails only its chunk, whose step names it. A file that is not JSON at all (cut
    short, an HTML page) is moved aside with an error saying so, and fetched again next run.
    """
    start = time.perf_counter()
    layout = dataset.layout
    json_path, parsed_path = layout.metadata_json, layout.parsed_record
    remove_orphan_temp_files(layout.metadata_dir)

    def parse(path: Path, md5: str) -> dict:
        with file_lock(parsed_path.with_name(f".{parsed_path.name}.lock")):
            parsed = _stored_conversion(parsed_path, md5, layout.metadata_chunks_dir(md5))
            if parsed is None:
                context.log.info(f"parsing {JSON_NAME} in one streaming pass")
                parsed = _convert(path, md5, layout.metadata_chunks_dir(md5), parsed_path)
        return parsed

    # recheck: the parse keeps its own record per md5, and redoes it if its tables are gone.
    got = fetch_input(
        file_source.source, metadata_locations.metadata, json_path, parse, recheck=True
    )
    license_copy = fetch_input(
        file_source.source, metadata_locations.license, layout.license_source, _no_check
    )
    parsed, size, md5 = got.checked, got.size, got.md5
    context.log.info(
        f"{JSON_NAME}: {size:,} bytes, md5 {md5} ({'fetched' if got.fetched else 'kept'})"
    )
    for chunk, error in sorted(parsed["errors"].items()):
        context.log.warning(f"chunk {chunk} cannot be built: {error}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(json_path)),
            "source": metadata_locations.metadata_url,
            "bytes": size,
            "md5": md5,
            "entries": parsed["entries"],
            "chunks": len(parsed["rows"]),
            "chunks_with_bad_entries": len(parsed["errors"]),
            "fetched": got.fetched or license_copy.fetched,
            "seconds": round(time.perf_counter() - start, 2),
        },
        data_version=dg.DataVersion(md5),
    )


def _no_check(path: Path, md5: str) -> None:
    return None


def _convert(path: Path, md5: str, tables: Path, parsed_path: Path) -> dict:
    """One pass over the JSON: every chunk's table in ``tables``, and the record of it."""

    def write(chunk: str, table: pa.Table) -> None:
        write_table(table, tables / f"{chunk}.parquet")

    result = convert(path, write)
    parsed = {
        "md5": md5,
        "entries": result.entries,
        "rows": result.rows,
        "errors": result.errors,
        "tables": tables.name,
    }
    with atomic_path(parsed_path) as tmp:
        tmp.write_text(json.dumps(parsed, indent=1))
    return parsed


def _stored_conversion(path: Path, md5: str, tables: Path) -> dict | None:
    """What the last complete pass over the JSON with this md5 recorded, if its tables exist."""
    try:
        parsed = json.loads(path.read_text())
        if parsed["md5"] != md5 or not tables.is_dir():
            return None
        return parsed if isinstance(parsed["rows"], dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def chunk_table(dataset: DatasetResource, chunk: str) -> pa.Table:
    """The chunk's rows as the last pass over the verified JSON wrote them.

    Raises:
        dg.Failure: when ``ffhq_metadata_json`` has not been materialized under this root.
        MetadataError: when the file has no entries for this chunk, or a bad one.
    """
    path = dataset.layout.parsed_record
    try:
        parsed = json.loads(path.read_text())
        tables = dataset.layout.metadata_chunks_dir(str(parsed["md5"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise dg.Failure(
            f"no parsed metadata at {path}: materialize ffhq_metadata_json first ({exc})"
        ) from exc
    if chunk in parsed["errors"]:
        raise MetadataError(parsed["errors"][chunk])
    if chunk not in parsed["rows"]:
        raise MetadataError(f"{JSON_NAME} has {parsed['entries']} entries: none for chunk {chunk}")
    return pq.read_table(tables / f"{chunk}.parquet")


_COORDINATES = ("face_landmarks", "face_rect", "face_quad")


@dg.asset(
    group_name="metadata",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=["ffhq_metadata_json"],
    kinds={"parquet"},
    check_specs=gate_specs("image_metadata", IMAGE_METADATA_GATES),
)
def image_metadata(
    context: dg.AssetExecutionContext, dataset: DatasetResource
) -> dg.MaterializeResult:
    """Per-image metadata of one chunk: one Parquet row per image, validated field by field.

    Each row holds the image number, FFHQ category, the in-the-wild photo's URL, size, md5,
    pixel size and pixel md5, the 68 landmarks, face rect and quad, and the Flickr author,
    license, URLs and dates. An unsafe file path, a key that does not match its image number,
    or a malformed field fails the chunk with an error naming the entry.
    """
    chunk = context.partition_key
    start = time.perf_counter()
    numbers = expected_numbers(chunk, dataset.per_chunk_limit)
    table = chunk_table(dataset, chunk)
    if table.num_rows < len(numbers):
        raise MetadataError(
            f"{JSON_NAME} ends after entry {numbers[0] + table.num_rows - 1}: "
            f"chunk {chunk} needs entries {numbers[0]}..{numbers[-1]}"
        )
    table = table.slice(0, len(numbers))
    out = dataset.layout.image_metadata_table(chunk)
    size = write_table(table, out)
    seconds = time.perf_counter() - start
    context.log.info(f"chunk {chunk}: {table.num_rows} rows in {seconds:.2f} s -> {out}")

    written = pq.read_table(out)
    found = written.column("image_number").to_pylist()
    coords = np.concatenate(
        [
            written.column(name).combine_chunks().flatten().to_numpy().reshape(len(found), -1)
            for name in _COORDINATES
        ],
        axis=1,
    )
    checks = gate_results(
        "image_metadata",
        [
            gates.row_count("row_count", written.num_rows, len(numbers)),
            gates.exact_numbers("image_numbers", found, numbers),
            gates.all_finite("landmarks_finite", found, coords, "landmarks, rect and quad"),
        ],
    )
    preview = ["image_number", "category", "pixel_width", "pixel_height", "author", "license"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": written.num_rows,
            "dagster/column_schema": column_schema(METADATA_SCHEMA, COLUMN_DESCRIPTIONS),
            "bytes": size,
            "seconds": round(seconds, 3),
            "preview": dg.MetadataValue.md(markdown_preview(written, preview)),
        },
        check_results=checks,
    )


def chunk_metadata(dataset: DatasetResource, chunk: str) -> pa.Table:
    """The chunk's ``image_metadata`` table, limited to the configured images.

    Raises:
        dg.Failure: when the table has not been materialized under this root.
    """
    path = dataset.layout.image_metadata_table(chunk)
    if not path.is_file():
        raise dg.Failure(f"no image_metadata table at {path}: materialize image_metadata first")
    table = pq.read_table(path)
    wanted = expected_numbers(chunk, dataset.per_chunk_limit)
    numbers = table.column("image_number").to_pylist()
    if numbers[: len(wanted)] != list(wanted):
        raise dg.Failure(
            f"{path} holds {len(numbers)} rows, not images {wanted[0]}..{wanted[-1]} that this "
            "run needs: materialize image_metadata again with the same limit"
        )
    return table.slice(0, len(wanted))


def landmarks_of(table: pa.Table) -> np.ndarray:
    """The (N, 68, 2) landmarks of a metadata table."""
    flat = table.column("face_landmarks").combine_chunks().flatten().to_numpy()
    return flat.reshape(table.num_rows, 68, 2)

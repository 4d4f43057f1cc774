"""The metadata stage: the verified FFHQ JSON, and one table of image metadata per chunk."""

import time
from pathlib import Path

import dagster as dg
import numpy as np

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import IMAGE_METADATA_GATES, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.files import remove_orphan_temp_files
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.metadata import COLUMN_DESCRIPTIONS, METADATA_SCHEMA
from ffhq_aging_assets.lib.metadata_store import (
    MissingInputError,
    ParsedRecord,
    chunk_table,
    parsed_metadata,
    stored_chunk_metadata,
)
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations


@dg.asset(group_name="inputs", kinds={"json"}, automation_condition=NIGHTLY_MISSING)
def ffhq_metadata_json(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    metadata_locations: MetadataLocations,
    file_source: FileSourceResource,
) -> dg.MaterializeResult:
    """FFHQ's `ffhq-dataset-v2.json` (268 MB) and `LICENSE.txt`, verified, parsed by chunk.

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
    json_path = layout.metadata_json
    remove_orphan_temp_files(layout.metadata_dir)

    def parse(path: Path, md5: str) -> ParsedRecord:
        return parsed_metadata(layout, path, md5, context.log.info)

    # recheck: the parse keeps its own record per md5, and redoes it if its tables are gone.
    got = fetch_input(
        file_source.source, metadata_locations.metadata, json_path, parse, recheck=True
    )
    license_copy = fetch_input(
        file_source.source, metadata_locations.license, layout.license_source, _no_check
    )
    parsed, size, md5 = got.checked, got.size, got.md5
    context.log.info(
        f"{json_path.name}: {size:,} bytes, md5 {md5} ({'fetched' if got.fetched else 'kept'})"
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
    or a malformed field fails the chunk with an error naming the entry. The table holds every
    image of the chunk the JSON has; the configured limit applies when later stages read it
    (and to the gates here), so changing the limit does not ask for this table again.
    """
    chunk, layout = context.partition_key, dataset.layout
    start = time.perf_counter()
    numbers = expected_numbers(chunk, dataset.per_chunk_limit)
    try:
        table = chunk_table(layout, chunk, dataset.per_chunk_limit)
    except MissingInputError as exc:
        raise dg.Failure(str(exc)) from exc
    out = layout.image_metadata_table(chunk)
    size = write_table(table, out)
    seconds = time.perf_counter() - start
    context.log.info(f"chunk {chunk}: {table.num_rows} rows in {seconds:.2f} s -> {out}")

    # The gates check the written file, on the rows this run's limit makes later stages read.
    written = stored_chunk_metadata(layout, chunk)
    needed = written.slice(0, len(numbers))
    found = needed.column("image_number").to_pylist()
    coords = np.concatenate(
        [
            needed.column(name).combine_chunks().flatten().to_numpy().reshape(len(found), -1)
            for name in _COORDINATES
        ],
        axis=1,
    )
    checks = gate_results(
        "image_metadata",
        [
            gates.row_count("row_count", needed.num_rows, len(numbers)),
            gates.exact_numbers("image_numbers", found, numbers),
            gates.all_finite("landmarks_finite", found, coords, "landmarks, rect and quad"),
        ],
    )
    preview = ["image_number", "category", "pixel_width", "pixel_height", "author", "license"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": written.num_rows,
            "rows_checked": needed.num_rows,
            "dagster/column_schema": column_schema(METADATA_SCHEMA, COLUMN_DESCRIPTIONS),
            "bytes": size,
            "seconds": round(seconds, 3),
            "preview": dg.MetadataValue.md(markdown_preview(written, preview)),
        },
        check_results=checks,
    )

"""The labels stage: the published labels of each chunk, validated and joined with its data."""

import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import LABEL_GATES, LABEL_WARNINGS, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.labels_csv import check_labels_file, parse_labels
from ffhq_aging_assets.lib.labels_table import DESCRIPTIONS, join_labels, low_confidence_rows
from ffhq_aging_assets.lib.layout import LABELS_CSV
from ffhq_aging_assets.lib.metadata_store import chunk_metadata
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema, shared_input_result
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, LabelsLocation

LOW_CONFIDENCE_WARNING = 0.25


@dg.asset(group_name="inputs", kinds={"csv"}, automation_condition=NIGHTLY_MISSING)
def ffhq_aging_labels_csv(
    dataset: DatasetResource, file_source: FileSourceResource, labels_location: LabelsLocation
) -> dg.MaterializeResult:
    """The FFHQ-Aging labels CSV, fetched once for every chunk and checked as a whole.

    Reused only for the same source (URL or path, md5, a local file's size and time), so
    pointing at another copy fetches it. A file that is not the labels CSV (an HTML page, a
    wrong header, not text) is moved aside with an error saying so, and fetched again next
    run. Rows that belong to no image (numbers outside 0..69999) are listed by a warning
    check of the combined labels.
    """

    def check(path: Path, _md5: str) -> dict[str, int]:
        summary = check_labels_file(path, LABELS_CSV)
        return {"rows": summary.rows, "stray": len(summary.stray)}

    got = fetch_input(file_source.source, labels_location.spec, dataset.layout.labels_csv, check)
    return shared_input_result(
        got,
        labels_location.url,
        rows=got.checked["rows"],
        rows_of_no_image=got.checked["stray"],
    )


@dg.asset(
    group_name="labels",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=["image_metadata", "mask_statistics", "ffhq_aging_labels_csv"],
    kinds={"parquet"},
    check_specs=gate_specs("labels_table", LABEL_GATES)
    + gate_specs("labels_table", LABEL_WARNINGS, blocking=False),
)
def labels_table(
    context: dg.AssetExecutionContext, dataset: DatasetResource
) -> dg.MaterializeResult:
    """The chunk's rows of the FFHQ-Aging labels, validated and joined, one Parquet per chunk.

    Age group, gender, head pose, eye occlusion and glasses with their confidences, checked
    field by field (a bad row is named by line, column and value); joined with the photo's
    FFHQ category, Flickr license, author and URL, and with the pixel fraction of each of the
    19 mask classes; plus whether the published filter keeps the image and its train/test
    split.
    """
    chunk = context.partition_key
    start = time.perf_counter()
    numbers = expected_numbers(chunk, dataset.per_chunk_limit)
    csv_path = dataset.layout.labels_csv
    if not csv_path.is_file():
        raise dg.Failure(f"no labels CSV at {csv_path}: materialize ffhq_aging_labels_csv first")
    parsed = parse_labels(csv_path, numbers, LABELS_CSV)
    stats_path = dataset.layout.mask_stats_table(chunk)
    if not stats_path.is_file():
        raise dg.Failure(
            f"chunk {chunk}: no mask statistics at {stats_path}: materialize segmentation_masks "
            "for this chunk first"
        )
    table = join_labels(
        parsed.table,
        chunk_metadata(dataset.layout, chunk, dataset.per_chunk_limit),
        pq.read_table(stats_path),
    )
    out = dataset.layout.labels_table(chunk)
    size = write_table(table, out)
    found = table.column("image_number").to_pylist()
    low = low_confidence_rows(table)
    ages = {
        f"age_{a}": int(c)
        for a, c in zip(
            *np.unique(
                table.column("age_group").to_numpy(zero_copy_only=False), return_counts=True
            ),
            strict=True,
        )
    }
    checks = gate_results(
        "labels_table",
        [
            gates.exact_numbers("label_numbers", found, numbers),
            gates.messages("label_domains", parsed.errors, "label"),
            gates.low_share(
                "label_confidence",
                low,
                len(found),
                LOW_CONFIDENCE_WARNING,
                "below the confidence thresholds",
            ),
        ],
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": table.num_rows,
            "dagster/column_schema": column_schema(table.schema, DESCRIPTIONS),
            "bytes": size,
            "seconds": round(time.perf_counter() - start, 3),
            "kept_by_filter": int(np.sum(table.column("kept").to_numpy(zero_copy_only=False))),
            "male": int(pc.sum(pc.equal(table.column("gender"), "male")).as_py() or 0),
            "female": int(pc.sum(pc.equal(table.column("gender"), "female")).as_py() or 0),
            **ages,
            "preview": dg.MetadataValue.md(
                markdown_preview(
                    table, ["image_number", "age_group", "gender", "glasses", "kept", "split"]
                )
            ),
        },
        check_results=checks,
    )

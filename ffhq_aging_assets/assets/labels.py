"""The labels stage: the published labels of each chunk, validated and joined with its data."""

import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ffhq_aging_assets.assets.metadata import chunk_metadata, image_metadata
from ffhq_aging_assets.assets.segmentation import segmentation_masks
from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.labels import (
    LABEL_DESCRIPTIONS,
    LABELS_SCHEMA,
    check_labels_file,
    parse_labels,
    published_filter,
    published_split,
)
from ffhq_aging_assets.lib.masks import STATS_DESCRIPTIONS, STATS_SCHEMA
from ffhq_aging_assets.lib.metadata import METADATA_SCHEMA
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema, shared_input_result
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, LabelsLocation

LOW_CONFIDENCE_WARNING = 0.25
META_COLUMNS = ("category", "license", "author", "photo_url")
DESCRIPTIONS = {
    **LABEL_DESCRIPTIONS,
    **STATS_DESCRIPTIONS,
    "category": "FFHQ's own split: training or validation",
    "license": "Flickr license of the photo",
    "author": "Flickr author",
    "photo_url": "the photo on Flickr",
    "kept": "kept by the published filter of the FFHQ-Aging training code",
    "split": "train below image 69,000, test from it on",
}
# The one schema of every chunk's labels table: the CSV's fields, the photo's metadata as the
# metadata table types it, the mask fractions (never null: a chunk without its mask statistics
# fails), the filter and the split.
TABLE_SCHEMA = pa.schema(
    [
        *LABELS_SCHEMA,
        *(METADATA_SCHEMA.field(name) for name in META_COLUMNS),
        *(field for field in STATS_SCHEMA if field.name not in ("image_number", "max_class")),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

LABEL_GATES = {
    "label_numbers": "Exactly the chunk's image numbers, once each.",
    "label_domains": "Every field in its domain, with the -1 rule for missing attributes.",
}
LABEL_WARNINGS = {
    "label_confidence": "Share of rows below the published confidence thresholds (informs)."
}


CSV_NAME = "ffhq_aging_labels.csv"


@dg.asset(group_name="labels", kinds={"csv"}, automation_condition=NIGHTLY_MISSING)
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
        summary = check_labels_file(path, CSV_NAME)
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
    deps=[image_metadata, segmentation_masks, ffhq_aging_labels_csv],
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
    parsed = parse_labels(csv_path, numbers, CSV_NAME)
    stats_path = dataset.layout.mask_stats_table(chunk)
    if not stats_path.is_file():
        raise dg.Failure(
            f"chunk {chunk}: no mask statistics at {stats_path}: materialize segmentation_masks "
            "for this chunk first"
        )
    meta = chunk_metadata(dataset, chunk).select(["image_number", *META_COLUMNS])
    stats = pq.read_table(stats_path).drop_columns(["max_class"])
    # Inner joins: a labelled image without metadata or a mask is left out, and the
    # label_numbers gate then names it, so no column is ever filled with nulls by chance.
    table = parsed.table.join(meta, "image_number", join_type="inner")
    table = table.join(stats, "image_number", join_type="inner").sort_by("image_number")
    kept = published_filter(table)
    table = table.append_column("kept", pa.array(kept)).append_column(
        "split", pa.array(published_split(table.column("image_number").to_numpy()))
    )
    table = table.select(TABLE_SCHEMA.names).cast(TABLE_SCHEMA)
    out = dataset.layout.labels_table(chunk)
    size = write_table(table, out)
    found = table.column("image_number").to_pylist()
    low = (
        pc.sum(
            pc.or_(
                pc.less_equal(table.column("age_group_confidence"), 0.6),
                pc.less_equal(table.column("gender_confidence"), 0.66),
            )
        ).as_py()
        or 0
    )
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
            "kept_by_filter": int(np.sum(kept)),
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

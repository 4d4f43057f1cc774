"""The labels stage: the published labels of each chunk, validated and joined with its data."""

import time

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
from ffhq_aging_assets.lib.labels import (
    LABEL_DESCRIPTIONS,
    parse_labels,
    published_filter,
    published_split,
)
from ffhq_aging_assets.lib.masks import STATS_DESCRIPTIONS
from ffhq_aging_assets.lib.sources import fetch_shared
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema
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
LABEL_GATES = {
    "label_numbers": "Exactly the chunk's image numbers, once each.",
    "label_domains": "Every field in its domain, with the -1 rule for missing attributes.",
}
LABEL_WARNINGS = {
    "label_confidence": "Share of rows below the published confidence thresholds (informs)."
}


def labels_csv(dataset: DatasetResource, file_source: FileSourceResource, location: LabelsLocation):
    """The labels CSV in the root, fetched once."""
    dest = dataset.metadata_dir / "ffhq_aging_labels.csv"
    fetch_shared(file_source.source, location.spec, dest)
    return dest


@dg.asset(
    group_name="labels",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=[image_metadata, segmentation_masks],
    kinds={"parquet"},
    check_specs=gate_specs("labels_table", LABEL_GATES)
    + gate_specs("labels_table", LABEL_WARNINGS, blocking=False),
)
def labels_table(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    file_source: FileSourceResource,
    labels_location: LabelsLocation,
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
    parsed = parse_labels(
        labels_csv(dataset, file_source, labels_location), numbers, "ffhq_aging_labels.csv"
    )
    table = parsed.table
    meta = chunk_metadata(dataset, chunk).select(["image_number", *META_COLUMNS])
    table = table.join(meta, "image_number", join_type="left outer")
    stats_path = dataset.table_path(f"mask_stats_{dataset.resolution}", chunk)
    if stats_path.is_file():
        stats = pq.read_table(stats_path).drop_columns(["max_class"])
        table = table.join(stats, "image_number", join_type="left outer")
    table = table.sort_by("image_number")
    kept = published_filter(table)
    table = table.append_column("kept", pa.array(kept)).append_column(
        "split", pa.array(published_split(table.column("image_number").to_numpy()))
    )
    out = dataset.table_path(f"labels_{dataset.resolution}", chunk)
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

"""The alignment stage: each image's crop geometry, from its landmarks and photo size."""

import time

import dagster as dg
import numpy as np

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import ALIGNMENT_GATES, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.geometry_table import (
    GEOMETRY_DESCRIPTIONS,
    GEOMETRY_SCHEMA,
    geometry_table,
)
from ffhq_aging_assets.lib.metadata_store import landmarks_of, limit_rows, stored_chunk_metadata
from ffhq_aging_assets.lib.tables import markdown_preview, write_table
from ffhq_aging_assets.metadata_values import column_schema
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource


@dg.asset(
    group_name="alignment",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=["image_metadata"],
    kinds={"parquet"},
    check_specs=gate_specs("alignments", ALIGNMENT_GATES),
)
def alignments(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.MaterializeResult:
    """The published FFHQ-Aging crop geometry of every image in the chunk, before any pixels.

    From each image's 68 landmarks and photo size: the oriented crop square (quad) and its
    size, the whole-frame shrink factor, the crop box, the reflect-pad, and whether the
    blur-pad path runs (a face near the photo's edge). It depends on the output resolution. A
    degenerate face (coincident eyes, NaN landmarks, a quad outside the photo) gets a row with
    its error, and the blocking check names it. Like `image_metadata` the table holds every
    image of the chunk and the blocking check covers the images the configured limit needs,
    so changing the limit does not ask for this table again.
    """
    chunk, layout = context.partition_key, dataset.layout
    start = time.perf_counter()
    meta = stored_chunk_metadata(layout, chunk)
    needed = limit_rows(meta, chunk, dataset.per_chunk_limit, layout.image_metadata_table(chunk))
    numbers = meta.column("image_number").to_pylist()
    sizes = np.stack(
        [meta.column("pixel_width").to_numpy(), meta.column("pixel_height").to_numpy()], axis=1
    )
    table = geometry_table(numbers, landmarks_of(meta), sizes, dataset.resolution)
    out = layout.alignments_table(chunk)
    size = write_table(table, out)
    checked = table.slice(0, needed.num_rows)
    gate = gates.geometry_valid(
        "geometry_valid",
        checked.column("image_number").to_pylist(),
        checked.column("qsize").to_numpy(),
        checked.column("quad").combine_chunks().flatten().to_numpy(zero_copy_only=False),
    )
    qsize = table.column("qsize").to_numpy()
    blur = int(np.sum(table.column("blur_pad").to_numpy(zero_copy_only=False)))
    shrunk = int(np.sum(table.column("shrink").to_numpy() > 1))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": table.num_rows,
            "rows_checked": checked.num_rows,
            "dagster/column_schema": column_schema(GEOMETRY_SCHEMA, GEOMETRY_DESCRIPTIONS),
            "bytes": size,
            "seconds": round(time.perf_counter() - start, 3),
            "blur_pad_images": blur,
            "shrunk_images": shrunk,
            "median_qsize": float(np.nanmedian(qsize)) if len(qsize) else 0.0,
            "preview": dg.MetadataValue.md(
                markdown_preview(table, ["image_number", "qsize", "shrink", "blur_pad", "error"])
            ),
        },
        check_results=gate_results("alignments", [gate]),
    )

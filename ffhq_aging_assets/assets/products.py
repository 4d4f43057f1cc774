"""Dataset-wide products: the combined labels, the age histogram, training splits, a manifest.

Each reads whatever chunks are built and says which are missing, so they can be made (and are
worth looking at) long before all 70 chunks are done.
"""

import base64
import io
import time

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ffhq_aging_assets.checks import gate_results
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.charts import age_gender_histogram
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.labels import AGE_GROUPS
from ffhq_aging_assets.lib.labels_csv import stray_rows
from ffhq_aging_assets.lib.labels_table import DESCRIPTIONS
from ffhq_aging_assets.lib.layout import LABELS_CSV
from ffhq_aging_assets.lib.manifest import build_manifest, write_manifest
from ffhq_aging_assets.lib.splits import INPUT_COLUMNS, write_splits
from ffhq_aging_assets.lib.tables import write_table
from ffhq_aging_assets.metadata_values import column_schema
from ffhq_aging_assets.resources import DatasetResource
from ffhq_aging_assets.verdicts import built_chunks, excluded_text, gate_verdicts, missing_text


@dg.asset(
    group_name="products",
    deps=["labels_table", "ffhq_aging_labels_csv"],
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "labels_of_no_image",
            asset="ffhq_aging_labels",
            description="Rows of the labels CSV whose image number is no FFHQ image (informs).",
        )
    ],
)
def ffhq_aging_labels(
    context: dg.AssetExecutionContext, dataset: DatasetResource
) -> dg.MaterializeResult:
    """Every built chunk's labels in one typed Parquet table, in image order.

    Only chunks whose latest blocking checks all passed go in; the others are listed in the
    metadata with the check that keeps them out (`chunks_excluded`), as are chunks not built
    yet. The labels CSV's rows that belong to no image are reported once, as a warning.
    """
    built = built_chunks(dataset.layout)
    excluded = gate_verdicts(context.instance, built)
    present = [c for c in built if c not in excluded]
    missing = [c for c in CHUNK_KEYS if c not in built]
    for chunk, why in sorted(excluded.items()):
        context.log.warning(f"chunk {chunk} left out of the products: {why}")
    if not present:
        raise dg.Failure(
            "no chunk is built and passed its gates yet: materialize some chunks first"
            + (f" (left out: {excluded_text(excluded)})" if excluded else "")
        )
    table = pa.concat_tables(
        [pq.read_table(dataset.layout.labels_table(chunk)) for chunk in present]
    )
    table = table.sort_by("image_number")
    out = dataset.layout.combined_labels
    write_table(table, out)
    context.log.info(f"{table.num_rows} rows from {len(present)} chunks; missing {len(missing)}")
    stray = stray_rows(dataset.layout.labels_csv, LABELS_CSV)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": table.num_rows,
            "dagster/column_schema": column_schema(table.schema, DESCRIPTIONS),
            "chunks_built": len(present),
            "chunks_missing": missing_text(missing),
            "chunks_excluded": dg.MetadataValue.md(excluded_text(excluded)),
            "excluded_count": len(excluded),
            "kept_by_filter": int(np.sum(table.column("kept").to_numpy(zero_copy_only=False))),
        },
        check_results=gate_results(
            "ffhq_aging_labels",
            [gates.messages("labels_of_no_image", stray, "row", blocking=False)],
        ),
    )


@dg.asset(group_name="products", deps=["ffhq_aging_labels"], kinds={"png"})
def age_distribution(dataset: DatasetResource) -> dg.MaterializeResult:
    """A histogram of age group by gender over the built chunks, as FFHQ-Aging publishes one.

    A PNG (shown here), with the counts as numbers.
    """
    table = pq.read_table(dataset.layout.combined_labels, columns=["age_group", "gender"])
    counts: dict[str, dict[str, int]] = {"male": {}, "female": {}}
    for age, gender in zip(
        table.column("age_group").to_pylist(), table.column("gender").to_pylist(), strict=True
    ):
        counts[gender][age] = counts[gender].get(age, 0) + 1
    image = age_gender_histogram(counts, AGE_GROUPS, f"FFHQ-Aging: {table.num_rows:,} images")
    out = dataset.layout.age_report
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    numbers = {f"{g}_{a}": counts[g].get(a, 0) for g in counts for a in AGE_GROUPS}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "histogram": dg.MetadataValue.md(f"![age by gender](data:image/png;base64,{encoded})"),
            "images": table.num_rows,
            **numbers,
        }
    )


class SplitsConfig(dg.Config):
    """Options of `training_splits`."""

    layout: bool = Field(
        default=False,
        description="Also build the folder layout the training code reads (males/train0-2/...), "
        "with hard links where the file system allows, copies elsewhere.",
    )


@dg.asset(group_name="products", deps=["ffhq_aging_labels", "segmentation_masks"], kinds={"csv"})
def training_splits(
    context: dg.AssetExecutionContext, config: SplitsConfig, dataset: DatasetResource
) -> dg.MaterializeResult:
    """The published filter and train/test rule applied to the built chunks.

    `splits_{R}/splits.csv` (every image: split, gender, age group, kept) and one list per
    split, gender and age group of the kept images (`males/train20-29.txt`); optionally the
    folder layout the FFHQ-Aging training code expects (`males/train20-29/NNNNN.png` with
    `parsings/`), hard-linked to the dataset.
    """
    table = pq.read_table(dataset.layout.combined_labels, columns=list(INPUT_COLUMNS))
    report = write_splits(table, dataset.layout, folders=config.layout)
    if config.layout:
        context.log.info(
            f"layout: {report.links} hard links, {report.copies} copies, "
            f"{report.absent} files absent"
        )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(dataset.layout.splits_dir)),
            "images": report.images,
            "kept": report.kept,
            "train_kept": report.train_kept,
            "test_kept": report.test_kept,
            "lists": len(report.groups),
            "layout_links": report.links,
            "layout_copies": report.copies,
            "layout_absent": report.absent,
            "stale_removed": report.stale_removed,
        }
    )


@dg.asset(group_name="products", deps=["ffhq_aging_labels", "training_splits"], kinds={"json"})
def dataset_manifest(
    context: dg.AssetExecutionContext, dataset: DatasetResource
) -> dg.MaterializeResult:
    """Every output file of the dataset (images, masks, tables, splits, reports, LICENSE).

    Each with its size and sha256; chunks left out of the products by their gates are listed
    with the reason instead of their files. `ffhq-aging verify` checks a copy of the
    dataset against it and names every missing, changed and unexpected file.
    """
    start = time.perf_counter()
    excluded = gate_verdicts(context.instance, built_chunks(dataset.layout))
    manifest = build_manifest(dataset.root_path, dataset.resolution, excluded)
    write_manifest(manifest, dataset.layout.manifest)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(dataset.layout.manifest)),
            "files": len(manifest["files"]),
            "chunks_excluded": dg.MetadataValue.md(excluded_text(excluded)),
            "bytes": sum(e["size"] for e in manifest["files"].values()),
            "seconds": round(time.perf_counter() - start, 2),
        }
    )

"""Dataset-wide products: the combined labels, the age histogram, training splits, a manifest.

Each reads whatever chunks are built and says which are missing, so they can be made (and are
worth looking at) long before all 70 chunks are done.
"""

import base64
import csv
import io
import os
import shutil
import time

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ffhq_aging_assets.checks import BLOCKING_GATES, gate_results
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.charts import age_gender_histogram
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS, image_name
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.labels import AGE_GROUPS, stray_rows
from ffhq_aging_assets.lib.labels_table import DESCRIPTIONS
from ffhq_aging_assets.lib.layout import LABELS_CSV
from ffhq_aging_assets.lib.manifest import build_manifest, write_manifest
from ffhq_aging_assets.lib.tables import write_table
from ffhq_aging_assets.metadata_values import column_schema
from ffhq_aging_assets.resources import DatasetResource


def _missing_text(missing: list[str]) -> str:
    if not missing:
        return "none"
    if len(missing) == len(CHUNK_KEYS):
        return "all 70"
    return ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")


def gate_verdicts(instance: dg.DagsterInstance, chunks: list[str]) -> dict[str, str]:
    """Why each of ``chunks`` is left out of the products; chunks that may go in are absent.

    A chunk is left out when the latest evaluation of any blocking check of any of its assets
    failed, or when a check never ran for it on this instance (its files came from elsewhere,
    or its run died before the check).
    """
    latest: dict[tuple[str, str, str], bool] = {}
    for chunk in chunks:
        # Newest run first, and within a run the newest evaluation first: the first seen wins.
        for run in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": chunk})):
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
            for record in reversed(records):
                event = record.event_log_entry.dagster_event
                evaluation = event.event_specific_data if event else None
                if not isinstance(evaluation, dg.AssetCheckEvaluation):
                    continue
                asset = evaluation.asset_key.to_user_string()
                key = (asset, evaluation.check_name, chunk)
                if evaluation.check_name in BLOCKING_GATES.get(asset, ()) and key not in latest:
                    latest[key] = evaluation.passed
    reasons = {}
    for chunk in chunks:
        failed = [
            f"{asset}.{name}"
            for asset, names in BLOCKING_GATES.items()
            for name in names
            if latest.get((asset, name, chunk)) is False
        ]
        unchecked = [
            f"{asset}.{name}"
            for asset, names in BLOCKING_GATES.items()
            for name in names
            if (asset, name, chunk) not in latest
        ]
        if failed:
            reasons[chunk] = "failed " + ", ".join(failed)
        elif unchecked:
            shown = ", ".join(unchecked[:3]) + (" ..." if len(unchecked) > 3 else "")
            reasons[chunk] = f"never checked on this instance ({shown})"
    return reasons


def _excluded_text(excluded: dict[str, str]) -> str:
    if not excluded:
        return "none"
    return "\n".join(f"- {chunk}: {why}" for chunk, why in sorted(excluded.items()))


def built_chunks(dataset: DatasetResource) -> list[str]:
    """Chunks whose labels table exists under the root."""
    return [chunk for chunk in CHUNK_KEYS if dataset.layout.labels_table(chunk).is_file()]


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
    metadata with the check that keeps them out (``chunks_excluded``), as are chunks not built
    yet. The labels CSV's rows that belong to no image are reported once, as a warning.
    """
    built = built_chunks(dataset)
    excluded = gate_verdicts(context.instance, built)
    present = [c for c in built if c not in excluded]
    missing = [c for c in CHUNK_KEYS if c not in built]
    for chunk, why in sorted(excluded.items()):
        context.log.warning(f"chunk {chunk} left out of the products: {why}")
    if not present:
        raise dg.Failure(
            "no chunk is built and passed its gates yet: materialize some chunks first"
            + (f" (left out: {_excluded_text(excluded)})" if excluded else "")
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
            "chunks_missing": _missing_text(missing),
            "chunks_excluded": dg.MetadataValue.md(_excluded_text(excluded)),
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
    """Options of ``training_splits``."""

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

    ``splits_{R}/splits.csv`` (every image: split, gender, age group, kept) and one list per
    split, gender and age group of the kept images (``males/train20-29.txt``); optionally the
    folder layout the FFHQ-Aging training code expects (``males/train20-29/NNNNN.png`` with
    ``parsings/``), hard-linked to the dataset.
    """
    table = pq.read_table(
        dataset.layout.combined_labels,
        columns=["image_number", "age_group", "gender", "kept", "split"],
    )
    rows = table.to_pylist()
    layout = dataset.layout
    folder = layout.splits_dir
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image_number", "split", "gender", "age_group", "kept"])
    groups: dict[str, list[int]] = {}
    for r in rows:
        writer.writerow(
            [r["image_number"], r["split"], r["gender"], r["age_group"], int(r["kept"])]
        )
        if r["kept"]:
            groups.setdefault(f"{r['gender']}s/{r['split']}{r['age_group']}", []).append(
                r["image_number"]
            )
    with atomic_path(layout.splits_table) as tmp:
        tmp.write_text(buf.getvalue())
    for name, numbers in groups.items():
        with atomic_path(layout.split_list(name)) as tmp:
            tmp.write_text("".join(f"{image_name(n)}\n" for n in numbers))
    # A list or link left from an earlier build (a chunk now left out by its gates, a group
    # now empty) would still reach training: only this build's lists (and, when the layout is
    # built, its links) stay.
    wanted = {layout.split_list(name) for name in groups}
    wanted |= {
        layout.split_file(name, n, mask)
        for name, numbers in groups.items()
        for n in numbers
        for mask in (False, True)
        if config.layout
    }
    stale = [p for p in folder.glob("*/*.txt") if p not in wanted]
    if config.layout:
        stale += [p for p in layout.split_folders.rglob("*.png") if p not in wanted]
    for path in stale:
        path.unlink()
    linked = copied = absent = 0
    if config.layout:
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
                        shutil.copyfile(src, dest)
                        copied += 1
        context.log.info(f"layout: {linked} hard links, {copied} copies, {absent} files absent")
    kept = sum(len(v) for v in groups.values())
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "images": len(rows),
            "kept": kept,
            "train_kept": sum(len(v) for k, v in groups.items() if "/train" in k),
            "test_kept": sum(len(v) for k, v in groups.items() if "/test" in k),
            "lists": len(groups),
            "layout_links": linked,
            "layout_copies": copied,
            "layout_absent": absent,
            "stale_removed": len(stale),
        }
    )


@dg.asset(group_name="products", deps=["ffhq_aging_labels", "training_splits"], kinds={"json"})
def dataset_manifest(
    context: dg.AssetExecutionContext, dataset: DatasetResource
) -> dg.MaterializeResult:
    """Every output file of the dataset (images, masks, tables, splits, reports, LICENSE).

    Each with its size and sha256; chunks left out of the products by their gates are listed
    with the reason instead of their files. ``ffhq-aging verify`` checks a copy of the
    dataset against it and names every missing, changed and unexpected file.
    """
    start = time.perf_counter()
    excluded = gate_verdicts(context.instance, built_chunks(dataset))
    manifest = build_manifest(dataset.root_path, dataset.resolution, excluded)
    write_manifest(manifest, dataset.layout.manifest)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(dataset.layout.manifest)),
            "files": len(manifest["files"]),
            "chunks_excluded": dg.MetadataValue.md(_excluded_text(excluded)),
            "bytes": sum(e["size"] for e in manifest["files"].values()),
            "seconds": round(time.perf_counter() - start, 2),
        }
    )

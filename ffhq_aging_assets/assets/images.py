"""The images stage: every photo of the chunk fetched, verified, cropped and written."""

import shutil
from collections.abc import Mapping
from typing import Literal

import dagster as dg
from pydantic import Field

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import IMAGE_GATES, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.align_pipeline import ImageJob, align_chunk
from ffhq_aging_assets.lib.chunks import image_name
from ffhq_aging_assets.lib.download import FileSpec
from ffhq_aging_assets.lib.files import (
    atomic_path,
    file_digest,
    orphan_temp_files,
    remove_orphan_temp_files,
)
from ffhq_aging_assets.lib.images import contact_sheet, is_valid_image
from ffhq_aging_assets.lib.metadata_store import chunk_metadata, landmarks_of
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource
from ffhq_aging_assets.settings import apply_settings


class AlignConfig(dg.Config):
    """How `aligned_images` works; the resolution is the `dataset` resource's."""

    mode: Literal["reference", "fast"] = Field(
        default="reference",
        description="reference: the published crop, byte for byte; fast: within 45 dB PSNR.",
    )
    num_processes: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Alignment processes per step; 0: one per CPU the step may use.",
    )
    keep_sources: bool = Field(
        default=False,
        description="Keep the downloaded in-the-wild photos under ROOT/sources (deleted once "
        "aligned otherwise).",
    )
    verify_pixel_md5: bool = Field(
        default=True, description="Check each photo's decoded pixels against the metadata."
    )


apply_settings("aligned_images", AlignConfig)


@dg.asset(
    group_name="images",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=["image_metadata", "alignments"],
    kinds={"png"},
    check_specs=gate_specs("aligned_images", IMAGE_GATES),
)
def aligned_images(
    context: dg.AssetExecutionContext,
    config: AlignConfig,
    dataset: DatasetResource,
    file_source: FileSourceResource,
) -> dg.MaterializeResult:
    """The chunk's aligned faces: `ffhq_aging{R}x{R}/{chunk}/{NNNNN}.png`, R x R RGB.

    Each image already there and valid is kept. Every other photo is fetched through the
    configured source (anonymous Drive, a Google account, or a local copy), verified by size and
    md5 (and pixel md5), cropped by the published FFHQ-Aging method (or its fast mode), and
    written through a temporary file; the downloaded photo is then deleted unless asked to keep
    it. Downloads overlap with alignment, which runs in one process per core. Images that still
    fail after retries are named in the step's failure while every other image is kept, so a
    re-run redoes only those. The dataset folder gets FFHQ's LICENSE.
    """
    chunk = context.partition_key
    layout = dataset.layout
    meta = chunk_metadata(layout, chunk, dataset.per_chunk_limit)
    folder = layout.chunk_dir(chunk)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = layout.sources_dir(chunk)
    removed = remove_orphan_temp_files(folder) + remove_orphan_temp_files(scratch)
    if removed:
        context.log.info(f"chunk {chunk}: removed {len(removed)} files a killed writer left")
    _copy_license(dataset)
    columns = meta.select(["image_number", "file_url", "file_size", "file_md5", "pixel_md5"])
    landmarks = landmarks_of(meta)
    jobs = [
        ImageJob(
            number=row["image_number"],
            source=FileSpec(
                row["file_url"],
                f"image {image_name(row['image_number'])}",
                row["file_size"],
                row["file_md5"],
            ),
            landmarks=landmarks[i],
            pixel_md5=row["pixel_md5"] if config.verify_pixel_md5 else None,
            dest=layout.image(row["image_number"]),
        )
        for i, row in enumerate(columns.to_pylist())
    ]
    report = align_chunk(
        jobs,
        file_source.source,
        scratch,
        dataset.resolution,
        mode=config.mode,
        threads=file_source.num_threads,
        processes=config.num_processes,
        keep_sources=config.keep_sources,
        say=lambda line: context.log.info(f"chunk {chunk}: {line}"),
    )
    source_events = file_source.events()
    api_metadata = (
        {} if source_events is None else {"drive_api_events": dg.MetadataValue.json(source_events)}
    )
    if report.causes or source_events:
        context.log.info(
            f"chunk {chunk}: failed by cause: {_counts_text(report.causes)}; Drive API "
            f"events: {_counts_text(source_events or {})}"
        )
    if report.failed:
        shown = "\n".join(f"  {n:05d}: {why}" for n, why in sorted(report.failed.items())[:20])
        more = len(report.failed) - 20
        raise dg.Failure(
            description=(
                f"chunk {chunk}: {len(report.failed)} of {report.total} images failed "
                f"({_counts_text(report.causes)}; {report.aligned} aligned, "
                f"{report.skipped} already valid, all kept); "
                f"run again to retry only these:\n{shown}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            ),
            metadata={
                "failed": len(report.failed),
                "aligned": report.aligned,
                "failed_by_cause": dg.MetadataValue.json(dict(report.causes)),
                **api_metadata,
            },
        )

    missing = [j.number for j in jobs if not j.dest.exists()]
    invalid = [
        j.number for j in jobs if j.dest.exists() and not is_valid_image(j.dest, dataset.resolution)
    ]
    leftovers = [p.name for p in orphan_temp_files(folder) + orphan_temp_files(scratch)]
    checks = gate_results(
        "aligned_images",
        [
            gates.images_valid("image_count", missing, len(jobs), "missing"),
            gates.images_valid(
                "image_format", invalid, len(jobs), f"not {dataset.resolution}px RGB"
            ),
            gates.no_leftovers("no_temp_files", leftovers),
        ],
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "images": len(jobs),
            "aligned": report.aligned,
            "already_valid": report.skipped,
            "bytes_written": report.bytes_written,
            "seconds": round(report.seconds, 2),
            "images_per_second": round(report.rate, 3),
            **api_metadata,
            "mode": config.mode,
            "resolution": dataset.resolution,
            "contact_sheet": dg.MetadataValue.md(contact_sheet([j.dest for j in jobs[:32]])),
        },
        check_results=checks,
    )


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{cause}: {n}" for cause, n in sorted(counts.items())) or "none"


def _copy_license(dataset: DatasetResource) -> None:
    """Put FFHQ's LICENSE beside the images (the dataset is distributed under it)."""
    src, dest = dataset.layout.license_source, dataset.layout.license
    if not src.is_file():
        raise dg.Failure(f"no LICENSE at {src}: materialize ffhq_metadata_json first")
    remove_orphan_temp_files(dest.parent, dest.name)
    if not dest.is_file() or file_digest(dest) != file_digest(src):
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)

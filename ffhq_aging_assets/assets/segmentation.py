"""The segmentation stage: a 19-class face-parsing mask for every aligned image.

The model code, and with it torch, is imported inside the asset, never by this module: every
spawned step imports the definitions, and only this one needs the model.
"""

import base64
import io
import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import MASK_GATES, MASK_WARNINGS, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.files import orphan_temp_files, remove_orphan_temp_files
from ffhq_aging_assets.lib.images import is_valid_image
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.masks import (
    NUM_CLASSES,
    STATS_DESCRIPTIONS,
    STATS_SCHEMA,
    mask_stats,
    precision_record,
    preview_grid,
    read_mask,
    read_precision_record,
    write_precision_record,
)
from ffhq_aging_assets.lib.tables import write_table
from ffhq_aging_assets.metadata_values import column_schema, shared_input_result
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, DeepLabWeights, FileSourceResource

GPU_TAGS = {
    "dagster-celery/queue": "gpu",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}


class SegmentConfig(dg.Config):
    """How ``segmentation_masks`` runs."""

    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda:N.")
    batch_size: int = Field(default=0, ge=0, le=512, description="0: 32 on CUDA, 4 on CPU.")
    precision: str = Field(
        default="auto",
        description="On CUDA: bf16 (autocast, fast), fp32 (strict IEEE fp32, the published "
        "numerics) or auto (bf16 where its masks agree with fp32 on 99% of the pixels of the "
        "sampled faces, else fp32). The CPU always computes in fp32.",
    )
    fidelity_faces: int = Field(
        default=8,
        ge=0,
        le=256,
        description="bf16 or auto on CUDA: this many of the chunk's faces are also segmented "
        "in fp32; the pixel agreement picks the precision (auto) and gates the chunk "
        "(mask_fidelity). 0 skips the comparison (auto then keeps fp32).",
    )
    compile: bool = Field(
        default=False,
        description="On CUDA, torch.compile the model, its kernels cached under the root "
        "(cache/torchinductor, or $TORCHINDUCTOR_CACHE_DIR) for later steps. Measured on an "
        "H200: 2-4x the eager model's rate, but even with a warm cache each step spends about "
        "10 s more setting up, more than a 1,000-image chunk saves; worth it for larger "
        "steps. Ignored on the CPU.",
    )


@dg.asset(group_name="inputs", kinds={"pytorch"}, automation_condition=NIGHTLY_MISSING)
def deeplab_checkpoint(
    dataset: DatasetResource, file_source: FileSourceResource, deeplab_weights: DeepLabWeights
) -> dg.MaterializeResult:
    """The face-parsing checkpoint ``deeplab_model.pth``, fetched once and loaded once to check.

    Verified by size and md5 where they are known (the published file's are), loaded safely
    (tensors only) and matched key by key against the published DeepLabV3. Reused only for the
    same source (URL or path, checksums, a local file's size and time), so pointing at another
    copy fetches it; a file that does not load (cut short, not a checkpoint) is moved aside
    with an error saying so, and fetched again next run.
    """
    from ffhq_aging_assets.lib.deeplab import load_deeplab

    def check(path: Path, _md5: str) -> int:
        model = load_deeplab(path)
        return sum(p.numel() for p in model.parameters())

    got = fetch_input(file_source.source, deeplab_weights.spec, dataset.layout.checkpoint, check)
    return shared_input_result(got, deeplab_weights.url, parameters=got.checked)


@dg.asset(
    group_name="segmentation",
    partitions_def=chunk_partitions,
    automation_condition=NIGHTLY_MISSING,
    deps=["aligned_images", "deeplab_checkpoint"],
    kinds={"pytorch"},
    pool="gpu",
    op_tags=GPU_TAGS,
    check_specs=gate_specs("segmentation_masks", MASK_GATES)
    + gate_specs("segmentation_masks", MASK_WARNINGS, blocking=False),
)
def segmentation_masks(
    context: dg.AssetExecutionContext,
    config: SegmentConfig,
    dataset: DatasetResource,
) -> dg.MaterializeResult:
    """19-class face-parsing masks (CelebAMask-HQ classes) of the chunk's aligned faces.

    ``ffhq_aging{R}x{R}/{chunk}/parsings/{NNNNN}.png``: 8-bit class maps from the published
    DeepLabV3 (ResNet-101, GroupNorm, weight standardisation) through the published
    preprocessing. The checkpoint is fetched once and verified; the model loads once per step,
    on CUDA when present (bf16 or strict fp32, channels-last, batched, faces decoded on loader
    threads, optionally compiled with its kernels cached under the root) or on the CPU (fp32,
    batched, every core). In bf16 a sample of faces is also segmented in fp32 and the
    agreement picks the precision (auto) and gates the chunk. Valid existing masks are kept.
    Also writes each mask's class fractions to a table. Runs in the ``gpu`` pool: one chunk at
    a time per GPU.
    """
    from ffhq_aging_assets.lib.deeplab import load_deeplab
    from ffhq_aging_assets.lib.segment import (
        PRECISIONS,
        choose_precision,
        fidelity,
        prepare_model,
        resolve_device,
        segment_files,
    )

    if config.precision not in (*PRECISIONS, "auto"):
        raise dg.Failure(f"precision {config.precision!r}: expected auto, bf16 or fp32")

    chunk = context.partition_key
    numbers = list(expected_numbers(chunk, dataset.per_chunk_limit))
    layout = dataset.layout
    faces = [layout.image(n) for n in numbers]
    absent = [n for n, f in zip(numbers, faces, strict=True) if not f.is_file()]
    if absent:
        raise dg.Failure(
            f"chunk {chunk}: {len(absent)} aligned images are missing (first {absent[0]:05d}): "
            "materialize aligned_images first"
        )
    folder = layout.parsings_dir(chunk)
    removed = remove_orphan_temp_files(folder)
    if removed:
        context.log.info(f"chunk {chunk}: removed {len(removed)} files a killed writer left")
    masks = [layout.mask(n) for n in numbers]
    todo = [i for i, m in enumerate(masks) if not is_valid_image(m, dataset.resolution, "L")]
    device = resolve_device(config.device)
    batch = config.batch_size or (32 if device.type == "cuda" else 4)
    compiled = config.compile and device.type == "cuda"
    precision = config.precision if device.type == "cuda" else "fp32"
    record_path = layout.precision_record(chunk)
    try:
        record = read_precision_record(record_path) if len(todo) < len(numbers) else None
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    start = time.perf_counter()
    run, prepared, measured = None, 0.0, None
    if todo:
        weights = dataset.layout.checkpoint
        if not weights.is_file():
            raise dg.Failure(f"no checkpoint at {weights}: materialize deeplab_checkpoint first")
        cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or layout.compile_cache)
        model = prepare_model(
            load_deeplab(weights), device, compile=compiled, cache_dir=cache if compiled else None
        )
        if compiled:
            context.log.info(f"torch.compile on {device}; kernels cached in {cache}")
        # Spread over the chunk rather than its first faces.
        picks = np.linspace(0, len(todo) - 1, min(config.fidelity_faces, len(todo))).round()
        agreement, sample = None, [faces[todo[int(k)]] for k in picks]
        if precision != "fp32" and sample:
            agreement = fidelity(model, sample, dataset.resolution, device, batch)
            context.log.info(f"bf16 vs fp32 on {len(sample)} faces: {agreement:.4%} agree")
        measured = agreement
        if precision == "auto":
            precision = choose_precision(agreement)
            context.log.info(f"precision auto: {precision}")
        record = precision_record(record, precision, agreement, len(sample))
        # Written before any mask: a step that dies half-way leaves the truth about its masks.
        write_precision_record(record_path, record)
        prepared = time.perf_counter() - start

        def progress(written: int, elapsed: float) -> None:
            context.log.info(
                f"chunk {chunk}: {written}/{len(todo)} masks, {written / elapsed:.2f} img/s"
            )

        run = segment_files(
            model,
            [faces[i] for i in todo],
            [masks[i] for i in todo],
            dataset.resolution,
            device,
            batch,
            on_progress=progress,
            precision=precision,
        )
    seconds = time.perf_counter() - start

    present = [m for m in masks if m.is_file()]
    valid = [m for m in present if is_valid_image(m, dataset.resolution, "L")]
    missing = [n for n, m in zip(numbers, masks, strict=True) if not m.is_file()]
    malformed = [n for n, m in zip(numbers, masks, strict=True) if m.is_file() and m not in valid]
    valid_numbers = [n for n, m in zip(numbers, masks, strict=True) if m in valid]
    stats = mask_stats(valid_numbers, [read_mask(m) for m in valid])
    size = write_table(stats, layout.mask_stats_table(chunk))
    checks = gate_results(
        "segmentation_masks",
        [
            gates.images_valid("mask_count", missing, len(numbers), "no mask"),
            gates.images_valid(
                "mask_format", malformed, len(numbers), f"not {dataset.resolution}px greyscale"
            ),
            gates.class_range(
                "mask_classes", valid_numbers, stats.column("max_class").to_numpy(), NUM_CLASSES - 1
            ),
            gates.mask_fidelity("mask_fidelity", record),
            gates.no_leftovers("no_temp_files", [p.name for p in orphan_temp_files(folder)]),
            gates.suspicious_masks(
                "mask_plausible",
                valid_numbers,
                stats.column("classes_present").to_numpy(),
                stats.column("frac_skin").to_numpy(),
            ),
        ],
    )
    buf = io.BytesIO()
    preview_grid(faces, masks).save(buf, format="JPEG", quality=80)
    preview = base64.b64encode(buf.getvalue()).decode("ascii")
    means = (
        {
            f"mean_{name}": float(np.mean(stats.column(name).to_numpy()))
            for name in ("frac_skin", "frac_hair", "frac_background")
        }
        if stats.num_rows
        else {}
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "masks": len(valid),
            "computed": len(todo),
            "device": str(device),
            "batch_size": batch,
            "compiled": compiled,
            "precision": precision,
            "masks_precision": record["precision"] if record else "fp32",
            **({"bf16_fp32_agreement": measured} if measured is not None else {}),
            "prepare_seconds": round(prepared, 2),
            "first_batch_seconds": round(run.first_batch_seconds, 2) if run else 0.0,
            "input_wait_seconds": round(run.input_wait_seconds, 2) if run else 0.0,
            "model_seconds": round(run.model_seconds, 2) if run else 0.0,
            "seconds": round(seconds, 2),
            "images_per_second": round(len(todo) / seconds, 3) if todo and seconds > 0 else 0.0,
            "stats_bytes": size,
            "dagster/row_count": stats.num_rows,
            "dagster/column_schema": column_schema(STATS_SCHEMA, STATS_DESCRIPTIONS),
            **means,
            "preview": dg.MetadataValue.md(f"![masks](data:image/jpeg;base64,{preview})"),
        },
        check_results=checks,
    )

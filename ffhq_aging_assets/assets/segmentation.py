"""The segmentation stage: a 19-class face-parsing mask for every aligned image.

The model code, and with it torch, is imported inside the asset, never by this module: every
spawned step imports the definitions, and only this one needs the model. The work itself is
``lib/segment_chunk.py``; this module maps its outcome to checks and metadata.
"""

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import MASK_GATES, MASK_WARNINGS, gate_results, gate_specs
from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.masks import NUM_CLASSES, STATS_DESCRIPTIONS, STATS_SCHEMA
from ffhq_aging_assets.metadata_values import column_schema, shared_input_result
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.resources import DatasetResource, DeepLabWeights, FileSourceResource
from ffhq_aging_assets.runs import GPU_POOL
from ffhq_aging_assets.settings import apply_settings

GPU_TAGS = {
    "dagster-celery/queue": "gpu",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}


class SegmentConfig(dg.Config):
    """How `segmentation_masks` runs."""

    device: str = Field(
        default="auto",
        description="auto (a GPU of this host no other step holds, when CUDA is present; else "
        "the CPU), cpu, cuda:N.",
    )
    batch_size: int = Field(default=0, ge=0, le=512, description="0: 32 on CUDA, 1 on CPU.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
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
    compile: Literal["off", "aot", "jit"] = Field(
        default="off",
        description="On CUDA: aot loads the model compiled ahead of time (AOTInductor, built "
        "by the first step that needs it, once per GPU type, batch, precision and checkpoint, "
        "under the root in cache/aot) and uses it only where its masks equal the eager "
        "model's on the sampled faces; jit "
        "runs torch.compile in every step, its kernels cached under the root "
        "(cache/torchinductor, or $TORCHINDUCTOR_CACHE_DIR), about 10 s more set-up per step "
        "than eager. Ignored on the CPU.",
    )


apply_settings("segmentation_masks", SegmentConfig)


@dg.asset(group_name="inputs", kinds={"pytorch"}, automation_condition=NIGHTLY_MISSING)
def deeplab_checkpoint(
    dataset: DatasetResource, file_source: FileSourceResource, deeplab_weights: DeepLabWeights
) -> dg.MaterializeResult:
    """The face-parsing checkpoint `deeplab_model.pth`, fetched once and loaded once to check.

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


MASKS = dg.AssetSpec(
    "segmentation_masks",
    group_name="segmentation",
    deps=["aligned_images", "deeplab_checkpoint"],
    kinds={"pytorch"},
    automation_condition=NIGHTLY_MISSING,
    description="19-class face-parsing masks (CelebAMask-HQ classes) of the chunk's aligned "
    "faces: `ffhq_aging{R}x{R}/{chunk}/parsings/{NNNNN}.png`, 8-bit class maps from the "
    "published DeepLabV3 (ResNet-101, GroupNorm, weight standardisation) through the published "
    "preprocessing. The checkpoint is fetched once and verified; the model loads once per step, "
    "on CUDA when present (bf16 or strict fp32, channels-last, batched, faces decoded on loader "
    "threads, optionally compiled ahead of time or in the step) or on the CPU (fp32, "
    "batched, every core). In bf16 a sample of faces is also segmented in fp32 and the "
    "agreement picks the precision (auto) and gates the chunk; the chunk's precision record "
    "(`tables/mask_fidelity_{R}/{chunk}.json`, present while bf16 masks exist) is in the "
    "metadata. Valid existing masks are kept. Runs in the `gpu` pool: one chunk at a time "
    "per GPU.",
)
STATISTICS = dg.AssetSpec(
    "mask_statistics",
    group_name="segmentation",
    deps=[MASKS.key],
    kinds={"parquet"},
    automation_condition=NIGHTLY_MISSING,
    description="The pixel fraction of each of the 19 classes in every valid mask of the "
    "chunk, with the classes present and the largest class id: "
    "`tables/mask_stats_{R}/{chunk}.parquet`, one row per mask. Written by the step that "
    "writes the masks, from the masks on disk after it; the labels join it.",
)


@dg.multi_asset(
    specs=[MASKS, STATISTICS],
    partitions_def=chunk_partitions,
    pool=GPU_POOL,
    op_tags=GPU_TAGS,
    check_specs=gate_specs("segmentation_masks", MASK_GATES)
    + gate_specs("segmentation_masks", MASK_WARNINGS, blocking=False),
)
def segmentation_masks(
    context: dg.AssetExecutionContext,
    config: SegmentConfig,
    dataset: DatasetResource,
) -> Iterator[dg.MaterializeResult]:
    """One chunk's masks and their statistics, in one GPU step: the model loads once."""
    from ffhq_aging_assets.lib.gpu_claim import ClaimError
    from ffhq_aging_assets.lib.segment_chunk import ChunkNotReady, segment_chunk
    from ffhq_aging_assets.lib.segment_model import step_device

    chunk = context.partition_key
    numbers = list(expected_numbers(chunk, dataset.per_chunk_limit))
    try:
        with step_device(config.device, context.log.info) as device:
            done = segment_chunk(
                dataset.layout,
                chunk,
                numbers,
                device=device,
                batch_size=config.batch_size,
                precision=config.precision,
                fidelity_faces=config.fidelity_faces,
                compile=config.compile,
                log=context.log.info,
            )
    except (ChunkNotReady, ClaimError) as exc:
        raise dg.Failure(str(exc)) from exc
    audit, stats = done.audit, done.stats
    checks = [
        gates.images_valid("mask_count", audit.missing, len(numbers), "no mask"),
        gates.images_valid(
            "mask_format", audit.malformed, len(numbers), f"not {dataset.resolution}px greyscale"
        ),
        gates.class_range(
            "mask_classes", audit.valid, stats.column("max_class").to_numpy(), NUM_CLASSES - 1
        ),
        gates.mask_fidelity("mask_fidelity", done.record),
        gates.no_leftovers("no_temp_files", done.leftovers),
        gates.suspicious_masks(
            "mask_plausible",
            audit.valid,
            stats.column("classes_present").to_numpy(),
            stats.column("frac_skin").to_numpy(),
        ),
    ]
    record_file = (
        {"precision_record_path": dg.MetadataValue.path(str(done.record_path))}
        if done.record_path.is_file()
        else {}
    )
    preview = base64.b64encode(done.preview_jpeg).decode("ascii")
    yield dg.MaterializeResult(
        asset_key=MASKS.key,
        metadata={
            "path": dg.MetadataValue.path(str(done.folder)),
            "masks": len(audit.valid),
            "computed": done.computed,
            "device": done.device,
            "batch_size": done.batch_size,
            "engine": done.engine,
            **({"aot_agreement": done.aot_agreement} if done.aot_agreement is not None else {}),
            "precision": done.precision,
            "masks_precision": done.record.precision,
            **({"bf16_fp32_agreement": done.agreement} if done.agreement is not None else {}),
            "precision_record": dg.MetadataValue.json(dataclasses.asdict(done.record)),
            **record_file,
            **done.timings(),
            "preview": dg.MetadataValue.md(f"![masks](data:image/jpeg;base64,{preview})"),
        },
        check_results=gate_results("segmentation_masks", checks),
    )
    yield dg.MaterializeResult(
        asset_key=STATISTICS.key,
        metadata={
            "path": dg.MetadataValue.path(str(done.stats_path)),
            "bytes": done.stats_bytes,
            "dagster/row_count": stats.num_rows,
            "dagster/column_schema": column_schema(STATS_SCHEMA, STATS_DESCRIPTIONS),
            **{f"mean_{name}": value for name, value in done.mean_fractions().items()},
        },
    )

"""One chunk's segmentation step: which masks to compute, in what precision, and what came out.

Valid masks already there are kept; the model loads once for the rest. Before any mask is
written the chunk's precision record says what its masks will be, so a step that dies half-way
leaves the truth about them. Afterwards every mask is audited, its class fractions go to the
chunk's statistics table, and a preview of the first faces is drawn.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from ffhq_aging_assets.lib.cpus import usable_cpus
from ffhq_aging_assets.lib.deeplab import load_deeplab
from ffhq_aging_assets.lib.files import orphan_temp_files, remove_orphan_temp_files
from ffhq_aging_assets.lib.images import is_valid_image
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.masks import MaskAudit, audit_masks, mask_stats, preview_grid, read_mask
from ffhq_aging_assets.lib.precision import (
    ALL_FP32,
    Precision,
    PrecisionRecord,
    PrecisionSetting,
    choose_precision,
    fidelity_sample,
    merge_precision_record,
    read_precision_record,
    step_precision,
    write_precision_record,
)
from ffhq_aging_assets.lib.segment import SegmentRun, fidelity, segment_files
from ffhq_aging_assets.lib.segment_aot import (
    build_package,
    load_package,
    mask_agreement,
    package_for,
)
from ffhq_aging_assets.lib.segment_model import (
    batch_size_for,
    fit_cpu_threads,
    prepare_model,
    resolve_device,
)
from ffhq_aging_assets.lib.tables import write_table

# Seconds between two progress lines of a chunk's masks.
PROGRESS_SECONDS = 2.0
MEAN_FRACTIONS = ("frac_skin", "frac_hair", "frac_background")
CompileMode = Literal["off", "aot", "jit"]


class ChunkNotReady(Exception):
    """An input the step needs is missing or unreadable; the message says which and what to do."""


@dataclass(frozen=True)
class ChunkSegmentation:
    """What one step did to a chunk's masks, and what they are now."""

    folder: Path
    images: int
    computed: int
    device: str
    batch_size: int
    engine: str
    aot_agreement: float | None
    precision: str
    agreement: float | None
    record: PrecisionRecord
    record_path: Path
    run: SegmentRun | None
    prepare_seconds: float
    seconds: float
    audit: MaskAudit
    leftovers: list[str]
    stats: pa.Table
    stats_path: Path
    stats_bytes: int
    preview_jpeg: bytes

    @property
    def images_per_second(self) -> float:
        """Masks computed per second of the step, model loading included."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else 0.0

    def timings(self) -> dict[str, float]:
        """Where the step's time went, in seconds (rounded), and its rate."""
        run = self.run or SegmentRun(0, 0.0, 0.0)
        return {
            "prepare_seconds": round(self.prepare_seconds, 2),
            "first_batch_seconds": round(run.first_batch_seconds, 2),
            "input_wait_seconds": round(run.input_wait_seconds, 2),
            "model_seconds": round(run.model_seconds, 2),
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images_per_second, 3),
        }

    def mean_fractions(self) -> dict[str, float]:
        """The chunk's mean skin, hair and background fractions; none without a valid mask."""
        if not self.stats.num_rows:
            return {}
        return {name: float(np.mean(self.stats.column(name).to_numpy())) for name in MEAN_FRACTIONS}


def _quiet(_: str) -> None:
    """Log nowhere."""


def segment_chunk(
    layout: DatasetLayout,
    chunk: str,
    numbers: Sequence[int],
    *,
    device: str = "auto",
    batch_size: int = 0,
    precision: PrecisionSetting = "auto",
    fidelity_faces: int = 8,
    compile: CompileMode = "off",
    log: Callable[[str], None] = _quiet,
) -> ChunkSegmentation:
    """Compute the chunk's missing or invalid masks, then audit and describe all of them.

    The settings mean what ``SegmentConfig``'s fields say. ``log`` gets progress lines.

    Raises:
        ChunkNotReady: an aligned image or the checkpoint is missing, or the chunk's precision
            record is unreadable.
    """
    faces = [layout.image(n) for n in numbers]
    absent = [n for n, f in zip(numbers, faces, strict=True) if not f.is_file()]
    if absent:
        raise ChunkNotReady(
            f"chunk {chunk}: {len(absent)} aligned images are missing (first {absent[0]:05d}): "
            "materialize aligned_images first"
        )
    folder = layout.parsings_dir(chunk)
    removed = remove_orphan_temp_files(folder)
    if removed:
        log(f"chunk {chunk}: removed {len(removed)} files a killed writer left")
    masks = [layout.mask(n) for n in numbers]
    todo = [i for i, m in enumerate(masks) if not is_valid_image(m, layout.resolution, "L")]
    dev = resolve_device(device)
    if dev.type == "cpu":
        fit_cpu_threads(usable_cpus())
    batch = batch_size_for(dev, batch_size)
    compiled: CompileMode = compile if dev.type == "cuda" else "off"
    engine = {"off": "eager", "aot": "eager", "jit": "torch.compile"}[compiled]
    aot_agreement = None
    step = step_precision(precision, dev.type)
    record_path = layout.precision_record(chunk)
    try:
        # Every mask recomputed: nothing of an earlier step's precision remains.
        record = read_precision_record(record_path) if len(todo) < len(numbers) else ALL_FP32
    except ValueError as exc:
        raise ChunkNotReady(str(exc)) from exc
    start = time.perf_counter()
    run, prepared, measured = None, 0.0, None
    if todo:
        if compile != compiled:
            log(f"compile {compile}: ignored on {dev}; the eager model computes the chunk")
        model = _load_model(layout, dev, compiled == "jit", log)
        sample = [faces[todo[k]] for k in fidelity_sample(len(todo), fidelity_faces)]
        if step != "fp32" and sample:
            measured = fidelity(model, sample, layout.resolution, dev, batch)
            log(f"bf16 vs fp32 on {len(sample)} faces: {measured:.4%} agree")
        chosen: Precision = "fp32" if step == "fp32" else "bf16"
        if step == "auto":
            chosen = choose_precision(measured)
            log(f"precision auto: {chosen}")
        step = chosen
        record = merge_precision_record(record, chosen, measured, len(sample))
        # Written before any mask: a step that dies half-way leaves the truth about its masks.
        write_precision_record(record_path, record)
        if compiled == "aot":
            model, engine, aot_agreement = _ahead_of_time(
                layout, model, dev, batch, chosen, sample, log
            )
        prepared = time.perf_counter() - start

        reported = [-PROGRESS_SECONDS]

        def progress(written: int, elapsed: float) -> None:
            # The first line, then at most one every PROGRESS_SECONDS and the last: each is an
            # event the instance stores.
            if written < len(todo) and elapsed - reported[0] < PROGRESS_SECONDS:
                return
            reported[0] = elapsed
            rate = written / elapsed if elapsed > 0 else 0.0
            left = len(todo) - written
            eta = f"{left / rate:.0f} s" if rate > 0 and left else "-"
            log(f"chunk {chunk}: {written}/{len(todo)} masks, {rate:.2f} img/s, ETA {eta}")

        run = segment_files(
            model,
            [faces[i] for i in todo],
            [masks[i] for i in todo],
            layout.resolution,
            dev,
            batch,
            on_progress=progress,
            precision=chosen,
        )
    seconds = time.perf_counter() - start

    audit = audit_masks(numbers, masks, layout.resolution)
    stats = mask_stats(audit.valid, [read_mask(layout.mask(n)) for n in audit.valid])
    stats_path = layout.mask_stats_table(chunk)
    size = write_table(stats, stats_path)
    preview = io.BytesIO()
    preview_grid(faces, masks).save(preview, format="JPEG", quality=80)
    return ChunkSegmentation(
        folder=folder,
        images=len(numbers),
        computed=len(todo),
        device=str(dev),
        batch_size=batch,
        engine=engine,
        aot_agreement=aot_agreement,
        precision=step,
        agreement=measured,
        record=record,
        record_path=record_path,
        run=run,
        prepare_seconds=prepared,
        seconds=seconds,
        audit=audit,
        leftovers=[p.name for p in orphan_temp_files(folder)],
        stats=stats,
        stats_path=stats_path,
        stats_bytes=size,
        preview_jpeg=preview.getvalue(),
    )


def _load_model(
    layout: DatasetLayout, device: torch.device, jit: bool, log: Callable[[str], None]
) -> nn.Module:
    """The checkpoint's model prepared for ``device``; with ``jit``, under ``torch.compile``."""
    weights = layout.checkpoint
    if not weights.is_file():
        raise ChunkNotReady(f"no checkpoint at {weights}: materialize deeplab_checkpoint first")
    cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or layout.compile_cache)
    model = prepare_model(
        load_deeplab(weights), device, compile=jit, cache_dir=cache if jit else None
    )
    if jit:
        log(f"torch.compile on {device}; kernels cached in {cache}")
    return model


def _ahead_of_time(
    layout: DatasetLayout,
    eager: nn.Module,
    device: torch.device,
    batch: int,
    precision: Precision,
    sample: Sequence[Path],
    log: Callable[[str], None],
) -> tuple[nn.Module, str, float | None]:
    """The AOTInductor package of ``eager`` where its masks equal the eager model's, else eager.

    Returns the model the chunk runs, its engine's name and the pixel agreement of the two on
    the sampled faces. The package is built on first use, once per key (60-75 s on a 2-core
    CPU; not yet timed on a GPU); the comparison runs on every step, on the chunk's own
    sampled faces, and only exact
    equality lets the package compute the chunk. A package that fails to build or load leaves
    the eager model in charge, with the reason in the log and the step's metadata; one that
    does not load is removed, so the next step builds it again.
    """
    if not sample:
        log("compile aot: no faces sampled (fidelity_faces 0), so nothing to compare; eager kept")
        return eager, "eager (aot not compared)", None
    path = package_for(layout.aot_packages, eager, batch, precision, layout.checkpoint)
    began = time.perf_counter()
    try:
        if build_package(eager, path, batch, precision):
            log(f"compile aot: built {path} in {time.perf_counter() - began:.0f} s")
    except Exception as exc:  # noqa: BLE001 - any failure to compile leaves the eager model
        log(f"compile aot: {type(exc).__name__}: {exc}; the eager model computes the chunk")
        return eager, f"eager (aot failed: {type(exc).__name__})", None
    try:
        aot = load_package(path, eager, batch, precision)
    except Exception as exc:  # noqa: BLE001 - a package that does not load is not reused
        path.unlink(missing_ok=True)
        log(
            f"compile aot: {path} does not load ({type(exc).__name__}: {exc}); removed, so the "
            "next step builds it again; the eager model computes the chunk"
        )
        return eager, f"eager (aot failed: {type(exc).__name__})", None
    try:
        agreement = mask_agreement(aot, eager, sample, layout.resolution, batch, precision)
    except Exception as exc:  # noqa: BLE001 - a package that loads but does not run is not used
        log(f"compile aot: {path} failed to run ({type(exc).__name__}: {exc}); eager kept")
        return eager, f"eager (aot failed: {type(exc).__name__})", None
    if agreement < 1.0:
        log(
            f"compile aot: its masks equal the eager model's on {agreement:.4%} of the pixels "
            f"of {len(sample)} faces, not all; the eager model computes the chunk"
        )
        return eager, "eager (aot masks differ)", agreement
    log(
        f"compile aot: {path.name} loaded; its masks equal the eager model's on {len(sample)} faces"
    )
    return aot, "aot", agreement

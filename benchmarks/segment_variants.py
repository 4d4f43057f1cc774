"""Variants of the segmentation engine that only the benchmarks measure.

- Loader processes instead of threads: decoding off the interpreter lock the model's thread
  needs; faster once running on an H200, but slower to start than a 1,000-face chunk repays.
- Resizing on the device (antialiased bilinear, within one grey level of PIL) instead of with
  PIL on the loaders: a quarter of the upload at 1024, not the published arithmetic.
- cuDNN's algorithm search forced on or off, whatever ``search_pays`` says.

Each plugs the production pieces (``segment_batches``, ``MaskWriter``) together differently,
so what is measured is the engine itself (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ffhq_aging_assets.lib.precision import search_pays
from ffhq_aging_assets.lib.segment import MaskWriter, SegmentRun, segment_batches
from ffhq_aging_assets.lib.segment_input import (
    INPUT_SIZE,
    face_size_error,
    published_input,
    read_face,
)
from ffhq_aging_assets.lib.segment_loader import Batch, default_loader_threads, thread_batches
from ffhq_aging_assets.lib.segment_model import cudnn_search


def device_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC faces at any size -> 513 x 513 on the device, rounded as PIL's uint8 resize."""
    x = batch.permute(0, 3, 1, 2).float()
    # PIL widens its triangle filter when it shrinks (1024 -> 513); antialias=True does the same.
    x = F.interpolate(
        x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
    )
    return x.round_().clamp_(0, 255).permute(0, 2, 3, 1)


class Faces(torch.utils.data.Dataset):
    """Face files for loader processes: item ``i`` is ``(i, uint8 HWC tensor)``."""

    def __init__(self, paths: Sequence[Path], resize: bool) -> None:
        self.paths = list(paths)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        face = read_face(self.paths[index])
        # Both give a new, writable array (PIL's arrays are read-only views).
        face = published_input(face) if self.resize else np.array(face)
        return index, torch.from_numpy(face)

    def collate(self, rows: list[tuple[int, torch.Tensor]]) -> Batch:
        """Stack one batch; a face of another size than the batch's first is named."""
        shape = rows[0][1].shape
        for index, face in rows:
            if face.shape != shape:
                raise face_size_error(self.paths[index], tuple(face.shape), tuple(shape))
        return [index for index, _ in rows], torch.stack([face for _, face in rows])


def default_loader_processes() -> int:
    """Loader processes: one per core but one (for the model's thread), 1 to 16."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def process_batches(
    paths: Sequence[Path],
    resize: bool,
    batch_size: int,
    workers: int,
    pin: bool = True,
    pad: bool = True,
) -> Iterator[Batch]:
    """Loader processes decode (and with ``resize`` PIL-resize) whole batches of face files.

    Batches come back through shared memory, are pinned by the loader's own thread (``pin``),
    and with ``pad`` a short last batch repeats its last face up to ``batch_size`` (the indices
    name only real items).
    """
    faces = Faces(paths, resize)
    loader = torch.utils.data.DataLoader(
        faces,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=faces.collate,
        pin_memory=pin,
        prefetch_factor=2,
        multiprocessing_context="spawn",
    )
    for indices, batch in loader:
        if pad and len(indices) < batch_size:
            batch = torch.cat(
                [batch, batch[-1:].expand(batch_size - len(indices), *batch.shape[1:])]
            )
        yield indices, batch


def segment_files_variant(
    model: nn.Module,
    faces: Sequence[Path],
    masks: Sequence[Path],
    resolution: int,
    device: torch.device,
    batch_size: int,
    *,
    precision: str = "bf16",
    processes: int = 0,
    device_resize: bool = False,
    search: bool | None = None,
) -> SegmentRun:
    """``segment_files`` with the benchmarks' variants; the defaults are the production path.

    Args:
        model: prepared for ``device``.
        faces: face PNGs, one size.
        masks: where each face's mask goes.
        resolution: output size R.
        device: where the model is.
        batch_size: faces per forward pass (padded on CUDA).
        precision: ``bf16`` or ``fp32``, as ``segment_files`` takes it.
        processes: loader processes instead of threads; -1: one per core but one.
        device_resize: on CUDA, resize on the device (:func:`device_input`) instead of with
            PIL on the loaders; the resize then counts as input wait.
        search: cuDNN's algorithm search; None: ``search_pays(precision)``.
    """
    on_cuda = device.type == "cuda"
    host_resize = not (on_cuda and device_resize)
    threads = default_loader_threads()
    batches: Iterator[Batch]
    if processes:
        workers = processes if processes > 0 else default_loader_processes()
        workers = min(workers, -(-len(faces) // batch_size))  # no idle workers to start
        batches = process_batches(faces, host_resize, batch_size, workers, on_cuda, on_cuda)
    else:

        def load(item: Any) -> np.ndarray:
            face = read_face(item)
            return published_input(face) if host_resize else face

        batches = thread_batches(faces, load, batch_size, threads, pin=on_cuda, pad=on_cuda)
    if not host_resize:
        # The copy and the resize are queued before the model's work on the same stream, so the
        # loader's buffer is free again once the batch's masks are back.
        batches = ((i, device_input(b.to(device, non_blocking=True))) for i, b in batches)
    timings: dict[str, float] = {}
    with (
        MaskWriter(masks, threads, 2 * batch_size) as writer,
        cudnn_search(search_pays(precision) if search is None else search),
    ):
        for indices, labels in segment_batches(
            model, batches, resolution, device, precision, timings
        ):
            writer.save(indices, labels)
        return writer.finish(timings)

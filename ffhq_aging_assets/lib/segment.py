"""Batched face parsing: RGB uint8 faces in, (N, R, R) uint8 class maps out.

The published preprocessing (PIL bilinear resize to 513 x 513, ImageNet normalisation, argmax,
PIL nearest resize to R) is followed exactly: loader threads decode and resize with PIL while
the previous batch computes, on every device. On CUDA the faces go straight into page-locked
batch buffers, normalisation runs on the device, and batches are padded to one fixed size: one
shape, one compilation. The model itself, its device and precision: ``segment_model``.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ffhq_aging_assets.lib.masks import write_mask
from ffhq_aging_assets.lib.precision import PRECISIONS, search_pays
from ffhq_aging_assets.lib.segment_input import published_input, read_face
from ffhq_aging_assets.lib.segment_loader import Batch, default_loader_threads, thread_batches
from ffhq_aging_assets.lib.segment_model import (
    cudnn_search,
    prepare_model,
    resolve_device,
    segment_batch,
)


def _lap(spent: dict[str, float], key: str, since: float) -> float:
    now = time.perf_counter()
    spent[key] = spent.get(key, 0.0) + now - since
    return now


def segment_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    resolution: int,
    device: torch.device,
    precision: str,
    timings: dict[str, float],
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Each batch's indices and class maps (padding rows dropped), as the model makes them.

    ``model`` is prepared for ``device``. Seconds are added to ``timings``: ``input_wait``
    (the model waiting for decoded faces), ``model`` (a batch on the device, copies included)
    and ``on_batch`` (the consumer's time between batches): which of them dominates says what
    bounds the run.
    """
    clock = time.perf_counter()
    for indices, batch in batches:
        clock = _lap(timings, "input_wait", clock)
        masks = segment_batch(model, batch, resolution, device, precision)[: len(indices)]
        clock = _lap(timings, "model", clock)
        yield indices, masks
        clock = _lap(timings, "on_batch", clock)


def segment_images(
    model: nn.Module,
    images: Sequence[np.ndarray | Path],
    resolution: int,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    *,
    prepared: bool = False,
    loader_threads: int = 0,
    on_batch: Callable[[list[int], np.ndarray], None] | None = None,
    timings: dict[str, float] | None = None,
    precision: str = "bf16",
) -> np.ndarray:
    """Class maps of RGB uint8 faces (arrays, or paths of PNGs) through the published pipeline.

    Args:
        model: a DeepLab as loaded by ``load_deeplab`` (folded here unless ``prepared``).
        images: (H, W, 3) uint8 arrays or image paths, all of one size on CUDA.
        resolution: output size R.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: images per forward pass; on CUDA every pass has exactly this many (the
            last one padded), so a compiled model sees one shape.
        prepared: the model already went through ``prepare_model`` for this device.
        loader_threads: threads decoding and resizing ahead of the model (0: one per core).
        on_batch: called with each batch's indices and masks as soon as they exist.
        timings: if given, seconds are added to it as :func:`segment_batches` says.
        precision: on CUDA, ``bf16`` (autocast) or ``fp32`` (strict, the published numerics);
            cuDNN searches for its algorithms where ``search_pays``.

    Returns:
        (N, R, R) uint8 class ids, 0..18.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if not prepared:
        model = prepare_model(model, dev)
    on_device = dev.type == "cuda"
    out = np.zeros((len(images), resolution, resolution), np.uint8)
    if not len(images):
        return out

    def load(item: Any) -> np.ndarray:
        return published_input(read_face(item))

    threads = loader_threads or default_loader_threads()
    batches = thread_batches(images, load, batch_size, threads, pin=on_device, pad=on_device)
    spent: dict[str, float] = timings if timings is not None else {}
    with cudnn_search(search_pays(precision)):
        for indices, masks in segment_batches(model, batches, resolution, dev, precision, spent):
            out[indices] = masks
            if on_batch is not None:
                on_batch(indices, masks)
    return out


@dataclass(frozen=True)
class SegmentRun:
    """What :func:`segment_files` did: masks written and where the time went."""

    masks: int
    seconds: float
    first_batch_seconds: float
    input_wait_seconds: float = 0.0
    model_seconds: float = 0.0
    write_wait_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Masks per second over the whole call, first batch (and any compilation) included."""
        return self.masks / self.seconds if self.seconds > 0 else 0.0


class MaskWriter:
    """Writes class maps to their mask paths on a pool of threads as batches come out.

    Each mask is encoded and written (temporary name, then rename) while the model computes
    the next batch; at most ``backlog`` masks wait, so memory stays bounded. Leaving the block
    waits for every mask handed over, so a failure later in the chunk keeps them all.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        threads: int,
        backlog: int,
        on_progress: Callable[[int, float], None] | None = None,
    ) -> None:
        self.paths = paths
        self.backlog = backlog
        self.on_progress = on_progress
        self.start = time.perf_counter()
        self.first_batch_seconds = 0.0
        self._writes: list[cf.Future] = []
        self._pool = cf.ThreadPoolExecutor(max_workers=threads)

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def save(self, indices: list[int], labels: np.ndarray) -> None:
        """Hand one batch's masks (``indices`` into ``paths``) to the writers."""
        if not self.first_batch_seconds:
            self.first_batch_seconds = time.perf_counter() - self.start
        self._writes.extend(
            self._pool.submit(write_mask, label, self.paths[i])
            for i, label in zip(indices, labels, strict=True)
        )
        for write in self._writes[: max(0, len(self._writes) - self.backlog)]:
            write.result()
        if self.on_progress is not None:
            written = sum(w.done() for w in self._writes)
            self.on_progress(written, time.perf_counter() - self.start)

    def finish(self, timings: dict[str, float]) -> SegmentRun:
        """Wait for every write; the run, with the ``timings`` of :func:`segment_batches`."""
        drain = time.perf_counter()
        for write in self._writes:
            write.result()
        drain = time.perf_counter() - drain
        return SegmentRun(
            masks=len(self._writes),
            seconds=time.perf_counter() - self.start,
            first_batch_seconds=self.first_batch_seconds,
            input_wait_seconds=timings.get("input_wait", 0.0),
            model_seconds=timings.get("model", 0.0),
            write_wait_seconds=timings.get("on_batch", 0.0) + drain,
        )


def segment_files(
    model: nn.Module,
    faces: Sequence[Path],
    masks: Sequence[Path],
    resolution: int,
    device: torch.device,
    batch_size: int,
    *,
    threads: int = 0,
    on_progress: Callable[[int, float], None] | None = None,
    precision: str = "bf16",
) -> SegmentRun:
    """Segment face PNGs and write each class map to its mask path as soon as it exists.

    ``model`` is prepared for ``device`` (``prepare_model``). Masks are written by a
    :class:`MaskWriter` while the model computes the next batch, so a failure later in the
    chunk keeps every mask already written. ``on_progress`` gets the number written so far and
    the elapsed seconds after each batch.
    """
    if len(faces) != len(masks):
        raise ValueError(f"{len(faces)} faces but {len(masks)} mask paths")
    threads = threads or default_loader_threads()
    timings: dict[str, float] = {}
    # About two batches of masks may wait to be written.
    with MaskWriter(masks, threads, 2 * batch_size, on_progress) as writer:
        segment_images(
            model,
            faces,
            resolution,
            device,
            batch_size,
            prepared=True,
            loader_threads=threads,
            on_batch=writer.save,
            timings=timings,
            precision=precision,
        )
        return writer.finish(timings)


def fidelity(
    model: nn.Module,
    faces: Sequence[np.ndarray | Path],
    resolution: int,
    device: torch.device,
    batch_size: int,
) -> float:
    """Pixel agreement of the bf16 path's masks with strict fp32 masks of the same faces.

    ``model`` is prepared for ``device`` (compiled or not); the fp32 masks come from the same
    folded weights run eagerly, the published numerics. With trained weights the two agree
    on nearly every pixel; a low figure means the bf16 masks are not the published ones.
    """
    faces = [read_face(face) for face in faces]  # decoded once, for both passes
    fast = segment_images(model, faces, resolution, device, batch_size, prepared=True)
    eager = getattr(model, "_orig_mod", model)  # what torch.compile wrapped
    exact = segment_images(
        eager, faces, resolution, device, len(faces), prepared=True, precision="fp32"
    )
    return float((fast == exact).mean())

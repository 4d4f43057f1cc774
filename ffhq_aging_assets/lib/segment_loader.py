"""Loader threads: faces decoded (and resized) into rotating batch buffers ahead of the model.

Threads, not processes: on a GPU machine loader processes fed the model faster once running,
but starting them delayed a 1,000-face chunk's first batch by more than they saved
(docs/benchmarks.md).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ffhq_aging_assets.lib.cpus import usable_cpus
from ffhq_aging_assets.lib.segment_input import face_size_error

Batch = tuple[list[int], torch.Tensor]


def default_loader_threads() -> int:
    """Threads decoding faces (and in ``segment_files`` encoding masks): one per CPU, 2-16."""
    return max(2, min(16, usable_cpus()))


def thread_batches(
    items: Sequence,
    load: Callable[[object], np.ndarray],
    batch_size: int,
    workers: int,
    ahead: int = 2,
    pin: bool = True,
    pad: bool = True,
) -> Iterator[Batch]:
    """Loader threads decode (and resize) each face into a batch buffer (``pin``: page-locked).

    ``ahead + 1`` buffers rotate, so decoding runs up to ``ahead`` batches in front of the
    model with no stacking or pinning copy on the consumer's thread. With ``pad`` every batch
    has exactly ``batch_size`` rows: a short last one repeats its last face (the indices name
    only real items). The consumer must be done with a buffer (its host-to-device copy
    finished) before asking for the next batch; ``segment_batch`` returns only after the
    masks are back.
    """
    first = load(items[0])
    shape = first.shape
    buffers = [
        torch.empty((batch_size, *shape), dtype=torch.uint8, pin_memory=pin)
        for _ in range(ahead + 1)
    ]

    def fill(buffer: torch.Tensor, row: int, index: int) -> None:
        face = first if index == 0 else load(items[index])
        if face.shape != shape:
            raise face_size_error(items[index], face.shape, shape)
        buffer.numpy()[row] = face

    def ready(chunk: list[int], buffer: torch.Tensor, futures: list[cf.Future]) -> Batch:
        for future in futures:
            future.result()
        if not pad:
            return chunk, buffer[: len(chunk)]
        buffer[len(chunk) :] = buffer[len(chunk) - 1]
        return chunk, buffer

    queue: list = []
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        for number, start in enumerate(range(0, len(items), batch_size)):
            chunk = list(range(start, min(start + batch_size, len(items))))
            buffer = buffers[number % len(buffers)]
            queue.append(
                (chunk, buffer, [pool.submit(fill, buffer, r, i) for r, i in enumerate(chunk)])
            )
            if len(queue) > ahead:
                yield ready(*queue.pop(0))
        while queue:
            yield ready(*queue.pop(0))

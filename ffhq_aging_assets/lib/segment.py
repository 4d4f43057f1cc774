"""Batched face parsing: RGB uint8 faces in, (N, R, R) uint8 class maps out.

The published preprocessing (PIL bilinear resize to 513 x 513, ImageNet normalisation, argmax,
PIL nearest resize to R) is followed exactly on the CPU, in fp32, with images decoded and
resized by loader threads while the previous batch computes. On CUDA the resize (antialiased
like PIL's when it shrinks) and normalisation run on the device, the model runs channels-last
under bf16 autocast, optionally compiled by ``torch.compile`` with inductor's caches in a
persistent folder, so that the next step, a fresh process, loads the compiled kernels instead
of compiling again. Batches on CUDA are padded to one fixed size: one shape, one compilation.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ffhq_aging_assets.lib.deeplab import fold_weight_standardization
from ffhq_aging_assets.lib.masks import write_mask

log = logging.getLogger(__name__)

INPUT_SIZE = 513
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_loader_threads() -> int:
    """Threads decoding faces (and in :func:`segment_files` encoding masks): one per core, 2-16."""
    return max(2, min(16, os.cpu_count() or 2))


def prepare_model(
    model: nn.Module,
    device: torch.device,
    *,
    compile: bool = False,
    cache_dir: Path | None = None,
) -> nn.Module:
    """Fold weight standardisation into the weights, move to ``device``, eval mode.

    On CUDA also channels-last, the layout its convolution kernels prefer, with cuDNN choosing
    its fastest algorithm for the (fixed) batch shape. ``compile`` wraps the result in
    :func:`compile_model`; compilation itself happens on the first batch.
    """
    model = fold_weight_standardization(model).eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = compile_model(model, cache_dir)
    return model


def compile_model(model: nn.Module, cache_dir: Path | None = None) -> nn.Module:
    """``torch.compile`` with inductor's on-disk caches in ``cache_dir``.

    Inductor keeps its compiled graphs (FX graph cache, AOT autograd cache) and the Triton
    kernels under ``TORCHINDUCTOR_CACHE_DIR``; pointing that at a folder that outlives the
    process lets every later step with the same model, shapes, GPU type and torch version load
    the kernels rather than compile them. The setting is process-wide: the folder of the first
    compilation in a process is the one its later compilations use.
    """
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())
    return torch.compile(model, dynamic=False)


def nearest_indices(size: int, out: int) -> np.ndarray:
    """Source rows PIL's nearest resize from ``size`` to ``out`` reads: floor((i + .5) * s / o)."""
    return np.minimum(((np.arange(out) + 0.5) * size / out).astype(np.int64), size - 1)


def published_input(image: np.ndarray) -> np.ndarray:
    """PIL bilinear resize of an RGB uint8 face to 513 x 513 (still uint8, HWC)."""
    img = PIL.Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    return np.array(img.resize((INPUT_SIZE, INPUT_SIZE), PIL.Image.Resampling.BILINEAR))


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC at 513 -> normalised float NCHW."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def device_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC faces at any size -> 513 x 513 on the device, rounded as PIL's uint8 resize."""
    x = batch.permute(0, 3, 1, 2).float()
    # PIL widens its triangle filter when it shrinks (1024 -> 513); antialias=True does the same.
    x = F.interpolate(
        x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
    )
    return x.round_().clamp_(0, 255).permute(0, 2, 3, 1)


@torch.inference_mode()
def segment_batch(
    model: nn.Module,
    batch: torch.Tensor,
    resolution: int,
    device: torch.device,
    resized: bool,
) -> np.ndarray:
    """Class maps of one batch: NHWC uint8 (at 513 when ``resized``) -> (N, R, R) uint8."""
    batch = batch.to(device, non_blocking=True)
    if not resized:
        batch = device_input(batch)
    x = normalize(batch)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
    else:
        logits = model(x)
    idx = torch.from_numpy(nearest_indices(INPUT_SIZE, resolution)).to(device)
    labels = logits.argmax(dim=1)
    return labels[:, idx][:, :, idx].to(torch.uint8).cpu().numpy()


def _batches(
    items: Sequence,
    load: Callable[[object], np.ndarray],
    batch_size: int,
    workers: int,
    pad: bool,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Decode and prepare items on loader threads, one batch ahead of the consumer.

    With ``pad`` a short last batch repeats its last item up to ``batch_size``: the indices
    name only the real items, which come first.
    """
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:

        def ready(chunk: list[int], futures: list[cf.Future]) -> tuple[list[int], np.ndarray]:
            arrays = [f.result() for f in futures]
            if pad:
                arrays += [arrays[-1]] * (batch_size - len(arrays))
            return chunk, np.stack(arrays)

        pending = None
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            futures = [pool.submit(load, items[i]) for i in chunk]
            if pending is not None:
                yield ready(*pending)
            pending = (chunk, futures)
        if pending is not None:
            yield ready(*pending)


def _read_face(item: np.ndarray | str | Path) -> np.ndarray:
    """An RGB uint8 array from an array or an image file; a file that fails is named."""
    if not isinstance(item, (str, Path)):
        return np.asarray(item)
    try:
        with PIL.Image.open(item) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{item}: cannot read this face: {exc}") from exc


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
) -> np.ndarray:
    """Class maps of RGB uint8 faces (arrays, or paths of PNGs) through the published pipeline.

    Args:
        model: a DeepLab as loaded by ``load_deeplab`` (folded here unless ``prepared``).
        images: (H, W, 3) uint8 arrays or image paths, all of one size on CUDA.
        resolution: output size R.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: images per forward pass; on CUDA every pass has exactly this many (the
            last one padded), so a compiled model sees one shape.
        prepared: the model already went through :func:`prepare_model` for this device.
        loader_threads: threads decoding and resizing ahead of the model (0: one per core).
        on_batch: called with each batch's indices and masks as soon as they exist.

    Returns:
        (N, R, R) uint8 class ids, 0..18.
    """
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if not prepared:
        model = prepare_model(model, dev)
    on_device = dev.type == "cuda"

    def load(item: np.ndarray | Path) -> np.ndarray:
        arr = _read_face(item)
        return arr if on_device else published_input(arr)

    out = np.zeros((len(images), resolution, resolution), np.uint8)
    threads = loader_threads or default_loader_threads()
    for indices, batch in _batches(images, load, batch_size, threads, pad=on_device):
        tensor = torch.from_numpy(batch)
        if on_device:
            tensor = tensor.pin_memory()
        masks = segment_batch(model, tensor, resolution, dev, resized=not on_device)
        masks = masks[: len(indices)]
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

    @property
    def images_per_second(self) -> float:
        """Masks per second over the whole call, first batch (and any compilation) included."""
        return self.masks / self.seconds if self.seconds > 0 else 0.0


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
) -> SegmentRun:
    """Segment face PNGs and write each class map to its mask path as soon as it exists.

    ``model`` is prepared for ``device`` (:func:`prepare_model`). Masks are encoded and written
    (temporary name, then rename) on a pool of threads while the model computes the next batch,
    so a failure later in the chunk keeps every mask already written. ``on_progress`` gets the
    number written so far and the elapsed seconds after each batch.
    """
    if len(faces) != len(masks):
        raise ValueError(f"{len(faces)} faces but {len(masks)} mask paths")
    threads = threads or default_loader_threads()
    start = time.perf_counter()
    first = [0.0]
    written = [0]
    in_flight: list[cf.Future] = []
    with cf.ThreadPoolExecutor(max_workers=threads) as writers:

        def save(indices: list[int], labels: np.ndarray) -> None:
            if not first[0]:
                first[0] = time.perf_counter() - start
            in_flight.extend(
                writers.submit(write_mask, label, masks[i])
                for i, label in zip(indices, labels, strict=True)
            )
            # Keep at most about two batches of masks waiting to be written.
            while len(in_flight) > 2 * batch_size:
                in_flight.pop(0).result()
                written[0] += 1
            if on_progress is not None:
                on_progress(written[0], time.perf_counter() - start)

        segment_images(
            model,
            faces,
            resolution,
            device,
            batch_size,
            prepared=True,
            loader_threads=threads,
            on_batch=save,
        )
        for future in in_flight:
            future.result()
            written[0] += 1
    return SegmentRun(written[0], time.perf_counter() - start, first[0])


def published_loop(
    model: nn.Module, images: Sequence[np.ndarray], resolution: int, device: str = "cpu"
) -> np.ndarray:
    """The 2020 script's loop: one image at a time, fp32, weights standardised every forward.

    Kept as the baseline the benchmarks compare against and the tests check the engine with.
    """
    dev = torch.device(device)
    model = model.eval().to(dev)
    out = []
    with torch.no_grad():
        for image in images:
            x = normalize(torch.from_numpy(published_input(image))[None].to(dev))
            labels = model(x).argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            pil = PIL.Image.fromarray(labels).resize((resolution, resolution), PIL.Image.NEAREST)
            out.append(np.asarray(pil))
    return np.stack(out)

"""Batched face parsing: RGB uint8 faces in, (N, R, R) uint8 class maps out.

The published preprocessing (PIL bilinear resize to 513 x 513, ImageNet normalisation, argmax,
PIL nearest resize to R) is followed exactly on the CPU, in fp32, with images decoded and
resized by loader threads while the previous batch computes. On CUDA the resize and
normalisation run on the device, and the model runs channels-last under bf16 autocast.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ffhq_aging_assets.lib.deeplab import fold_weight_standardization

log = logging.getLogger(__name__)

INPUT_SIZE = 513
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Fold weight standardisation into the weights, move to ``device``, eval mode.

    On CUDA also channels-last, the layout its convolution kernels prefer.
    """
    model = fold_weight_standardization(model).eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def nearest_indices(size: int, out: int) -> np.ndarray:
    """Source rows PIL's nearest resize from ``size`` to ``out`` reads: floor((i + .5) * s / o)."""
    return np.minimum(((np.arange(out) + 0.5) * size / out).astype(np.int64), size - 1)


def published_input(image: np.ndarray) -> np.ndarray:
    """PIL bilinear resize of an RGB uint8 face to 513 x 513 (still uint8, HWC)."""
    img = PIL.Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    return np.array(img.resize((INPUT_SIZE, INPUT_SIZE), PIL.Image.Resampling.BILINEAR))


def _normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC at 513 -> normalised float NCHW."""
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _device_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC faces at any size -> 513 x 513 on the device, rounded as PIL's uint8 resize."""
    x = batch.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
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
        batch = _device_input(batch)
    x = _normalize(batch)
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
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Decode and prepare items on loader threads, one batch ahead of the consumer."""
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        starts = list(range(0, len(items), batch_size))
        pending = None
        for start in starts:
            chunk = list(range(start, min(start + batch_size, len(items))))
            future = [pool.submit(load, items[i]) for i in chunk]
            if pending is not None:
                yield pending[0], np.stack([f.result() for f in pending[1]])
            pending = (chunk, future)
        if pending is not None:
            yield pending[0], np.stack([f.result() for f in pending[1]])


def segment_images(
    model: nn.Module,
    images: Sequence[np.ndarray | Path],
    resolution: int,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    *,
    prepared: bool = False,
    loader_threads: int = 4,
    on_batch: Callable[[list[int], np.ndarray], None] | None = None,
) -> np.ndarray:
    """Class maps of RGB uint8 faces (arrays, or paths of PNGs) through the published pipeline.

    Args:
        model: a DeepLab as loaded by ``load_deeplab`` (folded here unless ``prepared``).
        images: (H, W, 3) uint8 arrays or image paths.
        resolution: output size R.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: images per forward pass.
        prepared: the model already went through :func:`prepare_model` for this device.
        loader_threads: threads decoding and resizing ahead of the model.
        on_batch: called with each batch's indices and masks as soon as they exist.

    Returns:
        (N, R, R) uint8 class ids, 0..18.
    """
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if not prepared:
        model = prepare_model(model, dev)
    on_device = dev.type == "cuda"

    def load(item: np.ndarray | Path) -> np.ndarray:
        if isinstance(item, (str, Path)):
            with PIL.Image.open(item) as img:
                arr = np.asarray(img.convert("RGB"))
        else:
            arr = np.asarray(item)
        return arr if on_device else published_input(arr)

    out = np.zeros((len(images), resolution, resolution), np.uint8)
    for indices, batch in _batches(images, load, batch_size, loader_threads):
        tensor = torch.from_numpy(batch)
        if on_device:
            tensor = tensor.pin_memory()
        masks = segment_batch(model, tensor, resolution, dev, resized=not on_device)
        out[indices] = masks
        if on_batch is not None:
            on_batch(indices, masks)
    return out


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
            x = _normalize(torch.from_numpy(published_input(image))[None].to(dev))
            labels = model(x).argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            pil = PIL.Image.fromarray(labels).resize((resolution, resolution), PIL.Image.NEAREST)
            out.append(np.asarray(pil))
    return np.stack(out)

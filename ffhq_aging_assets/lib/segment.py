"""Batched face parsing: RGB uint8 faces in, (N, R, R) uint8 class maps out.

The published preprocessing (PIL bilinear resize to 513 x 513, ImageNet normalisation, argmax,
PIL nearest resize to R) is followed exactly: loader threads decode and resize with PIL while
the previous batch computes, on every device. The CPU computes in fp32. On CUDA the faces go
straight into page-locked batch buffers, normalisation runs on the device, and the model runs
channels-last under bf16 autocast (or strict fp32), optionally compiled by ``torch.compile``
with inductor's caches in a persistent folder, so that the next step, a fresh process, loads
the compiled kernels instead of compiling again. Batches on CUDA are padded to one fixed
size: one shape, one compilation.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ffhq_aging_assets.lib.deeplab import fold_weight_standardization
from ffhq_aging_assets.lib.gates import FIDELITY_BAR
from ffhq_aging_assets.lib.masks import write_mask

INPUT_SIZE = 513
PRECISIONS = ("bf16", "fp32")
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
    channels_last: bool = True,
) -> nn.Module:
    """Fold weight standardisation into the weights, move to ``device``, eval mode.

    On CUDA also channels-last (unless ``channels_last`` is false), the layout the tensor-core
    convolution kernels of bf16 prefer; :func:`forward` gives the input the model's layout.
    ``compile`` wraps the result in :func:`compile_model`; compilation itself happens on the
    first batch.
    """
    model = fold_weight_standardization(model).eval().to(device)
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = compile_model(model, cache_dir)
    return model


@contextlib.contextmanager
def cudnn_search(on: bool) -> Iterator[None]:
    """Switch cuDNN's algorithm search (``cudnn.benchmark``) on or off inside the block."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def search_pays(precision: str) -> bool:
    """Whether cuDNN's algorithm search pays for itself within a chunk, by precision.

    Measured on an H200 (docs/benchmarks.md): in bf16 the search costs well under a second;
    in strict fp32 it took 34-42 s on the first batch of a chunk, far more than a
    1,000-face chunk can win back.
    """
    return precision == "bf16"


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Run cuDNN and cuBLAS in IEEE fp32 (no TF32) inside the block: the published numerics."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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
    return cast(nn.Module, torch.compile(model, dynamic=False))


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


def forward(model: nn.Module, x: torch.Tensor, precision: str = "bf16") -> torch.Tensor:
    """The model's logits for normalised NCHW ``x``, computed as the engine computes them.

    On CUDA: in the model's layout (channels-last unless prepared otherwise), under bf16
    autocast (``bf16``) or in strict fp32 (``fp32``, TF32 off for the call). The CPU always
    computes in fp32.
    """
    if x.device.type != "cuda":
        return model(x)
    weight = next(p for p in model.parameters() if p.dim() == 4)
    if weight.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    if precision == "bf16":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)
    with strict_fp32():
        return model(x)


@torch.inference_mode()
def segment_batch(
    model: nn.Module,
    batch: torch.Tensor,
    resolution: int,
    device: torch.device,
    resized: bool,
    precision: str = "bf16",
) -> np.ndarray:
    """Class maps of one batch: NHWC uint8 (at 513 when ``resized``) -> (N, R, R) uint8.

    ``precision`` as in :func:`forward`.
    """
    batch = batch.to(device, non_blocking=True)
    if not resized:
        batch = device_input(batch)
    logits = forward(model, normalize(batch), precision)
    idx = torch.from_numpy(nearest_indices(INPUT_SIZE, resolution)).to(device)
    labels = logits.argmax(dim=1)
    return labels[:, idx][:, :, idx].to(torch.uint8).cpu().numpy()


def _thread_batches(
    items: Sequence,
    load: Callable[[object], np.ndarray],
    batch_size: int,
    workers: int,
    ahead: int = 2,
    pin: bool = True,
    pad: bool = True,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Loader threads decode (and resize) each face into a batch buffer (``pin``: page-locked).

    ``ahead + 1`` buffers rotate, so decoding runs up to ``ahead`` batches in front of the
    model with no stacking or pinning copy on the consumer's thread. With ``pad`` every batch
    has exactly ``batch_size`` rows: a short last one repeats its last face (the indices name
    only real items). The consumer must be done with a buffer (its host-to-device copy
    finished) before asking for the next batch; :func:`segment_batch` returns only after the
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
            raise _size_error(items[index], face.shape, shape)
        buffer.numpy()[row] = face

    def ready(chunk: list[int], buffer: torch.Tensor, futures: list[cf.Future]):
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


class _Faces(torch.utils.data.Dataset):
    """Face files for loader processes: item ``i`` is ``(i, uint8 HWC tensor)``."""

    def __init__(self, paths: Sequence[Path], resize: bool) -> None:
        self.paths = list(paths)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        face = _read_face(self.paths[index])
        # Both give a new, writable array (PIL's arrays are read-only views).
        face = published_input(face) if self.resize else np.array(face)
        return index, torch.from_numpy(face)

    def collate(self, rows: list[tuple[int, torch.Tensor]]) -> tuple[list[int], torch.Tensor]:
        """Stack one batch; a face of another size than the batch's first is named."""
        shape = rows[0][1].shape
        for index, face in rows:
            if face.shape != shape:
                raise _size_error(self.paths[index], face.shape, shape)
        return [index for index, _ in rows], torch.stack([face for _, face in rows])


def _process_batches(
    paths: Sequence[Path],
    resize: bool,
    batch_size: int,
    workers: int,
    pin: bool = True,
    pad: bool = True,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Loader processes decode (and resize) whole batches of face files (opt-in).

    Decoding threads share the interpreter lock with the thread that launches the model's
    kernels; processes do not, but take seconds to start (see ``segment_images``). Batches
    come back through shared memory, are pinned by the loader's own thread (``pin``), and with
    ``pad`` a short last batch repeats its last face up to ``batch_size`` (the indices name
    only real items).
    """
    faces = _Faces(paths, resize)
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


def default_loader_processes() -> int:
    """Loader processes for ``-1``: one per core but one (for the model's thread), 1 to 16."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def _lap(spent: dict[str, float], key: str, since: float) -> float:
    now = time.perf_counter()
    spent[key] += now - since
    return now


def _size_error(item: object, found: tuple[int, ...], expected: tuple[int, ...]) -> ValueError:
    name = str(item) if isinstance(item, (str, Path)) else "an array"
    return ValueError(
        f"{name}: a {found[1]}x{found[0]} face among {expected[1]}x{expected[0]} ones; "
        "a batch holds faces of one size"
    )


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
    timings: dict[str, float] | None = None,
    precision: str = "bf16",
    resize: str = "host",
    loader_processes: int = 0,
    search: bool | None = None,
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
        loader_threads: threads decoding and resizing ahead of the model (0: one per core);
            on CUDA they serve faces given as arrays.
        loader_processes: processes decoding face files ahead of the model instead of
            threads; -1: one per core but one; 0 (default): threads. Processes keep decoding
            off the interpreter lock the model's thread needs and feed an H200 faster once
            running (about 180 against 125 faces/s), but starting them delays the first batch
            by 6-8 s: on a 1,000-face chunk threads finished first, eager or compiled
            (docs/benchmarks.md). For runs of many thousands of faces in one process.
        search: on CUDA, cuDNN's algorithm search for this call; None: :func:`search_pays`.
        on_batch: called with each batch's indices and masks as soon as they exist.
        precision: on CUDA, ``bf16`` (autocast) or ``fp32`` (strict, the published numerics).
        resize: on CUDA, ``host`` (PIL on the loader threads: the published arithmetic, and a
            quarter of the upload at 1024) or ``device`` (antialiased bilinear on the GPU,
            within one grey level of PIL). The CPU always resizes with PIL.
        timings: if given, seconds are added to its ``input_wait`` (the model waiting for
            decoded faces), ``model`` (a batch on the device, copies included) and
            ``on_batch`` keys: which of them dominates says what bounds the run.

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
    threads = loader_threads or default_loader_threads()
    if resize not in ("host", "device"):
        raise ValueError(f"resize {resize!r}: expected host or device")
    on_host = not on_device or resize == "host"

    def load(item: Any) -> np.ndarray:
        face = _read_face(item)
        return published_input(face) if on_host else face

    files = all(isinstance(item, (str, Path)) for item in images)
    if files and loader_processes:
        processes = loader_processes if loader_processes > 0 else default_loader_processes()
        processes = min(processes, -(-len(images) // batch_size))  # no idle workers to start
        paths = [Path(cast(Path, item)) for item in images]
        batches = _process_batches(
            paths, on_host, batch_size, processes, pin=on_device, pad=on_device
        )
    else:
        batches = _thread_batches(images, load, batch_size, threads, pin=on_device, pad=on_device)
    spent = dict.fromkeys(("input_wait", "model", "on_batch"), 0.0)
    clock = time.perf_counter()
    with cudnn_search(search_pays(precision) if search is None else search):
        for indices, batch in batches:
            clock = _lap(spent, "input_wait", clock)
            masks = segment_batch(model, batch, resolution, dev, on_host, precision)
            masks = masks[: len(indices)]
            out[indices] = masks
            clock = _lap(spent, "model", clock)
            if on_batch is not None:
                on_batch(indices, masks)
            clock = _lap(spent, "on_batch", clock)
    if timings is not None:
        for key, value in spent.items():
            timings[key] = timings.get(key, 0.0) + value
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
    resize: str = "host",
    loader_processes: int = 0,
    search: bool | None = None,
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
    writes: list[cf.Future] = []
    with cf.ThreadPoolExecutor(max_workers=threads) as writers:

        def save(indices: list[int], labels: np.ndarray) -> None:
            if not first[0]:
                first[0] = time.perf_counter() - start
            writes.extend(
                writers.submit(write_mask, label, masks[i])
                for i, label in zip(indices, labels, strict=True)
            )
            # Keep at most about two batches of masks waiting to be written.
            for write in writes[: max(0, len(writes) - 2 * batch_size)]:
                write.result()
            if on_progress is not None:
                on_progress(sum(w.done() for w in writes), time.perf_counter() - start)

        timings: dict[str, float] = {}
        segment_images(
            model,
            faces,
            resolution,
            device,
            batch_size,
            prepared=True,
            loader_threads=threads,
            on_batch=save,
            timings=timings,
            precision=precision,
            resize=resize,
            loader_processes=loader_processes,
            search=search,
        )
        drain = time.perf_counter()
        for write in writes:
            write.result()
        drain = time.perf_counter() - drain
    return SegmentRun(
        masks=len(writes),
        seconds=time.perf_counter() - start,
        first_batch_seconds=first[0],
        input_wait_seconds=timings.get("input_wait", 0.0),
        model_seconds=timings.get("model", 0.0),
        write_wait_seconds=timings.get("on_batch", 0.0) + drain,
    )


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
    faces = [_read_face(face) for face in faces]  # decoded once, for both passes
    fast = segment_images(model, faces, resolution, device, batch_size, prepared=True)
    eager = getattr(model, "_orig_mod", model)  # what torch.compile wrapped
    exact = segment_images(
        eager, faces, resolution, device, len(faces), prepared=True, precision="fp32"
    )
    return float((fast == exact).mean())


def choose_precision(agreement: float | None, bar: float = FIDELITY_BAR) -> str:
    """``auto``: bf16 where its masks agreed with fp32 on at least ``bar``, else fp32.

    No measurement (no faces sampled) keeps fp32: bf16 is taken only on evidence.
    """
    return "bf16" if agreement is not None and agreement >= bar else "fp32"


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
            pil = PIL.Image.fromarray(labels).resize(
                (resolution, resolution), PIL.Image.Resampling.NEAREST
            )
            out.append(np.asarray(pil))
    return np.stack(out)

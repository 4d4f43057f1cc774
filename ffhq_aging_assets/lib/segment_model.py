"""The segmentation model on its device: which device, its batch, preparation, one forward.

The model's weights are folded once (no weight standardisation per forward). On CUDA it runs
channels-last under bf16 autocast or in strict fp32, optionally compiled by ``torch.compile``
with inductor's caches in a persistent folder, so that the next step, a fresh process, loads
the compiled kernels instead of compiling again (ahead-of-time packages: ``segment_aot``). The
CPU computes in fp32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from ffhq_aging_assets.lib.deeplab import fold_weight_standardization
from ffhq_aging_assets.lib.gpu_claim import claim_one, claims_folder
from ffhq_aging_assets.lib.segment_input import INPUT_SIZE, nearest_indices, normalize

CUDA_BATCH = 32
# One face per pass on the CPU: a batch of 4 at 513 x 513 has activations over glibc's largest
# mmap threshold (32 MB), so every pass maps and faults in fresh pages (100-350 MB a face, up
# to a fifth of a second of kernel time), a cost that follows the VM's memory state. At 1 every
# buffer is reused from the heap, the first masks come sooner and they equal the published
# loop's; throughput is the same within a few percent (docs/benchmarks.md).
CPU_BATCH = 1


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit_cpu_threads(cpus: int) -> int:
    """Lower torch's CPU threads to ``cpus`` (never raise them); returns the threads now used.

    OpenMP sizes torch's pool by the CPUs the process is pinned to, not by a cgroup CPU quota:
    in a container allowed 2 CPUs of a 64-core host it would start 32 threads that take turns.
    """
    if torch.get_num_threads() > cpus >= 1:
        torch.set_num_threads(cpus)
    return torch.get_num_threads()


@contextlib.contextmanager
def step_device(name: str, say: Callable[[str], None]) -> Iterator[str]:
    """The device a step computes on, held while the block runs.

    ``auto`` on a host with CUDA: a GPU claimed for the step (``gpu_claim``), so steps running
    at once take different GPUs, made the process's current device. Any other name (``cpu``,
    ``cuda:N``), or ``auto`` without CUDA, as it is: an explicit GPU is the user's choice.
    """
    if name != "auto" or not torch.cuda.is_available():
        yield name
        return
    gpus = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    with claim_one(gpus, claims_folder(), say) as index:
        torch.cuda.set_device(index)
        if len(gpus) > 1:
            say(f"GPU {index} of {len(gpus)} ({torch.cuda.get_device_name(index)}) for this step")
        yield f"cuda:{index}"


def batch_size_for(device: torch.device, requested: int) -> int:
    """The batch a step runs on ``device``: ``requested``, or the device's default for 0."""
    return requested or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)


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


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Run cuDNN and cuBLAS in IEEE fp32 (no TF32) inside the block: the published numerics."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def cudnn_search(on: bool) -> Iterator[None]:
    """Switch cuDNN's algorithm search (``cudnn.benchmark``) on or off inside the block."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def channels_last_of(model: nn.Module) -> bool:
    """Whether ``model`` wants its input channels-last: as it was built, or as its weights are."""
    built = getattr(model, "channels_last", None)
    if built is not None:
        return bool(built)
    weight = next(p for p in model.parameters() if p.dim() == 4)
    return weight.is_contiguous(memory_format=torch.channels_last)


def forward(model: nn.Module, x: torch.Tensor, precision: str = "bf16") -> torch.Tensor:
    """The model's logits for normalised NCHW ``x``, computed as the engine computes them.

    On CUDA: in the model's layout (channels-last unless prepared otherwise), under bf16
    autocast (``bf16``) or in strict fp32 (``fp32``, TF32 off for the call). The CPU always
    computes in fp32.
    """
    built = getattr(model, "precision", None)  # a compiled package runs one precision
    if built is not None and built != precision:
        raise ValueError(f"this model was compiled for {built}, not {precision}")
    if x.device.type != "cuda":
        return model(x)
    if channels_last_of(model):
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
    precision: str = "bf16",
) -> np.ndarray:
    """Class maps of one batch: NHWC faces at 513 (uint8) -> (N, R, R) uint8.

    ``precision`` as in :func:`forward`.
    """
    batch = batch.to(device, non_blocking=True)
    logits = forward(model, normalize(batch), precision)
    idx = torch.from_numpy(nearest_indices(INPUT_SIZE, resolution)).to(device)
    labels = logits.argmax(dim=1)
    return labels[:, idx][:, :, idx].to(torch.uint8).cpu().numpy()

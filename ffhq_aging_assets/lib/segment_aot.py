"""The segmentation model compiled ahead of time (AOTInductor), built once, loaded by every step.

``torch.compile`` compiles in the process that runs it; with its kernels cached on disk a
Dagster step, a fresh process, still spends about 10 s tracing and loading (docs/benchmarks.md).
An AOTInductor package is the whole compiled model (kernels, wrapper and folded weights) in
one file that a later process loads without tracing. Packages live under the root, one per
key: torch, CUDA and Triton versions, the device's name and compute capability, the batch
shape, precision, memory layout and the weights' digest. The first step that needs a package
builds it under a lock (two steps at once build it once), to a temporary name that is renamed
when complete, so a step killed mid-build leaves nothing that a later step loads.

A package holds compiled code that is loaded into the process, so it is as trusted as the
root it lives in: packages are only ever loaded from the root's own cache folder, by the name
this module gives them, never from a path that downloaded data names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ffhq_aging_assets.lib.segment import segment_images
from ffhq_aging_assets.lib.segment_input import INPUT_SIZE, read_face
from ffhq_aging_assets.lib.segment_model import channels_last_of, strict_fp32

# Bumped when what a package holds or how it is built changes: older packages are then unused.
PACKAGE_FORMAT = 1


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def package_key(
    device: torch.device, batch: int, precision: str, channels_last: bool, weights: str
) -> dict[str, object]:
    """Everything a package's compiled code depends on; another value means another package."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        capability = ".".join(map(str, torch.cuda.get_device_capability(index)))
    else:
        name, capability = "cpu", ""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {
        "format": PACKAGE_FORMAT,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "triton": triton_version,
        "device": name,
        "capability": capability,
        "input": [batch, 3, INPUT_SIZE, INPUT_SIZE],
        "precision": precision,
        "channels_last": channels_last,
        "weights": weights,
    }


def package_path(folder: Path, key: dict[str, object]) -> Path:
    """Where the package for ``key`` lives: readable settings, then a digest of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    batch = key["input"][0]  # type: ignore[index]
    layout = "nhwc" if key["channels_last"] else "nchw"
    return folder / f"deeplab-{key['precision']}-{layout}-b{batch}-{digest}.pt2"


def package_for(folder: Path, model: nn.Module, batch: int, precision: str, weights: Path) -> Path:
    """Where the package of ``model`` (prepared, from the checkpoint ``weights``) lives."""
    device = next(model.parameters()).device
    key = package_key(device, batch, precision, channels_last_of(model), file_digest(weights))
    return package_path(folder, key)


class _Autocast(nn.Module):
    """The model's forward under bf16 autocast on its device."""

    def __init__(self, model: nn.Module, device_type: str) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x)


class AotModel(nn.Module):
    """A loaded package, called like the prepared model it was built from.

    It runs one input shape, one precision and one memory layout: the ones it was built for.
    """

    def __init__(
        self, runner: object, path: Path, batch: int, precision: str, channels_last: bool
    ) -> None:
        super().__init__()
        self.runner = runner
        self.path = path
        self.batch = batch
        self.precision = precision
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The package's logits for ``x``, which must be the shape it was built for."""
        # The compiled kernels index memory for the one shape they were built for: another
        # shape would read past its buffers, not raise.
        expected = (self.batch, 3, INPUT_SIZE, INPUT_SIZE)
        if tuple(x.shape) != expected or x.dtype != torch.float32:
            raise ValueError(
                f"{self.path.name} runs float32 inputs of shape {expected}, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        # ... and for the strides of the layout they were built for.
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        out = self.runner(x.contiguous(memory_format=layout))  # type: ignore[operator]
        return out[0] if isinstance(out, (list, tuple)) else out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing); the kernel drops it on death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _partial_paths(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.stem}.*.partial.pt2"))


def as_the_engine_runs(model: nn.Module, precision: str) -> nn.Module:
    """``model`` computing as :func:`~ffhq_aging_assets.lib.segment_model.forward` runs it.

    bf16 is autocast on CUDA only: the CPU engine computes every precision in fp32, so a
    package built there computes in fp32 too and is compared with what the CPU engine computes.
    """
    device = next(model.parameters()).device
    return _Autocast(model, device.type) if precision == "bf16" and device.type == "cuda" else model


def build_package(model: nn.Module, path: Path, batch: int, precision: str) -> bool:
    """Compile ``model`` (prepared, on its device) into the package at ``path`` unless it exists.

    Returns whether this call built it. Under the package's lock: a second process asking for
    the same package waits, then finds it built. Leftovers of a builder that was killed are
    removed first.
    """
    device = next(model.parameters()).device
    channels_last = channels_last_of(model)
    with _locked(path.with_name(f".{path.name}.lock")):
        if path.is_file():
            return False
        for leftover in _partial_paths(path):
            leftover.unlink(missing_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.pt2")
        example = torch.zeros(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        wrapped = as_the_engine_runs(model, precision)
        numerics = strict_fp32() if precision == "fp32" else contextlib.nullcontext()
        try:
            with torch.inference_mode(), numerics:
                exported = torch.export.export(wrapped, (example,))
                torch._inductor.aoti_compile_and_package(exported, package_path=str(partial))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return True


def load_package(path: Path, eager: nn.Module, batch: int, precision: str) -> AotModel:
    """The package at ``path``, built from ``eager``, on its device, ready to call."""
    device = next(eager.parameters()).device
    index = device.index if device.type == "cuda" and device.index is not None else -1
    runner = torch._inductor.aoti_load_package(str(path), device_index=index)
    return AotModel(runner, path, batch, precision, channels_last_of(eager))


def mask_agreement(
    aot: nn.Module,
    eager: nn.Module,
    faces: Sequence[Path],
    resolution: int,
    batch: int,
    precision: str,
) -> float:
    """The share of pixels where the package's masks of ``faces`` equal the eager model's.

    Both run as a chunk step runs them (``segment_images``, prepared, padded batches on CUDA).
    """
    device = next(eager.parameters()).device
    decoded = [read_face(face) for face in faces]  # once, for both
    masks = [
        segment_images(
            model, decoded, resolution, device, batch, prepared=True, precision=precision
        )
        for model in (aot, eager)
    ]
    return float((masks[0] == masks[1]).mean())

"""The ahead-of-time compiled model, on the CPU with a miniature parser (the GPU twin:
``test_lib_segment.py``): one build per key under a lock, nothing loadable from a killed
builder, the same logits as the eager model, and a chunk that keeps the eager model wherever
the package's masks differ from it or it cannot be built."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ffhq_aging_assets.lib import segment_chunk as chunk_module
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.segment import segment_images
from ffhq_aging_assets.lib.segment_aot import (
    AotModel,
    as_the_engine_runs,
    load_package,
    package_for,
    package_key,
    package_path,
)
from ffhq_aging_assets.lib.segment_model import forward
from ffhq_aging_assets_tests.tiny_parser import TinyParser

BATCH = 2
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]

BUILD = """
import sys, torch
from pathlib import Path
from ffhq_aging_assets.lib.segment_aot import build_package
from ffhq_aging_assets_tests.tiny_parser import TinyParser
print("building", flush=True)
print(build_package(TinyParser(), Path(sys.argv[1]), int(sys.argv[2]), "fp32"))
"""


def _builder(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(path), str(BATCH)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed whole below
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[DatasetLayout, Path]:
    """A package built by two processes asking at once, after a builder killed mid-build."""
    layout = DatasetLayout(tmp_path_factory.mktemp("root"), 32)
    layout.checkpoint.parent.mkdir(parents=True)
    layout.checkpoint.write_bytes(b"the weights this package was built from")
    path = package_for(layout.aot_packages, TinyParser(), BATCH, "fp32", layout.checkpoint)
    path.parent.mkdir(parents=True)

    killed = _builder(path)
    assert killed.stdout is not None and killed.stdout.readline().strip() == "building"
    time.sleep(3)  # exporting or compiling by now
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not path.exists(), "a killed builder left a package behind"
    stale = path.with_name(f".{path.stem}.99999.partial.pt2")
    stale.write_bytes(b"cut short")  # what a builder killed while writing leaves

    both = [_builder(path), _builder(path)]
    outputs = [b.communicate(timeout=600)[0].split() for b in both]
    assert [b.returncode for b in both] == [0, 0]
    assert sorted(out[-1] for out in outputs) == ["False", "True"], "built twice, or never"
    assert path.is_file() and not stale.exists()
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [
        path.name
    ]
    return layout, path


def test_every_setting_of_the_key_names_another_package(tmp_path: Path) -> None:
    key = package_key(CPU, 32, "bf16", True, "abc")
    path = package_path(tmp_path, key)
    assert path == package_path(tmp_path, package_key(CPU, 32, "bf16", True, "abc"))
    assert path.name.startswith("deeplab-bf16-nhwc-b32-") and path.suffix == ".pt2"
    others = [
        package_key(CPU, 64, "bf16", True, "abc"),
        package_key(CPU, 32, "fp32", True, "abc"),
        package_key(CPU, 32, "bf16", False, "abc"),
        package_key(CPU, 32, "bf16", True, "abd"),
        {**key, "torch": "0.0.0"},
        {**key, "device": "another GPU"},
    ]
    assert len({package_path(tmp_path, k) for k in others} | {path}) == len(others) + 1


def test_the_package_computes_the_eager_models_logits(built) -> None:
    _, path = built
    eager = TinyParser()
    aot = load_package(path, eager, BATCH, "fp32")
    # Channels-last strides, as the normalised batches have: the package makes them its own.
    x = torch.randn(BATCH, 513, 513, 3, generator=torch.Generator().manual_seed(1))
    x = x.permute(0, 3, 1, 2)
    with torch.inference_mode():
        ours, theirs = forward(aot, x, "fp32"), forward(eager, x, "fp32")
    # Another order of the same float32 sums (GroupNorm divides by small deviations here);
    # input read with the wrong strides is off by about the largest logit.
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-4
    with pytest.raises(ValueError, match=r"shape \(2, 3, 513, 513\), got torch.float32 \(3, "):
        aot(torch.zeros(3, 3, 513, 513))
    with pytest.raises(ValueError, match=r"got torch.float32 \(2, 3, 40, 40\)"):
        aot(torch.zeros(2, 3, 40, 40))
    with pytest.raises(ValueError, match="compiled for fp32, not bf16"):
        forward(aot, x, "bf16")


def test_a_bf16_package_on_the_cpu_computes_what_the_cpu_engine_computes() -> None:
    # The CPU engine computes bf16 requests in fp32; a package built there must too, or its
    # masks are compared with another computation (bf16 autocast on the CPU).
    eager = TinyParser()
    x = torch.randn(BATCH, 3, 513, 513, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        graph = as_the_engine_runs(eager, "bf16")(x)
        engine = forward(eager, x, "bf16")
    assert graph.dtype == torch.float32
    assert torch.equal(graph, engine)


def _sample(layout: DatasetLayout, count: int) -> list[Path]:
    """Faces of four flat quarters: few distinct logits, none of them near a tie."""
    rng = np.random.default_rng(0)
    paths = []
    for n in range(count):
        face = np.zeros((32, 32, 3), np.uint8)
        for rows, cols in ((slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32))):
            face[rows, cols] = rng.integers(0, 256, 3)
            face[cols, rows] = rng.integers(0, 256, 3)
        path = layout.image(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(face).save(path)
        paths.append(path)
    return paths


def test_a_chunk_runs_the_package_where_its_masks_equal_the_eager_models(built) -> None:
    layout, path = built
    sample = _sample(layout, BATCH)
    lines: list[str] = []
    model, engine, agreement = chunk_module._ahead_of_time(
        layout, TinyParser(), CPU, BATCH, "fp32", sample, lines.append
    )
    assert engine == "aot" and agreement == 1.0 and isinstance(model, AotModel)
    assert model.path == path, "the step built another package instead of loading this one"
    assert "built" not in " ".join(lines) and path.name in lines[-1]
    masks = segment_images(model, sample, 32, CPU, BATCH, prepared=True, precision="fp32")
    assert masks.shape == (BATCH, 32, 32) and masks.max() <= 18


class _OneClassLouder(torch.nn.Module):
    """The package's logits with one class raised on the first face: its masks differ there."""

    def __init__(self, aot: AotModel) -> None:
        super().__init__()
        self.aot = aot
        self.batch, self.precision, self.channels_last = aot.batch, "fp32", False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.aot(x).clone()
        logits[0, 3] += 1e3
        return logits


def test_a_package_whose_masks_differ_leaves_the_eager_model(built, monkeypatch) -> None:
    layout, _ = built
    sample = _sample(layout, BATCH)
    real_load = chunk_module.load_package
    monkeypatch.setattr(
        chunk_module, "load_package", lambda *a, **k: _OneClassLouder(real_load(*a, **k))
    )
    eager, lines = TinyParser(), []
    model, engine, agreement = chunk_module._ahead_of_time(
        layout, eager, CPU, BATCH, "fp32", sample, lines.append
    )
    assert model is eager and engine == "eager (aot masks differ)"
    assert agreement == pytest.approx(0.5, abs=0.01)  # every pixel of one face of two
    assert "the eager model computes the chunk" in lines[-1]


def test_a_package_that_cannot_be_built_leaves_the_eager_model(tmp_path, monkeypatch) -> None:
    layout = DatasetLayout(tmp_path, 32)
    layout.checkpoint.parent.mkdir(parents=True)
    layout.checkpoint.write_bytes(b"other weights")
    sample = _sample(layout, BATCH)

    def fails(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(chunk_module, "build_package", fails)
    eager, lines = TinyParser(), []
    model, engine, agreement = chunk_module._ahead_of_time(
        layout, eager, CPU, BATCH, "fp32", sample, lines.append
    )
    assert model is eager and engine == "eager (aot failed: RuntimeError)" and agreement is None
    assert "RuntimeError: no compiler" in lines[-1]
    model, engine, _ = chunk_module._ahead_of_time(
        layout, eager, CPU, BATCH, "fp32", [], lines.append
    )
    assert model is eager and engine == "eager (aot not compared)"


def test_a_package_that_does_not_load_is_removed_and_built_again(tmp_path, monkeypatch) -> None:
    layout = DatasetLayout(tmp_path, 32)
    layout.checkpoint.parent.mkdir(parents=True)
    layout.checkpoint.write_bytes(b"weights of a package cut short")
    sample = _sample(layout, BATCH)
    path = package_for(layout.aot_packages, TinyParser(), BATCH, "fp32", layout.checkpoint)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not the whole package")  # truncated, or written by another
    eager, lines = TinyParser(), []
    model, engine, _ = chunk_module._ahead_of_time(
        layout, eager, CPU, BATCH, "fp32", sample, lines.append
    )
    assert model is eager and engine.startswith("eager (aot failed: ")
    assert not path.exists() and "removed, so the next step builds it again" in lines[-1]
    assert str(path) in lines[-1]


class _Broken(_OneClassLouder):
    """A package that loads but fails when called."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_package_that_fails_to_run_leaves_the_eager_model(built, monkeypatch) -> None:
    layout, path = built
    sample = _sample(layout, BATCH)
    real_load = chunk_module.load_package
    monkeypatch.setattr(chunk_module, "load_package", lambda *a, **k: _Broken(real_load(*a, **k)))
    eager, lines = TinyParser(), []
    model, engine, agreement = chunk_module._ahead_of_time(
        layout, eager, CPU, BATCH, "fp32", sample, lines.append
    )
    assert model is eager and engine == "eager (aot failed: RuntimeError)" and agreement is None
    assert "failed to run (RuntimeError: CUDA error" in lines[-1]
    assert path.is_file(), "a package that loads is kept: the failure may be the device's"

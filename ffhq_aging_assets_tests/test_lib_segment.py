import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ffhq_aging_assets.lib.deeplab import build_deeplab
from ffhq_aging_assets.lib.masks import (
    precision_record,
    read_precision_record,
    write_precision_record,
)
from ffhq_aging_assets.lib.segment import (
    _process_batches,
    _thread_batches,
    choose_precision,
    device_input,
    fidelity,
    nearest_indices,
    prepare_model,
    published_input,
    published_loop,
    search_pays,
    segment_files,
    segment_images,
)
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state

DATA = Path(__file__).parent / "data" / "deeplab"


@pytest.fixture(scope="module")
def seeded_model() -> torch.nn.Module:
    model = build_deeplab()
    model.load_state_dict(seeded_deeplab_state())
    return model.eval()


def test_engine_masks_match_the_reference_on_cpu(seeded_model, tmp_path: Path) -> None:
    images = np.load(DATA / "seg_images.npy")
    reference = np.load(DATA / "seg_masks_ref.npy")
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(image).save(paths[-1])
    seen = []
    masks = segment_images(
        copy.deepcopy(seeded_model),
        paths,
        256,
        "cpu",
        batch_size=2,
        on_batch=lambda idx, m: seen.extend(idx),
    )
    assert masks.shape == (3, 256, 256) and masks.dtype == np.uint8
    assert sorted(seen) == [0, 1, 2]
    agreement = (masks == reference).mean()
    # Random weights leave near-tied logits, so a handful of pixels may flip; fp32 on the CPU
    # agrees on 99.88% here.
    assert agreement >= 0.995, agreement
    arrays = segment_images(copy.deepcopy(seeded_model), list(images), 256, "cpu", batch_size=3)
    # Another batch size runs other kernels: float rounding may flip a few near-tied pixels.
    assert (arrays == masks).mean() >= 0.995


def test_published_loop_matches_the_reference(seeded_model) -> None:
    images = np.load(DATA / "seg_images.npy")[:1]
    reference = np.load(DATA / "seg_masks_ref.npy")[:1]
    assert (published_loop(copy.deepcopy(seeded_model), images, 256) == reference).mean() >= 0.995


@pytest.mark.parametrize("out", [64, 100, 256, 512, 1024])
def test_nearest_indices_are_pils(out: int) -> None:
    labels = np.random.default_rng(out).integers(0, 19, (513, 513)).astype(np.uint8)
    pil = np.asarray(PIL.Image.fromarray(labels).resize((out, out), PIL.Image.NEAREST))
    idx = nearest_indices(513, out)
    assert np.array_equal(labels[idx][:, idx], pil)


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [True, False])
def test_gpu_fp32_path_matches_the_cpu(seeded_model, channels_last: bool) -> None:
    # Both paths resize with PIL and compute in IEEE fp32: only rounding differs. (bf16 cannot
    # be held to the fp32 masks with random weights: they amplify rounding ~10^4 times.)
    images = list(np.load(DATA / "seg_images.npy"))
    reference = np.load(DATA / "seg_masks_ref.npy")
    device = torch.device("cuda")
    model = prepare_model(copy.deepcopy(seeded_model), device, channels_last=channels_last)
    gpu = segment_images(model, images, 256, device, 3, prepared=True, precision="fp32")
    assert (gpu == reference).mean() >= 0.99


@pytest.mark.gpu
def test_gpu_fidelity_compares_bf16_with_fp32(seeded_model) -> None:
    images = list(np.load(DATA / "seg_images.npy"))
    device = torch.device("cuda")
    model = prepare_model(copy.deepcopy(seeded_model), device)
    fast = segment_images(model, images, 256, device, 8, prepared=True)
    exact = segment_images(model, images, 256, device, 3, prepared=True, precision="fp32")
    assert fidelity(model, images, 256, device, 8) == pytest.approx((fast == exact).mean())
    assert (exact == np.load(DATA / "seg_masks_ref.npy")).mean() >= 0.99


def _pil_input(face: np.ndarray) -> np.ndarray:
    return published_input(face).astype(int)


@pytest.mark.parametrize("size", [256, 700, 1024])
def test_device_resize_is_pils_bilinear(size: int) -> None:
    # Shrinking (1024 -> 513) PIL widens its filter; without antialiasing pixels are off by 9.
    face = _smooth_face(size)
    ours = device_input(torch.from_numpy(face)[None])[0].numpy().astype(int)
    assert np.abs(ours - _pil_input(face)).max() <= 1


def _smooth_face(size: int) -> np.ndarray:
    small = np.random.default_rng(size).integers(0, 256, (size // 8, size // 8, 3), np.uint8)
    return np.array(PIL.Image.fromarray(small).resize((size, size), PIL.Image.BICUBIC))


def test_segment_files_keeps_masks_written_before_a_bad_face(seeded_model, tmp_path: Path) -> None:
    images = np.load(DATA / "seg_images.npy")
    faces = []
    for i, image in enumerate(images):
        faces.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(image).save(faces[-1])
    faces[2].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    masks = [tmp_path / "parsings" / f.name for f in faces]
    masks[0].parent.mkdir()
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    with pytest.raises(ValueError, match="00002.png"):
        segment_files(model, faces, masks, 256, torch.device("cpu"), batch_size=2, threads=2)
    assert [m.is_file() for m in masks] == [True, True, False]
    assert sorted(p.name for p in masks[0].parent.iterdir()) == ["00000.png", "00001.png"]
    reference = np.load(DATA / "seg_masks_ref.npy")
    assert (np.asarray(PIL.Image.open(masks[0])) == reference[0]).mean() >= 0.995

    faces[2].unlink()
    run = segment_files(model, faces[:2], masks[:2], 256, torch.device("cpu"), batch_size=2)
    assert run.masks == 2 and run.images_per_second > 0


def test_rotating_batch_buffers_hold_each_batch_intact(tmp_path: Path) -> None:
    # 11 faces, batches of 4, two batches decoded ahead into three rotating buffers.
    faces = [np.full((6, 5, 3), i, np.uint8) for i in range(11)]
    seen = []
    for indices, batch in _thread_batches(faces, np.asarray, 4, workers=3, pin=False):
        assert batch.shape == (4, 6, 5, 3)
        rows = [int(batch[r, 0, 0, 0]) for r in range(4)]
        assert rows[: len(indices)] == indices
        assert rows[len(indices) :] == [indices[-1]] * (4 - len(indices))  # padding repeats
        seen += indices
    assert seen == list(range(11))

    odd = tmp_path / "00003.png"
    PIL.Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(odd)
    paths = [tmp_path / f"{i:05d}.png" for i in range(3)] + [odd]
    for path in paths[:3]:
        PIL.Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(path)
    load = lambda p: np.asarray(PIL.Image.open(p))  # noqa: E731
    with pytest.raises(ValueError, match="00003.png: a 5x7 face among 5x6 ones"):
        list(_thread_batches(paths, load, 2, workers=2, pin=False))


def test_loader_processes_batch_files_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(np.full((40, 40, 3), 10 * i, np.uint8)).save(paths[-1])
    batches = list(_process_batches(paths, True, 2, workers=2, pin=False))
    assert [b[0] for b in batches] == [[0, 1], [2, 3], [4]]
    for indices, batch in batches:
        assert batch.shape == (2, 513, 513, 3) and batch.dtype == torch.uint8
        assert [int(batch[r, 5, 5, 0]) for r in range(2)] == [10 * i for i in indices] + [
            10 * indices[-1]
        ] * (2 - len(indices))
    assert np.array_equal(
        batches[0][1][1].numpy(), published_input(np.full((40, 40, 3), 10, np.uint8))
    )

    PIL.Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(paths[3])
    with pytest.raises(ValueError, match="00003.png: a 40x30 face among 40x40 ones"):
        list(_process_batches(paths, False, 2, workers=1, pin=False))
    paths[1].write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00001.png: cannot read this face"):
        list(_process_batches(paths, True, 2, workers=1, pin=False))


def test_segment_files_through_loader_processes(seeded_model, tmp_path: Path) -> None:
    # The path face files take on CUDA, here on the CPU (no page-locking, no padding).
    faces = []
    for i, image in enumerate(np.load(DATA / "seg_images.npy")):
        faces.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(image).save(faces[-1])
    masks = [tmp_path / "parsings" / f.name for f in faces]
    masks[0].parent.mkdir()
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    cpu = torch.device("cpu")
    run = segment_files(model, faces, masks, 256, cpu, batch_size=2, loader_processes=2)
    assert run.masks == 3 and run.model_seconds > 0
    written = np.stack([np.asarray(PIL.Image.open(m)) for m in masks])
    threads = segment_images(model, faces, 256, cpu, 2, prepared=True, loader_processes=0)
    assert np.array_equal(written, threads)
    assert (written == np.load(DATA / "seg_masks_ref.npy")).mean() >= 0.995

    # Batches of one: the writers fall behind and are waited for; every mask is counted once.
    for mask in masks:
        mask.unlink()
    seen: list[int] = []
    run = segment_files(
        model, faces, masks, 256, cpu, batch_size=1, on_progress=lambda n, _: seen.append(n)
    )
    assert run.masks == 3 and all(m.is_file() for m in masks)
    assert len(seen) == 3 and seen == sorted(seen) and seen[-1] <= 3


COMPILE_STEP = """
import sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from ffhq_aging_assets.lib.segment import compile_model
torch.manual_seed(0)
model = compile_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval(),
                      Path(sys.argv[1]))
with torch.inference_mode():
    model(torch.ones(2, 3, 8, 8))
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


def test_compiled_kernels_survive_into_the_next_process(tmp_path: Path) -> None:
    # Each Dagster step is a fresh process: the second one must load what the first compiled.
    cache = tmp_path / "cache" / "torchinductor"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR", "TRITON"))}

    def step() -> tuple[int, int]:
        proc = subprocess.run(
            [sys.executable, "-c", COMPILE_STEP, str(cache)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=300,
        )
        hit, miss = proc.stdout.split()[-2:]
        return int(hit), int(miss)

    assert step() == (0, 1)
    assert any(cache.rglob("*")), "nothing was cached under the root"
    assert step() == (1, 0)


@pytest.mark.gpu
def test_gpu_device_resize_is_pils_bilinear() -> None:
    face = _smooth_face(1024)
    ours = device_input(torch.from_numpy(face)[None].cuda())[0].cpu().numpy().astype(int)
    assert np.abs(ours - _pil_input(face)).max() <= 1


@pytest.mark.gpu
def test_gpu_compiled_engine_agrees_with_eager(seeded_model, tmp_path: Path) -> None:
    # FFHQ_TEST_COMPILE_CACHE may name a warm inductor cache to skip a cold compile.
    cache = Path(os.environ.get("FFHQ_TEST_COMPILE_CACHE") or tmp_path / "inductor")
    images = list(np.load(DATA / "seg_images.npy"))
    device = torch.device("cuda")
    run = dict(batch_size=64, precision="fp32")
    eager = segment_images(copy.deepcopy(seeded_model), images, 256, device, **run)
    compiled = prepare_model(copy.deepcopy(seeded_model), device, compile=True, cache_dir=cache)
    masks = segment_images(compiled, images, 256, device, prepared=True, **run)
    assert masks.shape == eager.shape
    assert (masks == eager).mean() >= 0.99
    assert any(cache.rglob("*"))


def test_auto_precision_takes_bf16_only_on_evidence() -> None:
    assert choose_precision(0.995) == "bf16"
    assert choose_precision(0.9899) == "fp32"
    assert choose_precision(None) == "fp32"


def test_precision_record_remembers_bf16_masks() -> None:
    assert precision_record(None, "fp32", None, 0) is None
    first = precision_record(None, "bf16", 0.998, 8)
    assert first == {"precision": "bf16", "agreement": 0.998, "sampled": 8}
    assert precision_record(first, "fp32", None, 0) == first  # the bf16 masks are still there
    assert precision_record(first, "bf16", 0.9991, 8)["agreement"] == 0.998  # lowest kept
    assert precision_record(first, "bf16", None, 0)["agreement"] == 0.998


def test_precision_record_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "tables" / "mask_fidelity_256" / "00000.json"
    assert read_precision_record(path) is None
    record = {"precision": "bf16", "agreement": 0.998, "sampled": 8}
    write_precision_record(path, record)
    assert read_precision_record(path) == record
    assert [p.name for p in path.parent.iterdir()] == ["00000.json"]  # no temporary left
    write_precision_record(path, None)  # every mask fp32 again: no record
    assert not path.exists()
    for bad in (b"not json", b"[1, 2]", b'{"precision": "fp16"}'):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="00000.json: unreadable precision record"):
            read_precision_record(path)


def test_cudnn_search_follows_the_precision_and_is_restored(seeded_model) -> None:
    # The CPU twin of the CUDA policy: the flag cuDNN reads is set for the loop, then restored.
    assert search_pays("bf16") and not search_pays("fp32")
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    faces = list(np.load(DATA / "seg_images.npy")[:1])
    before = torch.backends.cudnn.benchmark
    for precision, search, expected in [
        ("bf16", None, True),
        ("fp32", None, False),
        ("fp32", True, True),
        ("bf16", False, False),
    ]:
        seen: list[bool] = []
        segment_images(
            model,
            faces,
            64,
            "cpu",
            1,
            prepared=True,
            precision=precision,
            search=search,
            on_batch=lambda *_, seen=seen: seen.append(torch.backends.cudnn.benchmark),
        )
        assert seen == [expected], (precision, search)
        assert torch.backends.cudnn.benchmark == before

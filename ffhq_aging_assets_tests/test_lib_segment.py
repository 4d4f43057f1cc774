import copy
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ffhq_aging_assets.lib.deeplab import build_deeplab
from ffhq_aging_assets.lib.segment import fidelity, segment_files, segment_images
from ffhq_aging_assets.lib.segment_model import prepare_model
from ffhq_aging_assets_tests.published_segment import published_loop
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


@pytest.mark.gpu
@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True)])
def test_gpu_aot_package_agrees_with_eager(
    seeded_model, tmp_path: Path, precision: str, channels_last: bool
) -> None:
    from ffhq_aging_assets.lib.segment_aot import build_package, load_package

    images = list(np.load(DATA / "seg_images.npy"))
    device = torch.device("cuda")
    eager = prepare_model(copy.deepcopy(seeded_model), device, channels_last=channels_last)
    path = tmp_path / "deeplab.pt2"
    assert build_package(eager, path, 4, precision)
    aot = load_package(path, eager, 4, precision)
    assert aot.channels_last == channels_last
    run = dict(batch_size=4, prepared=True, precision=precision)
    ours = segment_images(aot, images, 256, device, **run)
    theirs = segment_images(eager, images, 256, device, **run)
    # The seeded weights make near ties (bf16 keeps only 38-42% of fp32's pixels): a package
    # read with the wrong strides or for the wrong precision agrees on far fewer.
    assert (ours == theirs).mean() >= (0.99 if precision == "fp32" else 0.3)


def test_segment_files_waits_for_writers_that_fall_behind(seeded_model, tmp_path: Path) -> None:
    faces = []
    for i, image in enumerate(np.load(DATA / "seg_images.npy")):
        faces.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(image).save(faces[-1])
    masks = [tmp_path / "parsings" / f.name for f in faces]
    masks[0].parent.mkdir()
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    cpu = torch.device("cpu")
    # Batches of one: the writers fall behind and are waited for; every mask is counted once.
    seen: list[int] = []
    run = segment_files(
        model, faces, masks, 256, cpu, batch_size=1, on_progress=lambda n, _: seen.append(n)
    )
    assert run.masks == 3 and all(m.is_file() for m in masks)
    assert len(seen) == 3 and seen == sorted(seen) and seen[-1] <= 3
    assert run.model_seconds > 0
    written = np.stack([np.asarray(PIL.Image.open(m)) for m in masks])
    assert (written == np.load(DATA / "seg_masks_ref.npy")).mean() >= 0.995


def test_cudnn_search_follows_the_precision_and_is_restored(seeded_model) -> None:
    # The CPU twin of the CUDA policy: the flag cuDNN reads is set for the loop, then restored.
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    faces = list(np.load(DATA / "seg_images.npy")[:1])
    before = torch.backends.cudnn.benchmark
    for precision, expected in [("bf16", True), ("fp32", False)]:
        seen: list[bool] = []
        segment_images(
            model,
            faces,
            64,
            "cpu",
            1,
            prepared=True,
            precision=precision,
            on_batch=lambda *_, seen=seen: seen.append(torch.backends.cudnn.benchmark),
        )
        assert seen == [expected], precision
        assert torch.backends.cudnn.benchmark == before


def test_unknown_precision_is_refused(seeded_model) -> None:
    with pytest.raises(ValueError, match="precision 'fp16': expected one of bf16, fp32"):
        segment_images(
            seeded_model, [np.zeros((8, 8, 3), np.uint8)], 64, prepared=True, precision="fp16"
        )

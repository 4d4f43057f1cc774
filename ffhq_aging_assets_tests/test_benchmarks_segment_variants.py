"""The engine variants only the benchmarks measure (``benchmarks/segment_variants.py``)."""

import copy
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from benchmarks.segment_variants import device_input, process_batches, segment_files_variant
from ffhq_aging_assets.lib.deeplab import build_deeplab
from ffhq_aging_assets.lib.segment import segment_images
from ffhq_aging_assets.lib.segment_input import published_input
from ffhq_aging_assets.lib.segment_model import prepare_model
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state

DATA = Path(__file__).parent / "data" / "deeplab"


@pytest.fixture(scope="module")
def seeded_model() -> torch.nn.Module:
    model = build_deeplab()
    model.load_state_dict(seeded_deeplab_state())
    return model.eval()


def _pil_input(face: np.ndarray) -> np.ndarray:
    return published_input(face).astype(int)


def _smooth_face(size: int) -> np.ndarray:
    small = np.random.default_rng(size).integers(0, 256, (size // 8, size // 8, 3), np.uint8)
    return np.array(PIL.Image.fromarray(small).resize((size, size), PIL.Image.BICUBIC))


@pytest.mark.parametrize("size", [256, 700, 1024])
def test_device_resize_is_pils_bilinear(size: int) -> None:
    # Shrinking (1024 -> 513) PIL widens its filter; without antialiasing pixels are off by 9.
    face = _smooth_face(size)
    ours = device_input(torch.from_numpy(face)[None])[0].numpy().astype(int)
    assert np.abs(ours - _pil_input(face)).max() <= 1


@pytest.mark.gpu
def test_gpu_device_resize_is_pils_bilinear() -> None:
    face = _smooth_face(1024)
    ours = device_input(torch.from_numpy(face)[None].cuda())[0].cpu().numpy().astype(int)
    assert np.abs(ours - _pil_input(face)).max() <= 1


def test_loader_processes_batch_files_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i:05d}.png")
        PIL.Image.fromarray(np.full((40, 40, 3), 10 * i, np.uint8)).save(paths[-1])
    batches = list(process_batches(paths, True, 2, workers=2, pin=False))
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
        list(process_batches(paths, False, 2, workers=1, pin=False))
    paths[1].write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00001.png: cannot read this face"):
        list(process_batches(paths, True, 2, workers=1, pin=False))


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
    run = segment_files_variant(model, faces, masks, 256, cpu, 2, precision="fp32", processes=2)
    assert run.masks == 3 and run.model_seconds > 0
    written = np.stack([np.asarray(PIL.Image.open(m)) for m in masks])
    threads = segment_images(model, faces, 256, cpu, 2, prepared=True)
    assert np.array_equal(written, threads)
    assert (written == np.load(DATA / "seg_masks_ref.npy")).mean() >= 0.995


def test_forced_cudnn_search_overrides_the_policy_and_is_restored(
    seeded_model, tmp_path: Path
) -> None:
    # The CPU twin of the CUDA override: the flag cuDNN reads is set for the loop, then restored.
    face = tmp_path / "00000.png"
    PIL.Image.fromarray(np.load(DATA / "seg_images.npy")[0]).save(face)
    model = prepare_model(copy.deepcopy(seeded_model), torch.device("cpu"))
    before = torch.backends.cudnn.benchmark
    seen: list[bool] = []

    class Spy(torch.nn.Module):
        """The model, noting the flag cuDNN reads as each batch runs."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.backends.cudnn.benchmark)
            return self.inner(x)

    for precision, search, expected in [
        ("bf16", None, True),
        ("fp32", None, False),
        ("fp32", True, True),
        ("bf16", False, False),
    ]:
        seen.clear()
        mask = tmp_path / f"{precision}-{search}.png"
        segment_files_variant(
            Spy(), [face], [mask], 64, torch.device("cpu"), 1, precision=precision, search=search
        )
        assert seen == [expected], (precision, search)
        assert torch.backends.cudnn.benchmark == before and mask.is_file()

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from ffhq_aging_assets.lib.segment_input import (
    INPUT_SIZE,
    MEAN,
    STD,
    nearest_indices,
    normalize,
    published_input,
    read_face,
)


@pytest.mark.parametrize("out", [64, 100, 256, 512, 1024])
def test_nearest_indices_are_pils(out: int) -> None:
    labels = np.random.default_rng(out).integers(0, 19, (513, 513)).astype(np.uint8)
    pil = np.asarray(PIL.Image.fromarray(labels).resize((out, out), PIL.Image.NEAREST))
    idx = nearest_indices(513, out)
    assert np.array_equal(labels[idx][:, idx], pil)


def test_published_input_is_pils_bilinear_and_normalize_is_imagenets() -> None:
    face = np.random.default_rng(0).integers(0, 256, (40, 30, 4), np.uint8)  # RGBA: alpha goes
    resized = published_input(face)
    pil = PIL.Image.fromarray(np.ascontiguousarray(face[..., :3])).resize(
        (INPUT_SIZE, INPUT_SIZE), PIL.Image.BILINEAR
    )
    assert resized.shape == (513, 513, 3) and np.array_equal(resized, np.asarray(pil))
    x = normalize(torch.from_numpy(resized)[None])
    assert x.shape == (1, 3, 513, 513)
    expected = (resized[7, 9] / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(x[0, :, 7, 9].numpy(), expected, atol=1e-5)


def test_read_face_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    good = tmp_path / "00000.png"
    PIL.Image.fromarray(np.full((6, 5), 7, np.uint8), "L").save(good)
    face = read_face(good)
    assert face.shape == (6, 5, 3) and face.dtype == np.uint8  # greyscale comes back RGB
    bad = tmp_path / "00001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00001.png: cannot read this face"):
        read_face(bad)

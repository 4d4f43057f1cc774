import base64
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib.images import ImageError, align_file, contact_sheet, is_valid_image
from ffhq_aging_assets_tests.synthetic import face_template, synthetic_photo


def test_is_valid_image_rejects_wrong_size_mode_and_truncation(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    assert is_valid_image(good, 64)
    assert not is_valid_image(good, 128)
    PIL.Image.new("L", (64, 64)).save(tmp_path / "grey.png")
    assert not is_valid_image(tmp_path / "grey.png", 64)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-200])
    assert not is_valid_image(tmp_path / "cut.png", 64)
    assert not is_valid_image(tmp_path / "missing.png", 64)


def test_align_file_checks_pixels_and_names_the_image(tmp_path: Path) -> None:
    lm = face_template() * 200 + (150, 100)
    src = tmp_path / "src.png"
    synthetic_photo(500, 400, lm, seed=2).save(src)
    dest = tmp_path / "out" / "00042.png"
    dest.parent.mkdir()
    assert align_file(src, lm, 64, "fast", dest) == dest.stat().st_size
    assert is_valid_image(dest, 64)
    with pytest.raises(ImageError, match="00042.png: pixel md5"):
        align_file(src, lm, 64, "fast", dest, expected_pixel_md5="0" * 32)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="00042.png"):
        align_file(tmp_path / "bad.png", lm, 64, "fast", dest)
    with pytest.raises(ImageError, match="00042.png: .*orientation"):
        align_file(src, np.full((68, 2), 10.0), 64, "fast", dest)


def test_contact_sheet_is_small_markdown(tmp_path: Path) -> None:
    paths = []
    for i in range(40):
        path = tmp_path / f"{i:05d}.png"
        rng = np.random.default_rng(i)
        PIL.Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)).save(path)
        paths.append(path)
    sheet = contact_sheet(paths)
    assert sheet.startswith("![contact sheet](data:image/jpeg;base64,")
    assert len(sheet) <= 200_000
    data = base64.b64decode(sheet.split(",", 1)[1].rstrip(")"))
    assert data[:3] == b"\xff\xd8\xff"

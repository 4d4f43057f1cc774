import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib.align import AlignmentError, align_face, crop_geometry
from ffhq_aging_assets_tests.synthetic import face_template, synthetic_photo

DATA = Path(__file__).parent / "data" / "alignment"
CASES = json.loads((DATA / "cases.json").read_text())
OUTPUTS = [(name, int(res)) for name, case in CASES.items() for res in case["outputs"]]


def load(name: str) -> tuple[PIL.Image.Image, np.ndarray]:
    case = CASES[name]
    img = PIL.Image.open(DATA / case["input"])
    img.load()
    return img, np.asarray(case["face_landmarks"], dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize(("name", "resolution"), OUTPUTS)
def test_reference_mode_is_byte_exact(name: str, resolution: int) -> None:
    img, lm = load(name)
    got = align_face(img, lm, resolution)
    assert got.mode == "RGB" and got.size == (resolution, resolution)
    expected = np.asarray(
        PIL.Image.open(DATA / CASES[name]["outputs"][str(resolution)]).convert("RGB")
    )
    assert np.array_equal(np.asarray(got), expected)


def test_reference_cases_cover_every_path() -> None:
    paths = set()
    for name, resolution in OUTPUTS:
        img, lm = load(name)
        geo = crop_geometry(lm, img.size[0], img.size[1], resolution)
        paths |= {
            ("shrink", geo.shrink > 1),
            ("blur", geo.blur_pad),
            ("crop", geo.crop is not None),
        }
    assert paths == {(k, v) for k in ("shrink", "blur", "crop") for v in (True, False)}


@pytest.mark.parametrize(("name", "resolution"), OUTPUTS)
def test_fast_mode_psnr_on_reference_cases(name: str, resolution: int) -> None:
    img, lm = load(name)
    fast = np.asarray(align_face(img, lm, resolution, mode="fast"))
    reference = np.asarray(align_face(img, lm, resolution))
    assert fast.shape == reference.shape
    assert psnr(fast, reference) >= 45.0


@pytest.mark.parametrize("kind", ["centre", "border", "closeup"])
def test_fast_mode_psnr_on_benchmark_like_frames(kind: str) -> None:
    w, h = 2400, 1800
    size = {"centre": 0.25, "border": 0.22, "closeup": 0.6}[kind] * h
    origin = {"border": (0.02 * w, 0.03 * h)}.get(kind, (w / 2 - size / 2, h / 2 - size / 2))
    lm = face_template() * size + origin
    img = synthetic_photo(w, h, lm, seed=5)
    for resolution in (256, 1024):
        fast = np.asarray(align_face(img, lm, resolution, mode="fast"))
        assert psnr(fast, np.asarray(align_face(img, lm, resolution))) >= 45.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lm: lm[:60], "68 x 2"),
        (lambda lm: np.where(np.arange(68)[:, None] == 3, np.nan, lm), "NaN"),
        (lambda lm: np.full_like(lm, 300.0), "no orientation"),
        (lambda lm: lm + 10_000, "outside"),
        (lambda lm: (lm - lm.mean(0)) * 1e-4 + 300, "pixels wide"),
    ],
)
def test_degenerate_faces_get_clear_errors(change, message: str) -> None:
    img, lm = load("frontal")
    with pytest.raises(AlignmentError, match=message):
        align_face(img, change(lm.copy()), 256)
    with pytest.raises(AlignmentError, match=message):
        align_face(img, change(lm.copy()), 256, mode="fast")


def test_any_mode_and_resolution_checked() -> None:
    img, lm = load("small")
    with pytest.raises(ValueError, match="mode"):
        align_face(img, lm, 256, mode="quick")  # type: ignore[arg-type]
    assert align_face(img.convert("L"), lm, 64).mode == "RGB"

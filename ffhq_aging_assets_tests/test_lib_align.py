import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib.align import (
    AlignmentError,
    _blur_pad,
    _blur_pad_bands,
    _median,
    _shrunk_crop,
    align_face,
    crop_geometry,
)
from ffhq_aging_assets_tests.published_align import (
    published_blur_pad,
    published_blur_pad_values,
    published_blur_weight,
    published_shrink,
)
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


def random_image(rng: np.random.Generator, width: int, height: int) -> PIL.Image.Image:
    """Noise, a few levels (ties for the median), a flat colour, or a gradient."""
    kind = rng.integers(4)
    if kind == 0:
        arr = rng.integers(0, 256, (height, width, 3))
    elif kind == 1:
        arr = rng.choice(rng.integers(0, 256, 3), (height, width, 3))
    elif kind == 2:
        arr = np.broadcast_to(rng.integers(0, 256, 3), (height, width, 3))
    else:
        arr = np.add.outer(np.arange(height) * 7, np.arange(width) * 3)[..., None] + [0, 60, 200]
    return PIL.Image.fromarray(np.uint8(np.asarray(arr) % 256), "RGB")


def assert_blur_pad_is_published(img: PIL.Image.Image, pad: tuple, qsize: float) -> None:
    """Same float32 values as the oracle everywhere, non-zero blur weights on the bands only."""
    expected = published_blur_pad_values(img, pad, qsize)
    u8 = np.pad(np.asarray(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    got = u8.astype(np.float32)
    banded = np.zeros(u8.shape[:2], dtype=bool)
    for rows, cols, values in _blur_pad_bands(u8, pad, qsize):
        assert not banded[rows, cols].any()
        banded[rows, cols] = True
        got[rows, cols] = values
    context = f"{img.size} pad {pad} qsize {qsize}"
    assert np.array_equal(got, expected), context
    assert np.array_equal(banded, published_blur_weight(u8.shape[:2], pad) > 0), context
    assert np.array_equal(
        np.asarray(_blur_pad(img, pad, qsize)), np.asarray(published_blur_pad(img, pad, qsize))
    ), context


@pytest.mark.parametrize("seed", range(40))
def test_blur_pad_matches_the_published_arithmetic_on_random_frames(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(6):
        # Frames down to 1 pixel, pads up to several times the frame, and blur radii
        # (0.08 qsize) from 0 to wider than the whole padded frame.
        width, height = (int(v) for v in rng.integers(1, 48, 2))
        pad = tuple(int(v) for v in rng.integers(1, 3 * max(width, height) + 4, 4))
        qsize = float(rng.choice([2.0, rng.uniform(2, 100), rng.uniform(100, 2500)]))
        assert_blur_pad_is_published(random_image(rng, width, height), pad, qsize)


@pytest.mark.parametrize("side", range(4))
def test_blur_pad_band_edges_for_every_pad_width(side: int) -> None:
    """Each pad width from 1 to 45 on one side: the band edge moves by one pixel at a time."""
    rng = np.random.default_rng(side)
    img = random_image(rng, 29, 23)
    for width in range(1, 46):
        pad = [7, 5, 9, 4]
        pad[side] = width
        assert_blur_pad_is_published(img, tuple(pad), float(rng.uniform(2, 12 * width)))


def test_blur_pad_rejects_a_zero_pad() -> None:
    """The published mask divides 0 by 0 there and turns the whole frame into NaN."""
    img = PIL.Image.new("RGB", (8, 6), (10, 20, 30))
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(published_blur_pad_values(img, (0, 3, 3, 3), 50.0)).all()
    with pytest.raises(ValueError, match="at least 1 pixel"):
        _blur_pad(img, (0, 3, 3, 3), 50.0)


@pytest.mark.parametrize("seed", range(12))
def test_median_by_selection_is_numpys(seed: int) -> None:
    """Interior levels and band values tie, fall outside 0-255, and leave either middle."""
    rng = np.random.default_rng(seed)
    inner = rng.integers(0, 256, (int(rng.integers(0, 30)), int(rng.integers(1, 30)), 3))
    interior = (inner if seed % 3 else np.minimum(inner, 40)).astype(np.uint8)
    blended = []
    for _ in range(int(rng.integers(1, 4))):
        shape = (int(rng.integers(1, 20)), int(rng.integers(1, 20)), 3)
        values = np.where(
            rng.random(shape) < 0.5, rng.integers(-2, 258, shape), rng.uniform(-3, 260, shape)
        )
        blended.append(values.astype(np.float32))
    frame = np.concatenate(
        [np.float32(interior).reshape(-1, 3)] + [a.reshape(-1, 3) for a in blended]
    )
    expected = np.median(frame, axis=0)
    got = _median(interior, blended)
    assert got.dtype == expected.dtype == np.float32
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("seed", range(6))
def test_shrunk_crop_is_the_published_shrink_cut(seed: int) -> None:
    """Frames that divide by the factor or not, any aspect, cuts anywhere (or none)."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        shrink = int(rng.integers(2, 9))
        width, height = (int(v) for v in rng.integers(2 * shrink, 90 * shrink, 2))
        width -= width % shrink if rng.random() < 0.5 else 0
        height -= height % shrink if rng.random() < 0.5 else 0
        img = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8))
        whole = np.asarray(published_shrink(img, shrink))
        h, w, _ = whole.shape
        c0, r0 = int(rng.integers(w)), int(rng.integers(h))
        crop = (c0, r0, int(rng.integers(c0 + 1, w + 1)), int(rng.integers(r0 + 1, h + 1)))
        context = f"{img.size} / {shrink}, cut {crop}"
        got = np.asarray(_shrunk_crop(img, shrink, crop))
        assert np.array_equal(got, whole[crop[1] : crop[3], crop[0] : crop[2]]), context
        assert np.array_equal(np.asarray(_shrunk_crop(img, shrink, None)), whole), context


def test_shrink_of_a_tall_frame_stays_horizontal_first() -> None:
    """Pillow 13 resizes frames over about twice as tall as wide vertically first."""
    rng = np.random.default_rng(3)
    img = PIL.Image.fromarray(rng.integers(0, 256, (800, 200, 3), np.uint8))
    expected = np.asarray(published_shrink(img, 4))
    assert np.array_equal(np.asarray(_shrunk_crop(img, 4, None)), expected)
    assert np.array_equal(
        np.asarray(_shrunk_crop(img, 4, (5, 30, 40, 170))), expected[30:170, 5:40]
    )

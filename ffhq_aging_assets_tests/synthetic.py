"""Synthetic FFHQ inputs in the published layouts, for tests, benchmarks and dry runs.

Nothing here is real data: landmarks follow a plausible 68-point face template placed at random,
and file checksums are whatever the caller supplies (or random hex when the file does not exist).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

_LICENSES = (
    ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
    ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
)


def face_template() -> np.ndarray:
    """A 68-point dlib-order face in a unit box: eyes at y 0.4, mouth at y 0.75."""
    jaw_t = np.linspace(-1.0, 1.0, 17)
    jaw = np.stack([0.5 + 0.45 * np.sin(jaw_t * 1.3), 0.45 + 0.5 * np.cos(jaw_t * 1.3) ** 0.5], 1)
    brows = np.stack(
        [np.r_[np.linspace(0.2, 0.42, 5), np.linspace(0.58, 0.8, 5)], np.full(10, 0.3)], 1
    )
    nose = np.r_[
        np.stack([np.full(4, 0.5), np.linspace(0.42, 0.6, 4)], 1),
        np.stack([np.linspace(0.42, 0.58, 5), np.full(5, 0.63)], 1),
    ]

    def eye(cx: float) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi
        return np.stack([cx + 0.07 * np.cos(a), 0.4 + 0.025 * np.sin(a)], 1)

    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False) + np.pi
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi
    mouth = np.r_[
        np.stack([0.5 + 0.14 * np.cos(outer), 0.75 + 0.05 * np.sin(outer)], 1),
        np.stack([0.5 + 0.09 * np.cos(inner), 0.75 + 0.02 * np.sin(inner)], 1),
    ]
    return np.concatenate([jaw, brows, nose, eye(0.33), eye(0.67), mouth]).astype(np.float64)


def random_landmarks(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A template face of random size and position inside a ``width`` x ``height`` frame."""
    size = rng.uniform(0.15, 0.4) * min(width, height)
    x0 = rng.uniform(0.1 * width, 0.9 * width - size)
    y0 = rng.uniform(0.1 * height, 0.9 * height - size)
    jitter = rng.normal(0.0, 0.004 * size, (68, 2))
    return face_template() * size + (x0, y0) + jitter


@dataclass(frozen=True)
class WildFile:
    """What the metadata says about one in-the-wild photo."""

    url: str
    size: int
    md5: str
    pixel_size: tuple[int, int]
    pixel_md5: str
    landmarks: np.ndarray


def random_wild_file(n: int, rng: np.random.Generator, url: str) -> WildFile:
    """A plausible entry for a photo that does not exist (checksums are random hex)."""
    width, height = int(rng.integers(1200, 4000)), int(rng.integers(900, 3000))
    return WildFile(
        url=url,
        size=int(rng.integers(2_000_000, 25_000_000)),
        md5=rng.bytes(16).hex(),
        pixel_size=(width, height),
        pixel_md5=rng.bytes(16).hex(),
        landmarks=random_landmarks(rng, width, height),
    )


def ffhq_entry(n: int, wild: WildFile, rng: np.random.Generator) -> dict[str, Any]:
    """One value of ``ffhq-dataset-v2.json`` in the published layout."""
    lm = wild.landmarks
    rect = [int(v) for v in (*lm.min(0), *lm.max(0))]
    quad = (lm[[36, 45, 54, 48]]).round(6).tolist()
    aligned = ((lm - lm.min(0)) / max(np.ptp(lm, 0).max(), 1e-6) * 700 + 160).round(2)
    license_name, license_url = _LICENSES[n % len(_LICENSES)]
    chunk = f"{n - n % 1000:05d}"

    def aligned_file(kind: str, res: int) -> dict[str, Any]:
        return {
            "file_url": f"https://drive.google.com/uc?id={rng.bytes(12).hex()}",
            "file_path": f"{kind}/{chunk}/{n:05d}.png",
            "file_size": int(rng.integers(1_000, 2_000_000)),
            "file_md5": rng.bytes(16).hex(),
            "pixel_size": [res, res],
            "pixel_md5": rng.bytes(16).hex(),
            "face_landmarks": (aligned * res / 1024).round(1).tolist(),
        }

    return {
        "category": "validation" if n >= 60_000 else "training",
        "metadata": {
            "photo_url": f"https://www.flickr.com/photos/{rng.integers(10**7)}@N0{n % 9}/"
            f"{rng.integers(10**10)}/",
            "photo_title": f"synthetic photo {n}",
            "author": f"author{n % 997}",
            "country": ("", "France", "Japan", "Brazil")[n % 4],
            "license": license_name,
            "license_url": license_url,
            "date_uploaded": f"20{10 + n % 9}-0{1 + n % 9}-1{n % 10}",
            "date_crawled": "2018-10-10",
        },
        "image": aligned_file("images1024x1024", 1024),
        "thumbnail": aligned_file("thumbnails128x128", 128),
        "in_the_wild": {
            "file_url": wild.url,
            "file_path": f"in-the-wild-images/{chunk}/{n:05d}.png",
            "file_size": wild.size,
            "file_md5": wild.md5,
            "pixel_size": list(wild.pixel_size),
            "pixel_md5": wild.pixel_md5,
            "face_rect": rect,
            "face_landmarks": lm.round(1).tolist(),
            "face_quad": quad,
        },
    }


def write_ffhq_json(
    path: Path,
    count: int,
    *,
    url_for: Callable[[int], str] = lambda n: f"https://drive.google.com/uc?id=synthetic{n:05d}xx",
    files: Mapping[int, WildFile] | None = None,
    indent: int | None = None,
    seed: int = 0,
) -> None:
    """Write a ``count``-entry metadata JSON in the published layout, streaming to disk.

    Entries in ``files`` describe photos that exist (a fake Drive serves them); the rest get
    random checksums.
    """
    rng = np.random.default_rng(seed)
    files = files or {}
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        for n in range(count):
            wild = files.get(n) or random_wild_file(n, rng, url_for(n))
            separators = None if indent else (",", ":")
            body = json.dumps(ffhq_entry(n, wild, rng), indent=indent, separators=separators)
            if indent:
                body = body.replace("\n", "\n" + " " * indent)
                out.write(f'{"," if n else ""}\n{" " * indent}"{n}": {body}')
            else:
                out.write(f'{"," if n else ""}"{n}":{body}')
        out.write("\n}\n" if indent else "}")


def synthetic_photo(
    width: int, height: int, landmarks: np.ndarray, seed: int = 0
) -> PIL.Image.Image:
    """An RGB photo-like frame: smooth colour fields, fine texture, and a drawn face.

    The face (skin ellipse, brows, eyes, nose, lips) follows ``landmarks``, so the published
    crop frames it as it would a real one; the texture gives resampling something to get wrong.
    """
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(height // 64, 2), max(width // 64, 2), 3)).astype(np.uint8)
    base = PIL.Image.fromarray(small).resize((width, height), PIL.Image.Resampling.BICUBIC)
    noise = rng.normal(0, 18, (height, width, 1)).astype(np.float32)
    pixels = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    img = PIL.Image.fromarray(pixels)
    draw = PIL.ImageDraw.Draw(img)
    lm = np.asarray(landmarks, dtype=np.float64)
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    pad = 0.15 * (x1 - x0)
    draw.ellipse([x0 - pad, y0 - 2.5 * pad, x1 + pad, y1 + pad], fill=(224, 172, 140))
    for lo, hi, colour in ((17, 22, (60, 40, 30)), (22, 27, (60, 40, 30))):
        draw.line([tuple(p) for p in lm[lo:hi]], fill=colour, width=max(int(pad / 6), 1))
    for lo, hi in ((36, 42), (42, 48)):
        draw.polygon([tuple(p) for p in lm[lo:hi]], fill=(250, 250, 250), outline=(20, 20, 20))
        cx, cy = lm[lo:hi].mean(0)
        r = max((lm[lo:hi, 1].max() - lm[lo:hi, 1].min()) / 2, 1)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(70, 50, 30))
    draw.line([tuple(p) for p in lm[27:36]], fill=(180, 120, 100), width=max(int(pad / 8), 1))
    draw.polygon([tuple(p) for p in lm[48:60]], fill=(170, 60, 70))
    return img


def seeded_deeplab_state(seed: int = 1234) -> dict:
    """DeepLab weights made the way the reference numbers were (DESIGN.md, "Segmentation").

    In state-dict order with ``numpy.random.RandomState(seed)``: 1-D ``*weight`` keys get
    ``1 + 0.1 N(0, 1)``, other 1-D keys ``0.1 N(0, 1)``, everything else ``0.05 N(0, 1)``; float32.
    """
    import torch

    from ffhq_aging_assets.lib.deeplab import build_deeplab

    rng = np.random.RandomState(seed)
    state = {}
    for key, value in build_deeplab().state_dict().items():
        shape = tuple(value.shape)
        if len(shape) == 1:
            noise = rng.standard_normal(shape)
            data = 1 + 0.1 * noise if key.endswith("weight") else 0.1 * noise
        else:
            data = 0.05 * rng.standard_normal(shape)
        state[key] = torch.from_numpy(data.astype(np.float32))
    return state


def write_published_checkpoint(path: Path, state: dict) -> None:
    """Save weights laid out as the published ``deeplab_model.pth`` is.

    A dict whose ``state_dict`` has ``module.``-prefixed keys (from ``nn.DataParallel``).
    """
    import torch

    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)


def write_labels_csv(path: Path, count: int, seed: int = 0) -> None:
    """A labels CSV in the published layout for images 0..count-1.

    Every fourth image has no attributes (pose, occlusion and glasses all -1).
    """
    rng = np.random.default_rng(seed)
    ages = ("0-2", "3-6", "7-9", "10-14", "15-19", "20-29", "30-39", "40-49", "50-69", "70-120")
    lines = [
        "image_number,age_group,age_group_confidence,gender,gender_confidence,head_pitch,"
        "head_roll,head_yaw,left_eye_occluded,right_eye_occluded,glasses"
    ]
    for n in range(count):
        age = ages[int(rng.integers(len(ages)))]
        gender = ("male", "female")[int(rng.integers(2))]
        conf = rng.uniform(0.6, 1.0, 2).round(3)
        if n % 4 == 3:
            attrs = "-1,-1,-1,-1,-1,-1"
        else:
            pose = rng.normal(0, 20, 3).round(1)
            occl = rng.uniform(0, 100, 2).round(1)
            glasses = ("None", "Normal", "Dark")[int(rng.integers(3))]
            attrs = ",".join([*map(str, pose), *map(str, occl), glasses])
        lines.append(f"{n},{age},{conf[0]},{gender},{conf[1]},{attrs}")
    path.write_text("\n".join(lines) + "\n")

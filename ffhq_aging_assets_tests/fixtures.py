"""Synthetic FFHQ worlds served by the fake Drive: metadata, LICENSE, labels, photos.

Used by the tests, the benchmarks and ``serve_fake_drive`` (the offline demo); never by the
package itself.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffhq_aging_assets.lib.images import pixel_md5
from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.synthetic import (
    WildFile,
    random_landmarks,
    synthetic_photo,
    write_ffhq_json,
    write_labels_csv,
)


@dataclass
class SyntheticFFHQ:
    """A synthetic metadata JSON and LICENSE served by the fake Drive."""

    drive: FakeDrive
    json_path: Path
    metadata_url: str
    metadata_md5: str
    metadata_size: int
    license_url: str
    license_md5: str
    license_size: int
    labels_url: str

    def locations(self) -> dict[str, object]:
        return {
            "metadata_url": self.metadata_url,
            "metadata_md5": self.metadata_md5,
            "metadata_size": self.metadata_size,
            "license_url": self.license_url,
            "license_md5": self.license_md5,
            "license_size": self.license_size,
        }


LICENSE_TEXT = b"Synthetic stand-in for FFHQ's LICENSE.txt\n"


def photo_file(n: int, url: str, width: int = 640, height: int = 480) -> tuple[WildFile, bytes]:
    """A synthetic in-the-wild photo for image ``n`` and the metadata that describes it."""
    rng = np.random.default_rng(n)
    lm = random_landmarks(rng, width, height)
    img = synthetic_photo(width, height, lm, seed=n)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    wild = WildFile(
        url, len(data), hashlib.md5(data).hexdigest(), (width, height), pixel_md5(img), lm
    )
    return wild, data


def serve_synthetic(
    drive: FakeDrive, folder: Path, count: int = 2100, mutate=None, photos: Iterable[int] = ()
) -> SyntheticFFHQ:
    """Write a ``count``-entry JSON in the published layout and serve it with a LICENSE.

    Images numbered in ``photos`` get real synthetic photos served by the fake Drive.
    """
    files = {}
    for n in photos:
        url = drive.url(f"wildPhoto{n:05d}x")
        wild, data = photo_file(n, url)
        drive.add(f"wildPhoto{n:05d}x", data, f"{n:05d}.png")
        files[n] = wild
    path = folder / "ffhq-dataset-v2.json"
    write_ffhq_json(path, count, seed=11, files=files)
    if mutate is not None:
        data = json.loads(path.read_text())
        mutate(data)
        path.write_text(json.dumps(data))
    raw = path.read_bytes()
    labels = folder / "ffhq_aging_labels.csv"
    write_labels_csv(labels, count, seed=3)
    return SyntheticFFHQ(
        drive=drive,
        json_path=path,
        metadata_url=drive.add("metadataJson0001", raw, "ffhq-dataset-v2.json"),
        metadata_md5=hashlib.md5(raw).hexdigest(),
        metadata_size=len(raw),
        license_url=drive.add("licenseTxt00001", LICENSE_TEXT, "LICENSE.txt"),
        license_md5=hashlib.md5(LICENSE_TEXT).hexdigest(),
        license_size=len(LICENSE_TEXT),
        labels_url=drive.add("labelsCsv000001", labels.read_bytes(), "ffhq_aging_labels.csv"),
    )

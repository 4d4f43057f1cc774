"""Synthetic FFHQ worlds served by the fake Drive: metadata, LICENSE, labels, photos.

Used by the tests, the benchmarks and ``serve_fake_drive`` (the offline demo); never by the
package itself.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from ffhq_aging_assets.lib.chunks import expected_numbers
from ffhq_aging_assets.lib.download import FileSpec, RetryPolicy
from ffhq_aging_assets.lib.images import pixel_md5
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    LabelsLocation,
    MetadataLocations,
)
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

    def locations(self) -> dict[str, Any]:
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
    drive: FakeDrive,
    folder: Path,
    count: int = 2100,
    mutate=None,
    photos: Iterable[int] = (),
    size_of: Callable[[int], tuple[int, int]] = lambda n: (640, 480),
) -> SyntheticFFHQ:
    """Write a ``count``-entry JSON in the published layout and serve it with a LICENSE.

    Images numbered in ``photos`` get real synthetic photos served by the fake Drive, of
    ``size_of(n)`` pixels.
    """
    files = {}
    for n in photos:
        url = drive.url(f"wildPhoto{n:05d}x")
        wild, data = photo_file(n, url, *size_of(n))
        drive.add(f"wildPhoto{n:05d}x", data, f"{n:05d}.png")
        files[n] = wild
    path = folder / "ffhq-dataset-v2.json"
    write_ffhq_json(path, count, seed=11, files=files)
    if mutate is not None:
        data = json.loads(path.read_text())
        mutate(data)
        path.write_text(json.dumps(data))
    labels = folder / "ffhq_aging_labels.csv"
    write_labels_csv(labels, count, seed=3)
    return serve_inputs(drive, path, path.read_bytes(), labels.read_bytes())


def serve_inputs(drive: FakeDrive, json_path: Path, raw: bytes, labels: bytes) -> SyntheticFFHQ:
    """Serve a metadata JSON's bytes ``raw`` (written at ``json_path``), a LICENSE and labels."""
    return SyntheticFFHQ(
        drive=drive,
        json_path=json_path,
        metadata_url=drive.add("metadataJson0001", raw, "ffhq-dataset-v2.json"),
        metadata_md5=hashlib.md5(raw).hexdigest(),
        metadata_size=len(raw),
        license_url=drive.add("licenseTxt00001", LICENSE_TEXT, "LICENSE.txt"),
        license_md5=hashlib.md5(LICENSE_TEXT).hexdigest(),
        license_size=len(LICENSE_TEXT),
        labels_url=drive.add("labelsCsv000001", labels, "ffhq_aging_labels.csv"),
    )


# A small world for the labels and the products: three chunks of three photos each, at 64 px.
WORLD_LIMIT = 3
WORLD_CHUNKS = ("00000", "01000", "02000")
WORLD_CONFIG = dg.RunConfig(
    ops={
        "aligned_images": {"config": {"mode": "fast", "num_processes": 1}},
        "segmentation_masks": {"config": {"device": "cpu", "batch_size": 3}},
    }
)


def world(
    drive: FakeDrive, tmp_path: Path, checkpoint: Path, labels: Path | None = None
) -> tuple[SyntheticFFHQ, Path, dict[str, Any]]:
    """Serve the small world; its root and the resources that build it from the fake Drive."""
    folder = tmp_path / "served"
    folder.mkdir(exist_ok=True)
    photos = [n for c in WORLD_CHUNKS for n in expected_numbers(c, WORLD_LIMIT)]
    served = serve_synthetic(drive, folder, count=2100, photos=photos)
    root = tmp_path / "root"
    resources = {
        "dataset": DatasetResource(root=str(root), limit=WORLD_LIMIT, resolution=64),
        "metadata_locations": MetadataLocations(**served.locations()),
        "file_source": FileSourceResource(num_attempts=2, backoff=0.01),
        "labels_location": LabelsLocation(url=str(labels) if labels else served.labels_url),
        "deeplab_weights": DeepLabWeights(url=str(checkpoint), md5=None, size=None),
    }
    return served, root, resources


def materialize(assets, instance, resources, **kwargs) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` with the world's step config for whichever of its ops are selected."""
    names = {key.path[-1] for a in assets for key in a.keys}
    ops = {k: v for k, v in WORLD_CONFIG.ops.items() if k in names}
    return dg.materialize(
        assets, instance=instance, resources=resources, run_config=dg.RunConfig(ops=ops), **kwargs
    )


# Downloads in the tests: quick retries, a file big enough for Drive's virus-scan page, a small one.
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, connect_timeout=2, read_timeout=1)
BIG = bytes(range(256)) * 2048
SMALL = b"FFHQ LICENSE " * 100


def spec_for(url: str, data: bytes, name: str = "file.bin") -> FileSpec:
    """The spec of ``data`` served at ``url``, with its true size and md5."""
    return FileSpec(url, name, size=len(data), md5=hashlib.md5(data).hexdigest())

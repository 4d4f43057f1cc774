"""Shared fixtures: a fake Google Drive on loopback, synthetic metadata, a private instance."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ffhq_aging_assets.lib.images import pixel_md5
from ffhq_aging_assets.lib.synthetic import (
    WildFile,
    random_landmarks,
    seeded_deeplab_state,
    synthetic_photo,
    write_ffhq_json,
    write_labels_csv,
    write_published_checkpoint,
)
from ffhq_aging_assets_tests.fake_drive import FakeDrive

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may divert loopback requests."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def drive() -> Iterator[FakeDrive]:
    server = FakeDrive().start()
    yield server
    server.stop()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private DAGSTER_HOME with the project's instance settings."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    project_yaml = Path(__file__).parents[1] / "dagster.yaml"
    (home / "dagster.yaml").write_text(project_yaml.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None and os.environ.get("FFHQ_SKIP_GPU") != "1":
        import torch

        has_cuda = torch.cuda.is_available()
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


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


@pytest.fixture
def synthetic(drive: FakeDrive, tmp_path: Path) -> SyntheticFFHQ:
    src = tmp_path / "served"
    src.mkdir()
    return serve_synthetic(drive, src)


@pytest.fixture(scope="session")
def seeded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published-format checkpoint with the reference numbers' seeded weights (233 MB)."""
    path = tmp_path_factory.mktemp("weights") / "deeplab_model.pth"
    write_published_checkpoint(path, seeded_deeplab_state())
    return path

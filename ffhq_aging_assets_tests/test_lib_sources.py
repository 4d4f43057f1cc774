import hashlib
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import ChecksumError, DownloadError, FileSpec, RetryPolicy
from ffhq_aging_assets.lib.sources import DriveHttpSource, LocalFolderSource, PyDriveSource

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02, read_timeout=2)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def spec(url: str, data: bytes = PNG, name: str = "00042.png") -> FileSpec:
    return FileSpec(url, name, len(data), hashlib.md5(data).hexdigest())


@pytest.mark.parametrize(
    "layout", ["00042.png", "00000/00042.png", "in-the-wild-images/00000/00042.png"]
)
def test_local_folder_finds_ffhq_layouts(tmp_path: Path, layout: str) -> None:
    (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout).write_bytes(PNG)
    got = LocalFolderSource(tmp_path).fetch(
        spec("https://x/uc?id=abcdefghijkl"), tmp_path / "w" / "00042.png"
    )
    assert got.path == tmp_path / layout and not got.owned


def test_local_copy_that_differs_is_an_error_not_a_fallback(tmp_path: Path, drive) -> None:
    (tmp_path / "00042.png").write_bytes(PNG[:-1] + b"!")
    url = drive.add("img0000000042", PNG)
    source = LocalFolderSource(tmp_path, fallback=DriveHttpSource(FAST))
    with pytest.raises(ChecksumError, match="local copy"):
        source.fetch(spec(url), tmp_path / "w" / "00042.png")
    assert drive.requests["img0000000042"] == 0


def test_local_falls_back_to_drive_for_missing_files(tmp_path: Path, drive) -> None:
    url = drive.add("img0000000042", PNG)
    got = LocalFolderSource(tmp_path / "none", DriveHttpSource(FAST)).fetch(
        spec(url), tmp_path / "w" / "00042.png"
    )
    assert got.owned and got.path.read_bytes() == PNG
    with pytest.raises(DownloadError, match="not in the local folder"):
        LocalFolderSource(tmp_path / "none").fetch(spec(url), tmp_path / "w2" / "00042.png")


class FakeDriveFile:
    def __init__(self, store: dict, file_id: str) -> None:
        self.store, self.file_id = store, file_id

    def GetContentFile(self, filename: str) -> None:  # noqa: N802 (pydrive2's name)
        self.store["calls"].append(self.file_id)
        data = self.store["files"][self.file_id]
        if self.store["fail"]:
            self.store["fail"] -= 1
            data = data[:-3]
        Path(filename).write_bytes(data)


class FakeGoogleDrive:
    """Stands in for pydrive2's GoogleDrive: Google's API cannot be reached from tests."""

    def __init__(self, files: dict, fail: int = 0) -> None:
        self.store = {"files": files, "calls": [], "fail": fail}

    def CreateFile(self, meta: dict) -> FakeDriveFile:  # noqa: N802
        return FakeDriveFile(self.store, meta["id"])


def test_pydrive_downloads_by_id_and_verifies(tmp_path: Path) -> None:
    fake = FakeGoogleDrive({"1AbCdEfGhIjK": PNG}, fail=1)
    source = PyDriveSource(
        tmp_path / "secrets.json", tmp_path / "creds.json", policy=FAST, drive_factory=lambda: fake
    )
    got = source.fetch(spec("https://drive.google.com/uc?id=1AbCdEfGhIjK"), tmp_path / "00042.png")
    assert got.path.read_bytes() == PNG and got.owned
    assert fake.store["calls"] == ["1AbCdEfGhIjK", "1AbCdEfGhIjK"]  # first copy was corrupt
    again = source.fetch(
        spec("https://drive.google.com/uc?id=1AbCdEfGhIjK"), tmp_path / "00042.png"
    )
    assert not again.fetched and len(fake.store["calls"]) == 2


def test_pydrive_without_client_secrets_says_what_to_do(tmp_path: Path) -> None:
    source = PyDriveSource(tmp_path / "missing.json", tmp_path / "creds.json", policy=FAST)
    with pytest.raises(DownloadError, match="OAuth client file"):
        source.fetch(spec("https://drive.google.com/uc?id=1AbCdEfGhIjK"), tmp_path / "x.png")

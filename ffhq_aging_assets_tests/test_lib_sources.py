import hashlib
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import ChecksumError, DownloadError, FileSpec, RetryPolicy
from ffhq_aging_assets.lib.sources import DriveHttpSource, LocalFolderSource

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

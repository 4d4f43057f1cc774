import hashlib
import threading
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    QuotaExceededError,
    RetryPolicy,
    download,
    thread_session,
)
from ffhq_aging_assets.lib.drive import (
    DrivePageError,
    DriveQuotaError,
    drive_file_id,
    interpret_html,
    looks_like_html,
)
from ffhq_aging_assets.lib.files import leftover_temp_files
from ffhq_aging_assets_tests.fake_drive import LEGACY_PAGE, QUOTA_PAGE, VIRUS_SCAN_PAGE

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05, connect_timeout=2, read_timeout=1)
BIG = bytes(range(256)) * 2048  # 512 KiB: large enough for the virus-scan page
SMALL = b"FFHQ LICENSE " * 100


def spec_for(url: str, data: bytes, name: str = "file.bin") -> FileSpec:
    return FileSpec(url, name, size=len(data), md5=hashlib.md5(data).hexdigest())


def test_small_file_comes_straight(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0001", SMALL, "LICENSE.txt")
    result = download(spec_for(url, SMALL), tmp_path / "LICENSE.txt", policy=FAST)
    assert result.fetched and result.attempts == 1
    assert (tmp_path / "LICENSE.txt").read_bytes() == SMALL


def test_large_file_through_virus_scan_form(drive, tmp_path: Path) -> None:
    url = drive.add("bigfile000001", BIG, "ffhq-dataset-v2.json")
    result = download(spec_for(url, BIG), tmp_path / "meta.json", policy=FAST)
    assert result.md5 == hashlib.md5(BIG).hexdigest()
    assert (tmp_path / "meta.json").read_bytes() == BIG
    assert drive.requests["bigfile000001"] == 2  # the page, then the form's target


def test_large_file_through_legacy_confirm_link(drive, tmp_path: Path) -> None:
    url = drive.add("bigfile000002", BIG, legacy=True)
    download(spec_for(url, BIG), tmp_path / "out.bin", policy=FAST)
    assert (tmp_path / "out.bin").read_bytes() == BIG


def test_quota_page_is_a_clear_error_and_not_retried(drive, tmp_path: Path) -> None:
    url = drive.add("bigfile000003", BIG)
    drive.fail("bigfile000003", "quota")
    with pytest.raises(QuotaExceededError) as err:
        download(spec_for(url, BIG, "ffhq-dataset-v2.json"), tmp_path / "m.json", policy=FAST)
    message = str(err.value)
    assert "ffhq-dataset-v2.json" in message and "--source pydrive" in message
    assert "local:DIR" in message
    assert drive.requests["bigfile000003"] == 1
    assert not (tmp_path / "m.json").exists() and not leftover_temp_files(tmp_path)


def test_quota_page_after_form_submission(drive, tmp_path: Path) -> None:
    url = drive.add("bigfile000004", BIG)
    drive.fail("bigfile000004", "ok", "quota")
    download(spec_for(url, BIG), tmp_path / "a.bin", policy=FAST)
    with pytest.raises(QuotaExceededError):
        download(spec_for(url, BIG), tmp_path / "b.bin", policy=FAST)
    assert not (tmp_path / "b.bin").exists()


@pytest.mark.parametrize(
    "fault", ["500", "429", "truncate", "corrupt", "html", "html-as-data", "slow"]
)
def test_transient_faults_are_retried(drive, tmp_path: Path, fault: str) -> None:
    drive.stall_seconds = 2.5
    url = drive.add("smallfile0002", SMALL)
    drive.fail("smallfile0002", fault)
    result = download(spec_for(url, SMALL), tmp_path / "f.bin", policy=FAST)
    assert result.attempts == 2
    assert (tmp_path / "f.bin").read_bytes() == SMALL
    assert not leftover_temp_files(tmp_path)


def test_persistent_corruption_names_file_and_both_checksums(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0003", SMALL)
    drive.fail("smallfile0003", "corrupt", "corrupt", "corrupt")
    spec = spec_for(url, SMALL, "00042.png")
    with pytest.raises(ChecksumError) as err:
        download(spec, tmp_path / "00042.png", policy=FAST)
    message = str(err.value)
    assert "00042.png" in message and spec.md5 in message
    bad = bytearray(SMALL)
    bad[len(bad) // 2] ^= 0xFF
    assert hashlib.md5(bad).hexdigest() in message
    assert "3 attempts" in message
    assert not (tmp_path / "00042.png").exists() and not leftover_temp_files(tmp_path)


@pytest.mark.parametrize("fault", ["html", "html-as-data"])
def test_html_is_never_written_as_data(drive, tmp_path: Path, fault: str) -> None:
    url = drive.add("smallfile0004", SMALL)
    drive.fail("smallfile0004", fault, fault, fault)
    with pytest.raises(DownloadError, match="instead of the file"):
        download(FileSpec(url, "x.png"), tmp_path / "x.png", policy=FAST)
    assert not (tmp_path / "x.png").exists() and not leftover_temp_files(tmp_path)


def test_verified_file_is_not_fetched_again(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0005", SMALL)
    spec = spec_for(url, SMALL)
    download(spec, tmp_path / "f.bin", policy=FAST)
    again = download(spec, tmp_path / "f.bin", policy=FAST)
    assert not again.fetched
    assert drive.requests["smallfile0005"] == 1


def test_wrong_existing_file_is_replaced(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0006", SMALL)
    (tmp_path / "f.bin").write_bytes(b"stale")
    download(spec_for(url, SMALL), tmp_path / "f.bin", policy=FAST)
    assert (tmp_path / "f.bin").read_bytes() == SMALL


def test_wrong_announced_size_fails_before_the_body(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0007", SMALL)
    spec = FileSpec(url, "f.bin", size=len(SMALL) + 1)
    with pytest.raises(ChecksumError, match="announces"):
        download(spec, tmp_path / "f.bin", policy=FAST)


def test_missing_file_is_not_retried_forever(drive, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(FileSpec(drive.url("nosuchfile00"), "x"), tmp_path / "x", policy=FAST)


def test_local_path_and_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.json"
    src.write_bytes(SMALL)
    for url in (str(src), src.as_uri()):
        dest = tmp_path / "out" / "copy.json"
        dest.unlink(missing_ok=True)
        download(spec_for(url, SMALL), dest)
        assert dest.read_bytes() == SMALL
    with pytest.raises(ChecksumError, match="local file"):
        download(FileSpec(str(src), "src.json", md5="0" * 32), tmp_path / "o2.json")


def test_one_session_per_thread() -> None:
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(thread_session())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 3
    assert thread_session() is thread_session()


def test_interpret_pages() -> None:
    page = VIRUS_SCAN_PAGE.format(
        id="abcdefghij12",
        name="f",
        size_h="1K",
        base="https://drive.usercontent.google.com",
        uuid="u-1",
    )
    nxt = interpret_html(page, "https://drive.google.com/uc?id=abcdefghij12")
    assert nxt.url == "https://drive.usercontent.google.com/download"
    assert nxt.params == {"id": "abcdefghij12", "export": "download", "confirm": "t", "uuid": "u-1"}
    legacy = interpret_html(
        LEGACY_PAGE.format(id="abcdefghij12", token="T0k"),
        "https://drive.google.com/uc?id=abcdefghij12",
    )
    assert legacy.url == "https://drive.google.com/uc?export=download&confirm=T0k&id=abcdefghij12"
    with pytest.raises(DriveQuotaError):
        interpret_html(QUOTA_PAGE, "https://drive.google.com/uc")
    with pytest.raises(DrivePageError, match="Sign in"):
        interpret_html("<html><title>Sign in</title></html>", "https://x/")
    assert looks_like_html(b"\n  <!DOCTYPE html><html>") and not looks_like_html(b"\x89PNG\r\n")
    assert drive_file_id("https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA")
    assert drive_file_id("https://drive.google.com/file/d/1SHafCugkpMZzYhbgOz0zCuYiy-hb9lYX/view")
    assert drive_file_id("https://example.com/x.png") is None

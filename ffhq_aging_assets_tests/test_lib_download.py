import hashlib
import re
import socket
import threading
import time
from dataclasses import replace
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


def test_the_same_wrong_bytes_twice_stop_at_once(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0003", SMALL)
    drive.fail("smallfile0003", *["corrupt"] * 5)
    spec = spec_for(url, SMALL, "00042.png")
    with pytest.raises(ChecksumError) as err:
        download(spec, tmp_path / "00042.png", policy=replace(FAST, attempts=5))
    assert drive.body_requests["smallfile0003"] == 2
    message = str(err.value)
    assert message.startswith(f"00042.png: gave up after 2 attempts from {url}: ")
    bad = bytearray(SMALL)
    bad[len(bad) // 2] ^= 0xFF
    assert spec.md5 in message and hashlib.md5(bad).hexdigest() in message
    assert "same wrong bytes twice" in message
    assert not (tmp_path / "00042.png").exists() and not leftover_temp_files(tmp_path)


def test_different_wrong_bytes_are_retried(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0013", SMALL)
    drive.fail("smallfile0013", "corrupt", "corrupt-other")
    result = download(spec_for(url, SMALL), tmp_path / "f.bin", policy=FAST)
    assert result.attempts == 3
    assert (tmp_path / "f.bin").read_bytes() == SMALL


def test_wrong_bytes_on_every_attempt_is_a_checksum_error(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0014", SMALL)
    drive.fail("smallfile0014", "corrupt-other", "corrupt")
    with pytest.raises(ChecksumError, match="gave up after 2 attempts"):
        download(spec_for(url, SMALL), tmp_path / "f.bin", policy=replace(FAST, attempts=2))


PRIVATE_OR_CLASS_NAME = re.compile(
    r"\b_[A-Za-z]\w*|\b[A-Z]\w*(Error|Timeout|Exception|Transient)\b"
)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("500", "the server answered HTTP 500 Internal Server Error"),
        ("slow", "the server stopped sending data (read timed out after 1 s)"),
        ("truncate", "the connection closed after 650 of 1,300 bytes"),
        ("html", "instead of the file"),
    ],
)
def test_final_message_is_plain(drive, tmp_path: Path, fault: str, words: str) -> None:
    drive.stall_seconds = 2.5
    url = drive.add("smallfile0015", SMALL)
    drive.fail("smallfile0015", fault, fault, fault)
    with pytest.raises(DownloadError) as err:
        download(spec_for(url, SMALL, "LICENSE.txt"), tmp_path / "LICENSE.txt", policy=FAST)
    message = str(err.value)
    assert message.startswith(f"LICENSE.txt: gave up after 3 attempts from {url}: ")
    assert words in message
    assert not PRIVATE_OR_CLASS_NAME.search(message), message


def test_refused_connection_is_said_plainly(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/uc?id=nobodyhome01"
    with pytest.raises(DownloadError) as err:
        download(FileSpec(url, "x.png"), tmp_path / "x.png", policy=FAST)
    message = str(err.value)
    assert message == f"x.png: gave up after 3 attempts from {url}: the connection was refused"


def test_deadline_follows_size_and_minimum_rate() -> None:
    policy = RetryPolicy(min_bytes_per_second=50_000, deadline_grace=120)
    assert policy.deadline(4_000_000) == 120  # nothing arrived yet: the grace alone
    assert policy.deadline(4_000_000, received=1_000_000) == 140
    assert policy.deadline(4_000_000, received=9_000_000) == 200  # never past the size
    assert policy.deadline(None) == 120
    assert policy.deadline(None, received=5_000_000) == 220
    with pytest.raises(ValueError):
        RetryPolicy(min_bytes_per_second=0)


@pytest.mark.parametrize("sized", [True, False])
def test_trickling_server_fails_within_the_deadline(drive, tmp_path: Path, sized: bool) -> None:
    drive.trickle_seconds = 0.2
    drive.fault_limit_seconds = 15  # without a deadline, each attempt would last this long
    url = drive.add("smallfile0016", SMALL)
    drive.fail("smallfile0016", "trickle", "trickle", "trickle")
    spec = spec_for(url, SMALL, "ffhq-dataset-v2.json") if sized else FileSpec(url, "m.json")
    policy = replace(FAST, read_timeout=1, deadline_grace=2)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(spec, tmp_path / "m.json", policy=policy)
    elapsed = time.monotonic() - start
    assert 1.9 < elapsed < 8
    message = str(err.value)
    assert not isinstance(err.value, ChecksumError)
    assert message.startswith(f"{spec.name}: gave up after 1 attempt from {url}: ")
    assert "did not arrive within its deadline of 2 s" in message
    assert "(2 s, plus 1 s for every 50 kB received" in message
    if sized:
        assert "at most 2 s for its 1,300 bytes" in message
    received = int(re.search(r"received ([\d,]+) bytes", message).group(1).replace(",", ""))
    assert 0 < received < len(SMALL)
    assert not leftover_temp_files(tmp_path)


def test_silent_server_costs_the_deadline_not_attempts_times_read_timeout(
    drive, tmp_path: Path
) -> None:
    drive.fault_limit_seconds = 20
    url = drive.add("smallfile0017", SMALL)
    drive.fail("smallfile0017", *["silent"] * 5)
    policy = replace(FAST, attempts=5, read_timeout=30, deadline_grace=2)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(spec_for(url, SMALL), tmp_path / "f.bin", policy=policy)
    elapsed = time.monotonic() - start
    assert 1.9 < elapsed < 8  # not 5 attempts x 30 s
    message = str(err.value)
    assert message.startswith(f"file.bin: gave up after 1 attempt from {url}: ")
    assert "deadline of 2 s" in message and "the server did not answer" in message


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
    with pytest.raises(ChecksumError, match="announces 1,300 bytes, expected 1,301"):
        download(spec, tmp_path / "f.bin", policy=FAST)
    assert drive.requests["smallfile0007"] == 2  # the same answer twice: not retried further


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

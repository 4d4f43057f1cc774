"""One HTTP attempt's behaviour (Drive pages, statuses, plain wording), seen through download()."""

import hashlib
import re
import socket
import threading
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    QuotaExceededError,
    download,
)
from ffhq_aging_assets.lib.download_attempt import thread_session
from ffhq_aging_assets.lib.files import leftover_temp_files
from ffhq_aging_assets_tests.fixtures import BIG, FAST, SMALL, spec_for


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


def test_quota_page_after_form_submission(drive, tmp_path: Path) -> None:
    url = drive.add("bigfile000004", BIG)
    drive.fail("bigfile000004", "ok", "quota")
    download(spec_for(url, BIG), tmp_path / "a.bin", policy=FAST)
    with pytest.raises(QuotaExceededError):
        download(spec_for(url, BIG), tmp_path / "b.bin", policy=FAST)
    assert not (tmp_path / "b.bin").exists()


@pytest.mark.parametrize("fault", ["html", "html-as-data"])
def test_html_is_never_written_as_data(drive, tmp_path: Path, fault: str) -> None:
    url = drive.add("smallfile0004", SMALL)
    drive.fail("smallfile0004", fault, fault, fault)
    with pytest.raises(DownloadError, match="instead of the file"):
        download(FileSpec(url, "x.png"), tmp_path / "x.png", policy=FAST)
    assert not (tmp_path / "x.png").exists() and not leftover_temp_files(tmp_path)


def test_wrong_announced_size_fails_before_the_body(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0007", SMALL)
    spec = FileSpec(url, "f.bin", size=len(SMALL) + 1)
    with pytest.raises(ChecksumError, match="announces 1,300 bytes, expected 1,301"):
        download(spec, tmp_path / "f.bin", policy=FAST)
    assert drive.requests["smallfile0007"] == 2  # the same answer twice: not retried further


def test_missing_file_is_not_retried_forever(drive, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(FileSpec(drive.url("nosuchfile00"), "x"), tmp_path / "x", policy=FAST)


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


def test_one_session_per_thread() -> None:
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(thread_session())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 3
    assert thread_session() is thread_session()

import hashlib
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    QuotaExceededError,
    download,
)
from ffhq_aging_assets.lib.files import leftover_temp_files
from ffhq_aging_assets_tests.fixtures import BIG, FAST, SMALL, spec_for


def test_small_file_comes_straight(drive, tmp_path: Path) -> None:
    url = drive.add("smallfile0001", SMALL, "LICENSE.txt")
    result = download(spec_for(url, SMALL), tmp_path / "LICENSE.txt", policy=FAST)
    assert result.fetched and result.attempts == 1
    assert (tmp_path / "LICENSE.txt").read_bytes() == SMALL


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

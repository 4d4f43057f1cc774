import os
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.download import FileSpec, RetryPolicy
from ffhq_aging_assets.lib.inputs import InputError, fetch_input
from ffhq_aging_assets.lib.labels_csv import check_labels_file
from ffhq_aging_assets.lib.sources import DriveHttpSource
from ffhq_aging_assets_tests.synthetic import write_labels_csv

SOURCE = DriveHttpSource(RetryPolicy(attempts=2, backoff=0.01))
HTML = b"<!-- served by a proxy -->\n<html><body>Sign in</body></html>\n"


def labels_check(path: Path, _md5: str) -> int:
    return check_labels_file(path, "ffhq_aging_labels.csv").rows


def test_bad_cached_input_is_moved_aside_and_a_corrected_location_fetched(
    drive, tmp_path: Path
) -> None:
    good = tmp_path / "good.csv"
    write_labels_csv(good, 20, seed=1)
    bad_url = drive.add("labelsHtml00001", HTML, "ffhq_aging_labels.csv")
    good_url = drive.add("labelsGood00001", good.read_bytes(), "ffhq_aging_labels.csv")
    dest = tmp_path / "root/metadata/ffhq_aging_labels.csv"

    with pytest.raises(InputError) as caught:
        fetch_input(SOURCE, FileSpec(bad_url, "ffhq_aging_labels.csv"), dest, labels_check)
    message = str(caught.value)
    assert bad_url in message and "moved aside to" in message and "fetches it again" in message
    [aside] = dest.parent.glob("ffhq_aging_labels.csv.bad-*")
    assert aside.read_bytes() == HTML and not dest.exists()

    got = fetch_input(SOURCE, FileSpec(good_url, "ffhq_aging_labels.csv"), dest, labels_check)
    assert got.fetched and got.checked == 20 and dest.read_bytes() == good.read_bytes()
    again = fetch_input(SOURCE, FileSpec(good_url, "ffhq_aging_labels.csv"), dest, labels_check)
    assert not again.fetched and again.checked == 20
    assert drive.body_requests["labelsGood00001"] == 1


def test_a_new_location_without_md5_replaces_the_cached_copy(drive, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_labels_csv(first, 10, seed=1)
    write_labels_csv(second, 12, seed=2)
    dest = tmp_path / "root/ffhq_aging_labels.csv"
    assert fetch_input(SOURCE, FileSpec(str(first), "labels"), dest, labels_check).checked == 10
    got = fetch_input(SOURCE, FileSpec(str(second), "labels"), dest, labels_check)
    assert got.fetched and got.checked == 12 and dest.read_bytes() == second.read_bytes()


def test_a_local_file_changed_in_place_is_fetched_again(tmp_path: Path) -> None:
    local = tmp_path / "labels.csv"
    write_labels_csv(local, 10, seed=1)
    dest = tmp_path / "root/ffhq_aging_labels.csv"
    spec = FileSpec(str(local), "labels")
    assert fetch_input(SOURCE, spec, dest, labels_check).checked == 10
    assert not fetch_input(SOURCE, spec, dest, labels_check).fetched
    write_labels_csv(local, 15, seed=1)
    stat = local.stat()
    os.utime(local, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    got = fetch_input(SOURCE, spec, dest, labels_check)
    assert got.fetched and got.checked == 15


def test_a_cached_copy_damaged_on_disk_is_checked_again(tmp_path: Path) -> None:
    local = tmp_path / "labels.csv"
    write_labels_csv(local, 10, seed=1)
    dest = tmp_path / "root/ffhq_aging_labels.csv"
    spec = FileSpec(str(local), "labels")
    fetch_input(SOURCE, spec, dest, labels_check)
    dest.write_bytes(HTML)
    with pytest.raises(InputError, match="moved aside"):
        fetch_input(SOURCE, spec, dest, labels_check)
    assert fetch_input(SOURCE, spec, dest, labels_check).checked == 10

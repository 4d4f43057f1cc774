from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.metadata_store import chunk_metadata
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

ASSETS = [ffhq_metadata_json, image_metadata]


def resources(root: Path, synthetic: SyntheticFFHQ, limit: int = 20, **locations) -> dict:
    return {
        "dataset": DatasetResource(root=str(root), limit=limit),
        "metadata_locations": MetadataLocations(**{**synthetic.locations(), **locations}),
        "file_source": FileSourceResource(num_attempts=3, backoff=0.01, read_timeout=5),
    }


def checks_by_name(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_metadata_for_one_chunk(tmp_path: Path, synthetic: SyntheticFFHQ) -> None:
    root = tmp_path / "root"
    synthetic.drive.fail("metadataJson0001", "500", "truncate")
    result = dg.materialize(ASSETS, partition_key="01000", resources=resources(root, synthetic))
    assert result.success
    assert checks_by_name(result) == {
        "row_count": True,
        "image_numbers": True,
        "landmarks_finite": True,
    }
    # The table holds the whole chunk; the limit applies when later stages read it.
    table = pq.read_table(root / "tables" / "image_metadata" / "01000.parquet")
    assert table.column("image_number").to_pylist() == list(range(1000, 2000))
    limited = chunk_metadata(DatasetLayout(root.resolve(), 256), "01000", 20)
    assert limited.column("image_number").to_pylist() == list(range(1000, 1020))
    assert (root / "metadata" / "LICENSE.txt").exists()
    mats = {m.asset_key.path[-1]: m for m in result.get_asset_materialization_events()}
    meta = mats["image_metadata"].materialization.metadata
    assert meta["dagster/row_count"].value == 1000 and meta["rows_checked"].value == 20
    assert "image_number" in [c.name for c in meta["dagster/column_schema"].value.columns]
    assert mats["ffhq_metadata_json"].materialization.metadata["entries"].value == 2100

    before = dict(synthetic.drive.body_requests)
    again = dg.materialize(
        ASSETS, partition_key="00000", resources=resources(root, synthetic, limit=0)
    )
    assert again.success and checks_by_name(again)["row_count"]
    assert pq.read_table(root / "tables" / "image_metadata" / "00000.parquet").num_rows == 1000
    assert dict(synthetic.drive.body_requests) == before  # verified JSON not fetched again


def test_wrong_checksum_names_file_and_both_md5s(tmp_path: Path, synthetic: SyntheticFFHQ) -> None:
    result = dg.materialize(
        ASSETS,
        partition_key="00000",
        raise_on_error=False,
        resources=resources(tmp_path / "root", synthetic, metadata_md5="0" * 32),
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.cause.message
    assert "ffhq-dataset-v2.json" in message and "0" * 32 in message
    assert synthetic.metadata_md5 in message
    assert not (tmp_path / "root" / "metadata" / "ffhq-dataset-v2.json").exists()


def test_nan_landmarks_fail_the_blocking_check(tmp_path: Path, drive) -> None:
    def poison(data: dict) -> None:
        data["5"]["in_the_wild"]["face_landmarks"][3][1] = float("nan")

    served = serve_synthetic(drive, tmp_path, count=30, mutate=poison)
    result = dg.materialize(
        ASSETS,
        partition_key="00000",
        raise_on_error=False,
        resources=resources(tmp_path / "root", served, limit=10),
    )
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "landmarks_finite"
    ]
    assert not check.passed and "00005" in check.description
    assert check.severity == dg.AssetCheckSeverity.ERROR


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["4"]["in_the_wild"].update(file_path="../../../etc/00004.png"),
            "unsafe file_path",
        ),
        (
            lambda d: d["4"]["in_the_wild"].update(file_path="in-the-wild-images/00000/00009.png"),
            "does not name image 00004.png",
        ),
    ],
)
def test_bad_entry_fails_the_chunk_naming_it(tmp_path: Path, drive, mutate, message) -> None:
    served = serve_synthetic(drive, tmp_path, count=30, mutate=mutate)
    result = dg.materialize(
        ASSETS,
        partition_key="00000",
        raise_on_error=False,
        resources=resources(tmp_path / "root", served, limit=10),
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    text = failure.step_failure_data.error.cause.message
    assert "entry '4'" in text and message in text
    assert not (tmp_path / "root" / "tables" / "image_metadata" / "00000.parquet").exists()


def test_chunk_before_metadata_says_what_to_do(tmp_path: Path, synthetic: SyntheticFFHQ) -> None:
    result = dg.materialize(
        [image_metadata],
        partition_key="00000",
        raise_on_error=False,
        resources=resources(tmp_path / "root", synthetic),
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "materialize ffhq_metadata_json first" in failure.step_failure_data.error.message


def test_json_with_fewer_entries_than_the_limit_needs_fails(
    tmp_path: Path, synthetic: SyntheticFFHQ
) -> None:
    root = tmp_path / "root"
    enough = dg.materialize(
        ASSETS, partition_key="02000", resources=resources(root, synthetic, limit=100)
    )
    assert enough.success and checks_by_name(enough)["row_count"]
    short = dg.materialize(
        [image_metadata],
        partition_key="02000",
        raise_on_error=False,
        resources=resources(root, synthetic, limit=0),
    )
    assert not short.success
    assert (
        "ffhq-dataset-v2.json ends after entry 2099: chunk 02000 needs entries 2000..2999"
        in failure_message(short)
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_json_cut_in_half_is_moved_aside_and_a_good_copy_used(
    tmp_path: Path, synthetic: SyntheticFFHQ
) -> None:
    raw = synthetic.json_path.read_bytes()
    cut = synthetic.drive.add("metadataHalf001", raw[: len(raw) // 2], "ffhq-dataset-v2.json")
    root = tmp_path / "root"
    unverified = {"metadata_md5": None, "metadata_size": None}
    result = dg.materialize(
        [ffhq_metadata_json],
        raise_on_error=False,
        resources=resources(root, synthetic, metadata_url=cut, **unverified),
    )
    assert not result.success
    message = failure_message(result)
    assert cut in message and "moved aside to" in message and "fetches it again" in message
    [aside] = (root / "metadata").glob("ffhq-dataset-v2.json.bad-*")
    assert aside.stat().st_size == len(raw) // 2
    assert not (root / "metadata" / "ffhq-dataset-v2.json").exists()

    # A corrected location without an md5 is fetched, not shadowed by what was cached.
    good = resources(root, synthetic, metadata_url=synthetic.metadata_url, **unverified)
    assert dg.materialize(ASSETS, partition_key="00000", resources=good).success
    assert (root / "metadata" / "ffhq-dataset-v2.json").read_bytes() == raw

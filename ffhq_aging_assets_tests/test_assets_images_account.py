"""A chunk's photos through the Drive API with an account: causes counted, sign-in failing fast."""

from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.lib.drive_api import QUOTA, RATE_LIMITED, SERVER_ERROR, UNAVAILABLE
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations
from ffhq_aging_assets_tests.accounts import signed_in
from ffhq_aging_assets_tests.fake_google import FakeGoogle
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

PHOTOS = range(1000, 1008)
CONFIG = dg.RunConfig(ops={"aligned_images": {"config": {"mode": "fast", "num_processes": 1}}})


@pytest.fixture
def served(drive, tmp_path: Path) -> SyntheticFFHQ:
    folder = tmp_path / "served"
    folder.mkdir()
    return serve_synthetic(drive, folder, count=1100, photos=PHOTOS)


def resources(root: Path, s: SyntheticFFHQ, source: FileSourceResource) -> dict:
    return {
        "dataset": DatasetResource(root=str(root), limit=len(PHOTOS), resolution=64),
        "metadata_locations": MetadataLocations(**s.locations()),
        "file_source": source,
    }


def prepared(root: Path, s: SyntheticFFHQ) -> None:
    """The metadata and alignments of chunk 01000, fetched anonymously."""
    anonymous = FileSourceResource(num_attempts=2, backoff=0.01)
    result = dg.materialize(
        [ffhq_metadata_json, image_metadata, alignments],
        partition_key="01000",
        resources=resources(root, s, anonymous),
    )
    assert result.success


def failure_of(result: dg.ExecuteInProcessResult) -> dg.Failure:
    event = next(e for e in result.all_events if e.is_step_failure)
    data = event.step_failure_data
    assert data is not None
    return data


def test_errors_are_handled_by_cause_and_counted(
    google: FakeGoogle, served: SyntheticFFHQ, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    prepared(root, served)
    account = signed_in(google, tmp_path / "account")
    google.fail("wildPhoto01001x", "quota")
    google.fail("wildPhoto01002x", "notFound")
    google.fail("wildPhoto01003x", "cannotDownload")
    google.fail("wildPhoto01004x", "rateLimit:retry-after=1")
    google.fail("wildPhoto01005x", "503", "500")
    source = FileSourceResource(
        kind="pydrive",
        client_secrets=str(account.client_secrets),
        credentials_file=str(account.credentials_file),
        api_endpoint=google.api_endpoint,
        num_attempts=3,
        backoff=0.01,
        num_threads=3,
    )
    result = dg.materialize(
        [aligned_images],
        partition_key="01000",
        resources=resources(root, served, source),
        run_config=CONFIG,
        raise_on_error=False,
    )
    assert not result.success
    failure = failure_of(result)
    assert failure.user_failure_data is not None
    text = failure.user_failure_data.description or ""
    assert "3 of 8 images failed" in text
    assert f"{QUOTA}: 1" in text and f"{UNAVAILABLE}: 2" in text
    assert "01001: image 01001.png: the download quota" in text and "nightly backfill" in text
    assert "01002: image 01002.png: Drive file wildPhoto01002x is unavailable (404 notFound" in text
    metadata = failure.user_failure_data.metadata
    assert metadata["failed_by_cause"].value == {QUOTA: 1, UNAVAILABLE: 2}
    events = metadata["drive_api_events"].value
    assert events[RATE_LIMITED] == 1 and events[SERVER_ERROR] == 2
    for n in (1001, 1002, 1003):  # never retried
        assert google.media_requests(f"wildPhoto0{n}x") == 1
    assert google.media_requests("wildPhoto01004x") == 2
    written = sorted(p.name for p in (root / "ffhq_aging64x64" / "01000").iterdir())
    assert written == [f"0{n}.png" for n in PHOTOS if n not in (1001, 1002, 1003)]

    # The quota has passed and the files are back: a re-run fetches only the three.
    result = dg.materialize(
        [aligned_images],
        partition_key="01000",
        resources=resources(root, served, source),
        run_config=CONFIG,
    )
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["aligned"].value == 3 and metadata["already_valid"].value == 5
    assert metadata["drive_api_events"].value == {}
    assert google.media_requests("wildPhoto01000x") == 1


def test_a_step_without_a_sign_in_fails_at_once_with_the_login_command(
    google: FakeGoogle, served: SyntheticFFHQ, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    prepared(root, served)
    source = FileSourceResource(
        kind="pydrive",
        credentials_file=str(tmp_path / "nobody.json"),
        api_endpoint=google.api_endpoint,
        num_attempts=5,
        backoff=1.0,
    )
    result = dg.materialize(
        [aligned_images],
        partition_key="01000",
        resources=resources(root, served, source),
        run_config=CONFIG,
        raise_on_error=False,
    )
    assert not result.success
    failure = failure_of(result)
    assert failure.error is not None
    message = failure.error.message + "".join(
        c.message for c in [failure.error.cause] if c is not None
    )
    assert f"no saved Google sign-in at {tmp_path / 'nobody.json'}" in message
    assert "run `ffhq-aging login" in message
    assert not [r for r in google.log if r.path.startswith("/drive/")]
    assert not (root / "ffhq_aging64x64" / "01000").exists() or not any(
        (root / "ffhq_aging64x64" / "01000").glob("*.png")
    )

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.lib.align import align_face
from ffhq_aging_assets.lib.files import leftover_temp_files
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

ASSETS = [ffhq_metadata_json, image_metadata, alignments, aligned_images]
PHOTOS = range(1000, 1012)


@pytest.fixture
def served(drive, tmp_path: Path) -> SyntheticFFHQ:
    folder = tmp_path / "served"
    folder.mkdir()
    return serve_synthetic(drive, folder, count=1100, photos=PHOTOS)


def resources(root: Path, s: SyntheticFFHQ, limit: int, resolution: int = 128) -> dict:
    return {
        "dataset": DatasetResource(root=str(root), limit=limit, resolution=resolution),
        "metadata_locations": MetadataLocations(**s.locations()),
        "file_source": FileSourceResource(
            num_attempts=3, backoff=0.01, read_timeout=5, num_threads=4
        ),
    }


def run_config(mode: str = "reference", **extra) -> dg.RunConfig:
    return dg.RunConfig(
        ops={"aligned_images": {"config": {"mode": mode, "num_processes": 2, **extra}}}
    )


def test_chunk_with_faults_aligns_every_image(tmp_path: Path, served: SyntheticFFHQ) -> None:
    drive = served.drive
    drive.fail("wildPhoto01001x", "500", "truncate")
    drive.fail("wildPhoto01004x", "corrupt")
    drive.fail("wildPhoto01007x", "slow")
    drive.stall_seconds = 6
    root = tmp_path / "root"
    result = dg.materialize(
        ASSETS,
        partition_key="01000",
        resources=resources(root, served, 12),
        run_config=run_config(),
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["image_count"] and checks["image_format"] and checks["no_temp_files"]
    assert checks["geometry_valid"]
    out = root / "ffhq_aging128x128"
    assert (out / "LICENSE.txt").read_bytes() == (root / "metadata" / "LICENSE.txt").read_bytes()
    files = sorted(p.name for p in (out / "01000").iterdir())
    assert files == [f"{n:05d}.png" for n in PHOTOS]
    # The written crop is the published method applied to the photo that was served.
    meta = pq.read_table(root / "tables/image_metadata/01000.parquet").slice(3, 1).to_pylist()[0]
    lm = np.asarray(meta["face_landmarks"]).reshape(68, 2)
    served_bytes = drive.files["wildPhoto01003x"].data
    expected = align_face(PIL.Image.open(io.BytesIO(served_bytes)), lm, 128)
    assert np.array_equal(np.asarray(PIL.Image.open(out / "01000/01003.png")), np.asarray(expected))
    assert not any((root / "sources").rglob("*.png"))  # sources deleted once aligned
    mats = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert mats["aligned_images"]["aligned"].value == 12
    assert mats["aligned_images"]["contact_sheet"].value.startswith(
        "![contact sheet](data:image/jpeg"
    )
    # Every row the metadata has for the chunk (1,100 entries served), whatever the limit.
    geometry = pq.read_table(root / "tables/alignments_128/01000.parquet")
    assert geometry.column("image_number").to_pylist() == list(range(1000, 1100))

    before = dict(drive.body_requests)
    again = dg.materialize(
        ASSETS,
        partition_key="01000",
        resources=resources(root, served, 12),
        run_config=run_config(),
    )
    assert again.success
    assert {k: v for k, v in drive.body_requests.items() if k.startswith("wild")} == {
        k: v for k, v in before.items() if k.startswith("wild")
    }


def test_failing_image_is_named_and_the_rest_kept(tmp_path: Path, served: SyntheticFFHQ) -> None:
    served.drive.fail("wildPhoto01002x", "corrupt", "corrupt", "corrupt")
    served.drive.fail("wildPhoto01005x", "quota")
    root = tmp_path / "root"
    result = dg.materialize(
        ASSETS,
        partition_key="01000",
        raise_on_error=False,
        resources=resources(root, served, 8),
        run_config=run_config("fast"),
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    text = failure.step_failure_data.error.message
    assert "2 of 8 images failed" in text and "01002" in text and "01005" in text
    assert "quota" in text.lower()
    kept = sorted(p.name for p in (root / "ffhq_aging128x128" / "01000").glob("*.png"))
    assert kept == [f"{n:05d}.png" for n in range(1000, 1008) if n not in (1002, 1005)]

    result = dg.materialize(
        ASSETS,
        partition_key="01000",
        resources=resources(root, served, 8),
        run_config=run_config("fast"),
    )
    assert result.success
    assert served.drive.body_requests["wildPhoto01000x"] == 1  # done images were not redone


def test_killed_run_resumes_without_corrupt_files(tmp_path: Path, served: SyntheticFFHQ) -> None:
    root = tmp_path / "root"
    served.drive.stall_seconds = 1.5
    for n in PHOTOS:
        served.drive.fail(f"wildPhoto{n:05d}x", "ok", "slow")  # slow once fetched again below
    script = tmp_path / "run.py"
    script.write_text(KILLABLE.format(root=str(root), locations=served.locations()))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    folder = root / "ffhq_aging128x128" / "01000"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(folder.glob("*.png"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(folder.glob("*.png")))
    assert 3 <= done_before < len(PHOTOS), "the kill should land part way through the chunk"

    result = dg.materialize(
        ASSETS,
        partition_key="01000",
        resources=resources(root, served, 12),
        run_config=run_config(),
    )
    assert result.success
    images = sorted(folder.glob("*.png"))
    assert len(images) == 12 and not leftover_temp_files(folder)
    for path in images:
        with PIL.Image.open(path) as img:
            img.load()
            assert img.size == (128, 128)


KILLABLE = """
import dagster as dg
from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations

if __name__ == "__main__":
    dg.materialize(
        [ffhq_metadata_json, image_metadata, alignments, aligned_images],
        partition_key="01000",
        resources={{
            "dataset": DatasetResource(root={root!r}, limit=12, resolution=128),
            "metadata_locations": MetadataLocations(**{locations!r}),
            "file_source": FileSourceResource(num_threads=1, backoff=0.01),
        }},
        run_config=dg.RunConfig(ops={{"aligned_images": {{"config": {{"num_processes": 1}}}}}}),
    )
"""

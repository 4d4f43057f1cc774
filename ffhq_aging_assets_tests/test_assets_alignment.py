import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.metadata_store import chunk_metadata, landmarks_of
from ffhq_aging_assets.resources import DatasetResource, FileSourceResource, MetadataLocations
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

ASSETS = [ffhq_metadata_json, image_metadata, alignments]


def resources(root: Path, synthetic: SyntheticFFHQ, limit: int) -> dict:
    return {
        "dataset": DatasetResource(root=str(root), limit=limit),
        "metadata_locations": MetadataLocations(**synthetic.locations()),
        "file_source": FileSourceResource(num_attempts=3, backoff=0.01, read_timeout=5),
    }


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_a_new_limit_reads_the_stored_tables_without_a_rebuild(tmp_path: Path, drive) -> None:
    def degenerate(data: dict) -> None:
        data["5"]["in_the_wild"]["face_landmarks"][36] = [float("nan"), 1.0]

    served = serve_synthetic(drive, tmp_path, mutate=degenerate)
    root = tmp_path / "root"
    result = dg.materialize(ASSETS, partition_key="00000", resources=resources(root, served, 3))
    assert result.success
    assert checks_by_name(result) == {
        "row_count": True,
        "image_numbers": True,
        "landmarks_finite": True,
        "geometry_valid": True,  # image 00005 is beyond the limit: stored, not checked
    }
    layout = DatasetLayout(root.resolve(), 256)
    geometry = pq.read_table(layout.alignments_table("00000"))
    assert geometry.column("image_number").to_pylist() == list(range(1000))
    errors = geometry.column("error").to_pylist()
    assert errors[5] is not None and errors[5].startswith("00005")
    assert errors[:5] == [None] * 5
    tables = [layout.image_metadata_table("00000"), layout.alignments_table("00000")]
    written = [p.stat().st_mtime_ns for p in tables]

    data = json.loads(served.json_path.read_text())
    for limit, count in [(5, 5), (0, 1000)]:
        rows = chunk_metadata(layout, "00000", limit)
        assert rows.column("image_number").to_pylist() == list(range(count))
        urls = [data[str(n)]["in_the_wild"]["file_url"] for n in range(count)]
        assert rows.column("file_url").to_pylist() == urls
        landmarks = landmarks_of(rows)
        assert np.array_equal(landmarks[4], np.asarray(data["4"]["in_the_wild"]["face_landmarks"]))
    assert [p.stat().st_mtime_ns for p in tables] == written

    # alignments' gate covers what the new limit needs, from the same image_metadata table.
    again = dg.materialize(
        [alignments],
        partition_key="00000",
        raise_on_error=False,
        resources=resources(root, served, 10),
    )
    [check] = again.get_asset_check_evaluations()
    assert not check.passed and "00005" in check.description

from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from ffhq_aging_assets.assets.labels import labels_table
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.assets.products import (
    age_distribution,
    dataset_manifest,
    ffhq_aging_labels,
    training_splits,
)
from ffhq_aging_assets.lib.manifest import verify
from ffhq_aging_assets.resources import (
    DatasetResource,
    FileSourceResource,
    LabelsLocation,
    MetadataLocations,
)
from ffhq_aging_assets_tests.conftest import serve_synthetic

CHUNK = [ffhq_metadata_json, image_metadata, labels_table]
PRODUCTS = [ffhq_aging_labels, age_distribution, training_splits, dataset_manifest]


def test_labels_two_chunks_and_products(drive, tmp_path: Path) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    served = serve_synthetic(drive, folder, count=1100)
    root = tmp_path / "root"
    resources = {
        "dataset": DatasetResource(root=str(root), limit=10),
        "metadata_locations": MetadataLocations(**served.locations()),
        "file_source": FileSourceResource(num_attempts=2, backoff=0.01),
        "labels_location": LabelsLocation(url=served.labels_url),
    }
    for chunk in ("00000", "01000"):
        result = dg.materialize(CHUNK, partition_key=chunk, resources=resources)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["label_numbers"] and checks["label_domains"]
    assert drive.body_requests["labelsCsv000001"] == 1  # fetched once, then cached
    table = pq.read_table(root / "tables/labels_256/01000.parquet")
    assert table.column("image_number").to_pylist() == list(range(1000, 1010))
    assert {"category", "license", "author", "kept", "split"} <= set(table.column_names)

    for n in [*range(10), *range(1000, 1010)]:
        chunk_dir = root / "ffhq_aging256x256" / f"{n - n % 1000:05d}"
        (chunk_dir / "parsings").mkdir(parents=True, exist_ok=True)
        (chunk_dir / f"{n:05d}.png").write_bytes(b"face %d" % n)
        (chunk_dir / "parsings" / f"{n:05d}.png").write_bytes(b"mask %d" % n)
    config = dg.RunConfig(ops={"training_splits": {"config": {"layout": True}}})
    result = dg.materialize(PRODUCTS, resources=resources, run_config=config)
    assert result.success
    meta = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert meta["ffhq_aging_labels"]["dagster/row_count"].value == 20
    assert meta["ffhq_aging_labels"]["chunks_built"].value == 2
    assert "02000" in meta["ffhq_aging_labels"]["chunks_missing"].value
    assert meta["age_distribution"]["histogram"].value.startswith("![age by gender](data:image/png")
    splits = (root / "splits_256/splits.csv").read_text().splitlines()
    assert splits[0] == "image_number,split,gender,age_group,kept" and len(splits) == 21
    kept = [line.split(",") for line in splits[1:] if line.endswith(",1")]
    assert meta["training_splits"]["kept"].value == len(kept)
    assert meta["training_splits"]["layout_links"].value == 2 * len(kept)
    number, split, gender, age, _ = kept[0]
    linked = root / f"splits_256/layout/{gender}s/{split}{age}/{int(number):05d}.png"
    assert linked.read_bytes() == b"face %d" % int(number)
    assert (linked.parent / "parsings" / linked.name).read_bytes() == b"mask %d" % int(number)
    listing = (root / f"splits_256/{gender}s/{split}{age}.txt").read_text().split()
    assert f"{int(number):05d}.png" in listing

    import json

    manifest = json.loads((root / "manifest_256.json").read_text())
    assert "tables/labels_256/00000.parquet" in manifest["files"]
    assert verify(root, manifest).ok
    (root / "tables/labels_256/00000.parquet").unlink()
    assert verify(root, manifest).missing == ["tables/labels_256/00000.parquet"]


def test_bad_label_rows_fail_the_blocking_check(drive, tmp_path: Path) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    served = serve_synthetic(drive, folder, count=30)
    csv = (folder / "ffhq_aging_labels.csv").read_text().splitlines()
    fields = csv[4].split(",")
    fields[3] = "unknown"
    csv[4] = ",".join(fields)
    bad = folder / "bad_labels.csv"
    bad.write_text("\n".join(csv) + "\n")
    resources = {
        "dataset": DatasetResource(root=str(tmp_path / "root"), limit=10),
        "metadata_locations": MetadataLocations(**served.locations()),
        "file_source": FileSourceResource(num_attempts=2, backoff=0.01),
        "labels_location": LabelsLocation(url=str(bad)),
    }
    result = dg.materialize(CHUNK, partition_key="00000", resources=resources, raise_on_error=False)
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["label_domains"].passed
    assert "line 5, column gender: 'unknown'" in checks["label_domains"].description
    assert (
        not checks["label_numbers"].passed
        and "missing 00003" in checks["label_numbers"].description
    )

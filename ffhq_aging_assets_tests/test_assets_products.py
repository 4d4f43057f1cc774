import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.labels import ffhq_aging_labels_csv, labels_table
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.assets.products import (
    age_distribution,
    dataset_manifest,
    ffhq_aging_labels,
    training_splits,
)
from ffhq_aging_assets.assets.segmentation import deeplab_checkpoint, segmentation_masks
from ffhq_aging_assets.cli import main
from ffhq_aging_assets.lib.labels_table import TABLE_SCHEMA
from ffhq_aging_assets.resources import (
    LabelsLocation,
)
from ffhq_aging_assets_tests.fixtures import (
    WORLD_CHUNKS,
    WORLD_LIMIT,
    materialize,
    serve_synthetic,
    world,
)

SHARED = [ffhq_metadata_json, ffhq_aging_labels_csv, deeplab_checkpoint]
CHUNK = [image_metadata, alignments, aligned_images, segmentation_masks, labels_table]
PRODUCTS = [ffhq_aging_labels, age_distribution, training_splits, dataset_manifest]
LIMIT = WORLD_LIMIT
CHUNKS = WORLD_CHUNKS


def csv_with(folder: Path, edits: dict[int, tuple[int, str]], extra: list[str]) -> Path:
    """The served labels CSV with fields replaced ({line: (field, value)}) and rows added."""
    lines = (folder / "ffhq_aging_labels.csv").read_text().splitlines()
    for line, (field, value) in edits.items():
        fields = lines[line - 1].split(",")
        fields[field] = value
        lines[line - 1] = ",".join(fields)
    path = folder / "edited_labels.csv"
    path.write_text("\n".join(lines + extra) + "\n")
    return path


@pytest.mark.slow
def test_products_take_only_chunks_whose_gates_passed(
    drive, tmp_path: Path, seeded_checkpoint: Path, capsys
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    serve_synthetic(drive, folder, count=2100)
    # Line 2002 is image 2000: a bad gender there fails chunk 02000 alone; the two rows of no
    # image are a warning of the combined labels, not an error of any chunk.
    labels = csv_with(
        folder,
        {2002: (3, "unknown")},
        ["70000,0-2,0.9,male,0.9,0,0,0,0,0,None", "abc,0-2,0.9,male,0.9,0,0,0,0,0,None"],
    )
    served, root, resources = world(drive, tmp_path, seeded_checkpoint, labels)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(SHARED, instance, resources).success
    for chunk in CHUNKS:
        result = materialize(CHUNK, instance, resources, partition_key=chunk, raise_on_error=False)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["label_domains"].passed == (chunk != "02000"), chunk
        assert result.success == (chunk != "02000")
    assert "line 2002, column gender: 'unknown'" in checks["label_domains"].description
    assert drive.body_requests["labelsCsv000001"] == 0  # the edited local copy is used
    table = pq.read_table(root / "tables/labels_64/01000.parquet")
    assert table.column("image_number").to_pylist() == list(range(1000, 1003))
    assert {"category", "license", "frac_skin", "kept", "split"} <= set(table.column_names)
    assert all(table.column(c).null_count == 0 for c in table.column_names)
    assert table.schema.equals(TABLE_SCHEMA, check_metadata=False)

    # Lists and links an earlier build left for images no group holds now are removed.
    stale_list = root / "splits_64/males/train200-300.txt"
    stale_link = root / "splits_64/layout/males/train200-300/02000.png"
    for path in (stale_list, stale_link):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("02000.png\n")
    config = dg.RunConfig(
        ops={"training_splits": {"config": {"layout": True}}},
    )
    result = dg.materialize(PRODUCTS, instance=instance, resources=resources, run_config=config)
    assert result.success
    meta = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    labels_meta = meta["ffhq_aging_labels"]
    assert labels_meta["dagster/row_count"].value == 2 * LIMIT
    assert labels_meta["chunks_built"].value == 2
    assert labels_meta["excluded_count"].value == 1
    assert "02000: failed labels_table.label_numbers, labels_table.label_domains" in (
        labels_meta["chunks_excluded"].value
    )
    assert "03000" in labels_meta["chunks_missing"].value
    combined = pq.read_table(root / "tables/ffhq_aging_labels_64.parquet")
    assert combined.column("image_number").to_pylist() == [0, 1, 2, 1000, 1001, 1002]
    evaluations = result.get_asset_check_evaluations()
    [stray] = [e for e in evaluations if e.check_name == "labels_of_no_image"]
    assert not stray.passed and stray.severity == dg.AssetCheckSeverity.WARN
    assert "'70000'" in stray.description and "'abc'" in stray.description
    splits = (root / "splits_64/splits.csv").read_text().splitlines()
    assert len(splits) == 1 + 2 * LIMIT and not any(s.startswith("200") for s in splits[1:])
    assert meta["age_distribution"]["images"].value == 2 * LIMIT
    assert not stale_list.exists() and not stale_link.exists()
    assert meta["training_splits"]["stale_removed"].value == 2

    manifest = json.loads((root / "manifest_64.json").read_text())
    assert "ffhq_aging64x64/00000/00000.png" in manifest["files"]
    assert "ffhq_aging64x64/00000/parsings/00000.png" in manifest["files"]
    assert "splits_64/splits.csv" in manifest["files"]
    assert "reports/age_distribution_64.png" in manifest["files"]
    assert not any("02000" in rel for rel in manifest["files"])
    capsys.readouterr()
    assert main(["verify", "--root", str(root), "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert "02000" in out and "excluded" in out

    # The fixed row makes the chunk pass its gates on the next run, and it goes in.
    fixed = csv_with(folder, {}, [])
    resources["labels_location"] = LabelsLocation(url=str(fixed))
    assert materialize(SHARED, instance, resources).success
    assert materialize(CHUNK, instance, resources, partition_key="02000").success
    result = dg.materialize(PRODUCTS, instance=instance, resources=resources)
    meta = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert meta["ffhq_aging_labels"]["chunks_built"].value == 3
    assert meta["ffhq_aging_labels"]["excluded_count"].value == 0

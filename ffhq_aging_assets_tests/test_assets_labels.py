from pathlib import Path

import dagster as dg

from ffhq_aging_assets.assets.labels import ffhq_aging_labels_csv, labels_table
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    LabelsLocation,
    MetadataLocations,
)
from ffhq_aging_assets_tests.fixtures import serve_synthetic

LIMIT = 3
CHUNKS = ("00000", "01000", "02000")
CONFIG = dg.RunConfig(
    ops={
        "aligned_images": {"config": {"mode": "fast", "num_processes": 1}},
        "segmentation_masks": {"config": {"device": "cpu", "batch_size": 3}},
    }
)


def world(drive, tmp_path: Path, checkpoint: Path, labels: Path | None = None):
    folder = tmp_path / "served"
    folder.mkdir(exist_ok=True)
    photos = [n for c in CHUNKS for n in range(int(c), int(c) + LIMIT)]
    served = serve_synthetic(drive, folder, count=2100, photos=photos)
    root = tmp_path / "root"
    resources = {
        "dataset": DatasetResource(root=str(root), limit=LIMIT, resolution=64),
        "metadata_locations": MetadataLocations(**served.locations()),
        "file_source": FileSourceResource(num_attempts=2, backoff=0.01),
        "labels_location": LabelsLocation(url=str(labels) if labels else served.labels_url),
        "deeplab_weights": DeepLabWeights(url=str(checkpoint), md5=None, size=None),
    }
    return served, root, resources


def materialize(assets, instance, resources, **kwargs) -> dg.ExecuteInProcessResult:
    names = {key.path[-1] for a in assets for key in a.keys}
    ops = {k: v for k, v in CONFIG.ops.items() if k in names}
    return dg.materialize(
        assets, instance=instance, resources=resources, run_config=dg.RunConfig(ops=ops), **kwargs
    )


def test_labels_need_the_mask_statistics(drive, tmp_path: Path, seeded_checkpoint: Path) -> None:
    served, root, resources = world(drive, tmp_path, seeded_checkpoint)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize([ffhq_metadata_json, ffhq_aging_labels_csv], instance, resources).success
    result = materialize(
        [image_metadata, labels_table],
        instance,
        resources,
        partition_key="00000",
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert "no mask statistics at" in message and "mask_stats_64/00000.parquet" in message
    assert not (root / "tables/labels_64/00000.parquet").exists()

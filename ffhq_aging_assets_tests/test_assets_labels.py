from pathlib import Path

import dagster as dg

from ffhq_aging_assets.assets.labels import ffhq_aging_labels_csv, labels_table
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets_tests.fixtures import (
    WORLD_CHUNKS,
    WORLD_LIMIT,
    materialize,
    world,
)

LIMIT = WORLD_LIMIT
CHUNKS = WORLD_CHUNKS


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

"""The one entry point: ``defs``, read by ``dagster dev``, the CLI and every spawned step.

Importing this module must stay cheap: no torch, no CUDA, no network.
"""

import dagster as dg

from ffhq_aging_assets.assets import alignment, images, labels, metadata, products, segmentation
from ffhq_aging_assets.automation import nightly_backfill
from ffhq_aging_assets.executors import executor_from_env
from ffhq_aging_assets.jobs import JOBS
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    LabelsLocation,
    MetadataLocations,
)
from ffhq_aging_assets.runs import dead_runs_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [metadata, alignment, images, segmentation, labels, products]
    ),
    jobs=JOBS,
    sensors=[nightly_backfill, dead_runs_sensor],
    resources={
        "dataset": DatasetResource(),
        "metadata_locations": MetadataLocations(),
        "file_source": FileSourceResource(),
        "deeplab_weights": DeepLabWeights(),
        "labels_location": LabelsLocation(),
    },
    executor=executor_from_env(),
)


def job(name: str) -> dg.JobDefinition:
    """A resolved job by name, for ``dg.build_reconstructable_job`` (the CLI's runs)."""
    return defs.resolve_job_def(name)

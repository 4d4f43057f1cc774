"""The one entry point: ``defs``, read by ``dagster dev``, the CLI and every spawned step.

Importing this module must stay cheap: no torch, no CUDA, no network.
"""

import dagster as dg

from ffhq_aging_assets.assets import alignment, images, metadata, segmentation
from ffhq_aging_assets.jobs import JOBS
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    MetadataLocations,
    client_secrets_setting,
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([metadata, alignment, images, segmentation]),
    asset_checks=dg.load_asset_checks_from_modules([metadata, alignment, images, segmentation]),
    jobs=JOBS,
    resources={
        "dataset": DatasetResource(),
        "metadata_locations": MetadataLocations(),
        "file_source": FileSourceResource(client_secrets=client_secrets_setting()),
        "deeplab_weights": DeepLabWeights(),
    },
    executor=dg.multiprocess_executor,
)


def job(name: str) -> dg.JobDefinition:
    """A resolved job by name, for ``dg.build_reconstructable_job`` (the CLI's runs)."""
    return defs.resolve_job_def(name)

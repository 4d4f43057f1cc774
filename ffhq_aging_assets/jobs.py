"""Jobs, each a selection of whole groups: inputs, per-chunk stages, products."""

import dagster as dg

STAGES = ("metadata", "alignment", "images", "segmentation", "labels")
# Unpartitioned inputs every chunk reads, fetched once by their own run before any chunk's.
SHARED_INPUTS = dg.AssetSelection.groups("inputs")
CHUNK_ASSETS = dg.AssetSelection.groups(*STAGES)
PRODUCTS = dg.AssetSelection.groups("products")

shared_inputs_job = dg.define_asset_job(
    "shared_inputs",
    selection=SHARED_INPUTS,
    description="Fetch and check the inputs every chunk shares (metadata JSON and LICENSE, "
    "labels CSV, segmentation checkpoint).",
)
chunks_job = dg.define_asset_job(
    "chunks",
    selection=CHUNK_ASSETS,
    description="Every per-chunk asset for one chunk (one run per chunk).",
)
products_job = dg.define_asset_job(
    "products",
    selection=PRODUCTS,
    description="The dataset-wide products from whatever chunks are built.",
)
stage_jobs = [
    dg.define_asset_job(
        f"{stage}_stage",
        selection=dg.AssetSelection.groups(stage),
        description=f"The {stage} stage of one chunk.",
    )
    for stage in STAGES
]

JOBS = [shared_inputs_job, chunks_job, products_job, *stage_jobs]

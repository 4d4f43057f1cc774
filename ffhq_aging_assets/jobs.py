"""Jobs: the whole graph, the shared inputs, the per-chunk assets, each stage, the products."""

import dagster as dg

# Unpartitioned inputs every chunk reads, fetched once by their own run before any chunk's.
SHARED_INPUTS = dg.AssetSelection.assets(
    "ffhq_metadata_json", "ffhq_aging_labels_csv", "deeplab_checkpoint"
)
PRODUCTS = dg.AssetSelection.groups("products")
CHUNK_ASSETS = dg.AssetSelection.all() - SHARED_INPUTS - PRODUCTS
STAGES = ("metadata", "alignment", "images", "segmentation", "labels")

everything_job = dg.define_asset_job(
    "everything",
    selection=dg.AssetSelection.all(),
    description="The whole graph for one chunk: shared inputs, the chunk's assets, then the "
    "dataset-wide products over every chunk built so far.",
)
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
        selection=dg.AssetSelection.groups(stage) - SHARED_INPUTS,
        description=f"The {stage} stage of one chunk.",
    )
    for stage in STAGES
]

JOBS = [everything_job, shared_inputs_job, chunks_job, products_job, *stage_jobs]

"""Jobs: the whole graph, and the metadata stage on its own."""

import dagster as dg

SHARED_INPUTS = dg.AssetSelection.assets("ffhq_metadata_json")
CHUNK_ASSETS = dg.AssetSelection.all() - SHARED_INPUTS

shared_inputs_job = dg.define_asset_job(
    "shared_inputs",
    selection=SHARED_INPUTS,
    description="Fetch and verify the inputs every chunk shares (metadata JSON, LICENSE).",
)
chunks_job = dg.define_asset_job(
    "chunks",
    selection=CHUNK_ASSETS,
    description="Every per-chunk asset for one chunk (one run per chunk).",
)
metadata_job = dg.define_asset_job(
    "metadata_stage",
    selection=dg.AssetSelection.groups("metadata") - SHARED_INPUTS,
    description="The metadata tables of one chunk.",
)

JOBS = [shared_inputs_job, chunks_job, metadata_job]

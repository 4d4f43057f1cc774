"""The chunk partitions every per-image asset shares."""

import dagster as dg

from ffhq_aging_assets.lib.chunks import CHUNK_KEYS

chunk_partitions = dg.StaticPartitionsDefinition(list(CHUNK_KEYS))

"""One chunk's labels table: the CSV's rows joined with the photo metadata and mask statistics.

The one schema every chunk's table has, and the join that makes it: the CSV's fields, the
photo's metadata as the metadata table types it, the mask fractions (never null: a chunk
without its mask statistics fails), whether the published filter keeps the image, and its
split.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ffhq_aging_assets.lib.labels import (
    LABEL_DESCRIPTIONS,
    LABELS_SCHEMA,
    confident_rows,
    published_filter,
    published_split,
)
from ffhq_aging_assets.lib.masks import STATS_DESCRIPTIONS, STATS_SCHEMA
from ffhq_aging_assets.lib.metadata import METADATA_SCHEMA

META_COLUMNS = ("category", "license", "author", "photo_url")
DESCRIPTIONS = {
    **LABEL_DESCRIPTIONS,
    **STATS_DESCRIPTIONS,
    "category": "FFHQ's own split: training or validation",
    "license": "Flickr license of the photo",
    "author": "Flickr author",
    "photo_url": "the photo on Flickr",
    "kept": "kept by the published filter of the FFHQ-Aging training code",
    "split": "train below image 69,000, test from it on",
}
TABLE_SCHEMA = pa.schema(
    [
        *LABELS_SCHEMA,
        *(METADATA_SCHEMA.field(name) for name in META_COLUMNS),
        *(field for field in STATS_SCHEMA if field.name not in ("image_number", "max_class")),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)


def join_labels(labels: pa.Table, metadata: pa.Table, stats: pa.Table) -> pa.Table:
    """The chunk's labels table, in image order, typed as :data:`TABLE_SCHEMA`.

    Inner joins: a labelled image without metadata or a mask is left out (the caller's gate
    on image numbers then names it), so no column is ever filled with nulls by chance.
    """
    table = labels.join(
        metadata.select(["image_number", *META_COLUMNS]), "image_number", join_type="inner"
    )
    table = table.join(stats.drop_columns(["max_class"]), "image_number", join_type="inner")
    table = table.sort_by("image_number")
    table = table.append_column("kept", pa.array(published_filter(table))).append_column(
        "split", pa.array(published_split(table.column("image_number").to_numpy()))
    )
    return table.select(TABLE_SCHEMA.names).cast(TABLE_SCHEMA)


def low_confidence_rows(table: pa.Table) -> int:
    """Rows at or below either published confidence threshold."""
    confident = confident_rows(
        table.column("age_group_confidence").to_numpy(zero_copy_only=False),
        table.column("gender_confidence").to_numpy(zero_copy_only=False),
    )
    return int(np.sum(~confident))

"""Dagster metadata the UI shows: column schemas, shared inputs."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pyarrow as pa

from ffhq_aging_assets.lib.inputs import SharedInput


def column_schema(schema: pa.Schema, descriptions: Mapping[str, str]) -> dg.TableSchema:
    """A ``dagster/column_schema`` value from an Arrow schema."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=descriptions.get(field.name),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema
        ]
    )


def shared_input_result(got: SharedInput, source: str, **extra: Any) -> dg.MaterializeResult:
    """The materialization of a shared input: where it lies and came from, what it is."""
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(got.path)),
            "source": source,
            "bytes": got.size,
            "md5": got.md5,
            "fetched": got.fetched,
            **extra,
        },
        data_version=dg.DataVersion(got.md5),
    )

"""Dagster metadata for tables: column schemas the UI shows."""

from collections.abc import Mapping

import dagster as dg
import pyarrow as pa


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

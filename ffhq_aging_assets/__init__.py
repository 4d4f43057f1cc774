"""The FFHQ-Aging dataset as partitioned Dagster assets."""

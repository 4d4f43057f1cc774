"""Pure logic with no Dagster import: downloads, Drive, JSON streaming, checks."""

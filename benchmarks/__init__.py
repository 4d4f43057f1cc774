"""Reproducible measurements, run from the repository root: ``python -m benchmarks.NAME``."""

"""Labels CSV: what checking the whole file costs once per fetch, and parsing one chunk per step.

Usage: python -m benchmarks.labels_check [--rows 70000] [--rounds 5]

Writes a synthetic ``ffhq_aging_labels.csv`` with the published columns (benchmarks/.cache,
once), then times ``check_labels_file`` (the ``ffhq_aging_labels_csv`` asset's check) and
``parse_labels`` for the 1,000 numbers of chunk 35000 (what each ``labels_table`` step does).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ffhq_aging_assets.lib.chunks import chunk_range
from ffhq_aging_assets.lib.labels_csv import check_labels_file, parse_labels
from ffhq_aging_assets_tests.synthetic import write_labels_csv

CACHE = Path(__file__).parent / ".cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=70_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = CACHE / f"labels-{args.rows}.csv"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        write_labels_csv(path, args.rows, seed=3)
    timings: dict[str, list[float]] = {"check whole file": [], "parse one chunk": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        summary = check_labels_file(path)
        timings["check whole file"].append(time.perf_counter() - start)
        start = time.perf_counter()
        parsed = parse_labels(path, chunk_range("35000"), path.name)
        timings["parse one chunk"].append(time.perf_counter() - start)
    print(f"{path.name}: {path.stat().st_size:,} bytes, {summary.rows:,} rows")
    print(f"one chunk: {parsed.table.num_rows} rows, {len(parsed.errors)} errors")
    for name, values in timings.items():
        print(f"{name}: median {statistics.median(values):.3f} s, min {min(values):.3f} s")


if __name__ == "__main__":
    main()

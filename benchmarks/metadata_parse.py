"""Metadata parse: time and peak memory against ``json.load`` on a 70,000-entry JSON.

Usage: python -m benchmarks.metadata_parse [--entries 70000] [--rounds 2]

Generates a synthetic JSON in the published layout under benchmarks/.cache (once), then runs
each variant in a fresh process, alternating their order between rounds:

- ``json.load``: the 2020 script's ``json.load(f, object_pairs_hook=OrderedDict)``.
- ``all chunks``: the one streaming pass ``ffhq_metadata_json`` makes per metadata file: every
  entry validated, every chunk's table written to Parquet.
- ``one chunk``: what one ``image_metadata`` step then adds: read its chunk's table (the last
  chunk of the file, 69000 for the full size) and write it out whole.

Peak RSS is the process's ``ru_maxrss``; "after imports" is the same process's RSS just before
the work starts (Python, NumPy, pyarrow and pandas loaded), and "added" the difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(__file__).parent / ".cache"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ffhq_aging_assets.lib import metadata as m
    from ffhq_aging_assets.lib.tables import write_table

    pa.array([0.0])  # pyarrow imports pandas on first use; count that as an import
    before = rss_mb()
    start = time.perf_counter()
    if mode == "json.load":
        from collections import OrderedDict

        with path.open() as f:
            json.load(f, object_pairs_hook=OrderedDict)
    elif mode == "all chunks":
        with tempfile.TemporaryDirectory() as out:
            m.convert(path, lambda chunk, table: write_table(table, Path(out) / f"{chunk}.parquet"))
    elif mode == "one chunk":
        table = pq.read_table(path.with_suffix(".last-chunk.parquet"))
        with tempfile.TemporaryDirectory() as out:
            write_table(table, Path(out) / "t.pq")
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": rss_mb(), "before_mb": before}))


def run(mode: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--path", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=70_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.path))
        return

    from ffhq_aging_assets.lib.metadata import convert
    from ffhq_aging_assets.lib.tables import write_table
    from ffhq_aging_assets_tests.synthetic import write_ffhq_json

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"ffhq-dataset-v2-synthetic-{args.entries}.json"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        write_ffhq_json(path, args.entries, seed=1)
    last = path.with_suffix(".last-chunk.parquet")
    # Chunks arrive in order, each replacing the one before: what stays is the file's last.
    result = convert(path, lambda chunk, table: write_table(table, last))
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, {result.entries} entries")

    modes = ["json.load", "all chunks", "one chunk"]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            results[mode].append(run(mode, path))
            print(f"round {r + 1}: {results[mode][-1]}", flush=True)

    base = statistics.median(x["seconds"] for x in results["json.load"])
    print(
        "\n| variant | wall s (median) | vs json.load | peak RSS MB | after imports MB | added MB |"
    )
    print("|---|---|---|---|---|---|")
    for mode in modes:
        secs = statistics.median(x["seconds"] for x in results[mode])
        peak = max(x["peak_mb"] for x in results[mode])
        before = min(x["before_mb"] for x in results[mode])
        print(
            f"| {mode} | {secs:.2f} | {secs / base:.3f} | {peak:.0f} | {before:.0f} "
            f"| {peak - before:.0f} |"
        )


if __name__ == "__main__":
    main()

"""Whole builds: the fixed cost of a chunk run, and chunks in parallel.

Usage:
    python -m benchmarks.build_runs overhead [--photos 20] [--executors multiprocess,in_process]
    python -m benchmarks.build_runs parallel [--chunks 4] [--photos 50] [--rate 2]
        [--jobs 1,4] [--mode reference|fast] [--sizes 900-2600]

Both serve synthetic chunks from the tests' fake Google Drive on loopback and run
``ffhq-aging build`` into a fresh instance and root per configuration.

``overhead``: one chunk of ``--photos`` photos, every asset (fast alignment at 256, CPU
segmentation, a checkpoint in the published format), once per executor (``FFHQ_EXECUTOR``).
From the instance it reads, per run: the seconds from its launch to its end (the run worker's
start included), the run's wall time (started to ended), the sum of its steps' spans (each
step's STEP_START to its end: the work, resources included) and the difference, the cost
outside the steps (processes starting, code loading, event handling).

``parallel``: ``--chunks`` chunks of ``--photos`` photos, each connection of the fake Drive
limited to ``--rate`` MB/s, download and alignment only (metadata, alignments,
aligned_images; ``--mode``), once per ``--jobs`` value; reports each build's wall time
and the ratio to the first. Photos are 640 x 480 unless ``--sizes`` gives a range of sides
(FFHQ's in-the-wild photos are 900-2600 px and several MB each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.fixtures import serve_synthetic
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state, write_published_checkpoint

PROJECT = Path(__file__).resolve().parents[1]


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's span, STEP_START to its success or failure."""
    kinds = dg.DagsterEventType
    starts: dict[str, float] = {}
    spans: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == kinds.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event.event_type in (kinds.STEP_SUCCESS, kinds.STEP_FAILURE):
            spans[entry.step_key] = entry.timestamp - starts[entry.step_key]
    return spans


def build(
    name: str, served, weights: Path, work: Path, extra: list[str], env_extra: dict[str, str]
) -> tuple[float, Path]:
    """Run one ``ffhq-aging build`` into a fresh instance and root; (wall seconds, its home)."""
    home = work / name / "home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    command = [sys.executable, "-m", "ffhq_aging_assets", "build", *extra]
    command += ["--root", str(work / name / "root"), "--weights", str(weights)]
    command += ["--metadata-url", served.metadata_url, "--metadata-md5", served.metadata_md5]
    command += ["--metadata-size", str(served.metadata_size), "--license-url", served.license_url]
    command += ["--license-md5", served.license_md5, "--labels-csv", served.labels_url]
    env = {**os.environ, "DAGSTER_HOME": str(home), **env_extra}
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: build failed:\n{done.stdout}\n{done.stderr}")
    return wall, home


def print_runs(home: Path, started: float | None = None) -> None:
    """Each run of the instance in ``home``: its launch to end, wall, steps' spans, the rest.

    With ``started`` (the build's start, epoch seconds) also when each run was created.
    """
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rows = []
        for record in sorted(instance.get_run_records(), key=lambda r: r.start_time or 0):
            run = record.dagster_run
            steps = step_seconds(instance, run.run_id)
            total = (record.end_time or 0) - (record.start_time or 0)
            created = record.create_timestamp.timestamp()
            launched = (record.end_time or 0) - created
            label = run.job_name + (
                f" {run.tags['dagster/partition']}" if "dagster/partition" in run.tags else ""
            )
            at = created - started if started is not None else float("nan")
            rows.append((label, at, launched, total, steps))
    print(
        f"  {'run':<16} {'created at s':>12} {'launched s':>10} {'wall s':>7} {'steps s':>8} "
        f"{'outside s':>10}  steps"
    )
    for label, at, launched, total, steps in rows:
        work_s = sum(steps.values())
        spans = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
        print(
            f"  {label:<16} {at:12.1f} {launched:10.1f} {total:7.1f} {work_s:8.1f} "
            f"{total - work_s:10.1f}  {spans}"
        )


def overhead(args: argparse.Namespace, served, weights: Path, work: Path) -> None:
    for executor in args.executors.split(","):
        extra = ["--partitions", "00000", "--limit", str(args.photos), "--mode", "fast"]
        extra += ["--device", "cpu"]
        wall, home = build(executor, served, weights, work, extra, {"FFHQ_EXECUTOR": executor})
        print(f"\n{executor}: build {wall:.1f} s")
        print_runs(home)


def parallel(args: argparse.Namespace, served, weights: Path, work: Path) -> None:
    chunks = ",".join(f"{c * 1000:05d}" for c in range(args.chunks))
    first = None
    for jobs in args.jobs.split(","):
        extra = ["--partitions", chunks, "--limit", str(args.photos), "--jobs", jobs]
        extra += ["--select", "ffhq_metadata_json,image_metadata,alignments,aligned_images"]
        extra += ["--mode", args.mode]
        wall, _ = build(f"jobs{jobs}", served, weights, work, extra, {})
        first = first or wall
        print(f"--jobs {jobs}: {wall:.1f} s, {first / wall:.2f}x --jobs {args.jobs.split(',')[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--photos", type=int, default=20)
    o.add_argument("--executors", default="multiprocess,in_process")
    p = sub.add_parser("parallel")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--photos", type=int, default=50)
    p.add_argument("--rate", type=float, default=2.0, help="MB/s per connection")
    p.add_argument("--jobs", default="1,4")
    p.add_argument("--mode", default="reference", choices=("reference", "fast"))
    p.add_argument(
        "--sizes",
        default=None,
        help="photo sides in pixels, MIN-MAX (each photo's width and height drawn from it); "
        "default 640 x 480",
    )
    args = parser.parse_args()
    chunks = getattr(args, "chunks", 1)
    drive = FakeDrive().start()
    if args.what == "parallel":
        drive.bytes_per_second = args.rate * 1e6
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            photos = [c * 1000 + n for c in range(chunks) for n in range(args.photos)]
            sides = getattr(args, "sizes", None)
            low, high = (int(v) for v in sides.split("-")) if sides else (0, 0)

            def size_of(n: int) -> tuple[int, int]:
                if sides is None:
                    return 640, 480
                rng = np.random.default_rng(n)
                return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))

            served = serve_synthetic(drive, work, 1000 * chunks, photos=photos, size_of=size_of)
            sizes = [len(f.data) for i, f in drive.files.items() if i.startswith("wildPhoto")]
            print(f"photos of {sum(sizes) / len(sizes) / 1e6:.1f} MB on average")
            weights = work / "deeplab_model.pth"
            write_published_checkpoint(weights, seeded_deeplab_state())
            print(f"{chunks} chunk(s) of {args.photos} photos, {os.cpu_count()} cores")
            (overhead if args.what == "overhead" else parallel)(args, served, weights, work)
    finally:
        drive.stop()


if __name__ == "__main__":
    main()

"""``ffhq-aging build --jobs N``: N chunk runs in flight, the gpu pool still one step at a time."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets_tests.fixtures import serve_synthetic
from ffhq_aging_assets_tests.test_cli import cli, source_args

CHUNKS = ("00000", "01000", "02000")


def step_spans(instance: dg.DagsterInstance, run_id: str, step: str) -> list[tuple[float, float]]:
    """When ``step`` of a run started and ended (seconds since the epoch)."""
    kinds = dg.DagsterEventType
    started = ended = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key != step:
            continue
        if event.event_type == kinds.STEP_START:
            started = entry.timestamp
        elif event.event_type in (kinds.STEP_SUCCESS, kinds.STEP_FAILURE):
            ended = entry.timestamp
    return [(started, ended)] if started is not None and ended is not None else []


@pytest.mark.slow
def test_jobs_keeps_two_chunks_in_flight_holds_the_gpu_pool_and_reports_failures(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    photos = [n + first for first in (0, 1000, 2000) for n in range(3)]
    served = serve_synthetic(drive, served_dir, count=2100, photos=photos)
    drive.fail("wildPhoto02001x", *["corrupt"] * 10)  # chunk 02000 fails, the others go on
    args = ["build", "--partitions", ",".join(CHUNKS), "--jobs", "2", "--limit", "3"]
    args += ["--root", "out", "--resolution", "64", "--mode", "fast", "--num-processes", "1"]
    args += ["--device", "cpu", "--weights", str(seeded_checkpoint)]
    done = cli(args + source_args(served), tmp_path, dagster_home)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    ends = sorted(line.split(": ")[0].split("] ")[1] for line in lines if "] chunk " in line)
    assert ends == [f"chunk {c}" for c in CHUNKS], lines
    assert any(line.startswith("[") and "chunk 02000: FAILED" in line for line in lines), lines
    assert any("02001" in line for line in lines), lines
    assert "1 chunk(s) failed: 02000" in done.stdout

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_run_records(dg.RunsFilter(job_name="chunks"))
        spans = {
            r.dagster_run.tags["dagster/partition"]: (
                r.start_time,
                r.end_time,
                step_spans(instance, r.dagster_run.run_id, "segmentation_masks"),
            )
            for r in runs
        }
    assert sorted(spans) == list(CHUNKS)
    # Two runs in flight together, never three.
    runs_in_flight = sorted((start, end) for start, end, _ in spans.values())
    assert runs_in_flight[1][0] < runs_in_flight[0][1], runs_in_flight
    assert runs_in_flight[2][0] >= min(runs_in_flight[0][1], runs_in_flight[1][1])
    # The segmentation steps (pool "gpu", limit 1) never overlap.
    masks = sorted(span for _, _, steps in spans.values() for span in steps)
    assert len(masks) == 2, masks  # chunk 02000 stops before its masks
    assert masks[1][0] >= masks[0][1], masks

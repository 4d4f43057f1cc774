"""``ffhq-aging build --jobs N``: N chunk runs in flight, the gpu pool still one step at a time,
the instance's run limit counted with the runs others have in progress."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.launch import Launcher
from ffhq_aging_assets.runs import ACTIVE, RunRoom
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
    # Three asked, under an instance that runs at most two at once.
    settings = dagster_home / "dagster.yaml"
    limited = settings.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 2")
    assert "max_concurrent_runs: 2" in limited
    settings.write_text(limited)
    args = ["build", "--partitions", ",".join(CHUNKS), "--jobs", "3", "--limit", "3"]
    args += ["--root", "out", "--resolution", "64", "--mode", "fast", "--num-processes", "1"]
    args += ["--device", "cpu", "--weights", str(seeded_checkpoint)]
    # Two GPUs listed (none is there: the masks are computed on the CPU), a pool of one.
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    done = cli(args + source_args(served), tmp_path, dagster_home, gpus)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "this host has 2 GPUs, and the gpu pool runs 1 segmentation step(s)" in done.stdout
    lines = done.stdout.splitlines()
    ends = sorted(line.split(": ")[0].split("] ")[1] for line in lines if "] chunk " in line)
    assert ends == [f"chunk {c}" for c in CHUNKS], lines
    assert any(line.startswith("[") and "chunk 02000: FAILED" in line for line in lines), lines
    assert any("02001" in line for line in lines), lines
    assert "1 chunk(s) failed: 02000" in done.stdout
    assert "the instance runs at most 2 at once" in done.stdout, done.stdout

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


def _instance(home: Path, settings: str) -> dg.DagsterInstance:
    home.mkdir()
    (home / "dagster.yaml").write_text(settings)
    return dg.DagsterInstance.from_config(str(home))


def test_a_build_waits_while_other_runs_fill_the_instances_run_limit(tmp_path: Path) -> None:
    """The build launches past the run queue, so it counts the queue's runs itself."""
    settings = "concurrency:\n  runs:\n    max_concurrent_runs: 2\ntelemetry:\n  enabled: false\n"
    with _instance(tmp_path / "home", settings) as instance:
        other = instance.add_run(dg.DagsterRun("chunks", status=dg.DagsterRunStatus.STARTED))
        said: list[str] = []
        room = RunRoom(instance, said.append)
        assert room.limit == 2
        busy_at_launch: list[int] = []
        timers: list[threading.Timer] = []

        def start() -> str:
            # Launched, its worker not yet started: the build counts it, the queue not yet.
            run = instance.add_run(dg.DagsterRun("chunks", status=dg.DagsterRunStatus.NOT_STARTED))
            # What the instance holds when this run starts, this run included.
            busy_at_launch.append(len(instance.get_run_ids(dg.RunsFilter(statuses=ACTIVE))))
            timers.append(threading.Timer(1.0, instance.report_run_canceled, [run]))
            timers[-1].start()
            return run.run_id

        # The other run ends once the build has waited a while.
        threading.Timer(2.5, instance.report_run_canceled, [other]).start()
        ended = list(Launcher(instance, None, room).run_all([(c, start) for c in CHUNKS], 3))
        for timer in timers:
            timer.join()
    assert sorted(name for name, *_ in ended) == list(CHUNKS)
    # One of the build's runs beside the other run, then two once it had ended; never three.
    assert busy_at_launch[0] == 2 and max(busy_at_launch) == 2, busy_at_launch
    assert len(said) >= 1 and other.run_id in said[0] and "at most 2" in said[0], said


@pytest.mark.parametrize("queue", ["minus-one", "no-queue"])
def test_an_instance_without_a_run_limit_never_holds_a_build_back(
    tmp_path: Path, queue: str
) -> None:
    settings = "concurrency:\n  runs:\n    max_concurrent_runs: -1\ntelemetry:\n  enabled: false\n"
    # An ephemeral instance runs each run as it is submitted: it has no run queue.
    opened = (
        _instance(tmp_path / "home", settings)
        if queue == "minus-one"
        else dg.DagsterInstance.ephemeral()
    )
    with opened as instance:
        for _ in range(5):
            instance.add_run(dg.DagsterRun("chunks", status=dg.DagsterRunStatus.STARTED))
        room = RunRoom(instance, pytest.fail)
        assert room.limit is None and room(set())


def test_a_build_refuses_an_instance_that_starts_no_runs(
    tmp_path: Path, dagster_home: Path
) -> None:
    settings = dagster_home / "dagster.yaml"
    settings.write_text(
        settings.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 0")
    )
    done = cli(["build", "--partitions", "00000", "--root", "out"], tmp_path, dagster_home)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "max_concurrent_runs is 0" in done.stderr and str(settings) in done.stderr, done.stderr
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_runs_count() == 0

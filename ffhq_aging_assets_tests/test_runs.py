"""Runs whose process was killed are found, failed and their pool slots freed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.runs import dead_runs, dead_runs_sensor, owner_tags, run_owner


@dg.op(pool="gpu")
def hold_the_gpu() -> None:
    Path(os.environ["FFHQ_TEST_MARKER"]).write_text("holding")
    time.sleep(600)


@dg.job
def gpu_holder() -> None:
    hold_the_gpu()


HOLD = """
import sys
import dagster as dg
from ffhq_aging_assets.runs import owner_tags
from ffhq_aging_assets_tests.test_runs import gpu_holder

tags = owner_tags() if sys.argv[1] == "tags" else {}
dg.execute_job(dg.reconstructable(gpu_holder), dg.DagsterInstance.get(), tags=tags)
"""


def hold(tmp_path: Path, home: Path, tagged: bool) -> subprocess.Popen:
    marker = tmp_path / "holding"
    env = {**os.environ, "DAGSTER_HOME": str(home), "FFHQ_TEST_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, "tags" if tagged else "events"],
        env=env,
        cwd=Path(__file__).parents[1],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    return proc


def gpu_slots_taken(instance: dg.DagsterInstance) -> int:
    return len(instance.event_log_storage.get_concurrency_info("gpu").claimed_slots)


@pytest.mark.slow
@pytest.mark.parametrize("tagged", [True, False], ids=["build-run", "launched-run"])
def test_a_killed_run_is_failed_and_frees_its_gpu_slot(
    tmp_path: Path, dagster_home: Path, tagged: bool
) -> None:
    instance = dg.DagsterInstance.get()
    proc = hold(tmp_path, dagster_home, tagged)
    try:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert gpu_slots_taken(instance) == 1
        assert dead_runs(instance) == []  # alive: never touched
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [r.run_id for r in dead_runs(instance)] == [run.run_id]
    skipped = dead_runs_sensor(dg.build_sensor_context(instance=instance))
    assert run.run_id in skipped.skip_message
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert gpu_slots_taken(instance) == 0
    assert dead_runs(instance) == []


def test_runs_of_another_host_are_never_judged(dagster_home: Path) -> None:
    instance = dg.DagsterInstance.get()
    tags = {**owner_tags(), "ffhq-aging/host": "another-host", "ffhq-aging/pid": "999999999"}
    result = dg.execute_job(dg.reconstructable(gpu_holder_done), instance, tags=tags)
    assert result.success
    [record] = instance.get_run_records(dg.RunsFilter(run_ids=[result.run_id]))
    owner = run_owner(instance, record)
    assert owner is not None and owner.alive() is None


@dg.op
def quick() -> None:
    pass


@dg.job
def gpu_holder_done() -> None:
    quick()

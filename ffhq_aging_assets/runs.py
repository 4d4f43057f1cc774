"""Runs whose process is gone: found, marked failed, and their ``gpu`` pool slots freed.

A run killed with its process (``kill -9``, a reboot) stays STARTED on the instance for ever,
holding its pool slots, so the next run's GPU step would wait on a slot nobody will give back.
Dagster's run monitoring cannot see this for runs on this machine: the default run launcher
has no worker health check, and ``ffhq-aging build`` runs its jobs in its own process. So a
run's owner is judged here, by the process id the run recorded and the time it started:
``ffhq-aging build`` does it before it starts anything, and the ``dead_runs`` sensor in the
daemon while the UI is up. Runs owned by another host are never judged from this one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Set

import dagster as dg

from ffhq_aging_assets.lib.processes import Owner, this_host

HOST_TAG = "ffhq-aging/host"
# The pool of the segmentation step: its limit is the number of GPU steps at once.
GPU_POOL = "gpu"
PID_TAG = "ffhq-aging/pid"
ACTIVE = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# The runs the instance's run queue counts against ``max_concurrent_runs``.
HOLDING_A_SLOT = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def owner_tags() -> dict[str, str]:
    """Tags that make this process the owner of the runs it executes itself."""
    return {HOST_TAG: this_host(), PID_TAG: str(os.getpid())}


def run_owner(instance: dg.DagsterInstance, record: dg.RunRecord) -> Owner | None:
    """The process a run lives in, where it can be known.

    Runs of ``ffhq-aging build`` carry their owner as tags; runs launched from the UI, a
    schedule or a backfill record their run worker's pid in the "Started process for run"
    event. A run without a host tag is taken to be on this host only when the instance's
    storage is a local SQLite file (no other host can run it).
    """
    run = record.dagster_run
    host = run.tags.get(HOST_TAG)
    if host is None and _local_storage(instance):
        host = this_host()
    if host is None:
        return None
    pid = run.tags.get(PID_TAG)
    if pid is not None and pid.isdigit():
        return Owner(host, int(pid), record.create_timestamp.timestamp())
    events = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records
    for event in events:
        data = event.event_log_entry.dagster_event
        entry = data.engine_event_data.metadata.get("pid") if data else None
        if entry is not None and str(entry.value).isdigit():
            return Owner(host, int(str(entry.value)), event.event_log_entry.timestamp)
    return None


def _local_storage(instance: dg.DagsterInstance) -> bool:
    return "sqlite" in type(instance.run_storage).__name__.lower()


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Active runs whose owning process is known to be gone."""
    dead = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE)):
        owner = run_owner(instance, record)
        if owner is not None and owner.alive() is False:
            dead.append(record.dagster_run)
    return dead


def fail_dead_runs(
    instance: dg.DagsterInstance, say: Callable[[str], None] | None = None
) -> list[str]:
    """Mark every dead run failed and free its pool slots; returns their run ids."""
    failed = []
    for run in dead_runs(instance):
        partition = run.tags.get("dagster/partition")
        what = f"run {run.run_id} ({run.job_name}" + (f", chunk {partition})" if partition else ")")
        instance.report_run_failed(
            run,
            f"The process of {what} is gone (killed, or its machine restarted): marked failed "
            "so its pool slots are free. Launch it again to finish what it left.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
        if say is not None:
            say(f"{what} was left running by a process that is gone: marked failed")
    return failed


@dg.sensor(
    name="dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s, marks failed the runs whose process is gone (killed, or the machine "
    "restarted) and frees their pool slots, so no step waits on a slot a dead run holds.",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Fail runs whose process is gone; launches nothing."""
    failed = fail_dead_runs(context.instance, context.log.info)
    if failed:
        return dg.SkipReason(f"marked {len(failed)} dead run(s) failed: {', '.join(failed)}")
    return dg.SkipReason("no run left behind by a dead process")


def run_limit(instance: dg.DagsterInstance) -> int | None:
    """The instance's ``concurrency: runs: max_concurrent_runs``; None where nothing limits runs.

    The limit is the run queue's: an instance without one (``DefaultRunCoordinator``, an
    ephemeral instance: no queue settings) or with ``-1`` launches every run at once.
    """
    queue = instance.get_concurrency_config().run_queue_config
    limit = queue.max_concurrent_runs if queue is not None else None
    return None if limit is None or limit < 0 else limit


class RunRoom:
    """Whether one more run of a build fits under the instance's run limit.

    ``ffhq-aging build`` launches its runs itself, past the run queue, so it counts as the queue
    does: the runs in progress on the instance (a UI backfill's, another build's) together with
    its own in flight. The queue counts the build's runs in turn, so a backfill waits for them.
    ``say`` is told once each time the build starts waiting, and why.
    """

    def __init__(self, instance: dg.DagsterInstance, say: Callable[[str], None]) -> None:
        self.instance = instance
        self.limit = run_limit(instance)
        self._say = say
        self._waiting = False

    def __call__(self, ours: Set[str]) -> bool:
        """True when a run may start now, ``ours`` being the build's own runs in flight."""
        if self.limit is None:
            return True
        busy = set(self.instance.get_run_ids(dg.RunsFilter(statuses=HOLDING_A_SLOT))) | set(ours)
        if len(busy) < self.limit:
            self._waiting = False
            return True
        if not self._waiting:
            others = sorted(busy - set(ours))
            self._say(
                f"waiting for a run slot: {len(busy)} run(s) in progress on the instance, "
                f"{len(others)} of them not this build's ({', '.join(others) or '-'}); the "
                f"instance runs at most {self.limit} (concurrency: runs: max_concurrent_runs)"
            )
            self._waiting = True
        return False


def gpu_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """Segmentation steps the instance runs at once; None where its storage keeps no pools."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    return storage.get_concurrency_info(GPU_POOL).limit

"""Runs of ``ffhq-aging build`` launched the way the Dagster UI launches them.

The build loads the project as a code location (a code server process, named as in
``workspace.yaml`` and ``ffhq-aging ui``), creates each run from that location's job with its
origin, and hands it to the instance's run launcher. So a run started from the command line is
the same kind of run as one started from the UI: the UI can re-execute it, and its steps run in
processes the code server starts, never in the build's own process. The build launches its runs
itself rather than through the instance's run queue, so it needs no daemon.

While a run is in flight the build reads its events from the instance: which step runs, the
step's latest log line (the images done, rate and ETA the steps report), check results and
failures, the facts the UI shows.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

LOCATION = "ffhq_aging_assets.definitions"
POLL_SECONDS = 0.5
# The code server stops itself this long after the build's last heartbeat...
SERVER_HEARTBEAT_SECONDS = 45
# ... and the build waits this long for it to end after asking it to.
SERVER_STOP_SECONDS = 60


@dataclass
class RunWatch:
    """What the events of one run have said so far."""

    run_id: str
    cursor: str | None = None
    running: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    run_failure: str | None = None
    checks: list[Any] = field(default_factory=list)

    def read(self, instance: dg.DagsterInstance) -> None:
        """Take in the events written since the last read."""
        import dagster as dg

        kinds = dg.DagsterEventType
        while True:
            page = instance.get_records_for_run(self.run_id, cursor=self.cursor, limit=1000)
            for record in page.records:
                entry = record.event_log_entry
                event = entry.dagster_event
                step = entry.step_key
                if event is None:
                    if step is not None and step in self.running:
                        self.running[step] = entry.user_message
                elif event.event_type == kinds.STEP_START and step is not None:
                    self.running[step] = ""
                elif event.event_type in (kinds.STEP_SUCCESS, kinds.STEP_FAILURE):
                    self.running.pop(step or "", None)
                    if event.event_type == kinds.STEP_FAILURE:
                        self.failures.append(f"{step}: {plain(event.step_failure_data.error)}")
                elif event.event_type == kinds.ASSET_CHECK_EVALUATION:
                    self.checks.append(event.event_specific_data)
                elif event.event_type == kinds.RUN_FAILURE:
                    self.run_failure = entry.message or event.message
            self.cursor = page.cursor
            if not page.has_more:
                return

    def live(self) -> str:
        """The running steps and what each last said, for the live line."""
        parts = []
        for step, said in self.running.items():
            # The steps prefix their lines with the chunk, which the line already names.
            said = said.split(": ", 1)[1] if said.startswith("chunk ") and ": " in said else said
            parts.append(f"{step}: {said}" if said else f"{step}: started")
        return "; ".join(parts)

    def failed_checks(self) -> list[str]:
        """The blocking checks that did not pass: ``asset.check``."""
        import dagster as dg

        return [
            f"{c.asset_key.to_user_string()}.{c.check_name}"
            for c in self.checks
            if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
        ]

    def failure_lines(self) -> list[str]:
        """Why the run failed: its steps' own errors, else the run's failure message."""
        if self.failures:
            return list(self.failures)
        return [self.run_failure or "see the run's logs in the UI"]


def plain(error: Any) -> str:
    """The message of the step's own error, past Dagster's wrappers, without a class name.

    Our errors say in their text what failed and what to do; the exception's module and class
    (``ffhq_aging_assets.lib.inputs.InputError: ...``) tell a user nothing more.
    """
    while error is not None and error.cls_name.startswith("Dagster") and error.cause is not None:
        error = error.cause
    if error is None:
        return "failed"
    text = error.message.strip()
    prefix = f"{error.cls_name}: "
    if prefix in text.split("\n", 1)[0]:
        text = text[text.index(prefix) + len(prefix) :]
    return text


class Launcher:
    """Creates runs from the project's code location and launches them on the instance."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        context: Any,
        room: Callable[[Set[str]], bool] | None = None,
    ):
        self.instance = instance
        self._context = context
        # Whether the instance has room for one more run, given this build's runs in flight.
        self._room = room

    def launch(
        self,
        job_name: str,
        run_config: Mapping[str, Any],
        tags: Mapping[str, str],
        assets: Set[dg.AssetKey],
    ) -> str:
        """Create a run of ``job_name`` for ``assets`` (their checks included), launch it.

        Returns:
            The run's id.
        """
        from dagster._core.definitions.selector import JobSubsetSelector

        request = self._context.create_request_context()
        location = request.get_code_location(LOCATION)
        (repository,) = location.get_repositories().values()
        remote_job = location.get_job(
            JobSubsetSelector(
                location_name=LOCATION,
                repository_name=repository.name,
                job_name=job_name,
                op_selection=None,
                asset_selection=set(assets),
            )
        )
        plan = location.get_execution_plan(
            remote_job,
            dict(run_config),
            step_keys_to_execute=None,
            known_state=None,
            instance=self.instance,
        ).execution_plan_snapshot
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=dict(run_config),
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**remote_job.tags, **tags},
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=frozenset(assets),
            asset_check_selection=None,
            op_selection=None,
            asset_graph=repository.asset_graph,
        )
        self.instance.launch_run(run.run_id, request)
        return run.run_id

    def run_all(
        self,
        launches: Iterable[tuple[str, Callable[[], str]]],
        jobs: int,
        live: Callable[[dict[str, tuple[float, RunWatch]]], None] | None = None,
        before: Callable[[], object] | None = None,
    ) -> Iterator[tuple[str, float, dg.DagsterRun, RunWatch]]:
        """Keep up to ``jobs`` runs in flight; yield each as it ends, with its seconds.

        ``launches`` holds (name, start) pairs; ``start`` launches a run and returns its id.
        A run is launched only while the launcher's ``room`` (if any) says the instance has
        room for it; ``before`` is called before each launch; ``live`` after each read of the
        runs in flight, with their names, start times and events. On Ctrl-C every run in
        flight is terminated before the interrupt goes on.
        """
        waiting = list(launches)
        flying: dict[str, tuple[str, float, RunWatch]] = {}
        try:
            while waiting or flying:
                while (
                    waiting
                    and len(flying) < jobs
                    and (self._room is None or self._room(flying.keys()))
                ):
                    name, start = waiting.pop(0)
                    if before is not None:
                        before()
                    run_id = start()
                    flying[run_id] = (name, time.monotonic(), RunWatch(run_id))
                for run_id, (name, started, watch) in list(flying.items()):
                    run = self.instance.get_run_by_id(run_id)
                    watch.read(self.instance)
                    if run is not None and run.is_finished:
                        del flying[run_id]
                        yield name, time.monotonic() - started, run, watch
                if live is not None and flying:
                    live({name: (started, watch) for name, started, watch in flying.values()})
                if flying or waiting:
                    time.sleep(POLL_SECONDS)
        except (KeyboardInterrupt, GeneratorExit):
            for run_id in flying:
                self.instance.run_launcher.terminate(run_id)
            raise

    def run(
        self,
        job_name: str,
        run_config: Mapping[str, Any],
        tags: Mapping[str, str],
        assets: Set[dg.AssetKey],
        live: Callable[[RunWatch], None] | None = None,
    ) -> tuple[dg.DagsterRun, RunWatch]:
        """Launch a run and follow it to its end (``run_all`` with one run)."""

        def start() -> str:
            return self.launch(job_name, run_config, tags, assets)

        def show(flying: dict[str, tuple[float, RunWatch]]) -> None:
            if live is not None:
                live(flying[job_name][1])

        ((_, _, run, watch),) = list(self.run_all([(job_name, start)], 1, show))
        return run, watch


@contextmanager
def launcher(
    instance: dg.DagsterInstance, room: Callable[[Set[str]], bool] | None = None
) -> Iterator[Launcher]:
    """The project loaded as a code location in a code server; stopped on leaving.

    ``room`` as in :class:`Launcher`.

    Leaving waits for the code server to end (it ends once the runs it started have ended and
    it has recorded so), for at most ``SERVER_STOP_SECONDS``, then stops it: a server left
    behind would outlive the build and the storage it reports to.

    Raises:
        RuntimeError: the code location failed to load; the message holds its error.
    """
    from dagster._core.remote_representation.grpc_server_registry import GrpcServerRegistry
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._grpc.constants import GrpcServerCommand

    target = ModuleTarget(LOCATION, None, os.getcwd(), LOCATION)
    registry = GrpcServerRegistry(
        instance_ref=instance.get_ref(),
        server_command=GrpcServerCommand.API_GRPC,
        heartbeat_ttl=SERVER_HEARTBEAT_SECONDS,
        startup_timeout=instance.code_server_process_startup_timeout,
        wait_for_processes_on_shutdown=False,
    )
    try:
        with registry:
            context = WorkspaceProcessContext(instance, target, grpc_server_registry=registry)
            with context:
                entry = context.create_request_context().get_location_entry(LOCATION)
                if entry is None or entry.code_location is None:
                    error = entry.load_error.to_string() if entry and entry.load_error else "-"
                    raise RuntimeError(f"the project's code location failed to load: {error}")
                yield Launcher(instance, context, room)
    finally:
        _stop_servers(registry)


def _stop_servers(registry: Any) -> None:
    """Wait for the registry's code servers to end; stop any still there after the grace."""
    import subprocess

    for process in list(getattr(registry, "_all_processes", [])):
        server = process.server_process
        try:
            server.wait(timeout=SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def events_to(log: Path | None) -> Iterator[None]:
    """Send the output of this process's children, and of Dagster in it, to ``log``.

    The code server and the runs it starts inherit file descriptors 1 and 2, so Dagster's
    event stream, the steps' output and Dagster's own log handlers land in the log. Python's
    ``sys.stdout`` and ``sys.stderr`` move to copies of the terminal's descriptors, so the
    build's own lines and errors stay on the terminal. With ``log`` None nothing moves.
    """
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    streams = {1: "stdout", 2: "stderr"}
    kept: dict[int, tuple[int, IO[str]]] = {}
    for fd, name in streams.items():
        stream = getattr(sys, name)
        stream.flush()
        kept[fd] = os.dup(fd), stream
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd, name in streams.items():
        os.dup2(target, fd)
        stream = kept[fd][1]
        if _descriptor(stream) == fd:
            # Where a stream is not the descriptor (a test's capture) it keeps its place.
            setattr(sys, name, os.fdopen(os.dup(kept[fd][0]), "w", buffering=1, errors="replace"))
    os.close(target)
    try:
        yield
    finally:
        for fd, name in streams.items():
            saved, stream = kept[fd]
            moved = getattr(sys, name)
            if moved is not stream:
                moved.close()
                setattr(sys, name, stream)
            os.dup2(saved, fd)
            os.close(saved)


def _descriptor(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class LiveLine:
    """One line at the bottom of a terminal, rewritten in place; nothing elsewhere."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.shown = False
        try:
            self.enabled = stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    def show(self, text: str) -> None:
        """Replace the live line with ``text``, cut to the terminal's width."""
        if not self.enabled:
            return
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = text if len(text) <= width else text[: width - 1] + "…"
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Remove the live line, so the next line printed starts clean."""
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

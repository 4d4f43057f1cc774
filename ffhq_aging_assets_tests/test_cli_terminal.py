"""What ``ffhq-aging build`` shows in a terminal, and its runs as the UI sees them.

The build runs under a pseudo-terminal, as a user's shell runs it: one line per chunk and a
live line for the running step, Dagster's event stream in a log file under DAGSTER_HOME. Then
``dagster dev`` on the same instance re-executes the build's chunk run with the mutation the
UI's "Re-execute" button sends.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets_tests.dagster_dev import dagster_dev
from ffhq_aging_assets_tests.test_cli import cli, source_args
from ffhq_aging_assets_tests.test_recovery import LIMIT, build_args, slow_chunk

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchPipelineReexecution(
    reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}
  ) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""


def in_terminal(args: list[str], cwd: Path, home: Path) -> tuple[int, str, str]:
    """Run ``ffhq-aging ARGS`` with a pseudo-terminal as its stdout; (status, tty, stderr)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "DAGSTER_HOME": str(home), "COLUMNS": "400", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ffhq_aging_assets", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal's other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    _, err = proc.communicate(timeout=600)
    reader.join(timeout=30)
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode(), err.decode()


def lines_on_screen(tty: str) -> list[str]:
    """The lines a terminal ends up showing: each ``\\r\\x1b[K`` erases the line it is on."""
    shown = []
    for line in tty.replace("\r\n", "\n").split("\n"):
        shown.append(line.rsplit("\r\x1b[K", 1)[-1])
    return [line for line in shown if line]


@pytest.mark.slow
def test_a_terminal_shows_chunk_lines_and_a_live_step_line_and_the_ui_can_reexecute_the_run(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    # Photos that stall 3 s each keep the image step going past its first progress report.
    served = slow_chunk(drive, tmp_path, stall=3.0)
    args = build_args(seeded_checkpoint) + source_args(served)
    status, tty, err = in_terminal(args, tmp_path, dagster_home)
    assert status == 0, tty + err

    # The live line: the chunk, the running step and its own report (images done, rate, ETA).
    live = re.findall(r"\r\x1b\[K(chunk 00000 \d+ s · [^\r\n]*)", tty)
    said = sorted({line.split(" · ", 1)[1] for line in live})
    assert "aligned_images: started" in said, said
    reports = [line for line in said if re.search(r"aligned_images: \d+/8 images", line)]
    assert reports and "img/s, ETA" in reports[-1], said
    assert any(line.startswith("segmentation_masks: ") for line in said), said
    shown = lines_on_screen(tty)
    assert shown[0].startswith(f"DAGSTER_HOME={dagster_home}; root ")
    log = Path(re.search(r"Dagster's event stream: (\S+) \(--verbose", tty).group(1))
    assert log.parent == dagster_home / "logs"
    assert shown[1] == (
        f"this instance now describes the dataset at {tmp_path / 'out'} at 64 px "
        f"({dagster_home / 'ffhq-aging.toml'})"
    )
    assert shown[2].startswith("Dagster's event stream: ")
    assert [re.sub(r" (in |\(run ).*", "", line) for line in shown[3:]] == [
        "shared_inputs done",
        "[1/1] chunk 00000: ok",
        "products done",
    ], shown
    # Dagster's events are in the log, not on the terminal.
    assert "STEP_SUCCESS" not in tty + err and "DEBUG" not in tty + err
    events = log.read_text()
    assert events.count("STEP_SUCCESS") >= 5 and "RUN_SUCCESS" in events
    assert f"{LIMIT}/{LIMIT} images" in events

    # `status` reads the same facts back from the instance.
    status_out = cli(["status"], tmp_path, dagster_home)
    assert status_out.returncode == 0, status_out.stdout + status_out.stderr
    assert re.search(
        r"^chunk 00000: 6/6 assets materialized; checks: \d+ passed$", status_out.stdout, re.M
    ), status_out.stdout
    assert "FAILED" not in status_out.stdout

    verbose = cli(
        ["build", "--select", "ffhq_metadata_json", "--verbose", *source_args(served)],
        tmp_path,
        dagster_home,
    )
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "RUN_SUCCESS" in verbose.stdout + verbose.stderr
    assert "Dagster's event stream" not in verbose.stdout

    # The UI re-executes the build's chunk run: the run carries the code location it came from.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (chunk_run,) = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "00000"}))
    assert chunk_run.remote_job_origin is not None
    assert chunk_run.remote_job_origin.location_name == "ffhq_aging_assets.definitions"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFHQ_")}
    with dagster_dev({**env, "DAGSTER_HOME": str(dagster_home)}, tmp_path / "dev.log") as base:
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=int(base.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 240
        while True:
            answer = client._execute(REEXECUTE, {"parentRunId": chunk_run.run_id})
            launched = answer["launchPipelineReexecution"]
            if launched["__typename"] == "LaunchRunSuccess":
                break
            # The code location may still be loading; anything else is the failure we test for.
            assert time.monotonic() < deadline, launched
            assert "location" in str(launched).lower(), launched
            time.sleep(2)
        run_id = launched["run"]["runId"]
        while (state := client.get_run_status(run_id).value) not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline + 300, state
            time.sleep(1)
    assert state == "SUCCESS", (tmp_path / "dev.log").read_text()[-3000:]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        again = instance.get_run_by_id(run_id)
    assert again is not None and again.parent_run_id == chunk_run.run_id
    assert again.tags["dagster/partition"] == "00000"

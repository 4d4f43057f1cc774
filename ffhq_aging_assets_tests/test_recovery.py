"""Builds that are killed, or run twice at once, finish by running the same command again."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.lib.processes import host_tag
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic
from ffhq_aging_assets_tests.test_cli import cli, source_args

LIMIT = 8


def build_args(checkpoint: Path, partitions: str = "00000") -> list[str]:
    return [
        "build",
        "--partitions",
        partitions,
        "--limit",
        str(LIMIT),
        "--root",
        "out",
        "--resolution",
        "64",
        "--mode",
        "fast",
        "--num-processes",
        "1",
        "--num-threads",
        "2",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--weights",
        str(checkpoint),
    ]


def start(args: list[str], cwd: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "ffhq_aging_assets", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready, what: str, limit: float = 300) -> None:
    """SIGKILL the build's whole process group once ``ready()`` holds."""
    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, f"the build ended before {what}: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial-" in p.name]


def slow_chunk(drive, tmp_path: Path, stall: float) -> SyntheticFFHQ:
    """Chunk 00000's first LIMIT photos, each stalling ``stall`` seconds once, so builds last."""
    folder = tmp_path / "served"
    folder.mkdir()
    served = serve_synthetic(drive, folder, count=1100, photos=range(LIMIT))
    drive.stall_seconds = stall
    for n in range(LIMIT):
        drive.fail(f"wildPhoto{n:05d}x", "slow")
    return served


@pytest.mark.slow
def test_build_killed_in_images_and_in_segmentation_finishes_when_run_again(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    served = slow_chunk(drive, tmp_path, stall=1.0)
    args = build_args(seeded_checkpoint) + source_args(served)
    chunk = tmp_path / "out/ffhq_aging64x64/00000"
    parsings = chunk / "parsings"

    first = start(args, tmp_path, dagster_home)
    kill_when(first, lambda: len(list(chunk.glob("*.png"))) >= 2, "two aligned images")
    aligned_before = {p.name for p in chunk.glob("[0-9]*.png")}
    assert len(aligned_before) < LIMIT, "the kill should land part way through the images"
    # What a writer killed at another moment leaves: temporary files of a dead process.
    sources = tmp_path / "out/sources/in-the-wild-images/00000"
    stale = f"{host_tag()}-{dead_pid()}-0123456789ab"
    for folder, name in ((chunk, "00007.png"), (sources, "00006.png"), (parsings, "00005.png")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{name}.partial-{stale}").write_bytes(b"")

    second = start(args, tmp_path, dagster_home)
    kill_when(second, lambda: any(parsings.glob("[0-9]*.png")), "a first mask", limit=400)
    assert len(list(parsings.glob("[0-9]*.png"))) < LIMIT, "the kill should land mid-masks"
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    stuck = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert stuck, "the killed builds leave runs STARTED on the instance"

    third = cli(args, tmp_path, dagster_home)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "marked failed" in third.stdout
    assert "chunk 00000: ok" in third.stdout and "products done" in third.stdout
    assert not temp_files(tmp_path / "out"), temp_files(tmp_path / "out")
    assert len(list(parsings.glob("[0-9]*.png"))) == LIMIT
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for name in aligned_before:
        assert drive.body_requests[f"wildPhoto{name[:5]}x"] == 1, f"{name} fetched again"
    verify = cli(["verify", "--root", "out", "--resolution", "64"], tmp_path, dagster_home)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.slow
def test_two_builds_at_once_share_the_work(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    served = slow_chunk(drive, tmp_path, stall=0.5)
    # Create the instance's storage once before two processes open it.
    dg.DagsterInstance.from_config(str(dagster_home)).get_runs()
    # The same chunk from both: every image is wanted by two processes at once.
    one, two = (
        start(build_args(seeded_checkpoint) + source_args(served), tmp_path, dagster_home)
        for _ in range(2)
    )
    outs = [p.communicate(timeout=900)[0] for p in (one, two)]
    assert one.returncode == 0 and two.returncode == 0, "\n".join(outs)
    for n in range(LIMIT):
        assert drive.body_requests[f"wildPhoto{n:05d}x"] == 1, f"photo {n} fetched twice"
    assert not temp_files(tmp_path / "out")
    verify = cli(["verify", "--root", "out", "--resolution", "64"], tmp_path, dagster_home)
    assert verify.returncode == 0, verify.stdout + verify.stderr

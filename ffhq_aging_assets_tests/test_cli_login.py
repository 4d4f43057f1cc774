"""``ffhq-aging login`` end to end; account settings reaching the runs of ``build`` and the UI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ffhq_aging_assets_tests.accounts import (
    auth_url_in,
    client_file,
    consent,
    service_key_file,
    signed_in,
)
from ffhq_aging_assets_tests.dagster_dev import dagster_dev
from ffhq_aging_assets_tests.fake_google import DEFAULT_USER, FakeGoogle
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

PROJECT = Path(__file__).parents[1]
SIGNED_IN = f"FFHQ Researcher <{DEFAULT_USER}>"


def environment(home: Path, **variables: str) -> dict[str, str]:
    """This process's environment without any account setting of the user's, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FFHQ_", "BROWSER"))}
    return {**env, "DAGSTER_HOME": str(home), **variables}


def login(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ffhq_aging_assets", "login", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, stdin: str | None = None) -> str:
    try:
        out, _ = proc.communicate(stdin, timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out


def test_login_over_ssh_pastes_the_address_back_and_check_says_whose(
    google: FakeGoogle, tmp_path: Path
) -> None:
    creds = tmp_path / "config" / "creds.json"
    env = environment(
        tmp_path / "home",
        FFHQ_CLIENT_SECRETS=str(client_file(google, tmp_path)),
        FFHQ_DRIVE_CREDENTIALS=str(creds),
        FFHQ_DRIVE_API=google.api_endpoint,
    )
    proc = login(["--no-browser"], env, tmp_path)
    assert proc.stdout is not None
    printed = ""
    while "/o/oauth2/auth?" not in printed:
        line = proc.stdout.readline()
        assert line, f"login ended without a sign-in address: {printed}"
        printed += line
    out = finish(proc, consent(auth_url_in(printed)) + "\n")
    assert proc.returncode == 0, out
    assert f"signed in as {SIGNED_IN}" in out and str(creds) in out
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    check = finish(login(["--check"], env, tmp_path))
    assert f"works: Drive answers as {SIGNED_IN}" in check


def test_login_with_a_browser_on_this_machine(google: FakeGoogle, tmp_path: Path) -> None:
    browser = tmp_path / "browser.py"
    browser.write_text(
        textwrap.dedent(
            """
            import sys, urllib.request
            urllib.request.urlopen(sys.argv[1], timeout=30).read()
            """
        )
    )
    env = environment(
        tmp_path / "home",
        # Python's webbrowser runs $BROWSER; a trailing & starts it in the background.
        BROWSER=f"{sys.executable} {browser} %s &",
        FFHQ_DRIVE_API=google.api_endpoint,
    )
    client = client_file(google, tmp_path, "desktop.json")
    creds = tmp_path / "saved.json"
    args = ["--client-secrets", str(client), "--credentials-file", str(creds), "--copy-on-quota"]
    out = finish(login(args, env, tmp_path))
    assert f"signed in as {SIGNED_IN}" in out, out
    assert "drive.file" in out
    assert "https://www.googleapis.com/auth/drive.file" in json.loads(creds.read_text())["scopes"]


def test_login_check_without_a_sign_in_says_what_to_run(tmp_path: Path) -> None:
    env = environment(tmp_path / "home", FFHQ_DRIVE_CREDENTIALS=str(tmp_path / "none.json"))
    proc = login(["--check"], env, tmp_path)
    out = finish(proc)
    assert proc.returncode == 1
    assert f"no saved Google sign-in at {tmp_path / 'none.json'}: run `ffhq-aging login" in out


def test_login_check_with_a_service_account_from_the_environment(
    google: FakeGoogle, tmp_path: Path
) -> None:
    key = service_key_file(google, tmp_path)
    env = environment(
        tmp_path / "home", FFHQ_SERVICE_ACCOUNT=str(key), FFHQ_DRIVE_API=google.api_endpoint
    )
    out = finish(login(["--check"], env, tmp_path))
    email = json.loads(key.read_text())["client_email"]
    assert f"service account key {key} works: Drive answers as" in out and email in out
    assert "PRIVATE KEY" not in out


def build(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffhq_aging_assets", "build", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def served(drive, tmp_path: Path) -> SyntheticFFHQ:
    folder = tmp_path / "served"
    folder.mkdir()
    return serve_synthetic(drive, folder, count=1000, photos=range(3))


def inputs_args(s: SyntheticFFHQ, root: Path) -> list[str]:
    return [
        *("--select", "ffhq_metadata_json", "--root", str(root), "--source", "pydrive"),
        *("--metadata-url", s.metadata_url, "--metadata-md5", s.metadata_md5),
        *("--metadata-size", str(s.metadata_size), "--license-url", s.license_url),
        *("--license-md5", s.license_md5, "--num-attempts", "2"),
    ]


@pytest.mark.slow
def test_build_takes_account_settings_from_the_environment(
    google: FakeGoogle, served: SyntheticFFHQ, tmp_path: Path, dagster_home: Path
) -> None:
    key = service_key_file(google, tmp_path)
    email = json.loads(key.read_text())["client_email"]
    env = environment(
        dagster_home, FFHQ_SERVICE_ACCOUNT=str(key), FFHQ_DRIVE_API=google.api_endpoint
    )
    done = build(inputs_args(served, tmp_path / "root"), env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    metadata_id = served.metadata_url.split("id=")[1]
    assert google.media_requests(metadata_id) == 1
    assert {r.who for r in google.log if r.file_id == metadata_id} == {email}
    assert "PRIVATE KEY" not in done.stdout + done.stderr

    # A user's sign-in made with another OAuth client than $FFHQ_CLIENT_SECRETS names: the run
    # fails at once, naming that file and the command that fixes it.
    account = signed_in(google, tmp_path / "user")
    other = client_file(google, tmp_path, "other-client.json")
    # Another copy of the dataset (root2), so another instance: an instance describes one copy.
    home2 = tmp_path / "dagster_home2"
    home2.mkdir()
    shutil.copy(dagster_home / "dagster.yaml", home2 / "dagster.yaml")
    env = environment(
        home2,
        FFHQ_CLIENT_SECRETS=str(other),
        FFHQ_DRIVE_CREDENTIALS=str(account.credentials_file),
        FFHQ_DRIVE_API=google.api_endpoint,
    )
    done = build(inputs_args(served, tmp_path / "root2"), env, tmp_path)
    assert done.returncode != 0
    assert f"{other}: run `ffhq-aging login --client-secrets {other}" in done.stdout + done.stderr
    # The command line wins over the environment.
    args = [
        *inputs_args(served, tmp_path / "root2"),
        "--client-secrets",
        str(account.client_secrets),
    ]
    done = build(args, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def launched_from_ui(env: dict[str, str], run_config: dict, log: Path) -> tuple[str, str]:
    """Launch ``shared_inputs`` as the UI's Launch button does: the GraphQL ``launchRun``
    mutation against ``dagster dev``. Returns the run's final status and its event messages."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    with dagster_dev(env, log) as base:
        client = DagsterGraphQLClient("127.0.0.1", port_number=int(base.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 240
        while True:
            try:
                run_id = client.submit_job_execution("shared_inputs", run_config=run_config)
                break
            except DagsterGraphQLClientError:  # the code location is still loading
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(2)
        while (status := client.get_run_status(run_id).value) not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline + 300, status
            time.sleep(1)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        messages = []
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is not None and event.is_step_failure:
                messages.append(event.step_failure_data.error.to_string())
            messages.append(entry.message or "")
    return status, "\n".join(messages)


def ui_run_config(s: SyntheticFFHQ, root: Path, checkpoint: Path) -> dict:
    return {
        "resources": {
            "dataset": {"config": {"root": str(root)}},
            "file_source": {"config": {"kind": "pydrive", "num_attempts": 2}},
            "metadata_locations": {"config": s.locations()},
            "labels_location": {"config": {"url": s.labels_url}},
            "deeplab_weights": {"config": {"url": str(checkpoint), "md5": None, "size": None}},
        }
    }


@pytest.mark.slow
def test_a_run_launched_from_the_ui_takes_the_service_account_from_the_environment(
    google: FakeGoogle,
    served: SyntheticFFHQ,
    tmp_path: Path,
    dagster_home: Path,
    seeded_checkpoint: Path,
) -> None:
    key = service_key_file(google, tmp_path)
    email = json.loads(key.read_text())["client_email"]
    env = environment(
        dagster_home, FFHQ_SERVICE_ACCOUNT=str(key), FFHQ_DRIVE_API=google.api_endpoint
    )
    root = tmp_path / "ui-root"
    config = ui_run_config(served, root, seeded_checkpoint)
    status, messages = launched_from_ui(env, config, tmp_path / "dagster-dev.log")
    assert status == "SUCCESS", messages[-3000:]
    metadata_id = served.metadata_url.split("id=")[1]
    assert {r.who for r in google.log if r.file_id == metadata_id} == {email}
    assert (root / "metadata" / "ffhq-dataset-v2.json").is_file()
    assert "PRIVATE KEY" not in messages


@pytest.mark.slow
def test_a_run_launched_from_the_ui_takes_the_client_secrets_from_the_environment(
    google: FakeGoogle,
    served: SyntheticFFHQ,
    tmp_path: Path,
    dagster_home: Path,
    seeded_checkpoint: Path,
) -> None:
    account = signed_in(google, tmp_path / "user")
    other = client_file(google, tmp_path, "other-client.json")
    # Another copy of the dataset (root2), so another instance: an instance describes one copy.
    home2 = tmp_path / "dagster_home2"
    home2.mkdir()
    shutil.copy(dagster_home / "dagster.yaml", home2 / "dagster.yaml")
    env = environment(
        home2,
        FFHQ_CLIENT_SECRETS=str(other),
        FFHQ_DRIVE_CREDENTIALS=str(account.credentials_file),
        FFHQ_DRIVE_API=google.api_endpoint,
    )
    config = ui_run_config(served, tmp_path / "ui-root", seeded_checkpoint)
    before = len(google.log)
    status, messages = launched_from_ui(env, config, tmp_path / "dagster-dev.log")
    assert status == "FAILURE"
    assert f"{other}: run `ffhq-aging login --client-secrets {other}" in messages
    assert not google.log[before:]

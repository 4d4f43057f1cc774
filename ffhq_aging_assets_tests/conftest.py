"""Shared fixtures: a fake Google Drive on loopback, synthetic metadata, a private instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The config classes take an instance's settings (settings.py) as defaults when first imported:
# the tests must not pick up the settings or sign-ins of the shell they run from.
for _variable in (
    "DAGSTER_HOME",
    "FFHQ_SETTINGS",
    "FFHQ_CLIENT_SECRETS",
    "FFHQ_DRIVE_CREDENTIALS",
    "FFHQ_SERVICE_ACCOUNT",
    "FFHQ_DRIVE_API",
):
    os.environ.pop(_variable, None)

from ffhq_aging_assets_tests.fake_drive import FakeDrive  # noqa: E402
from ffhq_aging_assets_tests.fake_google import FakeGoogle  # noqa: E402
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic  # noqa: E402
from ffhq_aging_assets_tests.synthetic import (  # noqa: E402
    seeded_deeplab_state,
    write_published_checkpoint,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may divert loopback requests."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # `ffhq-aging`'s main() sets a default DAGSTER_HOME (./.dagster_home) in the process it runs
    # in; a test that calls it must not leave that instance to the tests after it.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture
def drive() -> Iterator[FakeDrive]:
    server = FakeDrive().start()
    yield server
    server.stop()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private DAGSTER_HOME with the project's instance settings."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    project_yaml = Path(__file__).parents[1] / "dagster.yaml"
    (home / "dagster.yaml").write_text(project_yaml.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None and os.environ.get("FFHQ_SKIP_GPU") != "1":
        import torch

        has_cuda = torch.cuda.is_available()
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def synthetic(drive: FakeDrive, tmp_path: Path) -> SyntheticFFHQ:
    src = tmp_path / "served"
    src.mkdir()
    return serve_synthetic(drive, src)


@pytest.fixture(scope="session")
def seeded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published-format checkpoint with the reference numbers' seeded weights (233 MB)."""
    path = tmp_path_factory.mktemp("weights") / "deeplab_model.pth"
    write_published_checkpoint(path, seeded_deeplab_state())
    return path


@pytest.fixture
def google(drive: FakeDrive) -> Iterator[FakeGoogle]:
    """Google's OAuth endpoints and Drive API on loopback, serving the fake Drive's files too."""
    server = FakeGoogle(drive).start()
    yield server
    server.stop()

"""Settings made once for an instance become the defaults that builds and UI launches use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from pydantic import Field

from ffhq_aging_assets.settings import SettingsError, apply_settings, read_settings
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic

PROJECT = Path(__file__).parents[1]


def example_class() -> type[dg.Config]:
    # A new class each time: apply_settings changes the class it is given.
    class Example(dg.Config):
        root: str = Field(default="data")
        resolution: int = Field(default=256, ge=64, le=1024)

    return Example


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ffhq-aging.toml"
    monkeypatch.setenv("FFHQ_SETTINGS", str(path))
    return path


def test_a_setting_becomes_the_default_and_a_run_config_still_wins(settings_file: Path) -> None:
    settings_file.write_text('[dataset]\nroot = "/data/ffhq"\nresolution = 512\n')
    example = example_class()
    apply_settings("dataset", example)
    assert example().root == "/data/ffhq" and example().resolution == 512

    @dg.asset
    def probe(config: example) -> dict:  # type: ignore[valid-type]
        return {"root": config.root, "resolution": config.resolution}

    result = dg.materialize([probe], run_config={"ops": {"probe": {"config": {"resolution": 128}}}})
    assert result.output_for_node("probe") == {"root": "/data/ffhq", "resolution": 128}


def test_bad_settings_name_the_file_and_the_setting(settings_file: Path) -> None:
    settings_file.write_text("[dataset]\nrot = 'x'\n")
    with pytest.raises(SettingsError, match=r"ffhq-aging.toml: \[dataset\] has no setting rot"):
        apply_settings("dataset", example_class())
    settings_file.write_text("[dataset]\nresolution = 2000\n")
    with pytest.raises(
        SettingsError,
        match=r"\[dataset\]: resolution: Input should be less than or equal to 1024 \(got 2000\)",
    ):
        apply_settings("dataset", example_class())
    settings_file.write_text("[dataset\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        read_settings()
    settings_file.write_text("dataset = 3\n")
    with pytest.raises(SettingsError, match="must be a table"):
        read_settings()
    settings_file.unlink()
    with pytest.raises(SettingsError, match="FFHQ_SETTINGS names .* which does not exist"):
        read_settings()


def test_the_file_lives_in_the_instance_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FFHQ_SETTINGS", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert read_settings() == {}
    (tmp_path / "ffhq-aging.toml").write_text("[dataset]\nresolution = 128\n")
    assert read_settings() == {"dataset": {"resolution": 128}}


def test_the_environment_wins_over_the_file(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file.write_text('[file_source]\nservice_account = "/from/file.json"\n')

    class Source(dg.Config):
        service_account: str | None = None

    monkeypatch.setenv("FFHQ_SERVICE_ACCOUNT", "/from/env.json")
    apply_settings("file_source", Source)
    assert Source().service_account == "/from/env.json"


@pytest.mark.slow
def test_build_and_the_launchpad_use_the_instance_settings(
    drive, tmp_path: Path, dagster_home: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1000, photos=range(2))
    root = tmp_path / "dataset"
    locations = "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in SyntheticFFHQ.locations(served).items()
    )
    (dagster_home / "ffhq-aging.toml").write_text(
        f'[dataset]\nroot = "{root}"\nresolution = 128\n\n[metadata_locations]\n{locations}\n'
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    # What the UI's launchpad offers: the code location's config schema defaults.
    schema = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ffhq_aging_assets.definitions import defs\n"
            "job = defs.resolve_job_def('chunks')\n"
            "res = job.run_config_schema.config_type.fields['resources'].config_type.fields\n"
            "f = res['dataset'].config_type.fields['config'].config_type.fields\n"
            "print(f['root'].default_value, f['resolution'].default_value)",
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert schema.stdout.split() == [str(root), "128"], schema.stderr
    done = subprocess.run(
        [sys.executable, "-m", "ffhq_aging_assets", "build", "--select", "ffhq_metadata_json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "metadata" / "ffhq-dataset-v2.json").is_file()
    assert f"root {root}" in done.stdout


def test_the_first_dataset_used_is_written_once_and_kept(settings_file: Path, tmp_path) -> None:
    from ffhq_aging_assets.settings import pin_dataset

    settings_file.write_text(
        "# mine\n[file_source]\nnum_threads = 4\n\n[dataset] # the copy\nlimit = 20\n"
    )
    said = pin_dataset(tmp_path / "a" / ".." / "data", 512)
    assert said == (
        f"this instance now describes the dataset at {tmp_path / 'data'} at 512 px "
        f"({settings_file})"
    )
    assert read_settings(settings_file) == {
        "file_source": {"num_threads": 4},
        "dataset": {"root": str(tmp_path / "data"), "resolution": 512, "limit": 20},
    }
    assert settings_file.read_text().startswith("# mine\n[file_source]\n")
    before = settings_file.read_bytes()
    assert pin_dataset(tmp_path / "data", 512) is None
    assert settings_file.read_bytes() == before
    with pytest.raises(SettingsError) as other_root:
        pin_dataset(tmp_path / "elsewhere", 512)
    assert f"describes the dataset at {tmp_path / 'data'} at 512 px" in str(other_root.value)
    assert f"not {tmp_path / 'elsewhere'} at 512 px" in str(other_root.value)
    assert "another DAGSTER_HOME" in str(other_root.value)
    with pytest.raises(SettingsError, match="at 512 px .*, not .* at 256 px"):
        pin_dataset(tmp_path / "data", 256)
    assert settings_file.read_bytes() == before


def test_an_instance_without_settings_gets_a_file_and_a_step_with_another_root_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ffhq_aging_assets.resources import DatasetResource

    monkeypatch.delenv("FFHQ_SETTINGS", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.asset
    def probe(dataset: DatasetResource) -> str:
        return str(dataset.layout.root)

    # A run on an ephemeral instance (a script's) describes no dataset: nothing is written.
    dg.materialize([probe], resources={"dataset": DatasetResource(root=str(tmp_path / "x"))})
    assert not (home / "ffhq-aging.toml").exists()
    instance = dg.DagsterInstance.from_config(str(home))
    first = dg.materialize(
        [probe], resources={"dataset": DatasetResource(root=str(tmp_path / "a"))}, instance=instance
    )
    assert first.output_for_node("probe") == str(tmp_path / "a")
    assert read_settings(home / "ffhq-aging.toml") == {
        "dataset": {"root": str(tmp_path / "a"), "resolution": 256}
    }
    other = dg.materialize(
        [probe],
        resources={"dataset": DatasetResource(root=str(tmp_path / "b"))},
        instance=instance,
        raise_on_error=False,
    )
    assert not other.success
    errors = [
        e.event_specific_data.error.to_string()
        for e in other.all_events
        if getattr(e.event_specific_data, "error", None) is not None
    ]
    assert any(f"describes the dataset at {tmp_path / 'a'} at 256 px" in e for e in errors), errors
    assert not (tmp_path / "b").exists()

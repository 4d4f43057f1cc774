"""The package metadata lives in setup.cfg alone, and what pip installs and builds matches it."""

import configparser
import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DIST = "ffhq-aging-assets"
REINSTALL = "setup.cfg changed since the install: run ./setup.sh again"


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config


def normalized(requirements: list[str]) -> list[str]:
    """Requirements as packaging writes them (specifiers sorted, markers quoted alike)."""
    return sorted(str(Requirement(r)) for r in requirements)


def declared_requirements() -> list[str]:
    """setup.cfg's install_requires and extras, as Requires-Dist lines."""
    config = setup_cfg()
    declared = config["options"]["install_requires"].split()
    for extra, lines in config["options.extras_require"].items():
        declared += [f'{line}; extra == "{extra}"' for line in lines.split()]
    return normalized(declared)


def declared_scripts() -> dict[str, str]:
    lines = setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines()
    pairs = [line.split("=", 1) for line in lines]
    return {name.strip(): target.strip() for name, target in pairs}


def test_pyproject_has_no_project_table() -> None:
    # With a [project] table setuptools would take the metadata from it and overwrite
    # setup.cfg's [metadata] and [options], leaving two places that disagree.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "project" not in pyproject
    # The packages' find rules are setup.cfg's too.
    assert "setuptools" not in pyproject.get("tool", {})
    assert setup_cfg()["metadata"]["name"] == DIST


def test_installed_requirements_match_setup_cfg() -> None:
    dist = importlib.metadata.distribution(DIST)
    assert normalized(dist.requires or []) == declared_requirements(), REINSTALL
    extras = sorted(dist.metadata.get_all("Provides-Extra") or [])
    assert extras == sorted(setup_cfg()["options.extras_require"]), REINSTALL


def test_installed_version_and_console_script_match_setup_cfg() -> None:
    dist = importlib.metadata.distribution(DIST)
    assert dist.version == setup_cfg()["metadata"]["version"], REINSTALL
    installed = {ep.name: ep.value for ep in dist.entry_points.select(group="console_scripts")}
    assert installed == declared_scripts() == {"ffhq-aging": "ffhq_aging_assets.cli:main"}


def build_backend_missing() -> str | None:
    """Why the venv cannot build offline ([build-system] requires, unmet), or None."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for line in pyproject["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return f"{requirement.name} is not installed"
        if not requirement.specifier.contains(version, prereleases=True):
            return f"{requirement.name} {version} does not satisfy {line}"
    return None


def test_wheel_holds_every_package_file_and_the_metadata(tmp_path: Path) -> None:
    missing = build_backend_missing()
    if missing:
        pytest.skip(f"building without isolation needs the build system in this venv: {missing}")
    # A copy, so that setuptools' build/ folder (which keeps files of modules since deleted)
    # and egg-info never come from or go to the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ffhq_aging_assets", source / "ffhq_aging_assets", ignore=ignore)
    out = tmp_path / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "-w", str(out), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    log = built.stdout + built.stderr
    assert built.returncode == 0, log
    # setuptools warns, and carries on, when pyproject.toml's fields override setup.cfg's.
    config_warnings = re.findall(r".*Warning: .*(?:pyproject|setup\.cfg|project\.).*", log)
    assert not config_warnings, log

    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
        (scripts_name,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = configparser.ConfigParser(interpolation=None)
        scripts.read_string(archive.read(scripts_name).decode())

    package = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "ffhq_aging_assets").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    absent = sorted(set(package) - names)
    assert not absent, f"the wheel lacks package files (package data?): {absent}"
    assert not [n for n in names if n.startswith("ffhq_aging_assets_tests/")]

    assert metadata["Name"] == DIST
    assert metadata["Version"] == setup_cfg()["metadata"]["version"]
    assert normalized(metadata.get_all("Requires-Dist") or []) == declared_requirements()
    assert dict(scripts["console_scripts"]) == declared_scripts()

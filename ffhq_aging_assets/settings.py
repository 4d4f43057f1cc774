"""Settings made once for an instance: the defaults of the config fields the runs use.

A TOML file, ``$FFHQ_SETTINGS`` or else ``ffhq-aging.toml`` in ``$DAGSTER_HOME``, holds one
table per resource or asset config (``[dataset]``, ``[file_source]``, ``[metadata_locations]``,
``[deeplab_weights]``, ``[labels_location]``, ``[aligned_images]``, ``[segmentation_masks]``)
with any of its fields. A few environment variables (``ENVIRONMENT``) win over the file. Each
value becomes its field's default when the module defining the class is imported: in the code
server (so the launchpad shows it), in ``ffhq-aging build`` and in every step process. A run's
own config (a flag, a launchpad edit) still wins, field by field.

Defaults, not values bound to the resources in ``Definitions``: Dagster drops a resource's bound
values as soon as a run's config sets any one field of it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pydantic

from ffhq_aging_assets.lib.files import atomic_write_bytes, file_lock

FILE_NAME = "ffhq-aging.toml"
# (section, field) -> the variable that sets it, over the file.
ENVIRONMENT = {
    ("file_source", "client_secrets"): "FFHQ_CLIENT_SECRETS",
    ("file_source", "credentials_file"): "FFHQ_DRIVE_CREDENTIALS",
    ("file_source", "service_account"): "FFHQ_SERVICE_ACCOUNT",
    ("file_source", "api_endpoint"): "FFHQ_DRIVE_API",
}
LARGEST_FILE = 1 << 20


class SettingsError(ValueError):
    """The settings file cannot be used; the message names it and the setting."""


def settings_path() -> Path | None:
    """Where the settings file is looked for: ``$FFHQ_SETTINGS``, else in ``$DAGSTER_HOME``."""
    if os.environ.get("FFHQ_SETTINGS"):
        return Path(os.environ["FFHQ_SETTINGS"]).expanduser()
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]).expanduser() / FILE_NAME
    return None


def read_settings(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The tables of the settings file (none: empty); ``$FFHQ_SETTINGS`` must exist if set."""
    path = path or settings_path()
    if path is None or not path.is_file():
        if os.environ.get("FFHQ_SETTINGS") and path is not None:
            raise SettingsError(f"FFHQ_SETTINGS names {path}, which does not exist")
        return {}
    if path.stat().st_size > LARGEST_FILE:
        raise SettingsError(f"{path} is too large to be a settings file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    for section, table in data.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: '{section}' must be a table ([{section}])")
    return data


def apply_settings(section: str, model: type[pydantic.BaseModel]) -> None:
    """Make the settings of ``[section]`` (and its variables) the defaults of ``model``'s fields.

    Raises:
        SettingsError: a setting the class does not have, or a value it refuses.
    """
    path = settings_path()
    values = dict(read_settings(path).get(section, {}))
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields)
        raise SettingsError(f"{path}: [{section}] has no setting {', '.join(unknown)} ({known})")
    for (where, name), variable in ENVIRONMENT.items():
        if where == section and os.environ.get(variable):
            values[name] = os.environ[variable]
    if not values:
        return
    try:
        checked = model(**values)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e['input']!r})"
            for e in exc.errors()
        )
        raise SettingsError(f"{path} (or its variables), [{section}]: {problems}") from None
    for name in values:
        model.model_fields[name].default = getattr(checked, name)
    model.model_rebuild(force=True)


def instance_settings_path(root_directory: str | None) -> Path | None:
    """The settings file of an instance whose folder is ``root_directory`` (None: ephemeral)."""
    if os.environ.get("FFHQ_SETTINGS"):
        return Path(os.environ["FFHQ_SETTINGS"]).expanduser()
    return None if root_directory is None else Path(root_directory) / FILE_NAME


def pin_dataset(root: Path, resolution: int, path: Path | None = None) -> str | None:
    """Tie the instance to one dataset: ``[dataset]`` root and resolution in its settings file.

    An instance's runs, check results and the nightly backfill's "missing" describe one copy
    of the dataset at one resolution. The first build or step writes the root (absolute) and
    resolution it uses into the settings file when the file does not set them, so later
    launches (the UI's, backfills, builds without ``--root``) take them as defaults. ``path``
    is the settings file (default: :func:`settings_path`); without one (an ephemeral instance)
    nothing is tied.

    Returns:
        A line saying what was written, or None when nothing had to be.

    Raises:
        SettingsError: the file ties the instance to another root or resolution; the message
            names both and what to do.
    """
    path = path or settings_path()
    if path is None:
        return None
    root = root.expanduser().resolve()
    missing = _unpinned(path, root, resolution)
    if not missing:
        return None
    with file_lock(path.with_name(f".{path.name}.lock")):
        # Another build or step may have written it meanwhile.
        missing = _unpinned(path, root, resolution)
        if not missing:
            return None
        _add_to_table(path, "dataset", missing)
    return f"this instance now describes the dataset at {root} at {resolution} px ({path})"


def _unpinned(path: Path, root: Path, resolution: int) -> dict[str, str | int]:
    """What of ``root`` and ``resolution`` the file does not set yet; refuses other values."""
    table = read_settings(path).get("dataset", {})
    pinned_root = table.get("root")
    pinned_resolution = table.get("resolution")
    if (pinned_root is not None and Path(str(pinned_root)).expanduser().resolve() != root) or (
        pinned_resolution is not None and pinned_resolution != resolution
    ):
        there = Path(str(pinned_root or root)).expanduser().resolve()
        raise SettingsError(
            f"this Dagster instance describes the dataset at {there} at "
            f"{pinned_resolution or resolution} px ([dataset] in {path}), not {root} at "
            f"{resolution} px: its runs, check results and the nightly backfill are about that "
            "copy. Build another root or resolution with its own instance (another "
            "DAGSTER_HOME), or change [dataset] in that file if this one is meant"
        )
    return {
        name: value
        for name, value in (("root", str(root)), ("resolution", resolution))
        if table.get(name) is None
    }


def _add_to_table(path: Path, section: str, values: dict[str, str | int]) -> None:
    """Add ``values`` to ``[section]`` of the TOML file at ``path`` (made if absent), atomically."""
    import json
    import re

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    # JSON's string and integer forms are TOML's basic strings and integers.
    lines = "".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items())
    header = re.search(rf"^\[{re.escape(section)}\][ \t]*(#.*)?$", text, re.M)
    if header is not None:
        end = header.end()
        text = text[:end] + "\n" + lines.rstrip("\n") + text[end:]
        if not text.endswith("\n"):
            text += "\n"
    else:
        if text and not text.endswith("\n"):
            text += "\n"
        text += ("\n" if text else "") + f"[{section}]\n" + lines
    written = tomllib.loads(text).get(section, {})
    if any(written.get(name) != value for name, value in values.items()):
        raise SettingsError(f"{path}: could not add {', '.join(values)} to [{section}]")
    atomic_write_bytes(path, text.encode("utf-8"))

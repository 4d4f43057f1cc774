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

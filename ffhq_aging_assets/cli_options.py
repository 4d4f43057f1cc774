"""The options of ``ffhq-aging build``, derived from the Dagster config classes; their run config.

Every field of the asset configs and resources in ``SECTIONS`` is a flag: named after the field
(or as ``FLAG_NAMES`` says), with its default, bounds (``ge``, ``gt``, ``le``, ``lt``), choices
(``Literal``) and description. A new setting is one edit, to its config class.
"""

from __future__ import annotations

import argparse
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

from ffhq_aging_assets.assets.images import AlignConfig
from ffhq_aging_assets.assets.segmentation import SegmentConfig
from ffhq_aging_assets.lib.chunks import parse_partitions
from ffhq_aging_assets.lib.cpus import usable_cpus
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    LabelsLocation,
    MetadataLocations,
)

# Where each class's values go in the run config: (section, key, class).
SECTIONS: tuple[tuple[str, str, type[pydantic.BaseModel]], ...] = (
    ("ops", "aligned_images", AlignConfig),
    ("ops", "segmentation_masks", SegmentConfig),
    ("resources", "dataset", DatasetResource),
    ("resources", "file_source", FileSourceResource),
    ("resources", "metadata_locations", MetadataLocations),
    ("resources", "deeplab_weights", DeepLabWeights),
    ("resources", "labels_location", LabelsLocation),
)
# The names users already type, where they differ from the field's.
FLAG_NAMES = {
    ("aligned_images", "verify_pixel_md5"): "--no-verify-pixels",
    ("file_source", "min_bytes_per_second"): "--min-rate",
    ("deeplab_weights", "url"): "--weights",
    ("deeplab_weights", "md5"): "--weights-md5",
    ("deeplab_weights", "size"): "--weights-size",
    ("labels_location", "url"): "--labels-csv",
    ("labels_location", "md5"): "--labels-md5",
    ("labels_location", "size"): "--labels-size",
}
# Set together by --source, which names both in one value.
SOURCE_FIELDS = {("file_source", "kind"), ("file_source", "local_dir")}
# Files on this machine, made absolute here: a run re-executed from the UI may not share this
# working directory.
LOCAL_PATHS = {
    ("dataset", "root"),
    ("file_source", "client_secrets"),
    ("file_source", "credentials_file"),
    ("file_source", "service_account"),
}
# Written even at its default, so that every run's record names the folder it wrote.
ALWAYS_SET = {("dataset", "root")}
BOUNDS = {
    "ge": ("at least", lambda value, bound: value >= bound),
    "gt": ("more than", lambda value, bound: value > bound),
    "le": ("at most", lambda value, bound: value <= bound),
    "lt": ("less than", lambda value, bound: value < bound),
}


@dataclass(frozen=True)
class Option:
    """One config field offered as a flag."""

    section: str
    key: str
    name: str
    field: FieldInfo

    @property
    def flag(self) -> str:
        """The flag, e.g. ``--batch-size``; a bool that defaults to true gets ``--no-``."""
        if (self.key, self.name) in FLAG_NAMES:
            return FLAG_NAMES[self.key, self.name]
        prefix = "--no-" if self.field.default is True else "--"
        return prefix + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """Where argparse puts the value."""
        return self.flag[2:].replace("-", "_")


def options() -> Iterator[Option]:
    """Every field offered as a flag, in the order of ``SECTIONS`` and of each class."""
    for section, key, model in SECTIONS:
        for name, field in model.model_fields.items():
            if (key, name) not in SOURCE_FIELDS:
                yield Option(section, key, name, field)


def add_build_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add every option of ``build`` to ``parser``; returns them, in help order."""
    added = [
        parser.add_argument(
            "--partitions",
            type=_partitions,
            default="00000",
            help="chunk keys (00000,01000), a range (00000-05000) or 'all' (70 chunks) [00000]",
        ),
        parser.add_argument(
            "--select",
            default=None,
            help="asset keys separated by commas (ffhq_metadata_json,image_metadata) or a "
            "Dagster asset selection ('group:metadata', '+image_metadata') [everything]",
        ),
        parser.add_argument(
            "--source",
            type=_source,
            default="drive",
            help="drive (anonymous), pydrive (Google account) or local:DIR [drive]",
        ),
        parser.add_argument(
            "--jobs",
            type=_jobs,
            default=None,
            help="chunk runs in flight at once, so one chunk downloads while another aligns or "
            "segments; GPU steps still take turns on the gpu pool; never above the instance's "
            "max_concurrent_runs [1 + cores/8 + GPUs, at most 4]",
        ),
        parser.add_argument(
            "--verbose",
            action="store_true",
            help="show Dagster's event stream here instead of only in a log file under "
            "$DAGSTER_HOME/logs",
        ),
    ]
    models = {key: model for _, key, model in SECTIONS}
    groups: dict[str, Any] = {}
    for option in options():
        if option.key not in groups:
            kind = "asset config" if option.section == "ops" else "resource"
            summary = (inspect.getdoc(models[option.key]) or "").splitlines()[0]
            groups[option.key] = parser.add_argument_group(
                f"{option.key} ({kind})", summary.replace("`", "")
            )
        renamed = (option.key, option.name) in FLAG_NAMES
        note = f"field {option.name}" if renamed else None
        added.append(_add(groups[option.key], option.flag, option.field, None, note))
    return added


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--root`` and ``--resolution`` as ``build`` has them, for commands that read a dataset."""
    for name in ("root", "resolution"):
        field = DatasetResource.model_fields[name]
        _add(parser, f"--{name}", field, field.default)


def _add(
    parser: Any, flag: str, field: FieldInfo, default: Any, note: str | None = None
) -> argparse.Action:
    """An argument for ``field``; ``default`` is what it holds when not given."""
    kind, choices = _scalar(field.annotation, flag)
    notes = [note] if note else []
    if kind is bool:
        notes += ["on; this flag turns it off"] if field.default else []
        # Given, a flag flips the field's default; absent, it leaves the default alone.
        return parser.add_argument(
            flag,
            action="store_const",
            const=not field.default,
            default=default,
            help=_help(field, notes),
        )
    notes += [] if field.default is None else [f"default {_show(field.default)}"]
    bounds = _bounds(field)
    notes += [f"{BOUNDS[attr][0]} {_show(bound)}" for attr, bound in bounds]
    return parser.add_argument(
        flag,
        type=_parser(kind, bounds),
        choices=choices,
        default=default,
        help=_help(field, notes),
    )


def _help(field: FieldInfo, notes: list[str]) -> str:
    # argparse formats help with %: a literal one must be doubled.
    text = (field.description or "").replace("%", "%%")
    return f"{text} [{'; '.join(notes)}]" if notes else text


def _scalar(annotation: Any, flag: str) -> tuple[type, tuple | None]:
    """The type a flag converts to, and its choices, seen past ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            annotation = members[0]
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    if annotation in (bool, int, float, str):
        return annotation, None
    raise TypeError(f"{flag}: a {annotation} field cannot be a command-line flag")


def _bounds(field: FieldInfo) -> list[tuple[str, Any]]:
    """The field's ``ge``, ``gt``, ``le`` and ``lt``, as pydantic keeps them in its metadata."""
    return [
        (attr, getattr(item, attr))
        for item in field.metadata
        for attr in BOUNDS
        if getattr(item, attr, None) is not None
    ]


def _parser(kind: type, bounds: list[tuple[str, Any]]) -> Callable[[str], Any]:
    """Converts a flag's text, and refuses values out of bounds, naming the bound."""

    def parse(text: str) -> Any:
        value = kind(text)
        for attr, bound in bounds:
            words, holds = BOUNDS[attr]
            if not holds(value, bound):
                raise argparse.ArgumentTypeError(f"must be {words} {_show(bound)}, not {text}")
        return value

    # argparse names the type in its message for text that does not convert ("invalid int value").
    parse.__name__ = kind.__name__
    return parse


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _source(text: str) -> str:
    if text in ("drive", "pydrive"):
        return text
    if not (text.startswith("local:") and text[6:]):
        raise argparse.ArgumentTypeError(f"must be drive, pydrive or local:DIR, not {text!r}")
    folder = Path(text[6:]).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text}: {folder} {what}")
    return text


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if not 1 <= jobs <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, not {text}")
    return jobs


def default_jobs() -> int:
    """Chunk runs in flight by default: 1 + one per 8 usable CPUs + one per GPU, at most 4.

    Each chunk's alignment already uses every core, so more chunks at once mostly buy overlap:
    downloads and GPU work of one chunk while another aligns.
    """
    return min(4, 1 + usable_cpus() // 8 + gpu_count())


def gpu_count() -> int:
    """NVIDIA GPUs this process may use: ``CUDA_VISIBLE_DEVICES``'s, else the driver's list.

    Counted without loading CUDA (the command line does not import torch).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        return len(devices[: devices.index("-1")] if "-1" in devices else devices)
    try:
        return sum(1 for _ in Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return 0


def _partitions(text: str) -> list[str]:
    try:
        return parse_partitions(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run config the ``build`` options describe, checked as a run would check it.

    Only what was given is set, so the definitions' own settings (``$FFHQ_CLIENT_SECRETS``)
    hold for the rest. A URL given without its md5 and size sets them to none: the published
    checksums are another file's.
    """
    config: dict[str, Any] = {section: {} for section, _, _ in SECTIONS}
    for section, key, _ in SECTIONS:
        config[section][key] = {"config": {}}
    for option in options():
        value = getattr(args, option.dest)
        if value is None and (option.key, option.name) in ALWAYS_SET:
            value = option.field.default
        if value is None:
            continue
        if (option.key, option.name) in LOCAL_PATHS:
            value = str(Path(value).expanduser().resolve())
        elif _is_url(option.name):
            value = _absolute(value)
        config[option.section][option.key]["config"][option.name] = value
    for section, key, model in SECTIONS:
        values = config[section][key]["config"]
        for name in [name for name in values if _is_url(name)]:
            for checksum in ("md5", "size"):
                sibling = name.removesuffix("url") + checksum
                if sibling in model.model_fields:
                    values.setdefault(sibling, None)
    source = config["resources"]["file_source"]["config"]
    if args.source.startswith("local:"):
        source.update(kind="local", local_dir=str(Path(args.source[6:]).expanduser().resolve()))
    else:
        source["kind"] = args.source
    _validate(config)
    return config


def _is_url(name: str) -> bool:
    return name == "url" or name.endswith("_url")


def _absolute(url: str) -> str:
    return url if "://" in url else str(Path(url).expanduser().resolve())


def _validate(config: dict[str, Any]) -> None:
    """Refuse, before any run, a config that Dagster or a config class would refuse in one."""
    import dagster as dg

    from ffhq_aging_assets.definitions import defs

    try:
        dg.validate_run_config(defs.resolve_job_def("chunks"), config)
        for section, key, model in SECTIONS:
            model(**config[section][key]["config"])
    except (dg.DagsterInvalidConfigError, pydantic.ValidationError) as exc:
        raise SystemExit(f"ffhq-aging: invalid run config: {exc}") from None

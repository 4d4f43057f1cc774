"""Inputs every chunk shares (metadata JSON, labels CSV, checkpoint), cached under the root.

A cached input is reused only for the same source: the same URL or path and, where known, the
same md5 and size; for a local file without an md5, also its size and modification time. A
different location, or a local file changed in place, fetches it again. An input that fails to
parse or validate is moved aside (never deleted silently) and the error says where it went, so
the next run fetches it again instead of failing on the same bad copy for ever.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ffhq_aging_assets.lib.download import FileSpec, is_local, local_path
from ffhq_aging_assets.lib.files import atomic_path, atomic_write_bytes, file_digest, file_lock
from ffhq_aging_assets.lib.sources import Source

T = TypeVar("T")


class InputError(RuntimeError):
    """A shared input is not usable; the message names it, its source and what was done."""


@dataclass(frozen=True)
class SharedInput(Generic[T]):
    """A verified, validated shared input on disk."""

    path: Path
    size: int
    md5: str
    fetched: bool
    checked: T


def source_key(spec: FileSpec) -> dict[str, object]:
    """What identifies the copy ``spec`` names: location, checksums, and a local file's state."""
    key: dict[str, object] = {"url": spec.url, "md5": spec.md5, "size": spec.size}
    if spec.md5 is None and is_local(spec.url):
        src = local_path(spec.url)
        if src.is_file():
            stat = src.stat()
            key.update(local_size=stat.st_size, local_mtime_ns=stat.st_mtime_ns)
    return key


def _record_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.source.json")


def _record(dest: Path) -> dict:
    try:
        record = json.loads(_record_path(dest).read_text())
        return record if dest.is_file() and isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def move_aside(path: Path) -> Path:
    """Rename a bad file to ``NAME.bad-YYYYmmdd-HHMMSS`` beside it; returns the new path."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    _record_path(path).unlink(missing_ok=True)
    return aside


def fetch_input(
    source: Source,
    spec: FileSpec,
    dest: Path,
    check: Callable[[Path, str], T],
    *,
    recheck: bool = False,
) -> SharedInput[T]:
    """A copy of ``spec`` at ``dest`` that ``check`` accepts; fetched when not cached for it.

    ``check(path, md5)`` parses or validates the file and raises ``ValueError`` (or a
    subclass) when it is not the input; the file is then moved aside and :class:`InputError`
    raised. What ``check`` returned (JSON) is kept with the copy and returned again while the
    copy is unchanged, unless ``recheck``. Under a lock: concurrent runs wait for one fetch
    instead of starting their own.
    """
    key = source_key(spec)
    with file_lock(dest.with_name(f".{dest.name}.lock")):
        fetched = False
        record = _record(dest)
        if record.get("source") != key:
            if dest.is_file():
                # Not fetched for this source: a verified copy with the same md5 is kept by the
                # source; anything else is replaced.
                _record_path(dest).unlink(missing_ok=True)
                if spec.md5 is None:
                    dest.unlink()
            got = source.fetch(spec, dest)
            if got.path != dest:
                with_copy(got.path, dest)
            fetched = got.fetched or got.path != dest
        size, md5 = file_digest(dest)
        if not recheck and not fetched and record.get("md5") == md5 and "checked" in record:
            return SharedInput(dest, size, md5, False, record["checked"])
        try:
            checked = check(dest, md5)
        except ValueError as exc:
            aside = move_aside(dest)
            raise InputError(
                f"{spec.name} from {spec.url} is not usable: {exc}. It was moved aside to "
                f"{aside}; the next run fetches it again (point to a good copy if this one "
                "is wrong at its source)."
            ) from exc
        record = {"source": key, "md5": md5, "checked": checked}
        atomic_write_bytes(_record_path(dest), json.dumps(record).encode())
        return SharedInput(dest, size, md5, fetched, checked)


def with_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` onto ``dest`` through a temporary file."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)

"""Atomic file writes: every output goes to a temporary name in its folder and is renamed.

A temporary name says who writes it (``.NAME.partial-HOST-PID-RANDOM``, HOST a short tag of
the host name), so a step that starts can remove what a dead writer left without touching the
files of a live one, even another build's writing into the same folder at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ffhq_aging_assets.lib.processes import host_tag, pid_alive

TEMP_MARKER = ".partial-"
# A temporary file written from another host cannot be judged by its process: it counts as
# abandoned once nothing has written to it for this long.
FOREIGN_STALE_SECONDS = 6 * 3600


def temp_path_for(dest: Path) -> Path:
    """A unique temporary name next to ``dest`` that :func:`leftover_temp_files` recognises."""
    tag = f"{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return dest.with_name(f".{dest.name}{TEMP_MARKER}{tag}")


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``dest``, on error remove it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temporary file and a rename."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def leftover_temp_files(folder: Path) -> list[Path]:
    """Temporary files a killed writer left in ``folder`` (not recursive)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and TEMP_MARKER in p.name)


def is_orphan(path: Path, now: float | None = None) -> bool:
    """True when the writer of temporary file ``path`` is gone (it will never be renamed).

    Names from this host are judged by their process (dead, or started after the file was last
    written: its id was reused); names from another host, or in an unknown form, by age.
    """
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return False
    host, _, rest = path.name.partition(TEMP_MARKER)[2].partition("-")
    pid = rest.partition("-")[0]
    if host == host_tag() and pid.isdigit():
        return not pid_alive(int(pid), since=modified)
    return (now or time.time()) - modified > FOREIGN_STALE_SECONDS


def orphan_temp_files(folder: Path) -> list[Path]:
    """Temporary files in ``folder`` whose writer is gone (not recursive)."""
    return [p for p in leftover_temp_files(folder) if is_orphan(p)]


def remove_orphan_temp_files(folder: Path, prefix: str = "") -> list[Path]:
    """Remove what dead writers left in ``folder`` for files named ``prefix...``; returns them.

    Called by the step that owns the folder (or, with ``prefix``, those of its files) as it
    starts; temporary files of live writers stay.
    """
    removed = []
    for path in orphan_temp_files(folder):
        if path.name[1:].startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def file_digest(path: Path, block: int = 1 << 20) -> tuple[int, str]:
    """Size in bytes and md5 hex digest of a file, read in bounded blocks."""
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(block):
            md5.update(chunk)
            size += len(chunk)
    return size, md5.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes.

    Runs for different chunks may start together; the lock makes one of them fetch a shared
    file while the others wait and then find it verified.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

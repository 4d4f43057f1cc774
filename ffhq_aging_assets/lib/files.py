"""Atomic file writes: every output goes to a temporary name in its folder and is renamed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".partial-"


def temp_path_for(dest: Path) -> Path:
    """A unique temporary name next to ``dest`` that :func:`leftover_temp_files` recognises."""
    tag = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
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

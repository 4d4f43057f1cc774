"""One GPU of this host for one step, so that steps running at once compute on different GPUs.

The ``gpu`` pool lets as many segmentation steps run at once as its limit, one per GPU; a step
asking for ``device: auto`` would otherwise take the first GPU every time, leaving the others
idle. Such a step claims a GPU instead: an exclusive lock on a file named after the GPU's UUID,
in a folder of this host private to the user, taking the first GPU whose lock is free and
holding it until the step ends. The kernel drops the lock of a process that dies, so a step
killed with ``kill -9`` frees its GPU at once. When every GPU is held (a pool limit above the
number of GPUs, or a second Dagster instance on the host), the step waits for one, saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

POLL_SECONDS = 2.0


class ClaimError(RuntimeError):
    """The folder of the claims cannot be trusted; the message names it."""


def claims_folder() -> Path:
    """This user's folder of GPU claims on this host: under ``$XDG_RUNTIME_DIR`` or ``/tmp``."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"ffhq-aging-gpus-{os.getuid()}"


def _private(folder: Path) -> Path:
    """``folder``, created if missing, after checking that only this user controls it."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ClaimError(
            f"{folder}: not a folder of this user's that others cannot write to; the GPU "
            "claims cannot be kept there (remove it, or set XDG_RUNTIME_DIR)"
        )
    return folder


@contextlib.contextmanager
def claim_one(
    gpus: Sequence[str],
    folder: Path,
    say: Callable[[str], None],
    poll: float = POLL_SECONDS,
) -> Iterator[int]:
    """The index in ``gpus`` (their UUIDs) of one that no other step holds, held for the block.

    Raises:
        ClaimError: ``folder`` is not this user's own.
    """
    if not gpus:
        raise ValueError("no GPU to claim")
    folder = _private(folder)
    waiting = False
    while True:
        for index, gpu in enumerate(gpus):
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", gpu) + ".lock"
            handle = (folder / name).open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield index
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waiting:
            say(f"all {len(gpus)} GPU(s) of this host are held by other steps; waiting for one")
            waiting = True
        time.sleep(poll)

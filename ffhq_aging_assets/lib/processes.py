"""Whether the process that owns something (a run, a temporary file) is still alive.

An owner is a host, a process id and the time by which that process must have existed: a
process id reused by a later process does not make a dead owner look alive. Only owners on
this host can be judged; another host's are unknown (None), never dead.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass

import psutil

# Process start times come from the kernel in clock ticks; allow for their rounding.
_START_SLACK = 2.0


def this_host() -> str:
    """This machine's name, as owners record it."""
    return socket.gethostname()


def host_tag(host: str | None = None) -> str:
    """A short, file-name-safe tag of a host name (8 hex digits)."""
    name = this_host() if host is None else host
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]


@dataclass(frozen=True)
class Owner:
    """A process that owns something: on ``host``, id ``pid``, existing by ``since`` (epoch s)."""

    host: str
    pid: int
    since: float

    def alive(self) -> bool | None:
        """True or False on this host; None when the owner is on another host."""
        if self.host not in (this_host(), host_tag()):
            return None
        return pid_alive(self.pid, self.since)


def pid_alive(pid: int, since: float | None = None) -> bool:
    """True when process ``pid`` runs here and (given ``since``) already existed then."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return since is None or process.create_time() <= since + _START_SLACK
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False

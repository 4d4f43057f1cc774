"""How many CPUs this process may use, which on a shared host is not how many the host has.

``os.cpu_count()`` counts the host's CPUs. A step on a cluster is usually given fewer: by its
CPU affinity (``taskset``, Slurm, Kubernetes' static CPU manager, cpusets) or by a cgroup CPU
quota (``docker --cpus``, a Kubernetes CPU limit). Sizing process and thread pools by the
host's count there starts dozens of alignment processes on a few CPUs' worth of time, each
with its own memory. :func:`usable_cpus` takes the affinity, capped by the quota.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's CPU quota; at least 1.

    ``root`` is where ``/proc`` and ``/sys`` are found (another folder only in tests).
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """CPUs' worth of time this process's cgroups allow (the tightest of them); None: no limit.

    The process's cgroups are read from ``/proc/self/cgroup``; each and its ancestors count.
    cgroup v2: ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" for none). cgroup v1, in the ``cpu``
    controller's hierarchy: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none). Files that
    are missing or unreadable limit nothing.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = root / "sys/fs/cgroup"
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        relative = Path(parts[2].strip().lstrip("/"))
        if ".." in relative.parts:
            continue
        if parts[0] == "0" and not parts[1]:
            quotas += [_v2_quota(folder / "cpu.max") for folder in _up_to(mount, relative)]
        elif "cpu" in parts[1].split(","):
            for base in (mount / "cpu", mount / "cpu,cpuacct", mount / parts[1]):
                quotas += [
                    _v1_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")
                    for folder in _up_to(base, relative)
                ]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _up_to(base: Path, relative: Path) -> list[Path]:
    """``base / relative`` and each folder above it, up to ``base``."""
    folder = base / relative
    return [folder, *[p for p in folder.parents if p.is_relative_to(base)]]


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _v1_quota(quota_path: Path, period_path: Path) -> float | None:
    try:
        quota = quota_path.read_text().strip()
        return None if quota == "-1" else _ratio(quota, period_path.read_text().strip())
    except (OSError, ValueError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None

"""The CPUs a step may use: its affinity (set for real in a child process) and its cgroups'
CPU quotas (the kernel's files, in their formats, under a stand-in root)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.cpus import cgroup_cpu_quota, usable_cpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_process_pinned_to_one_cpu_may_use_one() -> None:
    code = "from ffhq_aging_assets.lib.cpus import usable_cpus; print(usable_cpus())"
    one = min(os.sched_getaffinity(0))
    pinned = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {one}),
    )
    assert pinned.stdout.split() == ["1"]
    assert usable_cpus() == len(os.sched_getaffinity(0))


def _world(tmp_path: Path, cgroups: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroups)
    for name, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "cgroups, files, quota, cpus",
    [
        # A container limited to 1.5 CPUs: its own cgroup has no limit, its parent has.
        (
            "0::/kubepods/pod1/c1\n",
            {
                "kubepods/pod1/c1/cpu.max": "max 100000\n",
                "kubepods/pod1/cpu.max": "150000 100000\n",
                "kubepods/cpu.max": "800000 100000\n",
            },
            1.5,
            2,
        ),
        (
            "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuset:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            1.0,
            1,
        ),
    ],
    ids=["v2", "v1"],
)
def test_a_cgroup_quota_caps_the_cpus(
    tmp_path: Path, cgroups: str, files: dict[str, str], quota: float, cpus: int
) -> None:
    root = _world(tmp_path, cgroups, files)
    assert cgroup_cpu_quota(root) == quota
    assert usable_cpus(root) == min(cpus, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize(
    "cgroups, files",
    [
        ("0::/\n", {"cpu.max": "max 100000\n"}),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}),
        ("0::/a\n", {"a/cpu.max": "garbage\n"}),
        ("0::/../../etc\n", {}),
        ("", {}),
    ],
    ids=["v2-max", "v1-unlimited", "unreadable", "escaping-path", "no-cgroups"],
)
def test_no_quota_limits_nothing(tmp_path: Path, cgroups: str, files: dict[str, str]) -> None:
    root = _world(tmp_path, cgroups, files)
    assert cgroup_cpu_quota(root) is None
    assert usable_cpus(root) == len(os.sched_getaffinity(0))

"""A GPU per step: steps at once take different GPUs, wait when all are held, and a killed
step's GPU is free at once. Real locks between real processes; the GPUs are named by UUID."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffhq_aging_assets.lib.gpu_claim import ClaimError, claim_one
from ffhq_aging_assets.lib.segment_model import step_device

ROOT = Path(__file__).resolve().parents[1]
GPUS = ["GPU-8d2c1f7a-0000", "GPU-8d2c1f7a-0001"]

HOLDER = """
import sys, time
from pathlib import Path
from ffhq_aging_assets.lib.gpu_claim import claim_one
gpus = sys.argv[2].split(",")
with claim_one(gpus, Path(sys.argv[1]), lambda line: print(line, flush=True), poll=0.1) as i:
    print("claimed", i, flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(folder: Path, gpus: list[str], hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), ",".join(gpus), str(hold)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed whole below
    )


def test_steps_at_once_take_different_gpus_and_wait_when_all_are_held(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    said: list[str] = []
    with claim_one(GPUS, folder, said.append) as first:
        with claim_one(GPUS, folder, said.append) as second:
            assert (first, second) == (0, 1) and not said
            third = _holder(folder, GPUS, 0)
            assert third.stdout is not None
            assert "held by other steps; waiting" in third.stdout.readline()
            time.sleep(0.5)
            assert third.poll() is None, "claimed a GPU another step holds"
        # The second GPU is free again: the waiting step takes it.
        out, _ = third.communicate(timeout=30)
        assert out.split() == ["claimed", "1"], out
    assert third.returncode == 0


def test_a_step_killed_with_its_process_group_frees_its_gpu_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    killed = _holder(folder, GPUS[:1], 600)
    assert killed.stdout is not None and killed.stdout.readline().split() == ["claimed", "0"]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    said: list[str] = []
    with claim_one(GPUS[:1], folder, said.append, poll=0.1) as index:
        assert index == 0 and not said


def test_a_claims_folder_others_control_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(ClaimError, match=f"{link}: not a folder of this user's"):
        with claim_one(GPUS, link, print):
            pass
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ClaimError, match=f"{shared}: not a folder"):
        with claim_one(GPUS, shared, print):
            pass


def test_without_cuda_or_with_a_chosen_device_nothing_is_claimed(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for name in ("cpu", "cuda:1"):
        with step_device(name, pytest.fail) as device:
            assert device == name
    if not __import__("torch").cuda.is_available():
        with step_device("auto", pytest.fail) as device:
            assert device == "auto"
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_gpu_auto_claims_a_gpu_by_its_uuid_for_the_step(monkeypatch, tmp_path) -> None:
    import fcntl

    import torch

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with step_device("auto", print) as device:
        index = int(device.removeprefix("cuda:"))
        assert torch.cuda.current_device() == index
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        (lock,) = (tmp_path / f"ffhq-aging-gpus-{os.getuid()}").iterdir()
        assert uuid.replace("-", "") in lock.name.replace("-", "")
        with lock.open("a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)

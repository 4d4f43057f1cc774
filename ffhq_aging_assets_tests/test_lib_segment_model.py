import os
import subprocess
import sys
from pathlib import Path

import torch

from ffhq_aging_assets.lib.segment_model import batch_size_for, resolve_device

COMPILE_STEP = """
import sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from ffhq_aging_assets.lib.segment_model import compile_model
torch.manual_seed(0)
model = compile_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval(),
                      Path(sys.argv[1]))
with torch.inference_mode():
    model(torch.ones(2, 3, 8, 8))
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


def test_compiled_kernels_survive_into_the_next_process(tmp_path: Path) -> None:
    # Each Dagster step is a fresh process: the second one must load what the first compiled.
    cache = tmp_path / "cache" / "torchinductor"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR", "TRITON"))}

    def step() -> tuple[int, int]:
        proc = subprocess.run(
            [sys.executable, "-c", COMPILE_STEP, str(cache)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=300,
        )
        hit, miss = proc.stdout.split()[-2:]
        return int(hit), int(miss)

    assert step() == (0, 1)
    assert any(cache.rglob("*")), "nothing was cached under the root"
    assert step() == (1, 0)


def test_batch_zero_takes_the_devices_default() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)  # no CUDA needed to name one
    assert batch_size_for(cpu, 0) < batch_size_for(cuda, 0)
    assert batch_size_for(cpu, 0) > 0
    assert batch_size_for(cpu, 7) == batch_size_for(cuda, 7) == 7
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_threads_are_lowered_to_the_usable_cpus_never_raised() -> None:
    # A fresh process whose OpenMP pool starts at 2 threads, as a quota-limited container's
    # pool starts at the host's count.
    code = (
        "import torch\n"
        "from ffhq_aging_assets.lib.segment_model import fit_cpu_threads\n"
        "print(torch.get_num_threads(), fit_cpu_threads(8), fit_cpu_threads(1))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["2", "2", "1"]

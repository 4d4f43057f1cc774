"""How a face loader slows the thread that launches the model's kernels, threads vs processes.

Usage: python -m benchmarks.loader_contention [--seconds 3] [--size 1024]

On CUDA the main thread spends its time in Python launching kernels; a loader decoding PNGs
on threads of the same process takes the interpreter lock from it, a loader process does not.
Here the main thread runs a launch-like loop of tiny in-place tensor ops, alone, then beside
one loader thread, then beside one loader process (each decoding and PIL-resizing faces as
the engine does). Reports the main loop's rate in each case; a 2-core machine gives each of
the two its own core, so the difference is the lock, not CPU share.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ffhq_aging_assets.lib.segment_input import published_input, read_face


def launches(seconds: float) -> float:
    """Tiny in-place ops per second on one thread: a stand-in for kernel launches."""
    torch.set_num_threads(1)
    x = torch.zeros(8)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            x.add_(1)
        count += 100
    return count / seconds


def decode(files: list[Path], stop, done) -> None:
    count = 0
    while not stop.is_set():
        published_input(read_face(files[count % len(files)]))
        count += 1
    done.value = count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        files = []
        for i in range(8):
            small = rng.integers(0, 256, (args.size // 8, args.size // 8, 3), np.uint8)
            face = PIL.Image.fromarray(small).resize(
                (args.size, args.size), PIL.Image.Resampling.BICUBIC
            )
            files.append(Path(tmp) / f"{i:05d}.png")
            face.save(files[-1])
        alone = launches(args.seconds)
        print(f"main loop alone: {alone:,.0f} ops/s")
        for kind in ("thread", "process"):
            stop = threading.Event() if kind == "thread" else spawn.Event()
            done = spawn.Value("q", 0)
            maker = threading.Thread if kind == "thread" else spawn.Process
            loader = maker(target=decode, args=(files, stop, done))
            loader.start()
            time.sleep(0.1 if kind == "thread" else 3.0)  # a spawned process imports first
            rate = launches(args.seconds)
            stop.set()
            loader.join()
            print(
                f"beside a loader {kind}: {rate:,.0f} ops/s ({rate / alone:.0%} of alone); "
                f"the loader decoded {done.value} faces"
            )


if __name__ == "__main__":
    main()

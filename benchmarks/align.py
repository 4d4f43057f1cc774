"""Alignment: per-image time of both modes, and chunk throughput from a loopback fake Drive.

Usage:
    python -m benchmarks.align frames [--repeats 2]
    python -m benchmarks.align chunk [--images 100] [--threads 8] [--processes 0] [--size 1600x1200]

``frames``: synthetic photos of 2400x1800 and 4000x3000 with the face centred, at a border
and close up; each mode aligns each (already decoded) frame at 256 and 1024, ``--repeats``
times, alternating modes; reports median seconds, the reference/fast ratio and fast mode's PSNR
against the reference.

``chunk``: serves ``--images`` synthetic photos from the tests' fake Google Drive on loopback
and runs the chunk pipeline (download threads, verification, pixel md5, alignment processes,
PNG writes) once per mode into a fresh folder; reports images per second and the peak resident
memory of the whole process tree (sampled every 50 ms), also less what the process held before
the run (the fake Drive keeps every photo it serves in memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ffhq_aging_assets.lib.align import align_face
from ffhq_aging_assets_tests.synthetic import face_template, synthetic_photo

KINDS = {"centre": 0.25, "border": 0.22, "closeup": 0.6}


def frame(width: int, height: int, kind: str, seed: int = 1):
    size = KINDS[kind] * min(width, height)
    origin = (
        (0.02 * width, 0.03 * height)
        if kind == "border"
        else (width / 2 - size / 2, height / 2 - size / 2)
    )
    lm = face_template() * size + origin
    img = synthetic_photo(width, height, lm, seed=seed)
    img.load()
    return img, lm


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def frames(repeats: int) -> None:
    print("| frame | face | R | reference s | fast s | ratio | PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    ratios: dict[int, list[float]] = {256: [], 1024: []}
    for width, height in ((2400, 1800), (4000, 3000)):
        for kind in KINDS:
            img, lm = frame(width, height, kind)
            for res in (256, 1024):
                times: dict[str, list[float]] = {"reference": [], "fast": []}
                outs = {}
                for r in range(repeats):
                    for mode in ("reference", "fast") if r % 2 == 0 else ("fast", "reference"):
                        t = time.perf_counter()
                        outs[mode] = np.asarray(align_face(img, lm, res, mode=mode))
                        times[mode].append(time.perf_counter() - t)
                ref, fast = statistics.median(times["reference"]), statistics.median(times["fast"])
                ratios[res].append(ref / fast)
                print(
                    f"| {width}x{height} | {kind} | {res} | {ref:.3f} | {fast:.3f} | "
                    f"{ref / fast:.1f}x | {psnr(outs['fast'], outs['reference']):.1f} |",
                    flush=True,
                )
    for res, values in ratios.items():
        print(f"median ratio at {res}: {statistics.median(values):.1f}x (min {min(values):.1f}x)")


class PeakRSS:
    """Samples the resident memory of this process and its children every 50 ms."""

    def __enter__(self) -> PeakRSS:
        import psutil

        self.me = psutil.Process()
        self.before = self.peak = self.me.memory_info().rss / 2**20
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.me, *self.me.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def chunk(images: int, threads: int, processes: int, size: str) -> None:

    from ffhq_aging_assets.lib.align_pipeline import ImageJob, align_chunk
    from ffhq_aging_assets.lib.download import FileSpec, RetryPolicy
    from ffhq_aging_assets.lib.sources import DriveHttpSource
    from ffhq_aging_assets_tests.fake_drive import FakeDrive
    from ffhq_aging_assets_tests.fixtures import photo_file

    width, height = (int(v) for v in size.split("x"))
    drive = FakeDrive().start()
    specs = []
    print(f"rendering {images} photos of {width}x{height} ...", flush=True)
    total = 0
    for n in range(images):
        wild, data = photo_file(n, drive.url(f"benchPhoto{n:05d}"), width, height)
        drive.add(f"benchPhoto{n:05d}", data, f"{n:05d}.png")
        total += len(data)
        specs.append(
            (
                n,
                FileSpec(wild.url, f"{n:05d}.png", wild.size, wild.md5),
                wild.landmarks,
                wild.pixel_md5,
            )
        )
    print(f"{total / images / 1e6:.1f} MB per photo on average")
    print(
        "| mode | R | images | threads | processes | seconds | images/s | peak RSS MB (tree) "
        "| added by the run MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("reference", "fast"):
        for res in (256,):
            with tempfile.TemporaryDirectory() as out:
                jobs = [
                    ImageJob(n, spec, lm, pm, Path(out) / "aligned" / f"{n:05d}.png")
                    for n, spec, lm, pm in specs
                ]
                (Path(out) / "aligned").mkdir()
                with PeakRSS() as rss:
                    report = align_chunk(
                        jobs,
                        DriveHttpSource(RetryPolicy(attempts=3)),
                        Path(out) / "sources",
                        res,
                        mode=mode,
                        threads=threads,
                        processes=processes,
                        say=lambda _line: None,
                    )
                assert not report.failed, report.failed
                procs = processes or os.cpu_count()
                print(
                    f"| {mode} | {res} | {report.aligned} | {threads} | {procs} | "
                    f"{report.seconds:.1f} | {report.rate:.2f} | {rss.peak:.0f} "
                    f"| {rss.peak - rss.before:.0f} |",
                    flush=True,
                )
    drive.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("frames")
    f.add_argument("--repeats", type=int, default=2)
    c = sub.add_parser("chunk")
    c.add_argument("--images", type=int, default=100)
    c.add_argument("--threads", type=int, default=8)
    c.add_argument("--processes", type=int, default=0)
    c.add_argument("--size", default="1600x1200")
    args = parser.parse_args()
    if args.what == "frames":
        frames(args.repeats)
    else:
        chunk(args.images, args.threads, args.processes, args.size)


if __name__ == "__main__":
    main()

"""Alignment: per-image time of both modes, and chunk throughput from a loopback fake Drive.

Usage:
    python -m benchmarks.align frames [--repeats 2]
    python -m benchmarks.align edges [--repeats 2]
    python -m benchmarks.align canvas [--repeats 3]
    python -m benchmarks.align chunk [--images 100] [--threads 8] [--processes 0] [--size 1600x1200]

``frames``: synthetic photos of 2400x1800 and 4000x3000 with the face centred, at a border
and close up; each mode aligns each (already decoded) frame at 256 and 1024, ``--repeats``
times, alternating modes; reports median seconds, the reference/fast ratio and fast mode's PSNR
against the reference.

``edges``: reference mode on faces near a frame edge, where the blur-pad step runs, before and
after its exact speed-ups: the whole-frame shrink then the cut (``previous_shrunk_crop``) and
the published blur-pad (the tests' oracle, ``published_blur_pad``) against ``_shrunk_crop`` and
the banded ``_blur_pad``; each step alone and the whole ``align_face``, side by side in one
process, ``--repeats`` times with the order alternated. Reports median seconds, the ratios,
NumPy's peak memory during one blur-pad of each (tracemalloc), and checks that both give the
same bytes.

``canvas``: the published canvas step (the bilinear QUAD transform onto 4096 x 4096 and the
Lanczos reduction to R) as Pillow computes it (``pillow_sample_quad``) and compiled
(``sample_quad``), alone on the quad and frame reference mode gives it and in the whole
``align_face``, at 256 and 1024, side by side in one process with the order alternated;
reports medians and ratios, and checks that both give the same bytes.

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
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import PIL.Image

from ffhq_aging_assets.lib import align
from ffhq_aging_assets.lib.align import align_face, crop_geometry
from ffhq_aging_assets_tests.synthetic import face_template, synthetic_photo

KINDS = {"centre": 0.25, "border": 0.22, "closeup": 0.6}
# Faces near an edge: near the top-left corner, cut by the left edge, or filling the frame.
EDGE_CASES = (
    (1600, 1200, "border"),
    (1600, 1200, "cut"),
    (2400, 1800, "border"),
    (4000, 3000, "border"),
    (6000, 4000, "border"),
    (2400, 1800, "closeup"),
    (4000, 3000, "closeup"),
)


def frame(width: int, height: int, kind: str, seed: int = 1):
    size = {**KINDS, "cut": 0.3}[kind] * min(width, height)
    origin = {
        "border": (0.02 * width, 0.03 * height),
        "cut": (-0.15 * size, height / 2 - size / 2),
    }.get(kind, (width / 2 - size / 2, height / 2 - size / 2))
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


def previous_shrunk_crop(img, shrink: int, crop):
    """Reference mode's shrink and crop before ``_shrunk_crop``: the whole frame, then the cut."""
    size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
    img = img.resize(size, PIL.Image.Resampling.LANCZOS)
    return img if crop is None else img.crop(crop)


def numpy_peak_mb(call, *args) -> float:
    tracemalloc.start()
    try:
        call(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def edges(repeats: int) -> None:
    from ffhq_aging_assets_tests.published_align import published_blur_pad

    variants: dict[str, dict[str, Callable[..., PIL.Image.Image]]] = {
        "before": {"_shrunk_crop": previous_shrunk_crop, "_blur_pad": published_blur_pad},
        "after": {"_shrunk_crop": align._shrunk_crop, "_blur_pad": align._blur_pad},
    }
    print(
        "| frame | face | R | shrink | padded frame | pad | blur radius | banded % | shrink s "
        "before / after | blur-pad s before / after | ratio | blur-pad peak MB before / after "
        "| align_face s before / after | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for width, height, kind in EDGE_CASES:
        img, lm = frame(width, height, kind)
        for res in (256, 1024):
            geo = crop_geometry(lm, img.size[0], img.size[1], res)
            assert geo.blur_pad, (width, height, kind, res)
            qsize = geo.qsize / geo.shrink
            times: dict[str, dict[str, list[float]]] = {
                name: {"shrink": [], "blur": [], "whole": []} for name in variants
            }
            outs: dict[str, dict[str, np.ndarray]] = {name: {} for name in variants}
            for r in range(repeats):
                for name in variants if r % 2 == 0 else reversed(variants):
                    steps = variants[name]
                    t = time.perf_counter()
                    if geo.shrink > 1:
                        framed = steps["_shrunk_crop"](img, geo.shrink, geo.crop)
                    else:
                        framed = img if geo.crop is None else img.crop(geo.crop)
                    times[name]["shrink"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    outs[name]["blur"] = np.asarray(steps["_blur_pad"](framed, geo.pad, qsize))
                    times[name]["blur"].append(time.perf_counter() - t)
                    with (
                        mock.patch.object(align, "_shrunk_crop", steps["_shrunk_crop"]),
                        mock.patch.object(align, "_blur_pad", steps["_blur_pad"]),
                    ):
                        t = time.perf_counter()
                        outs[name]["whole"] = np.asarray(align_face(img, lm, res))
                        times[name]["whole"].append(time.perf_counter() - t)
            for what in ("blur", "whole"):
                assert np.array_equal(outs["before"][what], outs["after"][what]), what
            peak = {
                name: numpy_peak_mb(steps["_blur_pad"], framed, geo.pad, qsize)
                for name, steps in variants.items()
            }
            med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
            before, after = med["before"], med["after"]
            h, w = outs["after"]["blur"].shape[:2]
            pad = geo.pad
            left, right = align._blended_edges(align._mask_term(w, pad[0], pad[2]))
            top, bottom = align._blended_edges(align._mask_term(h, pad[1], pad[3]))
            banded = 1 - max(w - left - right, 0) * max(h - top - bottom, 0) / (w * h)
            shrink = f"{before['shrink']:.3f} / {after['shrink']:.3f}" if geo.shrink > 1 else "-"
            print(
                f"| {width}x{height} | {kind} | {res} | {geo.shrink} | {w}x{h} | {pad} | "
                f"{int(4 * qsize * 0.02 + 0.5)} | {100 * banded:.0f} | {shrink} | "
                f"{before['blur']:.3f} / {after['blur']:.3f} | "
                f"{before['blur'] / after['blur']:.2f}x | "
                f"{peak['before']:.0f} / {peak['after']:.0f} | "
                f"{before['whole']:.3f} / {after['whole']:.3f} | "
                f"{before['whole'] / after['whole']:.2f}x |",
                flush=True,
            )


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


def canvas_args(img: PIL.Image.Image, lm: np.ndarray, res: int) -> tuple:
    """The frame, quad, canvas and resolution reference mode gives its canvas step."""
    from ffhq_aging_assets.lib import quad_canvas

    given = []

    def capture(frame_img, quad, size, resolution):
        given.append((frame_img, quad.copy(), size, resolution))
        return quad_canvas.pillow_sample_quad(frame_img, quad, size, resolution)

    with mock.patch.object(align, "sample_quad", capture):
        align_face(img, lm, res, mode="reference")
    return given[0]


def canvas(repeats: int) -> None:
    from ffhq_aging_assets.lib import quad_canvas

    assert quad_canvas._compiled_agrees(), "the compiled canvas differs from Pillow's here"
    variants = {"pillow": quad_canvas.pillow_sample_quad, "compiled": quad_canvas.sample_quad}
    print(
        "| frame | face | R | canvas s pillow / compiled | ratio | align_face s pillow / "
        "compiled | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for width, height, kind in ((1600, 1200, "centre"), (2400, 1800, "border"), *EDGE_CASES[3:5]):
        img, lm = frame(width, height, kind)
        for res in (256, 1024):
            args = canvas_args(img, lm, res)
            step: dict[str, list[float]] = {name: [] for name in variants}
            whole: dict[str, list[float]] = {name: [] for name in variants}
            outs = {}
            for r in range(repeats):
                for name in variants if r % 2 == 0 else reversed(list(variants)):
                    call = variants[name]
                    t = time.perf_counter()
                    outs[name] = np.asarray(call(*args))
                    step[name].append(time.perf_counter() - t)
                    with mock.patch.object(align, "sample_quad", call):
                        t = time.perf_counter()
                        aligned = np.asarray(align_face(img, lm, res, mode="reference"))
                        whole[name].append(time.perf_counter() - t)
                    assert np.array_equal(aligned, outs[name]), (width, height, kind, res)
            assert np.array_equal(outs["pillow"], outs["compiled"]), (width, height, kind, res)
            a, b = (statistics.median(step[name]) for name in variants)
            c, d = (statistics.median(whole[name]) for name in variants)
            print(
                f"| {width}x{height} | {kind} | {res} | {a:.3f} / {b:.3f} | {a / b:.2f}x | "
                f"{c:.3f} / {d:.3f} | {c / d:.2f}x |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("frames")
    f.add_argument("--repeats", type=int, default=2)
    e = sub.add_parser("edges")
    e.add_argument("--repeats", type=int, default=2)
    v = sub.add_parser("canvas")
    v.add_argument("--repeats", type=int, default=3)
    c = sub.add_parser("chunk")
    c.add_argument("--images", type=int, default=100)
    c.add_argument("--threads", type=int, default=8)
    c.add_argument("--processes", type=int, default=0)
    c.add_argument("--size", default="1600x1200")
    args = parser.parse_args()
    if args.what == "frames":
        frames(args.repeats)
    elif args.what == "edges":
        edges(args.repeats)
    elif args.what == "canvas":
        canvas(args.repeats)
    else:
        chunk(args.images, args.threads, args.processes, args.size)


if __name__ == "__main__":
    main()

"""The pipeline that aligns a chunk: download threads feeding a pool of alignment processes.

Download threads fetch and verify sources while a pool of processes (spawned, one per core by
default) decodes, checks pixels and aligns (:func:`ffhq_aging_assets.lib.images.align_file`),
so downloads overlap with CPU work and alignment uses every core. The number of images in
flight is bounded, so memory and scratch disk stay bounded whatever the thread count; claims
keep two builds of the same chunk on one host from working on the same image.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffhq_aging_assets.lib.align import Mode
from ffhq_aging_assets.lib.cpus import usable_cpus
from ffhq_aging_assets.lib.download import DownloadError, FileSpec
from ffhq_aging_assets.lib.images import ImageError, align_file, is_valid_image
from ffhq_aging_assets.lib.sources import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageJob:
    """One image of a chunk: where its source comes from and where its crop goes."""

    number: int
    source: FileSpec
    landmarks: np.ndarray
    pixel_md5: str | None
    dest: Path


@dataclass
class ChunkReport:
    """What a chunk run did."""

    total: int = 0
    aligned: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    causes: Counter[str] = field(default_factory=Counter)
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images aligned per second of wall time."""
        return self.aligned / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    def __init__(self, total: int, report: ChunkReport, say: Callable[[str], None], every: float):
        self.total, self.report, self.say, self.every = total, report, say, every
        self.start = self.last = time.monotonic()
        self.reported = False

    def tick(self, final: bool = False) -> None:
        """Report after the first image, then every ``every`` seconds, and at the end."""
        now = time.monotonic()
        r = self.report
        done = r.aligned + r.skipped + len(r.failed)
        first = done > 0 and not self.reported
        if not final and not first and now - self.last < self.every:
            return
        self.last, self.reported = now, True
        rate = r.aligned / max(now - self.start, 1e-9)
        left = self.total - done
        eta = f"{left / rate:.0f} s" if rate > 0 and left else "-"
        self.say(
            f"{done}/{self.total} images ({r.aligned} aligned, {r.skipped} already valid, "
            f"{len(r.failed)} failed), {rate:.2f} img/s, ETA {eta}"
        )


def align_chunk(
    jobs: Iterable[ImageJob],
    source: Source,
    scratch: Path,
    resolution: int,
    *,
    mode: Mode = "reference",
    threads: int = 8,
    processes: int = 0,
    keep_sources: bool = False,
    say: Callable[[str], None] = log.info,
    progress_every: float = 10.0,
) -> ChunkReport:
    """Make every missing or invalid aligned image of a chunk; never raises for one image.

    Args:
        jobs: the chunk's images.
        source: where sources are fetched from (verified by size and md5).
        scratch: folder for downloaded sources.
        resolution: output size.
        mode: alignment mode.
        threads: concurrent downloads.
        processes: alignment processes (0: one per core).
        keep_sources: keep downloaded sources instead of deleting each once aligned.
        say: where progress lines go.
        progress_every: seconds between progress lines.

    Returns:
        Counts, bytes, seconds, and the failed images with their errors.
    """
    jobs = list(jobs)
    report = ChunkReport(total=len(jobs))
    start = time.monotonic()
    todo = []
    for job in jobs:
        if is_valid_image(job.dest, resolution):
            report.skipped += 1
        else:
            todo.append(job)
    progress = _Progress(len(jobs), report, say, progress_every)
    if todo:
        workers = processes or usable_cpus()
        # Bounded in flight: downloads wait while this many sources are fetched but unaligned.
        in_flight = threading.BoundedSemaphore(max(2 * workers, threads) + threads)
        context = multiprocessing.get_context("spawn")
        lock = threading.Lock()
        claims = ImageClaims(scratch)
        with (
            claims,
            cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
            cf.ThreadPoolExecutor(max_workers=threads) as fetchers,
        ):

            def fetch(job: ImageJob) -> tuple[ImageJob, Path, bool] | None:
                in_flight.acquire()
                claims.claim(job.number)
                try:
                    if is_valid_image(job.dest, resolution):
                        # Another build aligned it while this one waited for the claim.
                        with lock:
                            report.skipped += 1
                        release(job)
                        return None
                    got = source.fetch(job.source, scratch / job.dest.name)
                    return job, got.path, got.owned
                except DownloadError as exc:
                    release(job)
                    with lock:
                        report.failed[job.number] = str(exc)
                        report.causes[exc.cause] += 1
                    return None
                except BaseException:
                    release(job)
                    raise

            def release(job: ImageJob) -> None:
                claims.release(job.number)
                in_flight.release()

            def finished(job: ImageJob, path: Path, owned: bool, future: cf.Future) -> None:
                # Here, not in the loop below: the claim must go as soon as the image is done,
                # whatever this thread is waiting on, or two builds could wait on each other.
                try:
                    if owned and not keep_sources and future.exception() is None:
                        path.unlink(missing_ok=True)
                finally:
                    release(job)

            aligning: dict[cf.Future, ImageJob] = {}
            for fetched in cf.as_completed([fetchers.submit(fetch, job) for job in todo]):
                try:
                    item = fetched.result()
                except BaseException:
                    # Not one image's problem (a refused sign-in): queued downloads would only
                    # fail the same way, so they are dropped and the step fails now.
                    fetchers.shutdown(wait=False, cancel_futures=True)
                    raise
                if item is not None:
                    job, path, owned = item
                    future = pool.submit(
                        align_file, path, job.landmarks, resolution, mode, job.dest, job.pixel_md5
                    )
                    aligning[future] = job
                    future.add_done_callback(functools.partial(finished, job, path, owned))
                _collect(aligning, report, block=False)
                progress.tick()
            while aligning:
                _collect(aligning, report, block=True)
                progress.tick()
    report.seconds = time.monotonic() - start
    progress.tick(final=True)
    return report


class ImageClaims:
    """Which process works on which image of a chunk, across the processes of this host.

    Two builds over the same chunk would otherwise both download a photo, and one would delete
    it while the other is about to align it. A claim is a POSIX record lock on byte N of
    ``folder/.claims``: the kernel drops it when its process dies, so a killed build never
    leaves an image claimed. Claims are per process: the threads of one build never compete
    for the same image.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".claims"
        self._fd: int | None = None

    def __enter__(self) -> ImageClaims:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def claim(self, number: int) -> None:
        """Wait until no other process works on image ``number``, then hold it."""
        assert self._fd is not None
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, number, os.SEEK_SET)

    def release(self, number: int) -> None:
        """Let other processes have image ``number``."""
        assert self._fd is not None
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, number, os.SEEK_SET)


def _collect(aligning: dict[cf.Future, ImageJob], report: ChunkReport, block: bool) -> None:
    if block:
        done, _ = cf.wait(list(aligning), return_when=cf.FIRST_COMPLETED)
    else:
        done = {f for f in aligning if f.done()}
    for future in done:
        job = aligning.pop(future)
        try:
            report.bytes_written += future.result()
            report.aligned += 1
        except ImageError as exc:
            report.failed[job.number] = str(exc)
            report.causes["bad image"] += 1
        except cf.process.BrokenProcessPool as exc:
            report.failed[job.number] = f"{job.dest.name}: alignment process died ({exc})"
            report.causes["alignment process died"] += 1

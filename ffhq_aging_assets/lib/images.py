"""Aligned images on disk: validity, the per-image worker, and the chunk pipeline.

A chunk is aligned by a pipeline: download threads fetch and verify sources while a pool of
processes (spawned, one per core by default) decodes, checks pixels and aligns, so downloads
overlap with CPU work and alignment uses every core. The number of images in flight is bounded,
so memory and scratch disk stay bounded whatever the thread count.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import fcntl
import functools
import hashlib
import io
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from ffhq_aging_assets.lib.align import Mode, align_face
from ffhq_aging_assets.lib.download import DownloadError, FileSpec
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.sources import Source

log = logging.getLogger(__name__)

# A 70,000-image dataset has some enormous photos; PIL's bomb guard is for untrusted web input,
# and these files are verified by md5 against the published metadata before they are decoded.
PIL.Image.MAX_IMAGE_PIXELS = 200_000_000


class ImageError(RuntimeError):
    """One image could not be produced; the message names it."""


@dataclass(frozen=True)
class ImageJob:
    """One image of a chunk: where its source comes from and where its crop goes."""

    number: int
    source: FileSpec
    landmarks: np.ndarray
    pixel_md5: str | None
    dest: Path


def is_valid_image(path: Path, resolution: int, mode: str = "RGB") -> bool:
    """True when ``path`` decodes completely as a ``resolution`` x ``resolution`` image."""
    try:
        with PIL.Image.open(path) as img:
            if img.size != (resolution, resolution) or img.mode != mode:
                return False
            img.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def pixel_md5(img: PIL.Image.Image) -> str:
    """md5 of ``np.array(img)``'s bytes, as FFHQ's metadata records it."""
    return hashlib.md5(np.array(img).tobytes(), usedforsecurity=False).hexdigest()


def align_file(
    src: Path,
    landmarks: np.ndarray,
    resolution: int,
    mode: Mode,
    dest: Path,
    expected_pixel_md5: str | None = None,
) -> int:
    """Decode ``src``, check its pixels if asked, align it and write ``dest`` atomically.

    Returns the bytes written. Runs in a worker process.

    Raises:
        ImageError: naming the image, for undecodable input, a pixel md5 mismatch or a
            degenerate face.
    """
    name = dest.name
    try:
        with PIL.Image.open(src) as img:
            img.load()
            if expected_pixel_md5 is not None:
                got = pixel_md5(img)
                if got != expected_pixel_md5:
                    raise ImageError(
                        f"{name}: pixel md5 {got} differs from the metadata's {expected_pixel_md5}"
                    )
            out = align_face(img, landmarks, resolution, mode=mode)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: {type(exc).__name__}: {exc}") from None
    with atomic_path(dest) as tmp:
        out.save(tmp, format="PNG")
    return dest.stat().st_size


@dataclass
class ChunkReport:
    """What a chunk run did."""

    total: int = 0
    aligned: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)
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

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        r = self.report
        done = r.aligned + r.skipped + len(r.failed)
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
        workers = processes or multiprocessing.cpu_count()
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
                item = fetched.result()
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
        except cf.process.BrokenProcessPool as exc:
            report.failed[job.number] = f"{job.dest.name}: alignment process died ({exc})"


def contact_sheet(
    paths: list[Path], *, columns: int = 8, thumb: int = 64, max_bytes: int = 200_000
) -> str:
    """A JPEG grid of thumbnails as a Markdown image (data URL), at most ``max_bytes``."""
    paths = paths[: columns * 4]
    if not paths:
        return "(no images)"
    rows = -(-len(paths) // columns)
    sheet = PIL.Image.new("RGB", (columns * thumb, rows * thumb), (255, 255, 255))
    for i, path in enumerate(paths):
        with PIL.Image.open(path) as img:
            sheet.paste(
                img.convert("RGB").resize((thumb, thumb)),
                (i % columns * thumb, i // columns * thumb),
            )
    for quality in (85, 70, 50, 30):
        buf = io.BytesIO()
        sheet.save(buf, format="JPEG", quality=quality)
        if buf.tell() * 4 / 3 < max_bytes:
            break
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![contact sheet](data:image/jpeg;base64,{data})"

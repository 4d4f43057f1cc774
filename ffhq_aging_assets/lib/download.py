"""Streaming downloads that verify size and md5 as they go and survive today's Google Drive.

Every download streams into a temporary file beside its destination while hashing, is checked
against the expected size and md5, and only then renamed into place: a half-written, corrupted
or HTML body is never left where data was expected. Transient failures (timeouts, dropped
connections, 5xx, 429, truncated or corrupted bodies) are retried with exponential backoff,
within a deadline per file that follows from its size and a minimum throughput, so a server
that trickles or never answers costs bounded time. Retrying stops early when it cannot help:
Drive's quota refusal lasts hours, so it becomes :class:`QuotaExceededError` telling the user
what to do instead, and a source that sends the same wrong bytes twice becomes
:class:`ChecksumError` at once. Every error names the file, the URL, the attempts made and the
last cause in plain words.

The work is split three ways: this module is the public entry (what callers import) and the
retry loop; :mod:`ffhq_aging_assets.lib.download_terms` holds the file spec, the retry policy
and the per-file deadline; :mod:`ffhq_aging_assets.lib.download_attempt` makes one HTTP attempt.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from ffhq_aging_assets.lib.download_attempt import fetch_once, thread_session
from ffhq_aging_assets.lib.download_terms import (
    AttemptFailed,
    Deadline,
    FileSpec,
    RetryPolicy,
    seconds_text,
)
from ffhq_aging_assets.lib.drive import DriveQuotaError
from ffhq_aging_assets.lib.files import atomic_path, file_digest

__all__ = [
    "QUOTA_ADVICE",
    "ChecksumError",
    "DownloadError",
    "DownloadResult",
    "FileSpec",
    "QuotaExceededError",
    "RetryPolicy",
    "download",
    "is_local",
    "local_path",
    "matches",
]

log = logging.getLogger(__name__)

QUOTA_ADVICE = (
    "Google Drive allows only so many anonymous downloads of a file per day. Wait a few hours "
    "and run the same command again (everything already verified is kept), or download with "
    "your own Google account (sign in once with `ffhq-aging login`, then --source pydrive), "
    "or point at files you already have (--source local:DIR)."
)


def _quota_message(spec: FileSpec) -> str:
    return f"{spec.name}: Google Drive's download quota is exceeded for {spec.url}. {QUOTA_ADVICE}"


class DownloadError(RuntimeError):
    """A file could not be fetched and verified; ``cause`` names the kind, for a chunk's counts."""

    cause = "download failed"


class ChecksumError(DownloadError):
    """The bytes received are not the expected file (size or md5 differ)."""

    cause = "wrong bytes"


class QuotaExceededError(DownloadError):
    """Google Drive refuses the file for now because of its download quota."""

    cause = "download quota exceeded"


@dataclass(frozen=True)
class DownloadResult:
    """Where a verified file lies and what it took to get it."""

    path: Path
    size: int
    md5: str
    attempts: int
    fetched: bool


def is_local(url: str) -> bool:
    """True for a ``file://`` URL or a plain path."""
    scheme = urlparse(url).scheme.lower()
    return scheme in ("", "file") or (len(scheme) == 1 and url[1:3] in (":\\", ":/"))


def local_path(url: str) -> Path:
    """The path a ``file://`` URL or plain path names."""
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme.lower() == "file" else Path(url)


def matches(path: Path, spec: FileSpec) -> tuple[bool, int, str]:
    """Whether an existing file has the spec's size and md5; also returns what it has."""
    if spec.size is not None and path.stat().st_size != spec.size:
        return False, path.stat().st_size, ""
    size, md5 = file_digest(path)
    return spec.md5 is None or md5 == spec.md5.lower(), size, md5


def download(
    spec: FileSpec,
    dest: Path,
    *,
    policy: RetryPolicy | None = None,
    session: requests.Session | None = None,
    on_bytes: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadResult:
    """Fetch ``spec`` to ``dest`` unless a verified copy is already there.

    Attempts stop at the policy's count, at the file's deadline (:meth:`RetryPolicy.deadline`,
    counted from this call), or as soon as another attempt cannot help.

    Raises:
        QuotaExceededError: Drive refuses the file for now; the message says what to do.
        ChecksumError: the source is not the expected file (local sources; or a remote that
            sent the same wrong bytes twice, or wrong bytes on the last attempt).
        DownloadError: any other failure, including a missed deadline. Every message names
            the file, the URL, the attempts made and the last cause.
    """
    policy = policy or RetryPolicy()
    if dest.is_file():
        ok, size, md5 = matches(dest, spec)
        if ok:
            return DownloadResult(dest, size, md5, attempts=0, fetched=False)
        log.warning("%s at %s is not the expected file; fetching it again", spec.name, dest)
    if is_local(spec.url):
        return _copy_local(spec, dest)
    session = session or thread_session()
    deadline = Deadline(policy, spec.size)
    wrong_answers: set[tuple[str, ...]] = set()
    attempt = 0
    while True:
        attempt += 1
        try:
            with atomic_path(dest) as tmp:
                size, md5 = fetch_once(spec, tmp, session, deadline, on_bytes)
            return DownloadResult(dest, size, md5, attempts=attempt, fetched=True)
        except DriveQuotaError:
            raise QuotaExceededError(_quota_message(spec)) from None
        except AttemptFailed as exc:
            failure = exc
        cause = failure.cause
        # Keep the requests or urllib3 exception behind the plain message, for debugging.
        origin = failure.__cause__
        if failure.wrong is not None:
            if failure.wrong in wrong_answers:
                cause = (
                    f"the server sent the same wrong bytes twice, so retrying cannot help: {cause}"
                )
                raise ChecksumError(_gave_up(spec, attempt, cause)) from origin
            wrong_answers.add(failure.wrong)
        kind = ChecksumError if failure.wrong is not None else DownloadError
        if not failure.retry or attempt >= policy.attempts:
            raise kind(_gave_up(spec, attempt, cause)) from origin
        left = deadline.remaining()
        if left <= 0:
            cause = f"{deadline.missed()}; the last problem: {cause}"
            raise DownloadError(_gave_up(spec, attempt, cause)) from origin
        wait = policy.delay(attempt, failure.retry_after)
        if wait >= left:
            cause = (
                f"{cause}; waiting {seconds_text(wait)} for another attempt would pass "
                f"{deadline.describe()}"
            )
            raise kind(_gave_up(spec, attempt, cause)) from origin
        log.warning(
            "%s: attempt %d of %d failed (%s); retrying in %.1f s",
            spec.name,
            attempt,
            policy.attempts,
            cause,
            wait,
        )
        sleep(wait)


def _gave_up(spec: FileSpec, attempts: int, cause: str) -> str:
    # The count and the URL come first so that no cause, however long, can push them out.
    plural = "attempt" if attempts == 1 else "attempts"
    return f"{spec.name}: gave up after {attempts} {plural} from {spec.url}: {cause}"


def _copy_local(spec: FileSpec, dest: Path) -> DownloadResult:
    src = local_path(spec.url)
    if not src.is_file():
        raise DownloadError(f"{spec.name}: local file {src} does not exist")
    ok, size, md5 = matches(src, spec)
    if not ok:
        raise ChecksumError(
            f"{spec.name} from local file {src} is not the expected file: "
            + spec.difference(size, md5)
        )
    if src.resolve() != dest.resolve():
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return DownloadResult(dest, size, md5, attempts=1, fetched=True)

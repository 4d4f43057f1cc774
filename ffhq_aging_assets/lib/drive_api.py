"""Downloads with a Google account through the Drive API, each of its errors handled by cause.

One authorized HTTP client per download thread (httplib2 is not thread-safe; pydrive2's
``Get_Http_Object``). What the API answers decides what happens next:

- rate limits (``userRateLimitExceeded``, ``rateLimitExceeded``, 429): every thread of the step
  waits, with exponential backoff and jitter, at least as long as ``Retry-After`` says;
- ``downloadQuotaExceeded``: the file fails with advice, the rest of the chunk goes on (or, with
  ``copy_on_quota``, a copy is made in the account's Drive, downloaded and deleted);
- ``notFound`` / ``cannotDownloadFile``: the image is unavailable, never retried;
- 5xx, a broken connection, wrong bytes: retried per the retry policy;
- a sign-in Google refuses: :class:`SignInError`, which fails the whole step at once.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffhq_aging_assets.lib.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    QuotaExceededError,
    RetryPolicy,
    matches,
)
from ffhq_aging_assets.lib.download_terms import seconds_text
from ffhq_aging_assets.lib.drive import drive_file_id
from ffhq_aging_assets.lib.files import atomic_path
from ffhq_aging_assets.lib.google_account import (
    Account,
    Connection,
    SignInError,
    connect,
    refresh_failure,
)
from ffhq_aging_assets.lib.sources import Fetched, Source

log = logging.getLogger(__name__)

# Bytes per media request: bounds the memory of a download (httplib2 reads whole bodies) while
# fetching an average FFHQ photo (13.6 MB) in one request.
CHUNK = 16 * 1024 * 1024
RATE_LIMIT_REASONS = {"userRateLimitExceeded", "rateLimitExceeded"}
UNAVAILABLE_REASONS = {"notFound", "cannotDownloadFile"}
QUOTA_ADVICE = (
    "Drive allows only so many downloads of one file per day, even with an account. Run again "
    "in a few hours (the nightly backfill does), or set copy_on_quota (--copy-on-quota) to "
    "download a copy made in your own Drive."
)
# Counted per step, reported in the step's log and metadata.
RATE_LIMITED = "rate limited (waited)"
SERVER_ERROR = "server error (retried)"
BROKEN = "broken transfer (retried)"
WRONG_BYTES = "wrong bytes (retried)"
QUOTA = "download quota exceeded"
UNAVAILABLE = "unavailable"
REFUSED = "refused"
COPIED = "copied past the quota"


class UnavailableError(DownloadError):
    """Drive says the file is gone or may not be downloaded: retrying cannot help."""

    cause = UNAVAILABLE


class RefusedError(DownloadError):
    """Drive refused the request for another reason that a retry would not change."""

    cause = REFUSED


class DriveQuotaError(QuotaExceededError):
    """The file's download quota is used up for today."""

    cause = QUOTA


@dataclass(frozen=True)
class ApiFailure:
    """What one Drive API error means."""

    kind: str  # rate_limit, quota, unavailable, auth, server, refused
    status: int
    reason: str
    message: str
    retry_after: float | None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() too, and float() refuses it
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(exc: Any) -> ApiFailure:
    """What a ``googleapiclient.errors.HttpError`` means, from its status and JSON reasons."""
    status = int(exc.resp.status)
    reasons: list[str] = []
    content = exc.content or b""
    message = content[:200].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(content)["error"]
        message = str(error.get("message") or message)
        reasons = [str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)]
    reason = reasons[0] if reasons else str(status)
    retry_after = parse_retry_after(exc.resp.get("retry-after"))
    if status == 429 or RATE_LIMIT_REASONS & set(reasons):
        kind = "rate_limit"
    elif "downloadQuotaExceeded" in reasons:
        kind = "quota"
    elif status == 404 or UNAVAILABLE_REASONS & set(reasons):
        kind = "unavailable"
    elif status == 401:
        kind = "auth"
    elif status >= 500:
        kind = "server"
    else:
        kind = "refused"
    return ApiFailure(kind, status, reason, message, retry_after)


class RateGate:
    """One backoff for all threads of a step: a rate limit slows every thread, not just one.

    Each rate limit doubles the pause (``base`` * 2^n, capped at ``cap``), adds up to ``base``
    seconds of jitter, and never waits less than the server's ``Retry-After`` (up to
    ``longest``: a server asking for hours gets the file failed by the attempt limit instead of
    a step asleep). A success lowers the level by one, halving the next pause.
    """

    def __init__(
        self, base: float = 1.0, cap: float = 64.0, seed: int | None = None, longest: float = 600.0
    ) -> None:
        self.base, self.cap, self.longest = base, cap, longest
        self._level = 0
        self._resume_at = 0.0
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def wait(self) -> float:
        """Sleep until requests may go again; returns the seconds slept."""
        with self._lock:
            pause = self._resume_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
            return pause
        return 0.0

    def slow_down(self, retry_after: float | None) -> float:
        """A rate limit was hit: push the resume time out; returns the pause from now."""
        with self._lock:
            delay = min(self.cap, self.base * 2**self._level) + self._random.uniform(0, self.base)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.longest))
            self._level = min(self._level + 1, 16)
            self._resume_at = max(self._resume_at, time.monotonic() + delay)
            return self._resume_at - time.monotonic()

    def recovered(self) -> None:
        """A request went through."""
        with self._lock:
            self._level = max(0, self._level - 1)


class DriveAccountSource:
    """Drive files by id through the API with a Google account; other URLs go to ``fallback``.

    Signs in on first use (never interactively: see :func:`connect`), once per process.
    ``counts`` holds what happened, by cause, for the step's report.
    """

    def __init__(
        self,
        account: Account,
        policy: RetryPolicy,
        fallback: Source,
        *,
        rate_limit_attempts: int = 8,
        gate: RateGate | None = None,
    ) -> None:
        self.account = account
        self.policy = policy
        self.fallback = fallback
        self.rate_limit_attempts = rate_limit_attempts
        self.gate = gate or RateGate(base=max(policy.backoff, 0.01), cap=64.0)
        self.counts: Counter[str] = Counter()
        self._connection: Connection | None = None
        self._sign_in_error: SignInError | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def connection(self) -> Connection:
        """The signed-in connection, made once; a refused sign-in is remembered and re-raised."""
        with self._lock:
            if self._sign_in_error is not None:
                raise self._sign_in_error
            if self._connection is None:
                try:
                    self._connection = connect(self.account)
                except SignInError as exc:
                    self._sign_in_error = exc
                    raise
                log.info("Drive downloads as %s", self._connection.identity)
            return self._connection

    def _http(self) -> Any:
        client = getattr(self._local, "http", None)
        if client is None:
            client = self._local.http = self.connection().http()
        return client

    def _count(self, cause: str) -> None:
        with self._lock:
            self.counts[cause] += 1

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Download a Drive file by id into ``dest`` (through a temporary file), verified."""
        file_id = drive_file_id(spec.url)
        if file_id is None:
            return self.fallback.fetch(spec, dest)
        if dest.is_file() and matches(dest, spec)[0]:
            return Fetched(dest, owned=True, fetched=False)
        self._download(spec, file_id, dest)
        return Fetched(dest, owned=True, fetched=True)

    def _refuse_sign_in(self, message: str) -> SignInError:
        """A sign-in Google refused mid-step, remembered so no later download asks again."""
        error = SignInError(message)
        with self._lock:
            self._sign_in_error = error
        return error

    def _download(self, spec: FileSpec, file_id: str, dest: Path, is_copy: bool = False) -> None:
        """Download ``file_id`` for ``spec``; ``is_copy``: a temporary copy of an over-quota file.

        A copy's own final failure (quota, unavailable, refused) is not counted: the file it
        stands for is counted once, as over quota, by the caller.
        """
        attempts = limited = 0
        while True:
            self.gate.wait()
            try:
                self._get(spec, file_id, dest)
                self.gate.recovered()
                return
            except SignInError:
                raise
            except ChecksumError as exc:
                cause, problem = WRONG_BYTES, str(exc)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                cause, problem = BROKEN, f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                failure = self._failure(exc, spec)
                if failure is None:
                    cause, problem = BROKEN, f"{type(exc).__name__}: {exc}"
                elif failure.kind == "rate_limit":
                    limited += 1
                    self._count(RATE_LIMITED)
                    if limited >= self.rate_limit_attempts:
                        raise DownloadError(
                            f"{spec.name}: Drive file {file_id} still rate limited after "
                            f"{limited} waits ({failure.reason}); run again later"
                        ) from None
                    pause = self.gate.slow_down(failure.retry_after)
                    log.warning(
                        "%s: %s; every download thread waits %s",
                        spec.name,
                        failure.reason,
                        seconds_text(pause),
                    )
                    continue
                elif failure.kind == "quota":
                    if not is_copy and self.account.copy_on_quota:
                        if self._via_copy(spec, file_id, dest):
                            return
                    if not is_copy:
                        self._count(QUOTA)
                    raise DriveQuotaError(
                        f"{spec.name}: the download quota of Drive file {file_id} is exceeded "
                        f"for today. {QUOTA_ADVICE}"
                    ) from None
                elif failure.kind == "unavailable":
                    if not is_copy:
                        self._count(UNAVAILABLE)
                    raise UnavailableError(
                        f"{spec.name}: Drive file {file_id} is unavailable ({failure.status} "
                        f"{failure.reason}: {failure.message}); not retried"
                    ) from None
                elif failure.kind == "auth":
                    raise self._refuse_sign_in(
                        f"Drive refused the sign-in ({failure.message}): "
                        + self.account.login_advice()
                    ) from None
                elif failure.kind == "refused":
                    if not is_copy:
                        self._count(REFUSED)
                    raise RefusedError(
                        f"{spec.name}: Drive refused file {file_id} ({failure.status} "
                        f"{failure.reason}: {failure.message})"
                    ) from None
                else:
                    cause, problem = SERVER_ERROR, f"{failure.status} {failure.reason}"
            attempts += 1
            self._count(cause)
            if attempts >= self.policy.attempts:
                raise DownloadError(
                    f"{spec.name}: gave up on Drive file {file_id} after {attempts} attempts: "
                    f"{problem}"
                )
            wait = self.policy.delay(attempts)
            log.warning(
                "%s: attempt %d failed (%s); retrying in %s",
                spec.name,
                attempts,
                problem,
                seconds_text(wait),
            )
            time.sleep(wait)

    def _failure(self, exc: Exception, spec: FileSpec) -> ApiFailure | None:
        """An API error's meaning; a refused token refresh is a sign-in error, raised here."""
        from googleapiclient.errors import HttpError

        if isinstance(exc, HttpError):
            return classify(exc)
        if type(exc).__name__.endswith("RefreshError"):
            verdict = refresh_failure(exc)
            if verdict is not None:
                raise self._refuse_sign_in(
                    f"Google refused to refresh the sign-in ({verdict}): "
                    + self.account.login_advice()
                ) from None
        return None

    def _get(self, spec: FileSpec, file_id: str, dest: Path) -> None:
        from googleapiclient.http import MediaIoBaseDownload

        client = self._http()
        request = self.connection().service.files().get_media(fileId=file_id)
        request.http = client
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                downloader = MediaIoBaseDownload(out, request, chunksize=CHUNK)
                done = False
                while not done:
                    _, done = downloader.next_chunk()
            ok, size, md5 = matches(tmp, spec)
            if not ok:
                raise ChecksumError(
                    f"{spec.name} from Drive file {file_id}: " + spec.difference(size, md5)
                )

    def _via_copy(self, spec: FileSpec, file_id: str, dest: Path) -> bool:
        """Copy an over-quota file into the account's Drive, download the copy, delete it."""
        from googleapiclient.errors import HttpError

        service, client = self.connection().service, self._http()
        try:
            copy = (
                service.files()
                .copy(fileId=file_id, body={"title": f"ffhq-aging temporary copy of {spec.name}"})
                .execute(http=client)
            )
        except (HttpError, OSError, http.client.HTTPException) as exc:
            log.warning("%s: could not copy Drive file %s: %s", spec.name, file_id, exc)
            return False
        copy_id = str(copy["id"])
        try:
            self._download(spec, copy_id, dest, is_copy=True)
        except DownloadError as exc:
            log.warning("%s: the copy %s failed too: %s", spec.name, copy_id, exc)
            return False
        finally:
            try:
                service.files().delete(fileId=copy_id).execute(http=client)
            except (HttpError, OSError, http.client.HTTPException) as exc:
                log.warning(
                    "%s: the temporary copy %s stays in your Drive (delete it by hand): %s",
                    spec.name,
                    copy_id,
                    exc,
                )
        self._count(COPIED)
        return True

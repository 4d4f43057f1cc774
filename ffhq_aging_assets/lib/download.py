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
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from urllib3.exceptions import (
    DecodeError,
    HTTPError,
    NameResolutionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as TLSError

from ffhq_aging_assets.lib.drive import (
    DrivePageError,
    DriveQuotaError,
    NextRequest,
    interpret_html,
    looks_like_html,
)
from ffhq_aging_assets.lib.files import atomic_path, file_digest

log = logging.getLogger(__name__)

BLOCK = 1 << 20
_MAX_PAGE = 2 << 20
_MAX_HOPS = 3
_SNIFF = 1024  # what looks_like_html looks at
_USER_AGENT = "ffhq-aging-assets (+https://github.com/royorel/FFHQ-Aging-Dataset)"

QUOTA_ADVICE = (
    "Google Drive allows only so many anonymous downloads of a file per day. Wait a few hours "
    "and run the same command again (everything already verified is kept), or download with "
    "your own Google account (--source pydrive, add --cmd-auth on a machine without a browser), "
    "or point at files you already have (--source local:DIR)."
)


def _quota_message(spec: FileSpec) -> str:
    return f"{spec.name}: Google Drive's download quota is exceeded for {spec.url}. {QUOTA_ADVICE}"


class DownloadError(RuntimeError):
    """A file could not be fetched and verified."""


class ChecksumError(DownloadError):
    """The bytes received are not the expected file (size or md5 differ)."""


class QuotaExceededError(DownloadError):
    """Google Drive refuses the file for now because of its download quota."""


class _AttemptFailed(DownloadError):
    """Why one attempt failed, in plain words, and whether another attempt may help.

    ``wrong`` identifies the wrong bytes of a checksum failure (what was received, not how),
    so that the same wrong answer twice is recognised as the source's and not the network's.
    """

    def __init__(
        self,
        cause: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
        wrong: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry = retry
        self.retry_after = retry_after
        self.wrong = wrong


@dataclass(frozen=True)
class FileSpec:
    """A file to fetch: where from, what to call it in messages, and what it must hash to.

    ``url`` is an ``http(s)://`` URL, a ``file://`` URL or a local path.
    """

    url: str
    name: str
    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff between them, timeouts and a per-file deadline.

    Timeouts and the grace are in seconds. ``connect_timeout`` and ``read_timeout`` bound each
    request (the read timeout is the longest silence tolerated); the deadline (see
    :meth:`deadline`) bounds the whole file across attempts and the waits between them.
    """

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 120.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    min_bytes_per_second: float = 50_000.0
    deadline_grace: float = 120.0

    def __post_init__(self) -> None:
        if self.min_bytes_per_second <= 0 or self.deadline_grace <= 0:
            raise ValueError("min_bytes_per_second and deadline_grace must be positive")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential with jitter."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        wait = base * (0.5 + random.random() / 2)
        return max(wait, min(retry_after or 0.0, self.max_backoff))

    def deadline(self, size: int | None, received: int = 0) -> float:
        """Seconds a whole file may take so far: the grace, plus what arrived at the minimum rate.

        ``received`` is the most bytes any attempt got, capped at the file's ``size`` when it
        is known (so no file may take longer than the grace plus its size at the minimum rate).
        A file arriving at least at ``min_bytes_per_second`` on average is never cut short; one
        that trickles, or a server that never answers, is given up after about the grace,
        however many attempts that leaves.
        """
        counted = received if size is None else min(size, received)
        return self.deadline_grace + counted / self.min_bytes_per_second


@dataclass(frozen=True)
class DownloadResult:
    """Where a verified file lies and what it took to get it."""

    path: Path
    size: int
    md5: str
    attempts: int
    fetched: bool


_sessions = threading.local()


def thread_session() -> requests.Session:
    """This thread's HTTP session: sessions are not shared between worker threads."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = _USER_AGENT
        _sessions.session = session
    return session


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
    deadline = _Deadline(policy, spec.size)
    wrong_answers: set[tuple[str, ...]] = set()
    attempt = 0
    while True:
        attempt += 1
        try:
            with atomic_path(dest) as tmp:
                size, md5 = _fetch_once(spec, tmp, session, deadline, on_bytes)
            return DownloadResult(dest, size, md5, attempts=attempt, fetched=True)
        except _AttemptFailed as exc:
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
                f"{cause}; waiting {_secs(wait)} for another attempt would pass "
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


def _secs(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def _amount(count: float) -> str:
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return f"{count:.3g} bytes"


class _Deadline:
    """The time one file may take in all, from the first request to its last byte."""

    def __init__(self, policy: RetryPolicy, size: int | None) -> None:
        self.policy = policy
        self.size = size
        self.received = 0  # bytes of the response being read
        self._most = 0
        self._start = time.monotonic()

    def progress(self, received: int) -> None:
        self.received = received
        self._most = max(self._most, received)

    @property
    def seconds(self) -> float:
        return self.policy.deadline(self.size, self._most)

    def remaining(self) -> float:
        return self._start + self.seconds - time.monotonic()

    def check(self) -> float:
        """Seconds left; raises the final failure once there are none."""
        left = self.remaining()
        if left <= 0:
            raise _AttemptFailed(self.missed(), retry=False)
        return left

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for a request: the policy's, but never past the deadline."""
        left = self.check()
        return min(self.policy.connect_timeout, left), min(self.policy.read_timeout, left)

    def describe(self) -> str:
        grace = _secs(self.policy.deadline_grace)
        rate = self.policy.min_bytes_per_second
        terms = f"{grace}, plus 1 s for every {_amount(rate)} received"
        if self.size is not None:
            most = _secs(self.policy.deadline(self.size, self.size))
            terms += f", at most {most} for its {self.size:,} bytes"
        return f"its deadline of {_secs(self.seconds)} ({terms})"

    def missed(self) -> str:
        return f"it did not arrive within {self.describe()}; received {self.received:,} bytes"


def _copy_local(spec: FileSpec, dest: Path) -> DownloadResult:
    src = local_path(spec.url)
    if not src.is_file():
        raise DownloadError(f"{spec.name}: local file {src} does not exist")
    ok, size, md5 = matches(src, spec)
    if not ok:
        raise ChecksumError(
            f"{spec.name} from local file {src} is not the expected file: "
            + _difference(spec, size, md5)
        )
    if src.resolve() != dest.resolve():
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return DownloadResult(dest, size, md5, attempts=1, fetched=True)


def _difference(spec: FileSpec, size: int, md5: str) -> str:
    want = f"{spec.size:,} bytes" if spec.size is not None else "any size"
    if spec.md5:
        want += f", md5 {spec.md5}"
    got = f"{size:,} bytes" + (f", md5 {md5}" if md5 else "")
    return f"expected {want}; got {got}"


def _fetch_once(
    spec: FileSpec,
    tmp: Path,
    session: requests.Session,
    deadline: _Deadline,
    on_bytes: Callable[[int], None] | None,
) -> tuple[int, str]:
    request = NextRequest(spec.url)
    for _hop in range(_MAX_HOPS + 1):
        timeout = deadline.timeouts()
        try:
            resp = session.get(
                request.url, params=request.params or None, stream=True, timeout=timeout
            )
        except requests.RequestException as exc:
            raise _request_failure(exc, timeout) from exc
        with resp:
            body = _Body(resp, deadline, timeout[1])
            _raise_for_status(spec, resp, body)
            head = body.read_up_to(_SNIFF)
            content_type = resp.headers.get("Content-Type", "").lower()
            if "text/html" in content_type or looks_like_html(head):
                request = _follow_page(spec, resp, head, body)
                continue
            announced = resp.headers.get("Content-Length")
            if spec.size is not None and announced and announced.isdigit():
                if int(announced) != spec.size and "gzip" not in resp.headers.get(
                    "Content-Encoding", ""
                ):
                    raise _AttemptFailed(
                        f"the server announces {int(announced):,} bytes, expected {spec.size:,}",
                        wrong=("announced", announced),
                    )
            return _stream_to(spec, tmp, head, body, on_bytes)
    raise _AttemptFailed(f"Drive kept answering HTML pages instead of the file ({_MAX_HOPS} hops)")


class _Body:
    """A response body read in whatever pieces have arrived, minding the file's deadline.

    ``iter_content`` blocks until a whole block has arrived, so a server trickling a byte at a
    time would never let the deadline be looked at; ``read1`` returns what is there.
    """

    def __init__(self, resp: requests.Response, deadline: _Deadline, read_timeout: float) -> None:
        self._raw = resp.raw
        self._deadline = deadline
        self._timeout = read_timeout
        self._length = resp.headers.get("Content-Length", "")
        self.received = 0
        deadline.progress(0)

    def read(self, limit: int = BLOCK) -> bytes:
        """Up to ``limit`` bytes, as soon as some have arrived; ``b""`` at the end."""
        self._tighten(self._deadline.check())
        try:
            data = self._raw.read1(limit, decode_content=True)
        except ReadTimeoutError as exc:
            raise _AttemptFailed(
                f"the server stopped sending data (read timed out after {_secs(self._timeout)})"
            ) from exc
        except ProtocolError as exc:
            raise _AttemptFailed(self._broken(exc)) from exc
        except DecodeError as exc:
            raise _AttemptFailed("the server sent a compressed body that does not decode") from exc
        except TLSError as exc:
            raise _AttemptFailed("the secure (TLS) connection broke while receiving") from exc
        except HTTPError as exc:
            raise _AttemptFailed("the connection broke while receiving") from exc
        self.received += len(data)
        self._deadline.progress(self.received)
        return data

    def read_up_to(self, count: int) -> bytes:
        """Up to ``count`` bytes: fewer only at the end of the body."""
        data = bytearray()
        while len(data) < count and (piece := self.read(min(BLOCK, count - len(data)))):
            data += piece
        return bytes(data)

    def _tighten(self, left: float) -> None:
        # The socket's timeout was set when the request started: near the deadline it must
        # shrink, or one silent read could run a whole read timeout past it.
        if left >= self._timeout:
            return
        sock = getattr(getattr(self._raw, "connection", None), "sock", None)
        if sock is not None:
            self._timeout = left
            sock.settimeout(left)

    def _broken(self, exc: ProtocolError) -> str:
        causes = list(_causes(exc))
        if any(isinstance(c, http.client.IncompleteRead) for c in causes):
            of = f" of {int(self._length):,}" if self._length.isdigit() else ""
            return f"the connection closed after {self.received:,}{of} bytes"
        if any(isinstance(c, ConnectionResetError) for c in causes):
            return "the connection was reset while receiving"
        return "the connection broke while receiving"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: arguments, ``reason``, causes and contexts."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [*current.args, getattr(current, "reason", None)]
        linked += [current.__cause__, current.__context__]
        todo += [e for e in linked if isinstance(e, BaseException)]


def _request_failure(
    exc: requests.RequestException, timeout: tuple[float, float]
) -> _AttemptFailed:
    """What went wrong before the server answered, in plain words."""
    if isinstance(exc, requests.ConnectTimeout):
        return _AttemptFailed(
            f"the server did not accept a connection within {_secs(timeout[0])} (connect timed out)"
        )
    if isinstance(exc, requests.ReadTimeout):
        return _AttemptFailed(
            f"the server did not answer (read timed out after {_secs(timeout[1])})"
        )
    if isinstance(exc, requests.TooManyRedirects):
        return _AttemptFailed("the server redirected too many times")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        return _AttemptFailed("this is not a URL that can be downloaded", retry=False)
    if isinstance(exc, requests.exceptions.SSLError):
        return _AttemptFailed("the secure (TLS) connection failed")
    if isinstance(exc, requests.ConnectionError):
        return _AttemptFailed(_connection_problem(exc))
    return _AttemptFailed("the request failed while the server was answering")


def _connection_problem(exc: BaseException) -> str:
    causes = list(_causes(exc))
    for kinds, words in (
        ((ConnectionRefusedError,), "the connection was refused"),
        ((ConnectionResetError,), "the connection was reset"),
        ((ConnectionAbortedError,), "the connection was aborted"),
        ((NameResolutionError, socket.gaierror), "the server's name could not be resolved"),
        ((http.client.RemoteDisconnected,), "the server closed the connection without answering"),
        ((http.client.IncompleteRead,), "the connection closed while the server was answering"),
    ):
        if any(isinstance(c, kinds) for c in causes):
            return words
    return "the connection failed"


def _raise_for_status(spec: FileSpec, resp: requests.Response, body: _Body) -> None:
    if resp.status_code < 400:
        return
    where = "" if resp.url == spec.url else f" (at {resp.url})"
    answer = f"the server answered HTTP {resp.status_code} {resp.reason or ''}".rstrip() + where
    if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
        retry_after = resp.headers.get("Retry-After", "")
        raise _AttemptFailed(
            answer, retry_after=float(retry_after) if retry_after.isdigit() else None
        )
    try:
        page = body.read_up_to(_MAX_PAGE)
    except _AttemptFailed:
        page = b""  # the status alone already fails the file; the page only names a quota
    text = page.decode("utf-8", "replace")
    if "text/html" in resp.headers.get("Content-Type", "") or looks_like_html(page):
        try:
            interpret_html(text, resp.url)
        except DriveQuotaError:
            raise QuotaExceededError(_quota_message(spec)) from None
        except DrivePageError:
            pass
    raise _AttemptFailed(answer, retry=False)


def _follow_page(spec: FileSpec, resp: requests.Response, head: bytes, body: _Body) -> NextRequest:
    page = head + body.read_up_to(_MAX_PAGE - len(head))
    try:
        return interpret_html(page.decode("utf-8", "replace"), resp.url)
    except DriveQuotaError:
        raise QuotaExceededError(_quota_message(spec)) from None
    except DrivePageError as exc:
        raise _AttemptFailed(f"{exc} (from {resp.url})") from None


def _stream_to(
    spec: FileSpec,
    tmp: Path,
    head: bytes,
    body: _Body,
    on_bytes: Callable[[int], None] | None,
) -> tuple[int, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with tmp.open("wb") as out:
        chunk = head
        while chunk:
            if spec.size is not None and size + len(chunk) > spec.size:
                # The hash of the expected length tells one longer file from another.
                md5.update(chunk[: spec.size - size])
                raise _AttemptFailed(
                    f"the server sent more than the expected {spec.size:,} bytes",
                    wrong=("longer", md5.hexdigest()),
                )
            size += len(chunk)
            md5.update(chunk)
            out.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            chunk = body.read()
    digest = md5.hexdigest()
    if (spec.size is not None and size != spec.size) or (spec.md5 and digest != spec.md5.lower()):
        raise _AttemptFailed(
            f"the bytes received are not the expected file: {_difference(spec, size, digest)}",
            wrong=("body", str(size), digest),
        )
    return size, digest

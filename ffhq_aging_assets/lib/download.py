"""Streaming downloads that verify size and md5 as they go and survive today's Google Drive.

Every download streams into a temporary file beside its destination while hashing, is checked
against the expected size and md5, and only then renamed into place: a half-written, corrupted
or HTML body is never left where data was expected. Transient failures (timeouts, dropped
connections, 5xx, 429, truncated or corrupted bodies) are retried with exponential backoff;
Drive's quota refusal is not, because it lasts hours: it becomes :class:`QuotaExceededError`
telling the user what to do instead.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

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


class _Transient(DownloadError):
    """A failure worth another attempt."""


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
    """How hard to try: attempts, backoff between them, and per-request timeouts (seconds)."""

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 120.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential with jitter."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        wait = base * (0.5 + random.random() / 2)
        return max(wait, min(retry_after or 0.0, self.max_backoff))


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

    Raises:
        QuotaExceededError: Drive refuses the file for now; the message says what to do.
        ChecksumError: the source is not the expected file (local sources, or after retries).
        DownloadError: any other failure, after the policy's attempts.
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
    last: DownloadError | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            with atomic_path(dest) as tmp:
                size, md5 = _fetch_once(spec, tmp, session, policy, on_bytes)
            return DownloadResult(dest, size, md5, attempts=attempt, fetched=True)
        except QuotaExceededError:
            raise
        except _Transient as exc:
            last = exc
            retry_after = getattr(exc, "retry_after", None)
        except requests.RequestException as exc:
            last = _Transient(f"{spec.name}: {type(exc).__name__}: {exc}")
            retry_after = None
        if attempt < policy.attempts:
            wait = policy.delay(attempt, retry_after)
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %.1f s",
                spec.name,
                attempt,
                policy.attempts,
                last,
                wait,
            )
            sleep(wait)
    assert last is not None
    kind = ChecksumError if isinstance(last, _ChecksumTransient) else DownloadError
    raise kind(f"{last} (gave up after {policy.attempts} attempts from {spec.url})") from last


class _ChecksumTransient(_Transient):
    """Wrong bytes from a remote: possibly a corrupted transfer, so retried."""


def _copy_local(spec: FileSpec, dest: Path) -> DownloadResult:
    src = local_path(spec.url)
    if not src.is_file():
        raise DownloadError(f"{spec.name}: local file {src} does not exist")
    ok, size, md5 = matches(src, spec)
    if not ok:
        raise ChecksumError(_mismatch(spec, f"local file {src}", size, md5))
    if src.resolve() != dest.resolve():
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return DownloadResult(dest, size, md5, attempts=1, fetched=True)


def _mismatch(spec: FileSpec, where: str, size: int, md5: str) -> str:
    want = f"{spec.size} bytes" if spec.size is not None else "any size"
    if spec.md5:
        want += f", md5 {spec.md5}"
    got = f"{size} bytes" + (f", md5 {md5}" if md5 else "")
    return f"{spec.name} from {where} is not the expected file: expected {want}, got {got}"


def _fetch_once(
    spec: FileSpec,
    tmp: Path,
    session: requests.Session,
    policy: RetryPolicy,
    on_bytes: Callable[[int], None] | None,
) -> tuple[int, str]:
    request = NextRequest(spec.url)
    timeout = (policy.connect_timeout, policy.read_timeout)
    for _hop in range(_MAX_HOPS + 1):
        with session.get(
            request.url, params=request.params or None, stream=True, timeout=timeout
        ) as resp:
            _raise_for_status(spec, resp)
            chunks = resp.iter_content(BLOCK)
            head = next(chunks, b"")
            content_type = resp.headers.get("Content-Type", "").lower()
            if "text/html" in content_type or looks_like_html(head):
                request = _follow_page(spec, resp, head, chunks)
                continue
            announced = resp.headers.get("Content-Length")
            if spec.size is not None and announced and announced.isdigit():
                if int(announced) != spec.size and "gzip" not in resp.headers.get(
                    "Content-Encoding", ""
                ):
                    raise _ChecksumTransient(
                        f"{spec.name}: server announces {announced} bytes, expected {spec.size}"
                    )
            return _stream_to(spec, tmp, head, chunks, resp.url, on_bytes)
    raise _Transient(f"{spec.name}: Drive kept answering HTML pages after {_MAX_HOPS} hops")


def _raise_for_status(spec: FileSpec, resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
        exc = _Transient(f"{spec.name}: HTTP {resp.status_code} from {resp.url}")
        retry_after = resp.headers.get("Retry-After", "")
        exc.retry_after = float(retry_after) if retry_after.isdigit() else None  # type: ignore[attr-defined]
        raise exc
    page = resp.raw.read(_MAX_PAGE, decode_content=True) or b""
    text = page.decode("utf-8", "replace")
    if "text/html" in resp.headers.get("Content-Type", "") or looks_like_html(page):
        try:
            interpret_html(text, resp.url)
        except DriveQuotaError:
            raise QuotaExceededError(_quota_message(spec)) from None
        except DrivePageError:
            pass
    raise DownloadError(f"{spec.name}: HTTP {resp.status_code} from {resp.url}")


def _follow_page(spec: FileSpec, resp: requests.Response, head: bytes, chunks) -> NextRequest:
    page = bytearray(head)
    for chunk in chunks:
        page += chunk
        if len(page) >= _MAX_PAGE:
            break
    try:
        return interpret_html(page.decode("utf-8", "replace"), resp.url)
    except DriveQuotaError:
        raise QuotaExceededError(_quota_message(spec)) from None
    except DrivePageError as exc:
        raise _Transient(f"{spec.name}: {exc} (from {resp.url})") from None


def _stream_to(spec, tmp: Path, head: bytes, chunks, url: str, on_bytes) -> tuple[int, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with tmp.open("wb") as out:
        for chunk in _chain(head, chunks):
            if not chunk:
                continue
            size += len(chunk)
            if spec.size is not None and size > spec.size:
                raise _ChecksumTransient(
                    f"{spec.name}: received more than the expected {spec.size} bytes from {url}"
                )
            md5.update(chunk)
            out.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    digest = md5.hexdigest()
    if (spec.size is not None and size != spec.size) or (spec.md5 and digest != spec.md5.lower()):
        raise _ChecksumTransient(_mismatch(spec, url, size, digest))
    return size, digest


def _chain(head: bytes, chunks):
    yield head
    yield from chunks

"""One HTTP attempt at a file: request, status, Drive's interstitial pages, the streamed body.

:func:`fetch_once` makes the requests of one attempt (a Drive virus-scan form or confirm link
is followed, up to a few hops), streams the body into a temporary file while hashing it, and
reads only what has arrived so that the file's :class:`Deadline` is minded between reads. What
goes wrong becomes an :class:`AttemptFailed` in plain words (a refused connection, a timeout
with its seconds, a body cut short after so many bytes), never an exception class name; Drive's
quota page becomes :class:`DriveQuotaError`, which the retry loop turns into advice.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import requests
from urllib3.exceptions import (
    DecodeError,
    HTTPError,
    NameResolutionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as TLSError

from ffhq_aging_assets.lib.download_terms import AttemptFailed, Deadline, FileSpec, seconds_text
from ffhq_aging_assets.lib.drive import DrivePageError, NextRequest, interpret_html, looks_like_html

BLOCK = 1 << 20
_MAX_PAGE = 2 << 20
_MAX_HOPS = 3
_SNIFF = 1024  # what looks_like_html looks at
_USER_AGENT = "ffhq-aging-assets (+https://github.com/royorel/FFHQ-Aging-Dataset)"

_sessions = threading.local()


def thread_session() -> requests.Session:
    """This thread's HTTP session: sessions are not shared between worker threads."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = _USER_AGENT
        _sessions.session = session
    return session


def fetch_once(
    spec: FileSpec,
    tmp: Path,
    session: requests.Session,
    deadline: Deadline,
    on_bytes: Callable[[int], None] | None,
) -> tuple[int, str]:
    """Fetch ``spec`` into ``tmp`` once, following Drive's pages; returns its size and md5.

    Raises:
        AttemptFailed: the attempt failed; says why and whether another may help.
        DriveQuotaError: Drive refuses the file because of its download quota.
    """
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
                request = _follow_page(resp, head, body)
                continue
            announced = resp.headers.get("Content-Length")
            if spec.size is not None and announced and announced.isdigit():
                if int(announced) != spec.size and "gzip" not in resp.headers.get(
                    "Content-Encoding", ""
                ):
                    raise AttemptFailed(
                        f"the server announces {int(announced):,} bytes, expected {spec.size:,}",
                        wrong=("announced", announced),
                    )
            return _stream_to(spec, tmp, head, body, on_bytes)
    raise AttemptFailed(f"Drive kept answering HTML pages instead of the file ({_MAX_HOPS} hops)")


class _Body:
    """A response body read in whatever pieces have arrived, minding the file's deadline.

    ``iter_content`` blocks until a whole block has arrived, so a server trickling a byte at a
    time would never let the deadline be looked at; ``read1`` returns what is there.
    """

    def __init__(self, resp: requests.Response, deadline: Deadline, read_timeout: float) -> None:
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
            raise AttemptFailed(
                "the server stopped sending data "
                f"(read timed out after {seconds_text(self._timeout)})"
            ) from exc
        except ProtocolError as exc:
            raise AttemptFailed(self._broken(exc)) from exc
        except DecodeError as exc:
            raise AttemptFailed("the server sent a compressed body that does not decode") from exc
        except TLSError as exc:
            raise AttemptFailed("the secure (TLS) connection broke while receiving") from exc
        except HTTPError as exc:
            raise AttemptFailed("the connection broke while receiving") from exc
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


def _request_failure(exc: requests.RequestException, timeout: tuple[float, float]) -> AttemptFailed:
    """What went wrong before the server answered, in plain words."""
    if isinstance(exc, requests.ConnectTimeout):
        return AttemptFailed(
            "the server did not accept a connection within "
            f"{seconds_text(timeout[0])} (connect timed out)"
        )
    if isinstance(exc, requests.ReadTimeout):
        return AttemptFailed(
            f"the server did not answer (read timed out after {seconds_text(timeout[1])})"
        )
    if isinstance(exc, requests.TooManyRedirects):
        return AttemptFailed("the server redirected too many times")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        return AttemptFailed("this is not a URL that can be downloaded", retry=False)
    if isinstance(exc, requests.exceptions.SSLError):
        return AttemptFailed("the secure (TLS) connection failed")
    if isinstance(exc, requests.ConnectionError):
        return AttemptFailed(_connection_problem(exc))
    return AttemptFailed("the request failed while the server was answering")


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
        raise AttemptFailed(
            answer, retry_after=float(retry_after) if retry_after.isdigit() else None
        )
    try:
        page = body.read_up_to(_MAX_PAGE)
    except AttemptFailed:
        page = b""  # the status alone already fails the file; the page only names a quota
    text = page.decode("utf-8", "replace")
    if "text/html" in resp.headers.get("Content-Type", "") or looks_like_html(page):
        # A quota page (DriveQuotaError) goes up as it is; any other page adds nothing.
        try:
            interpret_html(text, resp.url)
        except DrivePageError:
            pass
    raise AttemptFailed(answer, retry=False)


def _follow_page(resp: requests.Response, head: bytes, body: _Body) -> NextRequest:
    page = head + body.read_up_to(_MAX_PAGE - len(head))
    try:
        return interpret_html(page.decode("utf-8", "replace"), resp.url)
    except DrivePageError as exc:
        raise AttemptFailed(f"{exc} (from {resp.url})") from None


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
                raise AttemptFailed(
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
        raise AttemptFailed(
            f"the bytes received are not the expected file: {spec.difference(size, digest)}",
            wrong=("body", str(size), digest),
        )
    return size, digest

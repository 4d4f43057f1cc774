"""A loopback HTTP server that answers like Google Drive's anonymous download endpoint.

Small files come straight from ``/uc?id=ID``; large ones answer today's "can't scan this file
for viruses" page whose ``download-form`` must be submitted to ``/download`` (or, in legacy
mode, a page with a ``confirm=`` link and a ``download_warning`` cookie). Faults are queued per
file and consumed one per request: ``quota``, ``500``, ``429``, ``truncate``, ``corrupt`` (one
byte flipped in the middle, the same each time), ``corrupt-other`` (a different byte flipped),
``slow`` (stalls ``stall_seconds`` after the first bytes), ``trickle`` (the headers with the full
Content-Length, then one byte every ``trickle_seconds``), ``silent`` (accepts the request and never
answers), ``html`` (an unknown HTML page), ``html-as-data`` (the same page labelled as binary),
``ok``. ``trickle`` and ``silent`` end when the client goes away, when the server stops, or after
``fault_limit_seconds``, so a client that never gives up cannot hang the tests.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

VIRUS_SCAN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan
this file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size">
<a href="/open?id={id}">{name}</a> ({size_h})</span> is too large for Google to scan for
viruses. Would you still like to download this file?</p>
<form id="download-form" action="{base}/download" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">
</form></div></div></body></html>"""

LEGACY_PAGE = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<a id="uc-download-link" href="/uc?export=download&amp;confirm={token}&amp;id={id}">Download anyway</a>
</body></html>"""

QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>
<body><div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can't view or
download this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or
downloaded this file recently. Please try accessing the file again later. If the file you are
trying to access is particularly large or is shared with many people, it may take up to 24 hours
to be able to view or download the file.</p></div></div></body></html>"""

UNKNOWN_PAGE = """<!DOCTYPE html><html><head><title>Sign in - Google Accounts</title></head>
<body>Sign in to continue</body></html>"""


@dataclass
class DriveFile:
    """One file the fake serves."""

    data: bytes
    name: str
    large: bool
    legacy: bool = False
    faults: deque[str] = field(default_factory=deque)

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()


class FakeDrive:
    """The server, its files and what it was asked."""

    large_threshold = 100 * 1024

    def __init__(self) -> None:
        self.files: dict[str, DriveFile] = {}
        self.requests: defaultdict[str, int] = defaultdict(int)
        self.body_requests: defaultdict[str, int] = defaultdict(int)
        self.stall_seconds = 3.0
        self.trickle_seconds = 0.5
        self.fault_limit_seconds = 60.0
        # When set, each connection sends a file's bytes at most this fast (Drive's per-download
        # pace), in 64 KiB pieces.
        self.bytes_per_second: float | None = None
        self.stopping = threading.Event()
        self._uuids: dict[str, str] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: stop() waits for it, once per test.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeDrive:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, file_id: str, data: bytes, name: str = "file", *, legacy: bool = False) -> str:
        """Serve ``data`` as Drive file ``file_id``; returns its ``uc?id=`` URL."""
        large = len(data) >= self.large_threshold
        self.files[file_id] = DriveFile(data, name, large, legacy)
        return self.url(file_id)

    def url(self, file_id: str) -> str:
        return f"{self.base}/uc?id={file_id}"

    def fail(self, file_id: str, *faults: str) -> None:
        """Queue faults for the next requests of a file's bytes (or its first page)."""
        self.files[file_id].faults.extend(faults)

    def next_fault(self, file_id: str) -> str:
        with self._lock:
            faults = self.files[file_id].faults
            return faults.popleft() if faults else "ok"

    def new_uuid(self, file_id: str) -> str:
        with self._lock:
            self._uuids[file_id] = token = str(uuid.uuid4())
            return token

    def uuid_ok(self, file_id: str, token: str) -> bool:
        with self._lock:
            return self._uuids.get(file_id) == token


def _handler(drive: FakeDrive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            file_id = query.get("id", "")
            f = drive.files.get(file_id)
            if f is None:
                self._send(404, b"<html><body>Not Found</body></html>", "text/html")
                return
            with drive._lock:
                drive.requests[file_id] += 1
            if url.path == "/uc":
                if f.large and not f.legacy:
                    if f.faults and f.faults[0] == "quota":
                        drive.next_fault(file_id)
                        self._send(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
                        return
                    page = VIRUS_SCAN_PAGE.format(
                        id=file_id,
                        name=f.name,
                        size_h=f"{len(f.data) // 1024}K",
                        base=drive.base.replace("127.0.0.1", "localhost"),
                        uuid=drive.new_uuid(file_id),
                    )
                    self._send(200, page.encode(), "text/html; charset=utf-8")
                    return
                if f.large and f.legacy and "confirm" not in query:
                    page = LEGACY_PAGE.format(id=file_id, token="Xy_9")
                    self._send(
                        200,
                        page.encode(),
                        "text/html; charset=utf-8",
                        {"Set-Cookie": f"download_warning_{file_id}=Xy_9; Path=/"},
                    )
                    return
                if f.large and f.legacy and query.get("confirm") != "Xy_9":
                    self._send(403, UNKNOWN_PAGE.encode(), "text/html")
                    return
                self._serve(file_id, f)
            elif url.path == "/download":
                ok = query.get("confirm") == "t" and query.get("export") == "download"
                if not ok or not drive.uuid_ok(file_id, query.get("uuid", "")):
                    self._send(400, UNKNOWN_PAGE.encode(), "text/html")
                    return
                self._serve(file_id, f)
            else:
                self._send(404, b"<html><body>Not Found</body></html>", "text/html")

        def _serve(self, file_id: str, f: DriveFile) -> None:
            with drive._lock:
                drive.body_requests[file_id] += 1
            fault = drive.next_fault(file_id)
            data = f.data
            if fault == "quota":
                self._send(403, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
            elif fault in ("500", "503", "429"):
                self._send(
                    int(fault),
                    b"<html><body>Error</body></html>",
                    "text/html",
                    {"Retry-After": "0"},
                )
            elif fault == "html":
                self._send(200, UNKNOWN_PAGE.encode(), "text/html; charset=utf-8")
            elif fault == "html-as-data":
                self._send(200, UNKNOWN_PAGE.encode(), "application/octet-stream")
            elif fault == "truncate":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif fault in ("corrupt", "corrupt-other"):
                bad = bytearray(data)
                bad[len(bad) // 2 if fault == "corrupt" else len(bad) // 3] ^= 0xFF
                self._send(200, bytes(bad), "application/octet-stream")
            elif fault == "trickle":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.flush()
                end = time.monotonic() + drive.fault_limit_seconds
                for i in range(len(data)):
                    if time.monotonic() >= end or not self._wait(drive.trickle_seconds):
                        break
                    try:
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        break
                self.close_connection = True
            elif fault == "silent":
                self._wait(drive.fault_limit_seconds)
                self.close_connection = True
            elif fault == "slow":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:10])
                self.wfile.flush()
                time.sleep(drive.stall_seconds)
                try:
                    self.wfile.write(data[10:])
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
            elif drive.bytes_per_second:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Disposition", f'attachment; filename="{f.name}"')
                self.end_headers()
                start = time.monotonic()
                piece = 64 * 1024
                try:
                    for at in range(0, len(data), piece):
                        ahead = start + at / drive.bytes_per_second - time.monotonic()
                        if ahead > 0 and not self._wait(ahead):
                            self.close_connection = True
                            return
                        self.wfile.write(data[at : at + piece])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
            else:
                self._send(
                    200,
                    data,
                    "application/octet-stream",
                    {"Content-Disposition": f'attachment; filename="{f.name}"'},
                )

        def _wait(self, seconds: float) -> bool:
            """Wait up to ``seconds``; False as soon as the client hangs up or the server stops.

            Polls in short steps so that neither a stopping server nor a departed client leaves a
            handler thread behind for long.
            """
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                if drive.stopping.is_set():
                    return False
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return False
                    except OSError:
                        return False
                    time.sleep(min(left, 0.1))
            return not drive.stopping.is_set()

        def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler

"""What Google Drive's anonymous endpoint answers instead of a file, and how to get past it.

Drive answers a large file with an HTML page ("Google Drive can't scan this file for viruses")
holding a form that must be submitted to get the bytes; older answers carried a ``confirm=``
link instead; an over-used file answers a "Quota exceeded" page. :func:`interpret_html` turns
such a page into the next request to make, or into an error.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

_QUOTA_PHRASES = (
    "quota exceeded",
    "too many users have viewed or downloaded this file recently",
    "download quota for this file has been exceeded",
)
_CONFIRM_LINK = re.compile(r"""href=["']([^"']*?[?&;]confirm=[0-9A-Za-z_-]+[^"']*)["']""")
_FILE_ID = re.compile(r"^[0-9A-Za-z_-]{10,}$")


class DriveQuotaError(RuntimeError):
    """Drive refuses the file because too many people downloaded it recently."""


class DrivePageError(RuntimeError):
    """Drive (or something in between) answered HTML that is neither a file nor a known page."""


@dataclass(frozen=True)
class NextRequest:
    """The request that follows an interstitial page."""

    url: str
    params: dict[str, str] = field(default_factory=dict)


def drive_file_id(url: str) -> str | None:
    """The Drive file id in a ``uc?id=``, ``open?id=`` or ``/file/d/ID/`` URL, else ``None``."""
    parsed = urlparse(url)
    ids = parse_qs(parsed.query).get("id")
    if ids and _FILE_ID.match(ids[0]):
        return ids[0]
    match = re.search(r"/file/d/([0-9A-Za-z_-]{10,})", parsed.path)
    return match.group(1) if match else None


def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a body are an HTML document rather than data."""
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<meta"))


def is_quota_page(page: str) -> bool:
    """True when an HTML page is Drive's quota refusal."""
    lowered = html.unescape(page).lower()
    return any(phrase in lowered for phrase in _QUOTA_PHRASES)


class _DownloadForm(HTMLParser):
    """Collects the action and hidden inputs of ``<form id="download-form">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.inputs: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and values.get("id") == "download-form":
            self.action = values.get("action", "")
            self._inside = True
        elif tag == "input" and self._inside and values.get("name"):
            if values.get("type", "hidden").lower() in ("hidden", "submit") and "value" in values:
                self.inputs[values["name"]] = values["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def interpret_html(page: str, page_url: str) -> NextRequest:
    """Decide what to do with an HTML page Drive answered where a file was expected.

    Args:
        page: the HTML text (only its first few hundred KB are needed).
        page_url: the URL that answered it, to resolve relative links.

    Returns:
        The follow-up request that submits the virus-scan form or follows the confirm link.

    Raises:
        DriveQuotaError: the page is the quota refusal.
        DrivePageError: the page is anything else, e.g. a sign-in wall or an error page.
    """
    if is_quota_page(page):
        raise DriveQuotaError("Google Drive refused the file: download quota exceeded")
    form = _DownloadForm()
    form.feed(page)
    if form.action is not None and form.inputs:
        action = urljoin(page_url, html.unescape(form.action) or page_url)
        return NextRequest(action, dict(form.inputs))
    match = _CONFIRM_LINK.search(page)
    if match:
        return NextRequest(urljoin(page_url, html.unescape(match.group(1))))
    title = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    what = f" titled {html.unescape(title.group(1)).strip()!r}" if title else ""
    raise DrivePageError(f"got an HTML page{what} instead of the file, with no download form")

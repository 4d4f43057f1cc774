"""Incremental reader of one large JSON object, entry by entry, in bounded memory.

``json.load`` of a large object holds all of it, and its Python objects, in memory. Here the
top-level object is walked by hand and each entry is decoded on its own by the standard
library's C decoder from a bounded window of text, so memory stays at a few megabytes whatever
the file's size, and every error carries the byte offset where the input went wrong.

The input is untrusted: bytes that are not UTF-8, a file cut short, an entry larger than
:data:`MAX_ENTRY_BYTES`, nesting too deep for the decoder and data after the object all raise
:class:`JSONStreamError`, never another exception and never a silently shortened result.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

BLOCK = 1 << 20
MAX_ENTRY_BYTES = 4 << 20
_decoder = json.JSONDecoder()
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # (untyped, public)
_STR = r'"[^"\\\x00-\x1f]*+(?:\\.[^"\\\x00-\x1f]*+)*+"'
_PLAIN = r'[^"\[\]{}]*+'
_LIST1 = rf"\[{_PLAIN}(?:{_STR}{_PLAIN})*+\]"
_LIST2 = rf"\[{_PLAIN}(?:(?:{_LIST1}|{_STR}){_PLAIN})*+\]"
_OBJ1 = rf"\{{{_PLAIN}(?:(?:{_STR}|{_LIST2}|{_LIST1}){_PLAIN})*+\}}"
_SKIPPABLE = re.compile(_OBJ1)
_WS_RE = re.compile(r"[ \t\n\r]*")
_OPEN = re.compile(r"[ \t\n\r]*\{[ \t\n\r]*")
_FIELD = re.compile(r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')
_SEP = re.compile(r"[ \t\n\r]*([,}])")


class JSONStreamError(ValueError):
    """The stream is not one well-formed JSON object; the message gives the byte offset."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding.

    Decoding allocates millions of small lists and floats, none in reference cycles; each
    allocation burst would otherwise trigger collections that walk every live object, which
    costs about a fifth of a parse.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _NeedMore(Exception):
    """The buffer ends inside the current entry, or the entry is malformed: more data decides.

    Carries where and why decoding stopped, reported if no more data arrives.
    """

    def __init__(self, pos: int, why: str) -> None:
        super().__init__(why)
        self.pos = pos
        self.why = why


class _Invalid(_NeedMore):
    """The entry is malformed whatever follows it (nesting too deep, a number too long)."""


class _Reader:
    """A bounded text window over a UTF-8 byte stream that remembers byte offsets."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.decode = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.base = stream.tell()
        self.eof = False

    def byte_offset(self, pos: int) -> int:
        head = self.buf[:pos]
        return self.base + (len(head) if head.isascii() else len(head.encode("utf-8")))

    def fill(self, keep_from: int) -> int:
        """Drop text before ``keep_from``, read one more block; returns the shift applied."""
        if self.eof:
            raise JSONStreamError(
                f"{self.name}: the file ends at byte {self.byte_offset(len(self.buf))} "
                "inside the JSON object"
            )
        self.base = self.byte_offset(keep_from)
        block = self.stream.read(BLOCK)
        try:
            text = self.decode.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            at = self.byte_offset(len(self.buf)) + exc.start
            raise JSONStreamError(f"{self.name}: invalid UTF-8 near byte offset {at}") from None
        self.eof = not block
        self.buf = self.buf[keep_from:] + text
        return keep_from

    def error(self, pos: int, what: str) -> JSONStreamError:
        return JSONStreamError(f"{self.name}: {what} at byte offset {self.byte_offset(pos)}")


def iter_entries(
    stream: BinaryIO, *, name: str = "JSON", skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, value)`` for each top-level entry of a JSON object, in file order.

    Args:
        stream: a binary file, read from its current position (normally its start).
        name: the file's name, for error messages.
        skip: fields of each entry whose object values are matched but not decoded (they come
            back as None): checked to be balanced brackets and strings, several times cheaper
            than building them as Python objects.

    Raises:
        JSONStreamError: with the byte offset of the first malformed byte, when the stream
            ends inside the object, holds an entry over :data:`MAX_ENTRY_BYTES`, or holds
            anything but whitespace after the object. Entries before the fault are yielded
            first.
    """
    r = _Reader(stream, name)
    while len(r.buf) < 2 and not r.eof:
        r.fill(0)
    match = _OPEN.match(r.buf)
    if match is None:
        raise r.error(_skip_ws(r.buf, 0), "expected a JSON object ('{')")
    pos = match.end()
    while pos >= len(r.buf) and not r.eof:
        pos -= r.fill(pos)
    closed = r.buf[pos : pos + 1] == "}"
    pos += closed
    while not closed:
        entry_start = pos
        while True:
            try:
                key, value, pos, closed = _parse_entry(r.buf, entry_start, skip)
                break
            except (_NeedMore, IndexError) as exc:
                more = exc if isinstance(exc, _NeedMore) else _NeedMore(len(r.buf), "data ends")
                if isinstance(more, _Invalid):
                    raise r.error(more.pos, more.why) from None
                if r.eof or len(r.buf) - entry_start > MAX_ENTRY_BYTES:
                    if more.pos >= len(r.buf):
                        raise r.error(more.pos, "the file ends inside the JSON object") from None
                    raise r.error(more.pos, more.why) from None
                entry_start -= r.fill(entry_start)
        yield key, value
    _expect_end(r, pos)


def _expect_end(r: _Reader, pos: int) -> None:
    """Only whitespace may follow the object: anything else means it is not the whole file."""
    while True:
        pos = _skip_ws(r.buf, pos)
        if pos < len(r.buf):
            raise r.error(pos, "data after the JSON object")
        if r.eof:
            return
        pos -= r.fill(pos)


def _field(buf: str, pos: int, what: str) -> tuple[str, int]:
    """Match whitespace, a quoted name, a colon and whitespace."""
    match = _FIELD.match(buf, pos)
    if match is not None:
        return match.group(1), match.end()
    pos = _skip_ws(buf, pos)
    if buf[pos] != '"':
        raise _NeedMore(pos, f"expected a quoted {what}")
    try:
        name, pos = _scanstring(buf, pos + 1)
    except json.JSONDecodeError as exc:
        raise _NeedMore(exc.pos, exc.msg) from None
    pos = _skip_ws(buf, pos)
    if buf[pos] != ":":
        raise _NeedMore(pos, f"expected ':' after {what} {name!r}")
    return name, _skip_ws(buf, pos + 1)


def _skip_ws(buf: str, pos: int) -> int:
    """The position after any JSON whitespace at ``pos`` (the pattern also matches none)."""
    match = _WS_RE.match(buf, pos)
    return match.end() if match else pos


def _after_value(buf: str, pos: int, what: str) -> tuple[int, bool]:
    """Match whitespace and ``,`` (more follows) or ``}`` (the object closes)."""
    match = _SEP.match(buf, pos)
    if match is None:
        raise _NeedMore(_skip_ws(buf, pos), f"expected ',' or '}}' after {what}")
    return match.end(), match.group(1) == "}"


def _value(buf: str, pos: int, where: str) -> tuple[Any, int]:
    try:
        return _decoder.raw_decode(buf, pos)
    except json.JSONDecodeError as exc:
        raise _NeedMore(exc.pos, f"{exc.msg} in entry {where!r}") from None
    except RecursionError:
        raise _Invalid(pos, f"a value nested too deeply in entry {where!r}") from None
    except ValueError as exc:  # an integer longer than int() accepts
        raise _Invalid(pos, f"{str(exc).split(';')[0]} in entry {where!r}") from None


def _parse_entry(buf: str, pos: int, skip: frozenset[str]) -> tuple[str, Any, int, bool]:
    key, pos = _field(buf, pos, "key")
    if skip and buf[pos] == "{":
        value, pos = _object_skipping(buf, pos, skip, key)
    else:
        value, pos = _value(buf, pos, key)
    pos, closed = _after_value(buf, pos, f"entry {key!r}")
    return key, value, pos, closed


def _object_skipping(
    buf: str, pos: int, skip: frozenset[str], entry: str
) -> tuple[dict[str, Any], int]:
    """Decode an entry object, matching (not decoding) the values of the ``skip`` fields."""
    out: dict[str, Any] = {}
    pos = _OPEN.match(buf, pos).end()  # type: ignore[union-attr]
    if buf[pos] == "}":
        return out, pos + 1
    closed = False
    while not closed:
        name, pos = _field(buf, pos, f"field name in entry {entry!r}")
        if name in skip and buf[pos] == "{":
            match = _SKIPPABLE.match(buf, pos)
            # Deeper than the pattern, cut off, or malformed: the decoder decides which.
            pos = _value(buf, pos, entry)[1] if match is None else match.end()
            out[name] = None
        else:
            out[name], pos = _value(buf, pos, entry)
        pos, closed = _after_value(buf, pos, f"field {name!r} in entry {entry!r}")
    return out, pos

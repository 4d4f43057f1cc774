"""Streaming parse of FFHQ's ``ffhq-dataset-v2.json`` into one table per chunk.

The file is one JSON object of 70,000 entries (268 MB). ``json.load`` of it holds everything in
memory (2.6 GB with the 2020 script's ordered dicts). Here the top-level object is walked by hand
and each entry is decoded on its own by the standard library's C decoder from a bounded buffer,
so memory stays at a few megabytes and errors carry the exact byte offset. One pass writes
every chunk's table; a malformed entry fails only its own chunk.

Everything in the file is untrusted: every entry is validated field by field, and of the file
paths only the name pattern ``NNNNN.png`` is ever used.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gc
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from ffhq_aging_assets.lib.chunks import CHUNK_SIZE, NUM_IMAGES, chunk_of

BLOCK = 1 << 20
MAX_ENTRY_BYTES = 4 << 20
_MD5 = re.compile(r"^[0-9a-f]{32}$")
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
UNUSED_SECTIONS = frozenset({"image", "thumbnail"})


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding.

    Decoding allocates millions of small lists and floats, none in reference cycles; each
    allocation burst would otherwise trigger collections that walk every live object, which
    costs about a fifth of the parse.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class MetadataError(ValueError):
    """The metadata file or one of its entries is malformed; the message says where."""


class _NeedMore(Exception):
    """The buffer ends inside the current entry, or the entry is malformed: more data decides.

    Carries where and why decoding stopped, reported if no more data arrives.
    """

    def __init__(self, pos: int, why: str) -> None:
        super().__init__(why)
        self.pos = pos
        self.why = why


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
            raise MetadataError(
                f"{self.name}: the file ends at byte {self.byte_offset(len(self.buf))} "
                "inside the JSON object"
            )
        self.base = self.byte_offset(keep_from)
        block = self.stream.read(BLOCK)
        try:
            text = self.decode.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            at = self.byte_offset(len(self.buf)) + exc.start
            raise MetadataError(f"{self.name}: invalid UTF-8 near byte offset {at}") from None
        self.eof = not block
        self.buf = self.buf[keep_from:] + text
        return keep_from

    def error(self, pos: int, what: str) -> MetadataError:
        return MetadataError(f"{self.name}: {what} at byte offset {self.byte_offset(pos)}")


def iter_entries(
    stream: BinaryIO,
    *,
    name: str = "metadata",
    skip: frozenset[str] = UNUSED_SECTIONS,
) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, value)`` for each top-level entry of a JSON object.

    Args:
        stream: a binary file, read from its current position (normally its start).
        name: the file's name, for error messages.
        skip: fields of each entry whose object values are matched but not decoded (they come
            back as None).

    Raises:
        MetadataError: with the byte offset of the first malformed byte.
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
    if r.buf[pos : pos + 1] == "}":
        return
    while True:
        entry_start = pos
        while True:
            try:
                key, value, after, closed = _parse_entry(r, entry_start, skip)
                break
            except (_NeedMore, IndexError) as exc:
                more = exc if isinstance(exc, _NeedMore) else _NeedMore(len(r.buf), "data ends")
                if r.eof or len(r.buf) - entry_start > MAX_ENTRY_BYTES:
                    if more.pos >= len(r.buf):
                        raise r.error(more.pos, "the file ends inside the JSON object") from None
                    raise r.error(more.pos, more.why) from None
                entry_start -= r.fill(entry_start)
        yield key, value
        pos = after
        if closed:
            return


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


def _parse_entry(r: _Reader, pos: int, skip: frozenset[str]) -> tuple[str, Any, int, bool]:
    buf = r.buf
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
    """Decode an entry object, matching (not decoding) the values of the ``skip`` fields.

    The skipped values (the aligned-image and thumbnail sections, two thirds of the file's
    numbers) are never used: they are checked to be balanced brackets and strings, which is
    several times cheaper than building them as Python objects.
    """
    out: dict[str, Any] = {}
    pos = _OPEN.match(buf, pos).end()  # type: ignore[union-attr]
    if buf[pos] == "}":
        return out, pos + 1
    closed = False
    while not closed:
        name, pos = _field(buf, pos, f"field name in entry {entry!r}")
        if name in skip and buf[pos] == "{":
            match = _SKIPPABLE.match(buf, pos)
            if match is None:  # deeper than the pattern, cut off, or malformed
                out[name], pos = _value(buf, pos, entry)
            else:
                out[name], pos = None, match.end()
        else:
            out[name], pos = _value(buf, pos, entry)
        pos, closed = _after_value(buf, pos, f"field {name!r} in entry {entry!r}")
    return out, pos


METADATA_SCHEMA = pa.schema(
    [
        pa.field("image_number", pa.int32(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("file_url", pa.string(), nullable=False),
        pa.field("file_size", pa.int64(), nullable=False),
        pa.field("file_md5", pa.string(), nullable=False),
        pa.field("pixel_width", pa.int32(), nullable=False),
        pa.field("pixel_height", pa.int32(), nullable=False),
        pa.field("pixel_md5", pa.string(), nullable=False),
        pa.field("face_rect", pa.list_(pa.float64(), 4), nullable=False),
        pa.field("face_landmarks", pa.list_(pa.float64(), 136), nullable=False),
        pa.field("face_quad", pa.list_(pa.float64(), 8), nullable=False),
        pa.field("photo_url", pa.string()),
        pa.field("photo_title", pa.string()),
        pa.field("author", pa.string()),
        pa.field("country", pa.string()),
        pa.field("license", pa.string()),
        pa.field("license_url", pa.string()),
        pa.field("date_uploaded", pa.string()),
        pa.field("date_crawled", pa.string()),
    ]
)
_TEXT_FIELDS = (
    "photo_url",
    "photo_title",
    "author",
    "country",
    "license",
    "license_url",
    "date_uploaded",
    "date_crawled",
)
COLUMN_DESCRIPTIONS = {
    "image_number": "FFHQ image number, 0..69999",
    "category": "training or validation (FFHQ's own split)",
    "file_url": "where the in-the-wild photo is downloaded from",
    "file_size": "bytes of the in-the-wild PNG",
    "file_md5": "md5 of the in-the-wild PNG file",
    "pixel_width": "width of the in-the-wild photo",
    "pixel_height": "height of the in-the-wild photo",
    "pixel_md5": "md5 of the decoded pixels (numpy array bytes)",
    "face_rect": "dlib face rectangle [left, top, right, bottom]",
    "face_landmarks": "68 dlib landmarks, flattened x0, y0, x1, y1, ...",
    "face_quad": "FFHQ's own crop quad, flattened",
    **{name: f"Flickr {name.replace('_', ' ')}" for name in _TEXT_FIELDS},
}


_NUMERIC = {"face_rect": (4,), "face_landmarks": (68, 2), "face_quad": (4, 2)}
_NUMERIC_TYPES = {
    name: pa.list_(pa.list_(pa.float64(), shape[1]), shape[0])
    if len(shape) == 2
    else pa.list_(pa.float64(), shape[0])
    for name, shape in _NUMERIC.items()
}


class TableBuilder:
    """Validates metadata entries one by one and builds a :data:`METADATA_SCHEMA` table.

    Scalar fields are checked per entry; the numeric arrays (landmarks, rect, quad) are
    converted in bulk by Arrow, and only when that fails is the offending entry searched for,
    so a clean chunk pays no per-number Python cost.
    """

    def __init__(self, name: str = "metadata") -> None:
        self.name = name
        self.columns: dict[str, list[Any]] = {f.name: [] for f in METADATA_SCHEMA}

    def __len__(self) -> int:
        return len(self.columns["image_number"])

    def add(self, key: str, value: Any) -> None:
        """Validate one entry and append it.

        Raises:
            MetadataError: naming the entry and field, for anything malformed or unsafe.
        """
        where = f"{self.name}: entry {key!r}"
        if not isinstance(value, dict):
            raise MetadataError(f"{where} is not a JSON object")
        if not key.isdigit() or str(int(key)) != key or int(key) >= NUM_IMAGES:
            raise MetadataError(f"{where}: key is not an image number 0..{NUM_IMAGES - 1}")
        number = int(key)
        category = value.get("category")
        if category not in ("training", "validation"):
            raise MetadataError(f"{where}: category {category!r:.40} is not training or validation")
        wild, meta = value.get("in_the_wild"), value.get("metadata")
        if not isinstance(wild, dict) or not isinstance(meta, dict):
            raise MetadataError(f"{where}: 'in_the_wild' or 'metadata' is missing or not an object")
        file_path = wild.get("file_path")
        if not isinstance(file_path, str):
            raise MetadataError(f"{where}: file_path is missing")
        _check_file_path(where, file_path, number)
        url = wild.get("file_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise MetadataError(f"{where}: file_url {url!r:.80} is not an http(s) URL")
        size = wild.get("file_size")
        if type(size) is not int or not 0 < size < 1 << 34:
            raise MetadataError(f"{where}: file_size {size!r:.40} is not a positive size")
        md5s = {}
        for k in ("file_md5", "pixel_md5"):
            v = wild.get(k)
            if not isinstance(v, str) or not _MD5.match(v.lower()):
                raise MetadataError(f"{where}: {k} {v!r:.80} is not an md5 hex digest")
            md5s[k] = v.lower()
        dims = wild.get("pixel_size")
        if not (
            isinstance(dims, list)
            and len(dims) == 2
            and type(dims[0]) is int
            and type(dims[1]) is int
            and 0 < dims[0] <= 65_535
            and 0 < dims[1] <= 65_535
        ):
            raise MetadataError(f"{where}: pixel_size {dims!r:.40} is not [width, height]")
        text = []
        for k in _TEXT_FIELDS:
            v = meta.get(k, "")
            if not isinstance(v, str):
                raise MetadataError(f"{where}: metadata field {k!r} is not a string")
            text.append(v)
        numeric = [wild.get(k) for k in _NUMERIC]
        for k, v in zip(_NUMERIC, numeric, strict=True):
            if not isinstance(v, list):
                raise MetadataError(f"{where}: field {k!r} is missing or not a list")
        c = self.columns
        c["image_number"].append(number)
        c["category"].append(category)
        c["file_url"].append(url)
        c["file_size"].append(size)
        c["file_md5"].append(md5s["file_md5"])
        c["pixel_md5"].append(md5s["pixel_md5"])
        c["pixel_width"].append(dims[0])
        c["pixel_height"].append(dims[1])
        for k, v in zip(_TEXT_FIELDS, text, strict=True):
            c[k].append(v)
        for k, v in zip(_NUMERIC, numeric, strict=True):
            c[k].append(v)

    def table(self) -> pa.Table:
        """The validated entries as a table.

        Raises:
            MetadataError: naming the first entry whose numeric arrays are malformed.
        """
        arrays = []
        for field in METADATA_SCHEMA:
            values = self.columns[field.name]
            if field.name in _NUMERIC:
                arrays.append(self._numeric(field, values))
            else:
                arrays.append(pa.array(values, field.type))
        return pa.Table.from_arrays(arrays, schema=METADATA_SCHEMA)

    def _numeric(self, field: pa.Field, values: list[Any]) -> pa.Array:
        nested = _NUMERIC_TYPES[field.name]
        try:
            arr = pa.array(values, nested)
            flat = (
                arr.flatten().flatten()
                if pa.types.is_fixed_size_list(nested.value_type)
                else arr.flatten()
            )
            if arr.null_count == 0 and flat.null_count == 0:
                return pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            pass
        shape = "x".join(map(str, _NUMERIC[field.name]))
        for number, value in zip(self.columns["image_number"], values, strict=True):
            try:
                one = pa.array([value], nested)
                ok = one.null_count == 0 and one.flatten().null_count == 0
                if ok and pa.types.is_fixed_size_list(nested.value_type):
                    ok = one.flatten().flatten().null_count == 0
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                ok = False
            if not ok:
                raise MetadataError(
                    f"{self.name}: entry '{number}': field {field.name!r} must be {shape} numbers"
                )
        raise MetadataError(f"{self.name}: field {field.name!r} could not be converted")


def _check_file_path(where: str, file_path: str, number: int) -> None:
    parts = file_path.split("/")
    unsafe = (
        file_path.startswith("/")
        or "\\" in file_path
        or "\x00" in file_path
        or ":" in file_path
        or ".." in parts
        or "." in parts
    )
    if unsafe:
        raise MetadataError(f"{where}: unsafe file_path {file_path!r:.120}")
    if parts[-1] != f"{number:05d}.png":
        raise MetadataError(
            f"{where}: file_path {file_path!r:.120} does not name image {number:05d}.png"
        )


@dataclass
class Conversion:
    """What one pass over the metadata file found."""

    entries: int = 0
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def convert(path: Path, write: Callable[[str, pa.Table], object]) -> Conversion:
    """One streaming pass over the whole file: each chunk's validated table, as it completes.

    ``write(chunk, table)`` receives every chunk whose entries are all valid. A malformed or
    unsafe entry fails only its own chunk (its message is kept in ``errors``), so one bad entry
    does not stop the other 69 chunks.

    Raises:
        MetadataError: malformed JSON (with its byte offset), keys out of order, or too many
            entries: the file itself is not a usable metadata file.
    """
    result = Conversion()
    builder = TableBuilder(path.name)
    chunk = None

    def finish() -> None:
        if chunk is None or chunk in result.errors:
            return
        try:
            table = builder.table()
        except MetadataError as exc:
            result.errors[chunk] = str(exc)
            return
        result.rows[chunk] = table.num_rows
        write(chunk, table)

    with _gc_paused(), path.open("rb") as f:
        for count, (key, value) in enumerate(iter_entries(f, name=path.name)):
            if key != str(count):
                raise MetadataError(
                    f"{path.name}: entry {count} has key {key!r}; keys must be 0, 1, 2, ..."
                )
            if count >= NUM_IMAGES:
                raise MetadataError(f"{path.name}: more than {NUM_IMAGES} entries")
            if count % CHUNK_SIZE == 0:
                finish()
                chunk, builder = chunk_of(count), TableBuilder(path.name)
            if chunk in result.errors:
                continue
            try:
                builder.add(key, value)
            except MetadataError as exc:
                result.errors[chunk] = str(exc)  # type: ignore[index]
            result.entries = count + 1
        finish()
    return result

"""FFHQ's ``ffhq-dataset-v2.json``: its schema, each entry validated, one table per chunk.

The file is one JSON object of 70,000 entries (268 MB), read entry by entry by
:mod:`ffhq_aging_assets.lib.json_stream` in a few megabytes. One pass writes every chunk's
table; a malformed entry fails only its own chunk.

Everything in the file is untrusted: every entry is validated field by field, and of the file
paths only the name pattern ``NNNNN.png`` is ever used.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ffhq_aging_assets.lib.chunks import CHUNK_SIZE, NUM_IMAGES, chunk_of
from ffhq_aging_assets.lib.json_stream import JSONStreamError, gc_paused, iter_entries

_MD5 = re.compile(r"^[0-9a-f]{32}$")
# The aligned-image and thumbnail sections: two thirds of the file's numbers, never used.
UNUSED_SECTIONS = frozenset({"image", "thumbnail"})


class MetadataError(ValueError):
    """The metadata file or one of its entries is malformed; the message says where."""


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

    def add(self, key: str, value: Any) -> None:
        """Validate one entry and append it.

        Raises:
            MetadataError: naming the entry and field, for anything malformed or unsafe.
        """
        where = f"{self.name}: entry {key!r}"
        if not isinstance(value, dict):
            raise MetadataError(f"{where} is not a JSON object")
        if not (key.isascii() and key.isdigit()) or str(int(key)) != key or int(key) >= NUM_IMAGES:
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
            MetadataError: naming the first entry whose numeric arrays are malformed, or whose
                text is not valid Unicode (an escaped lone surrogate).
        """
        arrays = []
        for field in METADATA_SCHEMA:
            values = self.columns[field.name]
            try:
                arrays.append(_array(field, values))
            except _UNCONVERTIBLE:
                raise self._culprit(field, values) from None
        return pa.Table.from_arrays(arrays, schema=METADATA_SCHEMA)

    def _culprit(self, field: pa.Field, values: list[Any]) -> MetadataError:
        """The error naming the first entry whose value alone fails to convert (slow, rare)."""
        if field.name in _NUMERIC:
            what = f"must be {'x'.join(map(str, _NUMERIC[field.name]))} numbers"
        else:
            what = "is not valid Unicode text"
        for number, value in zip(self.columns["image_number"], values, strict=True):
            try:
                _array(field, [value])
            except _UNCONVERTIBLE:
                return MetadataError(f"{self.name}: entry '{number}': field {field.name!r} {what}")
        return MetadataError(f"{self.name}: field {field.name!r} could not be converted")


_UNCONVERTIBLE = (ValueError, TypeError)  # pyarrow's ArrowInvalid and ArrowTypeError among them


def _array(field: pa.Field, values: list[Any]) -> pa.Array:
    """One column of :data:`METADATA_SCHEMA`; raises one of ``_UNCONVERTIBLE`` if it is not."""
    if field.name not in _NUMERIC:
        return pa.array(values, field.type)
    nested = _NUMERIC_TYPES[field.name]
    arr = pa.array(values, nested)
    flat = arr.flatten()
    if pa.types.is_fixed_size_list(nested.value_type):
        flat = flat.flatten()
    # flatten() drops null sub-lists, so a null point would shift every later row's numbers.
    if arr.null_count or flat.null_count or len(flat) != len(values) * field.type.list_size:
        raise ValueError(f"{field.name}: null or missing numbers")
    return pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)


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

    with gc_paused(), path.open("rb") as f:
        entries = iter_entries(f, name=path.name, skip=UNUSED_SECTIONS)
        for count, (key, value) in enumerate(_as_metadata_errors(entries)):
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


def _as_metadata_errors(entries: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """The entries, with a malformed file reported as :class:`MetadataError` like a bad entry."""
    try:
        yield from entries
    except JSONStreamError as exc:
        raise MetadataError(str(exc)) from exc

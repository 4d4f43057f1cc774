"""Reading FFHQ-Aging's labels CSV: the file as a whole, each chunk's rows, the stray rows.

:func:`check_labels_file` checks once that a fetched file is the labels CSV at all;
:func:`parse_labels` validates the rows of one chunk, so a bad row fails only the chunk its
image belongs to; :func:`stray_rows` lists the rows that belong to no image. Every message
names the line, the column and the value. The columns and domains are in
:mod:`ffhq_aging_assets.lib.labels`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from ffhq_aging_assets.lib.chunks import NUM_IMAGES
from ffhq_aging_assets.lib.labels import (
    AGE_GROUPS,
    ATTRIBUTES,
    COLUMNS,
    GENDERS,
    GLASSES,
    LABELS_SCHEMA,
)


class LabelsError(ValueError):
    """The labels CSV is malformed; the message names the line, column and value."""


@dataclass(frozen=True)
class ParsedLabels:
    """Valid rows as a table, and one message per invalid value."""

    table: pa.Table
    errors: list[str]


@dataclass(frozen=True)
class LabelsFileSummary:
    """A labels CSV that passed the file-level check: its data rows, and the stray ones.

    ``stray`` holds one message per row that belongs to no image (see :func:`stray_rows`).
    """

    rows: int
    stray: list[str]


_BOM = "\ufeff"
# Bytes that are not UTF-8 are decoded to these lone surrogates ("surrogateescape"), so one bad
# byte spoils only the field it lies in and the row can still be attributed to its image.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# float() also takes Unicode digits ("１", "٣"), "nan", "inf" and "1_0"; the published file
# holds plain ASCII decimals only.
_ASCII_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class _Record(NamedTuple):
    line: int
    fields: list[str]
    csv_error: str | None


def _decoded(source: str | bytes | Path) -> str:
    if isinstance(source, Path):
        source = source.read_bytes()
    if isinstance(source, bytes):
        source = source.decode("utf-8", "surrogateescape")
    return source.removeprefix(_BOM)


def _check_header(header: list[str] | None, text: str, name: str) -> None:
    if header is not None and tuple(h.strip() for h in header) == COLUMNS:
        return
    if not text.strip():
        raise LabelsError(f"{name}: is empty, not the FFHQ-Aging labels CSV")
    end = text.find("\n")
    first = (text if end < 0 else text[:end]).rstrip("\r")
    if _UNDECODABLE.search(first) or "\x00" in first:
        start = first.encode("utf-8", "surrogateescape")[:40]
        raise LabelsError(f"{name}: is not text: line 1 starts {start!r} (a binary file?)")
    what = f"is not the FFHQ-Aging labels CSV: line 1 is {first[:60]!r}"
    if text[:4096].lstrip().startswith("<"):
        what += " (an HTML page?)"
    else:
        what += f", not the header {','.join(COLUMNS)}"
    raise LabelsError(f"{name}: {what}")


def _records(source: str | bytes | Path, name: str) -> Iterator[_Record]:
    """The data rows, stripped, with their line numbers; blank rows are skipped.

    Raises:
        LabelsError: when the file is empty, not text, or its header is not the published one.
    """
    text = _decoded(source)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    _check_header(header, text, name)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader goes on with the next line, so one broken row does not hide the rest.
            yield _Record(reader.line_num, [], str(exc))
            continue
        fields = [f.strip() for f in row]
        if any(fields):
            yield _Record(reader.line_num, fields, None)


def _image_number(record: _Record) -> int | None:
    """The image a row belongs to, or None when its image number is not one (a stray row)."""
    if record.csv_error is not None:
        return None
    value = record.fields[0]
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number < NUM_IMAGES else None


def _message(name: str, line: int, column: str, value: str, why: str) -> str:
    if _UNDECODABLE.search(value):
        shown = repr(value.encode("utf-8", "surrogateescape"))
        return f"{name}: line {line}, column {column}: {shown} " + (
            why if column == "*" else "is not UTF-8 text"
        )
    hint = "" if value.isascii() else " (it holds non-ASCII characters)"
    return f"{name}: line {line}, column {column}: {value!r} {why}{hint}"


def _stray_message(name: str, record: _Record) -> str:
    if record.csv_error is not None:
        return f"{name}: line {record.line}: not a CSV row ({record.csv_error}); no image's row"
    return _message(
        name,
        record.line,
        "image_number",
        record.fields[0],
        f"is not an image number 0..{NUM_IMAGES - 1} in ASCII digits; no image's row",
    )


def _number(text: str, lo: float, hi: float) -> float | None:
    if not _ASCII_NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if lo <= value <= hi else None


def parse_labels(
    text: str | bytes | Path, numbers: Iterable[int] | None = None, name: str = "labels"
) -> ParsedLabels:
    """Validate the rows of ``numbers`` (all if None) of the CSV (a path, its bytes or text).

    A UTF-8 byte order mark and CRLF line ends are accepted. Only rows whose image number is in
    ``numbers`` are checked and reported, so a bad row fails only the chunk its image belongs
    to: a field that is not UTF-8 or not in its domain (numbers in ASCII digits only), a wrong
    number of fields, or a repeated image number, each named by line, column and value. Rows
    that belong to no image are left to :func:`stray_rows`.

    Raises:
        LabelsError: when the file is empty, not text, or its header is not the published one.
    """
    wanted = None if numbers is None else set(numbers)
    errors: list[str] = []
    seen: dict[int, int] = {}
    rows: dict[str, list] = {f.name: [] for f in LABELS_SCHEMA}

    def bad(line: int, column: str, value: str, why: str) -> None:
        errors.append(_message(name, line, column, value, why))

    for record in _records(text, name):
        n = _image_number(record)
        if n is None or (wanted is not None and n not in wanted):
            continue
        line, fields = record.line, record.fields
        if n in seen:
            bad(line, "image_number", fields[0], f"repeats line {seen[n]}")
            continue
        seen[n] = line
        if len(fields) != len(COLUMNS):
            count = f"has {len(fields)} fields, expected {len(COLUMNS)}"
            bad(line, "*", ",".join(fields)[:60], count)
            continue
        v = dict(zip(COLUMNS, fields, strict=True))
        ok = True
        if v["age_group"] not in AGE_GROUPS:
            bad(line, "age_group", v["age_group"], f"is not one of {', '.join(AGE_GROUPS)}")
            ok = False
        if v["gender"] not in GENDERS:
            bad(line, "gender", v["gender"], "is not male or female")
            ok = False
        conf = {}
        for col in ("age_group_confidence", "gender_confidence"):
            conf[col] = _number(v[col], 0.0, 1.0)
            if conf[col] is None:
                bad(line, col, v[col], "is not a confidence in [0, 1]")
                ok = False
        found = v["glasses"] != "-1"
        attrs = {}
        if found:
            if v["glasses"] not in GLASSES:
                bad(line, "glasses", v["glasses"], "is not None, Normal, Dark or -1")
                ok = False
            for col in ATTRIBUTES:
                lo, hi = (-180.0, 180.0) if col.startswith("head") else (0.0, 100.0)
                attrs[col] = _number(v[col], lo, hi)
                if attrs[col] is None:
                    bad(line, col, v[col], f"is not in [{lo:g}, {hi:g}] (glasses is set)")
                    ok = False
        else:
            for col in ATTRIBUTES:
                if _number(v[col], -1.0, -1.0) is None:
                    bad(line, col, v[col], "must be -1 when glasses is -1 (no attributes found)")
                    ok = False
                attrs[col] = -1.0
        if not ok:
            continue
        rows["image_number"].append(n)
        rows["age_group"].append(v["age_group"])
        rows["age_group_confidence"].append(conf["age_group_confidence"])
        rows["gender"].append(v["gender"])
        rows["gender_confidence"].append(conf["gender_confidence"])
        for col in ATTRIBUTES:
            rows[col].append(attrs[col])
        rows["glasses"].append(v["glasses"])
        rows["attributes_found"].append(found)
    table = pa.Table.from_pydict(rows, schema=LABELS_SCHEMA)
    return ParsedLabels(table.sort_by("image_number"), errors)


def stray_rows(text: str | bytes | Path, name: str = "labels") -> list[str]:
    """One message per row that belongs to no image, naming its line, column and value.

    A row is stray when its image number is not 0..69999 in ASCII digits (``70000``, ``abc``,
    ``²``, bytes that are not UTF-8) or the line is not a CSV row: no chunk can own it, so it
    fails none of them and is reported once, by the dataset-wide products.

    Raises:
        LabelsError: when the file is empty, not text, or its header is not the published one.
    """
    return [_stray_message(name, r) for r in _records(text, name) if _image_number(r) is None]


def check_labels_file(path: Path, name: str | None = None) -> LabelsFileSummary:
    """Check that a fetched file is the labels CSV at all, before any chunk reads it.

    Cheap (one pass over the rows' image numbers, well under a second for 70,000 rows): field
    domains are left to :func:`parse_labels`, per chunk.

    Args:
        path: The fetched file.
        name: How messages name the file [its file name].

    Raises:
        LabelsError: naming the file and what it is instead, when it is empty, not text (a
            binary file), an HTML page, has another header, or has no rows.
    """
    name = name or path.name
    rows = 0
    stray: list[str] = []
    for record in _records(path, name):
        rows += 1
        if _image_number(record) is None:
            stray.append(_stray_message(name, record))
    if not rows:
        raise LabelsError(f"{name}: has the header but no rows")
    return LabelsFileSummary(rows, stray)

import gc
import io
import json

import pytest

from ffhq_aging_assets.lib import json_stream as js

# Nesting, escapes in keys and values, multi-byte UTF-8, numbers of every form, and a field
# that the reader may skip, in a document small enough to cut at every byte.
DOC = {
    "0": {"a": [1, -2.5, 3e-7, True, None], "s": 'q"uo\\te\n\t\u00e9\u20ac\U0001f642'},
    'k"ey\\/\u00e9': {"nested": {"x": [[1, [2, [3, {"y": "}]{["}]]]]}, "empty": {}},
    "2": [],
    "3": {"skip": {"file_path": 'a/"b"/{c}]', "pts": [[1, 2], [3, 4]], "n": 5}, "keep": 7},
    "4": "",
}


def read(raw: bytes, **kwargs) -> list:
    return list(js.iter_entries(io.BytesIO(raw), **kwargs))


def entries_until_error(raw: bytes, **kwargs) -> tuple[list, js.JSONStreamError]:
    got = []
    with pytest.raises(js.JSONStreamError) as err:
        for entry in js.iter_entries(io.BytesIO(raw), name="doc.json", **kwargs):
            got.append(entry)
    return got, err.value


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, js.BLOCK])
def test_entries_equal_a_full_parse(monkeypatch, indent, block: int) -> None:
    monkeypatch.setattr(js, "BLOCK", block)
    raw = json.dumps(DOC, indent=indent, ensure_ascii=False).encode()
    assert read(raw) == list(DOC.items())
    escaped = json.dumps(DOC, indent=indent).encode()  # \uXXXX escapes, surrogate pairs
    assert read(escaped) == list(DOC.items())


def test_skipped_fields_come_back_as_none_at_any_depth() -> None:
    deep = {"skip": {"a": [[[[1, {"b": [2]}]]]]}, "keep": 1}  # deeper than the fast pattern
    doc = {"0": DOC["3"], "1": deep, "2": {"skip": 5}}
    got = read(json.dumps(doc).encode(), skip=frozenset({"skip"}))
    assert got == [
        ("0", {"skip": None, "keep": 7}),
        ("1", {"skip": None, "keep": 1}),
        ("2", {"skip": 5}),
    ]


def test_a_malformed_skipped_field_is_still_an_error() -> None:
    raw = b'{"0": {"skip": {"a": [1, 2}, "keep": 1}}'
    with pytest.raises(js.JSONStreamError, match="byte offset"):
        read(raw, skip=frozenset({"skip"}))


@pytest.mark.parametrize("skip", [frozenset(), frozenset({"skip"})])
@pytest.mark.parametrize("block", [3, js.BLOCK])
def test_truncation_at_every_byte_boundary_is_an_error(monkeypatch, block: int, skip) -> None:
    monkeypatch.setattr(js, "BLOCK", block)
    raw = json.dumps(DOC, ensure_ascii=False).encode()
    full = read(raw, skip=skip)
    assert full == [(k, {**v, "skip": None} if skip and k == "3" else v) for k, v in DOC.items()]
    for cut in range(len(raw)):
        got, error = entries_until_error(raw[:cut], skip=skip)
        assert got == full[: len(got)], f"cut at {cut}: a shortened entry was yielded"
        assert "doc.json" in str(error) and "byte" in str(error), cut


@pytest.mark.parametrize(
    ("raw", "message", "offset"),
    [
        (b"", "expected a JSON object", 0),
        (b"  [1, 2]", "expected a JSON object", 2),
        (b'"text"', "expected a JSON object", 0),
        (b'{"0": 1,}', "expected a quoted key", 8),
        (b'{"0" 1}', "expected ':'", 5),
        (b'{"0": 1 "1": 2}', "expected ',' or '}'", 8),
        (b'{"0": [1, 2,]}', "Expecting value", 12),
        (b'{"0": "bad \\x escape"}', "Invalid \\\\escape", 11),
        (b'{"0": "tab\tinside"}', "Invalid control character", 10),
        (b'{"0": 1} {"1": 2}', "data after the JSON object", 9),
        (b'{"0": 1}}', "data after the JSON object", 8),
        (b'{"0": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply", 6),
        (b'{"0": ' + b"7" * 5_000 + b"}", "integer string conversion", 6),
    ],
)
def test_malformed_documents_name_the_byte_offset(raw: bytes, message: str, offset: int) -> None:
    with pytest.raises(js.JSONStreamError, match=message) as err:
        read(raw, name="doc.json")
    assert str(err.value).startswith("doc.json: ")
    assert str(err.value).endswith(f"byte offset {offset}")


def test_whitespace_around_the_object_and_an_empty_object() -> None:
    assert read(b" \n{ } \r\n\t") == []
    assert read(b'{"0": {}}\n') == [("0", {})]


def test_offsets_count_bytes_not_characters_and_start_at_the_stream_position() -> None:
    head = '{"é€🙂": 1, "x": '.encode()
    stream = io.BytesIO(b"HEADER" + head + b"]}")
    stream.seek(6)
    with pytest.raises(js.JSONStreamError) as err:
        list(js.iter_entries(stream))
    assert str(err.value).endswith(f"byte offset {6 + len(head)}")


@pytest.mark.parametrize("block", [1, 5, js.BLOCK])
def test_bytes_that_are_not_utf8_name_their_offset(monkeypatch, block: int) -> None:
    monkeypatch.setattr(js, "BLOCK", block)
    raw = '{"0": "café", "1": "'.encode() + b"\xff\xfe" + b'"}'
    with pytest.raises(js.JSONStreamError, match=f"invalid UTF-8 near byte offset {len(raw) - 4}"):
        read(raw)
    latin1 = '{"0": "café"}'.encode("latin-1")
    with pytest.raises(js.JSONStreamError, match="invalid UTF-8 near byte offset 10"):
        read(latin1)
    utf16 = '{"0": 1}'.encode("utf-16")
    with pytest.raises(js.JSONStreamError):
        read(utf16)


def test_a_file_cut_inside_a_multibyte_character_is_an_error() -> None:
    raw = '{"0": "€"}'.encode()
    got, error = entries_until_error(raw[: raw.index("€".encode()) + 2])
    assert got == [] and "byte offset" in str(error)


def test_memory_stays_bounded_by_the_buffer() -> None:
    # A single entry larger than the cap is refused rather than buffered without limit.
    huge = b'{"0": {"category": "' + b"x" * (js.MAX_ENTRY_BYTES + js.BLOCK * 2) + b'"}}'
    with pytest.raises(js.JSONStreamError, match="byte offset"):
        for _ in js.iter_entries(io.BytesIO(huge)):
            pass


def test_an_entry_over_the_limit_is_refused_without_reading_the_rest(monkeypatch) -> None:
    monkeypatch.setattr(js, "MAX_ENTRY_BYTES", 1_000)
    monkeypatch.setattr(js, "BLOCK", 64)
    fits = '"' + "x" * 900 + '"'
    raw = ('{"0": ' + fits + ', "1": [' + "1, " * 1_000_000 + "1]}").encode()
    stream = io.BytesIO(raw)
    got = []
    with pytest.raises(js.JSONStreamError, match="byte offset"):
        for entry in js.iter_entries(stream):
            got.append(entry)
    assert got == [("0", json.loads(fits))]  # entries under the limit still come through
    assert stream.tell() <= len(fits) + 1_000 + 4 * 64  # not the 3 MB that follow


def test_gc_paused_restores_the_collector_state() -> None:
    assert gc.isenabled()
    with js.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with js.gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is left alone
    finally:
        gc.enable()

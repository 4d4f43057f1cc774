import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from ffhq_aging_assets.lib import json_stream
from ffhq_aging_assets.lib import metadata as m
from ffhq_aging_assets_tests.synthetic import write_ffhq_json


@pytest.fixture(scope="module")
def meta_2500(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("meta") / "ffhq-dataset-v2.json"
    write_ffhq_json(path, 2500, seed=3)
    return path


def entries(path: Path) -> OrderedDict:
    return json.loads(path.read_text(), object_pairs_hook=OrderedDict)


def write_entries(path: Path, data: dict, indent: int | None = None) -> Path:
    path.write_text(json.dumps(data, indent=indent))
    return path


def tables(path: Path) -> tuple[m.Conversion, dict]:
    out: dict = {}
    result = m.convert(path, out.__setitem__)
    return result, out


def test_one_pass_yields_every_chunk(meta_2500: Path) -> None:
    result, out = tables(meta_2500)
    assert result.entries == 2500 and result.errors == {}
    assert result.rows == {"00000": 1000, "01000": 1000, "02000": 500}
    assert {k: t.num_rows for k, t in out.items()} == result.rows
    assert all(t.schema == m.METADATA_SCHEMA for t in out.values())


def test_tables_equal_a_full_parse(meta_2500: Path) -> None:
    _, out = tables(meta_2500)
    ref = entries(meta_2500)
    rows = out["01000"].to_pylist()
    assert [r["image_number"] for r in rows] == list(range(1000, 2000))
    for row in (rows[0], rows[517], rows[-1]):
        wild = ref[str(row["image_number"])]["in_the_wild"]
        assert row["file_url"] == wild["file_url"]
        assert row["file_md5"] == wild["file_md5"]
        assert [row["pixel_width"], row["pixel_height"]] == wild["pixel_size"]
        assert np.allclose(np.reshape(row["face_landmarks"], (68, 2)), wild["face_landmarks"])
        assert np.allclose(np.reshape(row["face_quad"], (4, 2)), wild["face_quad"])
        meta = ref[str(row["image_number"])]["metadata"]
        assert row["author"] == meta["author"] and row["license_url"] == meta["license_url"]


@pytest.mark.parametrize("indent", [None, 2])
def test_pretty_printed_and_unicode_files(tmp_path: Path, meta_2500: Path, indent) -> None:
    data = OrderedDict((k, v) for k, v in list(entries(meta_2500).items())[:1003])
    data["1001"]["metadata"]["photo_title"] = 'Café ☕ {"tricky": [1, 2]} \\ 🙂'
    data["1002"]["image"]["file_path"] = 'images1024x1024/"quoted"/{x}]'
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    result, out = tables(path)
    assert result.rows == {"00000": 1000, "01000": 3}
    titles = out["01000"].column("photo_title").to_pylist()
    assert titles[1] == data["1001"]["metadata"]["photo_title"]


def test_entries_spanning_buffer_boundaries(monkeypatch, meta_2500: Path) -> None:
    monkeypatch.setattr(json_stream, "BLOCK", 777)
    result, out = tables(meta_2500)
    assert result.entries == 2500 and out["01000"].num_rows == 1000


def test_malformed_json_reports_byte_offset(tmp_path: Path, meta_2500: Path) -> None:
    raw = bytearray(meta_2500.read_bytes())
    at = raw.index(b'"category"', 500_000)
    raw[at + 10] = ord(";")  # the colon after "category"
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    with pytest.raises(m.MetadataError) as err:
        m.convert(path, lambda chunk, table: None)
    assert "bad.json" in str(err.value) and f"byte offset {at + 10}" in str(err.value)


def test_truncated_file_and_not_an_object(tmp_path: Path, meta_2500: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_bytes(meta_2500.read_bytes()[:300_000])
    with pytest.raises(m.MetadataError, match="ends"):
        tables(path)
    path.write_bytes(b"[1, 2, 3]")
    with pytest.raises(m.MetadataError, match=r"byte offset 0"):
        tables(path)
    path.write_bytes(b"")
    with pytest.raises(m.MetadataError):
        tables(path)


def test_keys_out_of_order_are_rejected(tmp_path: Path, meta_2500: Path) -> None:
    items = list(entries(meta_2500).items())[:10]
    swapped = OrderedDict(
        (str(k), v)
        for k, v in zip([0, 1, 2, 3, 5, 4, 6, 7, 8, 9], (v for _, v in items), strict=True)
    )
    path = write_entries(tmp_path / "m.json", swapped)
    with pytest.raises(m.MetadataError, match="entry 4 has key '5'"):
        tables(path)


def _chunk_with(tmp_path: Path, meta_2500: Path, mutate) -> Path:
    data = OrderedDict(list(entries(meta_2500).items())[:5])
    mutate(data)
    return write_entries(tmp_path / "m.json", data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["3"]["in_the_wild"].update(file_path="../../etc/00003.png"),
            "unsafe file_path",
        ),
        (lambda d: d["3"]["in_the_wild"].update(file_path="/abs/00003.png"), "unsafe file_path"),
        (lambda d: d["3"]["in_the_wild"].update(file_path="x\\00003.png"), "unsafe file_path"),
        (
            lambda d: d["3"]["in_the_wild"].update(file_path="a/00004.png"),
            "does not name image 00003",
        ),
        (lambda d: d["3"]["in_the_wild"].update(file_url="file:///etc/passwd"), "not an http"),
        (lambda d: d["3"]["in_the_wild"].update(file_size=-5), "file_size"),
        (lambda d: d["3"]["in_the_wild"].update(file_md5="zz"), "file_md5"),
        (lambda d: d["3"]["in_the_wild"].update(pixel_size=[10]), "pixel_size"),
        (lambda d: d["3"].update(category="test"), "category"),
        (lambda d: d["3"]["in_the_wild"]["face_landmarks"].pop(), "face_landmarks"),
        (
            lambda d: d["3"]["in_the_wild"]["face_landmarks"][7].__setitem__(0, "x"),
            "face_landmarks",
        ),
        (lambda d: d["3"]["in_the_wild"]["face_quad"][1].__setitem__(1, None), "face_quad"),
        (lambda d: d["3"]["in_the_wild"]["face_landmarks"].__setitem__(7, None), "face_landmarks"),
        (lambda d: d["3"]["metadata"].update(photo_title="\ud800"), "photo_title.*Unicode"),
        (lambda d: d["3"]["metadata"].update(author=7), "author"),
        (lambda d: d.__setitem__("3", []), "not a JSON object"),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, meta_2500: Path, mutate, message: str) -> None:
    data = OrderedDict(list(entries(meta_2500).items())[:1005])
    mutate(data)
    path = write_entries(tmp_path / "m.json", data)
    result, out = tables(path)
    assert list(result.errors) == ["00000"] and "entry '3'" in result.errors["00000"]
    assert re.search(message, result.errors["00000"])
    assert "00000" not in out and out["01000"].num_rows == 5  # the other chunk is unharmed


def test_nan_landmarks_parse_and_stay_nan(tmp_path: Path, meta_2500: Path) -> None:
    path = _chunk_with(
        tmp_path,
        meta_2500,
        lambda d: d["2"]["in_the_wild"]["face_landmarks"][0].__setitem__(0, float("nan")),
    )
    table = tables(path)[1]["00000"]
    landmarks = np.asarray(table.column("face_landmarks").to_pylist())
    assert np.isnan(landmarks[2, 0]) and np.isfinite(np.delete(landmarks, 2, axis=0)).all()


def test_a_file_that_is_not_one_json_object_names_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(b'{"0": 1} <html>')
    with pytest.raises(
        m.MetadataError, match=r"m\.json: data after the JSON object at byte offset 9"
    ):
        tables(path)
    path.write_bytes(b'{"0": \xff}')
    with pytest.raises(m.MetadataError, match=r"invalid UTF-8 near byte offset 6"):
        tables(path)

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.metadata import MetadataError
from ffhq_aging_assets.lib.metadata_store import (
    MissingInputError,
    chunk_metadata,
    chunk_table,
    landmarks_of,
    limit_rows,
    parsed_metadata,
    stored_chunk_metadata,
)
from ffhq_aging_assets.lib.tables import write_table
from ffhq_aging_assets_tests.synthetic import write_ffhq_json

ENTRIES = 1030  # chunk 00000 whole, chunk 01000 cut short after 30 entries


@pytest.fixture(scope="module")
def json_1030(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served") / "ffhq-dataset-v2.json"
    write_ffhq_json(path, ENTRIES, seed=5)
    return path


def parsed_layout(tmp_path: Path, source: Path) -> DatasetLayout:
    layout = DatasetLayout(tmp_path / "root", 256)
    layout.metadata_dir.mkdir(parents=True)
    shutil.copyfile(source, layout.metadata_json)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    parsed_metadata(layout, layout.metadata_json, md5)
    return layout


def test_the_pass_runs_once_per_md5_and_again_when_its_tables_are_gone(
    tmp_path: Path, json_1030: Path
) -> None:
    layout = DatasetLayout(tmp_path, 256)
    layout.metadata_dir.mkdir()
    said: list[str] = []
    first = parsed_metadata(layout, json_1030, "a" * 32, said.append)
    assert first["entries"] == ENTRIES and first["errors"] == {}
    assert first["rows"] == {"00000": 1000, "01000": 30}
    assert json.loads(layout.parsed_record.read_text()) == first
    assert said == ["parsing ffhq-dataset-v2.json in one streaming pass"]

    assert parsed_metadata(layout, json_1030, "a" * 32, said.append) == first
    assert len(said) == 1  # the record was reused
    parsed_metadata(layout, json_1030, "b" * 32, said.append)
    assert len(said) == 2  # another file
    shutil.rmtree(layout.metadata_chunks_dir("b" * 32))
    parsed_metadata(layout, json_1030, "b" * 32, said.append)
    assert len(said) == 3 and layout.metadata_chunks_dir("b" * 32).is_dir()


def test_a_malformed_file_raises_and_leaves_no_record(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path, 256)
    layout.metadata_dir.mkdir()
    layout.metadata_json.write_bytes(b'{"0": ')
    with pytest.raises(MetadataError, match="ends"):
        parsed_metadata(layout, layout.metadata_json, "c" * 32)
    assert not layout.parsed_record.exists()


def test_chunk_table_holds_every_row_the_json_has(tmp_path: Path, json_1030: Path) -> None:
    layout = parsed_layout(tmp_path, json_1030)
    whole = chunk_table(layout, "00000", 3)
    assert whole.column("image_number").to_pylist() == list(range(1000))
    cut = chunk_table(layout, "01000", 30)
    assert cut.column("image_number").to_pylist() == list(range(1000, 1030))
    assert chunk_table(layout, "01000", 5).num_rows == 30


def test_chunk_table_failures_say_why(tmp_path: Path, json_1030: Path) -> None:
    with pytest.raises(MissingInputError, match="materialize ffhq_metadata_json first"):
        chunk_table(DatasetLayout(tmp_path / "empty", 256), "00000", None)
    layout = parsed_layout(tmp_path, json_1030)
    message = "ffhq-dataset-v2.json ends after entry 1029: chunk 01000 needs entries 1000..1999"
    with pytest.raises(MetadataError, match=message):
        chunk_table(layout, "01000", None)
    with pytest.raises(MetadataError, match="ends after entry 1029: chunk 01000 needs entries"):
        chunk_table(layout, "01000", 31)
    with pytest.raises(MetadataError, match="has 1030 entries: none for chunk 02000"):
        chunk_table(layout, "02000", 1)


def test_a_bad_entry_fails_only_its_chunk(tmp_path: Path, json_1030: Path) -> None:
    data = json.loads(json_1030.read_text())
    data["1004"]["in_the_wild"]["file_md5"] = "nope"
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(data))
    layout = parsed_layout(tmp_path, source)
    with pytest.raises(MetadataError, match="entry '1004': file_md5"):
        chunk_table(layout, "01000", 3)
    assert chunk_table(layout, "00000", 3).num_rows == 1000


def test_chunk_metadata_applies_the_limit_on_read(tmp_path: Path, json_1030: Path) -> None:
    layout = parsed_layout(tmp_path, json_1030)
    with pytest.raises(MissingInputError, match="materialize image_metadata first"):
        chunk_metadata(layout, "00000", 5)
    write_table(chunk_table(layout, "00000", None), layout.image_metadata_table("00000"))
    for limit, count in [(5, 5), (1000, 1000), (0, 1000), (None, 1000)]:
        rows = chunk_metadata(layout, "00000", limit)
        assert rows.column("image_number").to_pylist() == list(range(count))
    assert stored_chunk_metadata(layout, "00000").num_rows == 1000


def test_a_table_without_the_rows_the_limit_needs_names_them(
    tmp_path: Path, json_1030: Path
) -> None:
    layout = parsed_layout(tmp_path, json_1030)
    write_table(chunk_table(layout, "01000", 3).slice(0, 3), layout.image_metadata_table("01000"))
    assert chunk_metadata(layout, "01000", 3).num_rows == 3
    with pytest.raises(
        MissingInputError,
        match=r"holds 3 rows, without images 01003\.\.01004 \(2 images\) that limit 5 needs: "
        "materialize image_metadata for chunk 01000 again",
    ):
        chunk_metadata(layout, "01000", 5)
    with pytest.raises(MissingInputError, match=r"01003\.\.01999 \(997 images\) that the whole"):
        chunk_metadata(layout, "01000", 0)


def test_limit_rows_rejects_rows_of_another_chunk_or_order(tmp_path: Path, json_1030: Path) -> None:
    layout = parsed_layout(tmp_path, json_1030)
    table = chunk_table(layout, "00000", None)
    with pytest.raises(MissingInputError, match=r"without images 01000\.\.01001"):
        limit_rows(table, "01000", 2, "t.parquet")
    shuffled = table.take([1, 0, 2])
    with pytest.raises(MissingInputError, match=r"t\.parquet holds 3 rows, without images 00000"):
        limit_rows(shuffled, "00000", 3, "t.parquet")


def test_landmarks_of_gives_68_points_per_row(tmp_path: Path, json_1030: Path) -> None:
    layout = parsed_layout(tmp_path, json_1030)
    table = chunk_table(layout, "01000", 3).slice(0, 4)
    landmarks = landmarks_of(table)
    assert landmarks.shape == (4, 68, 2)
    wild = json.loads(json_1030.read_text())["1002"]["in_the_wild"]
    assert np.array_equal(landmarks[2], np.asarray(wild["face_landmarks"]))


def test_a_file_without_a_valid_chunk_is_parsed_once(tmp_path: Path, json_1030: Path) -> None:
    data = json.loads(json_1030.read_text())
    source = tmp_path / "bad.json"
    source.write_text(json.dumps({k: v for k, v in data.items() if int(k) < 10} | {"3": []}))
    layout = DatasetLayout(tmp_path / "root", 256)
    layout.metadata_dir.mkdir(parents=True)
    said: list[str] = []
    for _ in range(2):
        parsed = parsed_metadata(layout, source, "d" * 32, said.append)
    assert len(said) == 1 and parsed["rows"] == {}
    with pytest.raises(MetadataError, match="entry '3' is not a JSON object"):
        chunk_table(layout, "00000", 3)

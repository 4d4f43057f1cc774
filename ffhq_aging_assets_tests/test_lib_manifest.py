from pathlib import Path

import pytest

from ffhq_aging_assets.lib.manifest import build_manifest, dataset_files, verify


def test_verify_names_missing_and_changed_files(tmp_path: Path) -> None:
    for rel in ("ds/00000/00000.png", "ds/00000/parsings/00000.png", "tables/t.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    (tmp_path / "ds/00000/.00001.png.partial-1").write_bytes(b"x")
    files = dataset_files(tmp_path, ["ds", "tables"])
    assert len(files) == 3
    manifest = build_manifest(tmp_path, files)
    assert verify(tmp_path, manifest).ok
    (tmp_path / "ds/00000/00000.png").unlink()
    (tmp_path / "tables/t.parquet").write_bytes(b"tables/t.parquet!")
    (tmp_path / "ds/00000/parsings/00000.png").write_bytes(b"ds/00000/parsings/00000.pnG")
    result = verify(tmp_path, manifest)
    assert result.missing == ["ds/00000/00000.png"]
    assert result.changed == ["ds/00000/parsings/00000.png", "tables/t.parquet"]


def test_unsafe_manifest_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a path inside"):
        verify(tmp_path, {"files": {"../etc/passwd": {"size": 1, "sha256": "0"}}})

import json
from pathlib import Path

import pytest

from ffhq_aging_assets.cli import main
from ffhq_aging_assets.lib.manifest import (
    ManifestError,
    build_manifest,
    dataset_files,
    parse_manifest,
    verify,
    write_manifest,
)

COVERED = [
    "ffhq_aging256x256/00000/00000.png",
    "ffhq_aging256x256/00000/parsings/00000.png",
    "ffhq_aging256x256/00000/parsings_color/00000.png",
    "ffhq_aging256x256/05000/05000.png",
    "ffhq_aging256x256/05000/parsings/05000.png",
    "ffhq_aging256x256/LICENSE.txt",
    "reports/age_distribution_256.png",
    "splits_256/males/train20-29.txt",
    "splits_256/splits.csv",
    "tables/ffhq_aging_labels_256.parquet",
    "tables/image_metadata/00000.parquet",
    "tables/image_metadata/05000.parquet",
    "tables/labels_256/00000.parquet",
    "tables/labels_256/05000.parquet",
    "tables/mask_fidelity_256/00000.json",
    "tables/mask_fidelity_256/05000.json",
]
NOT_COVERED = [
    "ffhq_aging256x256/.DS_Store",
    "ffhq_aging256x256/00000/.00001.png.partial-1234",
    "ffhq_aging256x256/00000/.ipynb_checkpoints/00000.png",
    "ffhq_aging1024x1024/00000/00000.png",
    "tables/labels_1024/00000.parquet",
    "tables/ffhq_aging_labels_1024.parquet",
    "tables/labels_2560/00000.parquet",
    "splits_1024/splits.csv",
    "reports/age_distribution_1024.png",
    "reports/notes_256.txt",
    "metadata/ffhq-dataset-v2.json",
    "metadata/ffhq_aging_labels.csv",
    "sources/in-the-wild-images/00000/00000.png",
    "cache/torchinductor/kernel.py",
    "manifest_1024.json",
]
IN_CHUNK_05000 = [rel for rel in COVERED if "05000" in rel]


def put(root: Path, rel: str, data: bytes | None = None) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(rel.encode() if data is None else data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rel in COVERED + NOT_COVERED:
        put(tmp_path, rel)
    return tmp_path


def relative(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def built(root: Path, excluded: dict[str, str] | None = None) -> Path:
    path = root / "manifest_256.json"
    write_manifest(build_manifest(root, 256, excluded or {}), path)
    return path


def run_verify(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["verify", "--root", str(root), "--resolution", "256"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_dataset_files_cover_exactly_the_resolution(root: Path) -> None:
    assert relative(root, dataset_files(root, 256)) == COVERED


def test_excluded_chunks_are_left_out(root: Path) -> None:
    files = relative(root, dataset_files(root, 256, ["05000"]))
    assert files == [rel for rel in COVERED if rel not in IN_CHUNK_05000]
    with pytest.raises(ValueError, match="'5000'"):
        dataset_files(root, 256, ["5000"])


def test_manifest_lists_every_file_with_count_and_digest(root: Path) -> None:
    manifest = build_manifest(root, 256, {})
    assert manifest["version"] == 2 and manifest["resolution"] == 256
    assert list(manifest["files"]) == COVERED and manifest["count"] == len(COVERED)
    assert manifest["files"]["splits_256/splits.csv"]["size"] == len("splits_256/splits.csv")
    assert manifest["excluded"] == {} and len(manifest["digest"]) == 64


def test_verify_names_missing_changed_and_unexpected_files(root: Path) -> None:
    path = built(root)
    result = verify(root, path)
    assert result.ok and result.checked == len(COVERED)
    (root / "ffhq_aging256x256/00000/00000.png").unlink()
    put(root, "tables/labels_256/00000.parquet", b"edited")
    put(root, "splits_256/splits.csv", b"splits_256/splits.csV")  # same size
    for rel in ("ffhq_aging256x256/00000/99999.png", "splits_256/extra.txt", "reports/x_256.png"):
        put(root, rel)
    put(root, "metadata/other.json")  # not the dataset's: never unexpected
    result = verify(root, path)
    assert not result.ok
    assert result.missing == ["ffhq_aging256x256/00000/00000.png"]
    assert result.changed == ["splits_256/splits.csv", "tables/labels_256/00000.parquet"]
    assert result.unexpected == [
        "ffhq_aging256x256/00000/99999.png",
        "reports/x_256.png",
        "splits_256/extra.txt",
    ]


def test_cli_stray_file_is_unexpected(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built(root)
    assert run_verify(root, capsys)[0] == 0
    put(root, "ffhq_aging256x256/00000/stray.png")
    code, out, _ = run_verify(root, capsys)
    assert code == 1
    assert "unexpected: ffhq_aging256x256/00000/stray.png" in out.splitlines()
    assert out.splitlines()[-1].endswith("; 1 unexpected")


def test_cli_file_removed_with_its_entry_is_refused(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = built(root)
    manifest = json.loads(path.read_text())
    del manifest["files"]["ffhq_aging256x256/00000/00000.png"]
    manifest["count"] -= 1
    path.write_text(json.dumps(manifest))
    (root / "ffhq_aging256x256/00000/00000.png").unlink()
    with pytest.raises(ManifestError, match="digest does not match"):
        verify(root, path)
    code, out, err = run_verify(root, capsys)
    assert code == 2 and out == ""
    assert err == f"ffhq-aging verify: {path}: its digest does not match its entries " + (
        "(edited, or entries removed?)\n"
    )


def test_cli_truncated_manifest_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = built(root)
    path.write_text(path.read_text()[:200])
    code, out, err = run_verify(root, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"ffhq-aging verify: {path}: is not JSON (")
    assert "truncated?" in err and len(err.splitlines()) == 1


def test_cli_without_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_verify(tmp_path, capsys)
    assert code == 2 and "no manifest at" in err


def test_empty_dataset_and_empty_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no dataset files"):
        build_manifest(tmp_path, 256, {})
    put(tmp_path, "splits_256/splits.csv")
    manifest = build_manifest(tmp_path, 256, {})
    manifest.update(files={}, count=0)
    with pytest.raises(ManifestError, match="m.json: lists no files"):
        parse_manifest(json.dumps(manifest), "m.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version=1), "has version 1; this ffhq-aging reads version 2"),
        (lambda m: m.update(count=m["count"] + 1), "lists 16 files but says 17"),
        (lambda m: m["files"].update({"/etc/passwd": m["files"]["splits_256/splits.csv"]}), ""),
        (lambda m: m["files"].update({"splits_256/../../x": {"size": 1, "sha256": "0" * 64}}), ""),
        (lambda m: m["files"].update({"splits_256/y": {"size": 1, "sha256": "xyz"}}), "is not"),
        (lambda m: m["excluded"].update({"5000": "x"}), "'excluded' is not an object"),
        (lambda m: m["excluded"].update({"05000": "x"}), "digest does not match"),
        (lambda m: m.update(resolution=1024), "digest does not match"),
    ],
)
def test_malformed_manifests_are_refused(root: Path, edit, message: str) -> None:
    manifest = build_manifest(root, 256, {})
    edit(manifest)
    if not message:
        message = "is not a path inside the dataset"
    with pytest.raises(ManifestError, match=f"^m.json: .*{message}"):
        parse_manifest(json.dumps(manifest), "m.json")


def test_manifest_of_another_resolution_is_refused(root: Path) -> None:
    path = root / "manifest_1024.json"
    write_manifest(build_manifest(root, 1024, {}), path)
    assert verify(root, path).ok
    with pytest.raises(ManifestError, match="is for resolution 1024, not 256"):
        verify(root, path, 256)


def test_excluded_chunk_is_noted_not_listed_nor_unexpected(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = built(root, {"05000": "labels_table.label_domains failed"})
    manifest = json.loads(path.read_text())
    assert sorted(manifest["files"]) == [rel for rel in COVERED if rel not in IN_CHUNK_05000]
    result = verify(root, path)
    assert result.ok and result.unexpected == []
    assert result.excluded == {"05000": "labels_table.label_domains failed"}
    code, out, _ = run_verify(root, capsys)
    assert code == 0
    assert (
        "excluded: chunk 05000 (labels_table.label_domains failed); its files are not verified"
        in out.splitlines()
    )
    assert out.splitlines()[-1] == (
        f"{len(COVERED) - len(IN_CHUNK_05000)} of {len(COVERED) - len(IN_CHUNK_05000)} files "
        "match manifest_256.json; 1 chunk(s) excluded"
    )

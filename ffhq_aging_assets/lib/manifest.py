"""A checksummed manifest of the dataset's files, and verification of a copy against it.

``<root>/manifest_{R}.json`` (version 2) lists every file :func:`dataset_files` finds for
resolution R, with its size and sha256, how many there are, a digest over the listing, and the
chunks left out because they failed their gates. The digest is not a signature: it catches a
manifest that was truncated or edited by hand (a file removed together with its entry), not one
rewritten on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffhq_aging_assets.lib.chunks import CHUNK_KEYS
from ffhq_aging_assets.lib.files import TEMP_MARKER, atomic_path
from ffhq_aging_assets.lib.layout import DatasetLayout

VERSION = 2


class ManifestError(ValueError):
    """A manifest that cannot be trusted; the one-line message names the manifest file."""


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in bounded blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(folder: Path, skipped: Iterable[str] = ()) -> Iterable[Path]:
    """Files under ``folder``, not entering hidden folders or the top-level ones in ``skipped``."""
    skipped = set(skipped)
    for dirpath, dirnames, filenames in os.walk(folder):
        top = dirpath == str(folder)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (top and d in skipped)]
        for name in filenames:
            yield Path(dirpath, name)


def dataset_files(root: Path, resolution: int, excluded_chunks: Iterable[str] = ()) -> list[Path]:
    """Every file of the dataset at ``resolution`` under ``root``, sorted by relative path.

    The one definition of what the dataset is, for the manifest and for its verification:
    everything under ``ffhq_aging{R}x{R}/`` (images, ``parsings/``, ``parsings_color/``,
    ``parsings_overlay/``, ``LICENSE.txt``), ``tables/image_metadata/``, every
    ``tables/<name>_{R}/`` folder and ``tables/<name>_{R}.parquet`` file, ``splits_{R}/`` and
    ``reports/*_{R}.png``. Never ``metadata/``, sources, models, caches, other resolutions'
    files, the manifests, hidden files or temporary files.

    Args:
        root: The dataset root.
        resolution: R.
        excluded_chunks: Chunk keys ("05000") whose files are left out: their folder under
            ``ffhq_aging{R}x{R}/`` and their ``tables/*/{chunk}.parquet`` and ``.json`` files.

    Raises:
        ValueError: for an excluded chunk that is not a chunk key.
    """
    excluded = set(excluded_chunks)
    unknown = sorted(excluded - set(CHUNK_KEYS))
    if unknown:
        raise ValueError(f"not chunk keys: {', '.join(map(repr, unknown))}")
    layout = DatasetLayout(root, resolution)
    suffix = layout.suffix
    tables = layout.tables_dir
    folders = [tables / "image_metadata", layout.splits_dir]
    files = list(_walk(layout.dataset_dir, skipped=excluded))
    if tables.is_dir():
        for entry in tables.iterdir():
            if entry.name.endswith(suffix) and entry.is_dir():
                folders.append(entry)
            elif entry.name.endswith(f"{suffix}.parquet"):
                files.append(entry)
    reports = layout.reports_dir
    if reports.is_dir():
        files += [p for p in reports.iterdir() if p.name.endswith(f"{suffix}.png")]
    skipped_tables = {f"{chunk}{ext}" for chunk in excluded for ext in (".parquet", ".json")}
    for folder in folders:
        files += [
            p for p in _walk(folder) if not (p.parent.parent == tables and p.name in skipped_tables)
        ]
    files = [
        p for p in files if not p.name.startswith(".") and TEMP_MARKER not in p.name and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _digest(resolution: int, excluded: Mapping[str, str], files: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {"resolution": resolution, "excluded": excluded, "files": files},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def build_manifest(
    root: Path, resolution: int, excluded: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The version-2 manifest of the dataset at ``resolution`` (see :func:`dataset_files`).

    Args:
        root: The dataset root.
        resolution: R.
        excluded: Chunks left out because they failed their gates, each with the reason; a
            copy's verification names them instead of checking their files.

    Raises:
        ManifestError: when there is no dataset file to list (a manifest of nothing would
            verify any copy).
        ValueError: for an excluded chunk that is not a chunk key.
    """
    excluded = dict(sorted((excluded or {}).items()))
    entries = {
        path.relative_to(root).as_posix(): {"size": path.stat().st_size, "sha256": sha256_of(path)}
        for path in dataset_files(root, resolution, excluded)
    }
    if not entries:
        raise ManifestError(f"{root}: no dataset files at resolution {resolution} to list")
    return {
        "version": VERSION,
        "resolution": resolution,
        "count": len(entries),
        "digest": _digest(resolution, excluded, entries),
        "excluded": excluded,
        "files": entries,
    }


def write_manifest(manifest: Mapping[str, Any], dest: Path) -> None:
    """Write a manifest through a temporary file."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _safe(rel: str) -> bool:
    """True for a relative POSIX path that stays inside the dataset root."""
    return (
        bool(rel)
        and not rel.startswith("/")
        and "\\" not in rel
        and "\x00" not in rel
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    )


def _is_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or set(entry) != {"size", "sha256"}:
        return False
    size, digest = entry["size"], entry["sha256"]
    return (
        isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        and isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    )


def parse_manifest(text: str, name: str = "manifest") -> dict[str, Any]:
    """Check a manifest's text and return it.

    Raises:
        ManifestError: naming ``name``, for text that is not JSON (a truncated file), an unknown
            version, malformed entries, a count or digest that does not match the entries, no
            files, or a path that leads out of the dataset (absolute, ``..``).
    """

    def refuse(why: str) -> ManifestError:
        return ManifestError(f"{name}: {why}")

    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise refuse(
            f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; truncated?)"
        ) from None
    if not isinstance(manifest, dict):
        raise refuse("is not a manifest (expected a JSON object)")
    version = manifest.get("version")
    if version != VERSION or isinstance(version, bool):
        raise refuse(
            f"has version {version!r}; this ffhq-aging reads version {VERSION} "
            "(materialize dataset_manifest again)"
        )
    resolution, count = manifest.get("resolution"), manifest.get("count")
    excluded, files = manifest.get("excluded"), manifest.get("files")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution <= 0:
        raise refuse(f"resolution {resolution!r} is not a positive integer")
    if not isinstance(files, dict):
        raise refuse("has no 'files' object")
    if not isinstance(excluded, dict) or not all(
        k in CHUNK_KEYS and isinstance(v, str) for k, v in excluded.items()
    ):
        raise refuse("'excluded' is not an object of chunk keys and reasons")
    for rel, entry in files.items():
        if not _safe(rel):
            raise refuse(f"entry {rel!r} is not a path inside the dataset")
        if not _is_entry(entry):
            raise refuse(f"entry {rel!r} is not {{size, sha256}}: {entry!r:.80}")
    if not files:
        raise refuse("lists no files")
    if count != len(files):
        raise refuse(f"lists {len(files)} files but says {count!r} (truncated or edited?)")
    if manifest.get("digest") != _digest(resolution, excluded, files):
        raise refuse("its digest does not match its entries (edited, or entries removed?)")
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check a manifest file (see :func:`parse_manifest`).

    Raises:
        ManifestError: naming the file, also when it cannot be read or is not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read ({exc})") from None
    return parse_manifest(text, str(path))


@dataclass(frozen=True)
class Verification:
    """What differs between a copy and its manifest."""

    checked: int
    missing: list[str]
    changed: list[str]
    unexpected: list[str]
    unreadable: list[str]
    excluded: dict[str, str]

    @property
    def ok(self) -> bool:
        """True when every listed file is present and unchanged and no other file is there.

        Excluded chunks do not make a copy fail: the manifest says they were left out.
        """
        return not (self.missing or self.changed or self.unexpected or self.unreadable)


def verify(root: Path, manifest_path: Path, resolution: int | None = None) -> Verification:
    """Check a copy of the dataset under ``root`` against the manifest at ``manifest_path``.

    Every listed file must be present with the same size and sha256, and every file
    :func:`dataset_files` finds (outside the excluded chunks) must be listed.

    Args:
        root: The dataset root of the copy.
        manifest_path: Its manifest.
        resolution: When given, the resolution the manifest must be for.

    Raises:
        ManifestError: for a manifest that cannot be trusted (see :func:`parse_manifest`), or
            one for another resolution.
    """
    manifest = read_manifest(manifest_path)
    if resolution is not None and manifest["resolution"] != resolution:
        raise ManifestError(
            f"{manifest_path}: is for resolution {manifest['resolution']}, not {resolution}"
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    missing, changed, unreadable = [], [], []
    for rel, entry in sorted(files.items()):
        path = root / rel
        try:
            if not path.is_file():
                missing.append(rel)
            elif path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
                changed.append(rel)
        except OSError:
            unreadable.append(rel)
    found = dataset_files(root, manifest["resolution"], manifest["excluded"])
    unexpected = [
        rel for rel in (p.relative_to(root).as_posix() for p in found) if rel not in files
    ]
    return Verification(len(files), missing, changed, unexpected, unreadable, manifest["excluded"])

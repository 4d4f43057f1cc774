"""A checksummed manifest of the dataset's files, and verification of a copy against it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ffhq_aging_assets.lib.files import TEMP_MARKER, atomic_path


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in bounded blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_files(root: Path, folders: Iterable[str]) -> list[Path]:
    """Every regular file under ``folders`` of ``root``, sorted, temporary files excluded."""
    files = []
    for name in folders:
        base = root / name
        if base.is_dir():
            files += [
                p
                for p in base.rglob("*")
                if p.is_file() and TEMP_MARKER not in p.name and not p.name.startswith(".")
            ]
    return sorted(files)


def build_manifest(root: Path, files: Iterable[Path]) -> dict:
    """``{"files": {relative path: {"size", "sha256"}}}`` for files under ``root``."""
    entries = {}
    for path in files:
        entries[path.relative_to(root).as_posix()] = {
            "size": path.stat().st_size,
            "sha256": sha256_of(path),
        }
    return {"version": 1, "files": entries}


def write_manifest(manifest: dict, dest: Path) -> None:
    """Write a manifest through a temporary file."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


@dataclass(frozen=True)
class Verification:
    """What differs between a copy and its manifest."""

    checked: int
    missing: list[str]
    changed: list[str]

    @property
    def ok(self) -> bool:
        """True when every file is present and unchanged."""
        return not self.missing and not self.changed


def verify(root: Path, manifest: dict) -> Verification:
    """Check every file the manifest lists under ``root``: present, same size, same sha256.

    Raises:
        ValueError: for a manifest entry with an unsafe path.
    """
    missing, changed = [], []
    for rel, entry in sorted(manifest["files"].items()):
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"manifest entry {rel!r} is not a path inside the dataset")
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
            changed.append(rel)
    return Verification(len(manifest["files"]), missing, changed)

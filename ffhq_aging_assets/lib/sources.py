"""Where files come from: anonymous Drive over HTTP or a local copy (an account: ``drive_api``).

Every source returns a verified file: size and md5 match what the metadata says, or it raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ffhq_aging_assets.lib.chunks import chunk_of
from ffhq_aging_assets.lib.download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    RetryPolicy,
    download,
    is_local,
    matches,
)


@dataclass(frozen=True)
class Fetched:
    """A verified local file; ``owned`` files were downloaded for us and may be deleted."""

    path: Path
    owned: bool
    fetched: bool


class Source(Protocol):
    """Anything that turns a :class:`FileSpec` into a verified local file."""

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Return a verified copy of ``spec``, downloading it to ``dest`` where needed."""
        ...


@dataclass
class DriveHttpSource:
    """Anonymous downloads through Drive's public endpoint (subject to its daily quota)."""

    policy: RetryPolicy = RetryPolicy()

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Download (or reuse a verified copy at ``dest``)."""
        result = download(spec, dest, policy=self.policy)
        owned = not is_local(spec.url)
        return Fetched(result.path, owned=owned, fetched=result.fetched)


@dataclass
class LocalFolderSource:
    """Files a user already has, e.g. FFHQ's ``in-the-wild-images/`` tree.

    A file named ``NNNNN.png`` is looked for as ``DIR/NNNNN.png``, ``DIR/CHUNK/NNNNN.png`` and
    ``DIR/in-the-wild-images/CHUNK/NNNNN.png``; other files as ``DIR/NAME``. A file that is not
    there goes to ``fallback`` (when given); one that is there but fails verification is an error,
    because a user's copy that differs from FFHQ is something they need to know about.
    """

    folder: Path
    fallback: Source | None = None

    def candidates(self, name: str) -> list[Path]:
        """Paths where ``name`` may lie in the folder."""
        paths = [self.folder / name]
        stem = Path(name).stem
        if name.endswith(".png") and stem.isdigit():
            chunk = chunk_of(int(stem))
            paths += [self.folder / chunk / name, self.folder / "in-the-wild-images" / chunk / name]
        return paths

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Use the local copy in place, verified; never owned (never deleted)."""
        name = dest.name
        for path in self.candidates(name):
            if path.is_file():
                ok, size, md5 = matches(path, spec)
                if not ok:
                    raise ChecksumError(
                        f"{spec.name}: local copy {path} is not the expected file: expected "
                        f"{spec.size} bytes, md5 {spec.md5}; got {size} bytes, md5 {md5 or '-'}"
                    )
                return Fetched(path, owned=False, fetched=False)
        if self.fallback is not None:
            return self.fallback.fetch(spec, dest)
        looked = ", ".join(str(p) for p in self.candidates(name))
        raise DownloadError(f"{spec.name}: not in the local folder (looked at {looked})")

"""Where files come from: anonymous Drive over HTTP, Drive with a Google account, or a local copy.

Every source returns a verified file: size and md5 match what the metadata says, or it raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
from ffhq_aging_assets.lib.drive import drive_file_id
from ffhq_aging_assets.lib.files import atomic_path

log = logging.getLogger(__name__)

DRIVE_READONLY_SCOPE = "https://www.googleapis.com/auth/drive.readonly"


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


class PyDriveSource:
    """Downloads with a Google account through pydrive2, free of the anonymous quota.

    The first use opens a browser (or, with ``cmd_auth``, prints a URL and reads the code
    from the terminal); the credentials are saved to ``credentials_file`` and reused after that.
    Credentials are never logged.
    """

    def __init__(
        self,
        client_secrets: Path,
        credentials_file: Path,
        *,
        cmd_auth: bool = False,
        policy: RetryPolicy | None = None,
        drive_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.client_secrets = client_secrets
        self.credentials_file = credentials_file
        self.cmd_auth = cmd_auth
        self.policy = policy or RetryPolicy()
        self._drive_factory = drive_factory or self._authenticate
        self._drive: Any = None
        self._lock = threading.Lock()

    def _authenticate(self) -> Any:
        from pydrive2.auth import GoogleAuth
        from pydrive2.drive import GoogleDrive

        if not self.client_secrets.is_file():
            raise DownloadError(
                f"--source pydrive needs an OAuth client file: {self.client_secrets} does not "
                "exist (create one in the Google Cloud console, type 'Desktop app')"
            )
        self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
        gauth = GoogleAuth(
            settings={
                "client_config_backend": "file",
                "client_config_file": str(self.client_secrets),
                "save_credentials": True,
                "save_credentials_backend": "file",
                "save_credentials_file": str(self.credentials_file),
                "get_refresh_token": True,
                "oauth_scope": [DRIVE_READONLY_SCOPE],
            }
        )
        if self.cmd_auth:
            gauth.CommandLineAuth()
        else:
            gauth.LocalWebserverAuth()
        return GoogleDrive(gauth)

    @property
    def drive(self) -> Any:
        """The authenticated drive client, created once per process."""
        with self._lock:
            if self._drive is None:
                self._drive = self._drive_factory()
            return self._drive

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Download a Drive file by id with the user's account; other URLs go over plain HTTP."""
        file_id = drive_file_id(spec.url)
        if file_id is None:
            return DriveHttpSource(self.policy).fetch(spec, dest)
        if dest.is_file() and matches(dest, spec)[0]:
            return Fetched(dest, owned=True, fetched=False)
        last: Exception | None = None
        for attempt in range(1, self.policy.attempts + 1):
            try:
                with atomic_path(dest) as tmp:
                    self.drive.CreateFile({"id": file_id}).GetContentFile(str(tmp))
                    ok, size, md5 = matches(tmp, spec)
                    if not ok:
                        raise ChecksumError(
                            f"{spec.name} from Drive file {file_id} is not the expected file: "
                            f"expected {spec.size} bytes, md5 {spec.md5}; got {size} bytes, "
                            f"md5 {md5 or '-'}"
                        )
                return Fetched(dest, owned=True, fetched=True)
            except DownloadError as exc:
                last = exc
            except Exception as exc:  # pydrive2 raises its own and googleapiclient's errors
                last = DownloadError(f"{spec.name}: Drive API error: {type(exc).__name__}: {exc}")
            if attempt < self.policy.attempts:
                wait = self.policy.delay(attempt)
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.1f s", spec.name, attempt, last, wait
                )
                time.sleep(wait)
        assert last is not None
        raise last

"""Configurable resources: where the dataset lives, where inputs come from, how to fetch them.

Each field's default is the instance's setting where one is made (``settings.py``).
"""

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ffhq_aging_assets.lib.download import FileSpec, RetryPolicy
from ffhq_aging_assets.lib.drive_api import DriveAccountSource
from ffhq_aging_assets.lib.google_account import Account
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.sources import DriveHttpSource, LocalFolderSource, Source
from ffhq_aging_assets.settings import apply_settings, instance_settings_path, pin_dataset

METADATA_URL = "https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA"
METADATA_SIZE = 267_793_842
METADATA_MD5 = "425ae20f06a4da1d4dc0f46d40ba5fd6"
LICENSE_URL = "https://drive.google.com/uc?id=1SHafCugkpMZzYhbgOz0zCuYiy-hb9lYX"
LICENSE_SIZE = 1_610
LICENSE_MD5 = "724f3831aaecd61a84fe98500079abc2"
WEIGHTS_URL = "https://drive.google.com/uc?id=1w2XjDywFr2NjuUWaLQDRktH7VwIfuNlY"
WEIGHTS_SIZE = 464_446_305
WEIGHTS_MD5 = "8e8345b1b9d95e02780f9bed76cc0293"
PUBLISHED_METADATA = FileSpec(METADATA_URL, "ffhq-dataset-v2.json", METADATA_SIZE, METADATA_MD5)
PUBLISHED_LICENSE = FileSpec(LICENSE_URL, "LICENSE.txt", LICENSE_SIZE, LICENSE_MD5)
PUBLISHED_WEIGHTS = FileSpec(WEIGHTS_URL, "deeplab_model.pth", WEIGHTS_SIZE, WEIGHTS_MD5)


def located(
    published: FileSpec, url: str, md5: str | None, size: int | None, prefix: str = ""
) -> tuple[FileSpec, str | None]:
    """The file at ``url`` with the checksums that apply to it, and a note for the step's log.

    The published md5 and size describe the published file only. Left at those values for
    another URL (the launchpad shows them as the defaults and a user edits only the URL), they
    would fail a good copy after its whole download; so there they do not apply, as when
    ``--weights`` is given alone. Checksums set to other values always apply. The note says
    when a file is accepted unverified or published checksums were dropped; ``prefix`` is the
    fields' (``metadata_``).
    """
    dropped: list[str] = []
    if url != published.url:
        if md5 is not None and published.md5 is not None and md5.lower() == published.md5:
            md5 = None
            dropped.append(f"{prefix}md5")
        if size is not None and size == published.size:
            size = None
            dropped.append(f"{prefix}size")
    spec = FileSpec(url, published.name, size, md5)
    if dropped:
        verb = "do" if len(dropped) > 1 else "does"
        why = f"the published {' and '.join(dropped)} {verb} not apply to another file"
    else:
        why = f"{prefix}md5 and {prefix}size are none"
    if md5 is None and size is None:
        note = f"{published.name} from {url} is accepted unverified: {why}"
        return spec, f"{note} (set {prefix}md5 to verify it)"
    if dropped:
        kept = "md5" if md5 is not None else "size"
        return spec, f"{published.name} from {url} is checked by its {kept} only: {why}"
    return spec, None


def _log_notes(context: dg.InitResourceContext, *notes: str | None) -> None:
    for note in notes:
        if note and context.log is not None:
            context.log.warning(note)


class DatasetResource(dg.ConfigurableResource):
    """Where the dataset is built, at what resolution, and how many images per chunk."""

    root: str = Field(default="data", description="Folder that receives every output.")
    resolution: int = Field(default=256, ge=64, le=1024, description="Output size R (R x R).")
    limit: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Only the first N images of each chunk (the 2020 scripts' --debug was 50); "
        "0 means the whole chunk.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Refuse a root or resolution other than the instance's; tie an untied instance.

        Raises:
            SettingsError: the instance describes another root or resolution.
        """
        instance = context.instance
        if instance is None or instance.is_ephemeral:
            return  # a run on no persistent instance (a test's, a script's) describes nothing
        path = instance_settings_path(instance.root_directory)
        said = pin_dataset(self.root_path, self.resolution, path)
        if said is not None and context.log is not None:
            context.log.info(said)

    @property
    def root_path(self) -> Path:
        """The root folder, absolute."""
        return Path(self.root).expanduser().resolve()

    @property
    def layout(self) -> DatasetLayout:
        """Every path of the dataset under this root, at this resolution."""
        return DatasetLayout(self.root_path, self.resolution)

    @property
    def per_chunk_limit(self) -> int | None:
        """The limit as an optional count."""
        return self.limit or None


apply_settings("dataset", DatasetResource)


class MetadataLocations(dg.ConfigurableResource):
    """Where the FFHQ metadata JSON and LICENSE come from (URL or local path) and their checksums.

    The defaults are the published files. For another URL or path the published md5 and size,
    left as they are, do not apply: the file is accepted unverified and the step's log says so.
    Set other checksums to verify it, or none to accept any file.
    """

    metadata_url: str = Field(
        default=METADATA_URL, description="URL or local path of ffhq-dataset-v2.json."
    )
    metadata_md5: str | None = Field(
        default=METADATA_MD5,
        description="md5 of the metadata JSON; none accepts any. The published md5 applies "
        "only to the published URL.",
    )
    metadata_size: int | None = Field(
        default=METADATA_SIZE,
        ge=0,
        description="Size of the metadata JSON (bytes); none: any. The published size applies "
        "only to the published URL.",
    )
    license_url: str = Field(
        default=LICENSE_URL, description="URL or local path of FFHQ's LICENSE.txt."
    )
    license_md5: str | None = Field(
        default=LICENSE_MD5,
        description="md5 of LICENSE.txt; none accepts any. The published md5 applies only to "
        "the published URL.",
    )
    license_size: int | None = Field(
        default=LICENSE_SIZE,
        ge=0,
        description="Size of LICENSE.txt (bytes); none: any. The published size applies only "
        "to the published URL.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Say once per step which published checksums do not apply to the files configured."""
        _log_notes(context, self._metadata[1], self._license[1])

    @property
    def metadata(self) -> FileSpec:
        """The metadata JSON, with the checksums that apply to it."""
        return self._metadata[0]

    @property
    def license(self) -> FileSpec:
        """FFHQ's LICENSE.txt, with the checksums that apply to it."""
        return self._license[0]

    @property
    def _metadata(self) -> tuple[FileSpec, str | None]:
        return located(
            PUBLISHED_METADATA,
            self.metadata_url,
            self.metadata_md5,
            self.metadata_size,
            "metadata_",
        )

    @property
    def _license(self) -> tuple[FileSpec, str | None]:
        return located(
            PUBLISHED_LICENSE, self.license_url, self.license_md5, self.license_size, "license_"
        )


apply_settings("metadata_locations", MetadataLocations)


class FileSourceResource(dg.ConfigurableResource):
    """How files are fetched: anonymous Drive, Drive with a Google account, or a local folder.

    `drive` downloads anonymously (Drive's daily quota applies); `pydrive` downloads through the
    Drive API as the account signed in with `ffhq-aging login` (or as `service_account`); `local`
    uses files already in `local_dir` and falls back to anonymous Drive for the rest unless
    `local_only` is set. A step never signs in interactively: without usable
    credentials it fails at once, saying what to run.
    """

    kind: Literal["drive", "pydrive", "local"] = Field(
        default="drive",
        description="drive: anonymous Google Drive; pydrive: the Drive API with a Google "
        "account; local: the files in local_dir.",
    )
    local_dir: str | None = Field(
        default=None, description="local: the folder that holds FFHQ's files."
    )
    local_only: bool = Field(
        default=False,
        description="local: never fall back to Drive for files the folder lacks.",
    )
    client_secrets: str = Field(
        default="client_secrets.json",
        description="pydrive: the OAuth client file ('Desktop app') of `ffhq-aging login` "
        "(default: $FFHQ_CLIENT_SECRETS when set).",
    )
    credentials_file: str = Field(
        default="~/.config/ffhq-aging/drive-credentials.json",
        description="pydrive: the sign-in `ffhq-aging login` saved, owner-only (default: "
        "$FFHQ_DRIVE_CREDENTIALS when set).",
    )
    service_account: str | None = Field(
        default=None,
        description="pydrive: a service account's JSON key file, used instead of the saved "
        "sign-in on headless hosts and workers (default: $FFHQ_SERVICE_ACCOUNT when set). "
        "Only its path is kept in run config.",
    )
    copy_on_quota: bool = Field(
        default=False,
        description="pydrive: when a file's download quota is exceeded, copy it into the "
        "account's Drive, download the copy and delete it (needs `ffhq-aging login "
        "--copy-on-quota`).",
    )
    api_endpoint: str | None = Field(
        default=None,
        description="pydrive: the Drive API v2 base URL, for a proxy or a private endpoint; "
        "none: Google's (default: $FFHQ_DRIVE_API when set).",
    )
    num_attempts: int = Field(default=5, ge=1, le=50, description="Attempts per file.")
    num_threads: int = Field(default=8, ge=1, le=64, description="Download threads per step.")
    backoff: float = Field(default=2.0, ge=0, description="First wait between attempts (s).")
    connect_timeout: float = Field(
        default=15.0, gt=0, description="Longest wait for a connection to open (s)."
    )
    read_timeout: float = Field(
        default=60.0, gt=0, description="Longest silence tolerated while a server answers (s)."
    )
    min_bytes_per_second: float = Field(
        default=50_000.0,
        ge=1,
        description=(
            "Slowest acceptable average download rate (bytes/s): a file fails once, across all "
            "its attempts, more than deadline_grace has passed beyond what arrived at this "
            "rate (so at most deadline_grace plus its size at this rate)."
        ),
    )
    deadline_grace: float = Field(
        default=120.0,
        ge=1,
        description=(
            "Seconds each file may take beyond its bytes received at min_bytes_per_second: what "
            "a server that never answers, or trickles, costs before the file fails."
        ),
    )

    _source: Source | None = PrivateAttr(default=None)

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(
            attempts=self.num_attempts,
            backoff=self.backoff,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            min_bytes_per_second=self.min_bytes_per_second,
            deadline_grace=self.deadline_grace,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Build the source once per step (pydrive signs in lazily, on first use)."""
        self._source = self.build()

    def build(self) -> Source:
        """The source these settings describe."""
        drive = DriveHttpSource(self.policy)
        if self.kind == "drive":
            return drive
        if self.kind == "pydrive":
            return DriveAccountSource(self.account, self.policy, fallback=drive)
        if not self.local_dir:
            raise ValueError("file source 'local' needs local_dir: the folder with your FFHQ files")
        fallback = None if self.local_only else drive
        return LocalFolderSource(Path(self.local_dir).expanduser(), fallback)

    @property
    def account(self) -> Account:
        """The Google identity and files the ``pydrive`` source uses."""
        return Account(
            client_secrets=Path(self.client_secrets).expanduser(),
            credentials_file=Path(self.credentials_file).expanduser(),
            service_account=(
                Path(self.service_account).expanduser() if self.service_account else None
            ),
            copy_on_quota=self.copy_on_quota,
            api_endpoint=self.api_endpoint,
            timeout=self.read_timeout,
        )

    @property
    def source(self) -> Source:
        """The source built for this step."""
        if self._source is None:
            self._source = self.build()
        return self._source

    def events(self) -> dict[str, int] | None:
        """What the Drive API made this step's account downloads do, by cause; None otherwise."""
        source = self._source
        return dict(source.counts) if isinstance(source, DriveAccountSource) else None


apply_settings("file_source", FileSourceResource)


class DeepLabWeights(dg.ConfigurableResource):
    """The face-parsing checkpoint: URL or local path, and its checksums.

    Defaults to the published `deeplab_model.pth`; fetched once through the configured file
    source into `<root>/models/`, verified, and reused. For another URL or path the published
    md5 and size, left as they are, do not apply: the file is accepted unverified and the
    step's log says so. Set other checksums to verify it.
    """

    url: str = Field(
        default=WEIGHTS_URL,
        description="URL or local path of the face-parsing checkpoint deeplab_model.pth.",
    )
    md5: str | None = Field(
        default=WEIGHTS_MD5,
        description="md5 of the checkpoint; none accepts any. The published md5 applies only "
        "to the published URL.",
    )
    size: int | None = Field(
        default=WEIGHTS_SIZE,
        ge=0,
        description="Size of the checkpoint (bytes); none: any. The published size applies "
        "only to the published URL.",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Say once per step when the published checksums do not apply to the file configured."""
        _log_notes(context, self._located[1])

    @property
    def spec(self) -> FileSpec:
        """The checkpoint file, with the checksums that apply to it."""
        return self._located[0]

    @property
    def _located(self) -> tuple[FileSpec, str | None]:
        return located(PUBLISHED_WEIGHTS, self.url, self.md5, self.size)


apply_settings("deeplab_weights", DeepLabWeights)


LABELS_URL = (
    "https://raw.githubusercontent.com/royorel/FFHQ-Aging-Dataset/master/ffhq_aging_labels.csv"
)


class LabelsLocation(dg.ConfigurableResource):
    """Where the FFHQ-Aging labels CSV comes from (URL or local path), fetched once and cached.

    The CSV has no published checksum; give one to pin a copy.
    """

    url: str = Field(default=LABELS_URL, description="URL or local path of ffhq_aging_labels.csv.")
    md5: str | None = Field(default=None, description="md5 of the CSV, to pin a copy.")
    size: int | None = Field(
        default=None, ge=0, description="Size of the CSV (bytes), to pin a copy."
    )

    @property
    def spec(self) -> FileSpec:
        """The labels CSV."""
        return FileSpec(self.url, "ffhq_aging_labels.csv", self.size, self.md5)


apply_settings("labels_location", LabelsLocation)

"""Where everything lies under a dataset root: the one place that joins the dataset's paths.

The dataset folder is the one the FFHQ-Aging training code reads (``ffhq_aging{R}x{R}/{chunk}/``
with ``parsings/``); everything else (shared inputs, tables, splits, reports, the manifest)
sits beside it under the same root. R is the output resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffhq_aging_assets.lib.chunks import chunk_of, image_name

LABELS_CSV = "ffhq_aging_labels.csv"


@dataclass(frozen=True)
class DatasetLayout:
    """The paths of one dataset: ``root`` (absolute) at ``resolution`` R."""

    root: Path
    resolution: int

    @property
    def suffix(self) -> str:
        """``_{R}``: what names a resolution's tables, splits, report and manifest."""
        return f"_{self.resolution}"

    # Shared inputs, fetched once for every chunk.
    @property
    def metadata_dir(self) -> Path:
        """The metadata JSON, its per-chunk tables, FFHQ's LICENSE and the labels CSV."""
        return self.root / "metadata"

    @property
    def metadata_json(self) -> Path:
        """FFHQ's ``ffhq-dataset-v2.json``."""
        return self.metadata_dir / "ffhq-dataset-v2.json"

    @property
    def parsed_record(self) -> Path:
        """What the one pass over the JSON found, per chunk."""
        return self.metadata_dir / "ffhq-dataset-v2.parsed.json"

    def metadata_chunks_dir(self, md5: str) -> Path:
        """The per-chunk tables of the JSON with this md5."""
        return self.metadata_dir / f"chunks-{md5}"

    @property
    def license_source(self) -> Path:
        """FFHQ's LICENSE as fetched."""
        return self.metadata_dir / "LICENSE.txt"

    @property
    def labels_csv(self) -> Path:
        """The FFHQ-Aging labels CSV."""
        return self.metadata_dir / LABELS_CSV

    @property
    def checkpoint(self) -> Path:
        """The segmentation checkpoint."""
        return self.root / "models" / "deeplab_model.pth"

    @property
    def compile_cache(self) -> Path:
        """Inductor's compiled kernels, kept for later steps."""
        return self.root / "cache" / "torchinductor"

    @property
    def aot_packages(self) -> Path:
        """Ahead-of-time compiled segmentation models, one file per device type and shape."""
        return self.root / "cache" / "aot"

    # The dataset itself.
    @property
    def dataset_dir(self) -> Path:
        """``ffhq_aging{R}x{R}``: the folder the training code reads."""
        return self.root / f"ffhq_aging{self.resolution}x{self.resolution}"

    @property
    def license(self) -> Path:
        """FFHQ's LICENSE beside the images (the dataset is distributed under it)."""
        return self.dataset_dir / "LICENSE.txt"

    def chunk_dir(self, chunk: str) -> Path:
        """The aligned faces of one chunk."""
        return self.dataset_dir / chunk

    def image(self, number: int) -> Path:
        """One aligned face."""
        return self.chunk_dir(chunk_of(number)) / image_name(number)

    def parsings_dir(self, chunk: str) -> Path:
        """The masks of one chunk."""
        return self.chunk_dir(chunk) / "parsings"

    def mask(self, number: int) -> Path:
        """One mask."""
        return self.parsings_dir(chunk_of(number)) / image_name(number)

    def colour_masks_dir(self, chunk: str) -> Path:
        """Colour renderings of one chunk's masks (``ffhq-aging colorize``)."""
        return self.chunk_dir(chunk) / "parsings_color"

    def overlay_masks_dir(self, chunk: str) -> Path:
        """Colour masks blended over one chunk's faces (``ffhq-aging colorize --overlay``)."""
        return self.chunk_dir(chunk) / "parsings_overlay"

    def sources_dir(self, chunk: str) -> Path:
        """Downloaded in-the-wild photos of a chunk waiting to be aligned."""
        return self.root / "sources" / "in-the-wild-images" / chunk

    # Tables, and the products over all chunks.
    @property
    def tables_dir(self) -> Path:
        """Every table."""
        return self.root / "tables"

    def table(self, name: str, chunk: str, ext: str = "parquet") -> Path:
        """One chunk's file of the table ``name``."""
        return self.tables_dir / name / f"{chunk}.{ext}"

    def image_metadata_table(self, chunk: str) -> Path:
        """One row per image of the chunk (resolution-free)."""
        return self.table("image_metadata", chunk)

    def alignments_table(self, chunk: str) -> Path:
        """Crop geometry per image at R."""
        return self.table(f"alignments{self.suffix}", chunk)

    def mask_stats_table(self, chunk: str) -> Path:
        """Class fractions per mask."""
        return self.table(f"mask_stats{self.suffix}", chunk)

    def precision_record(self, chunk: str) -> Path:
        """The precision of a chunk's masks, where some were computed in bf16."""
        return self.table(f"mask_fidelity{self.suffix}", chunk, "json")

    def labels_table(self, chunk: str) -> Path:
        """A chunk's labels joined with its metadata and mask fractions."""
        return self.table(f"labels{self.suffix}", chunk)

    @property
    def combined_labels(self) -> Path:
        """Every included chunk's labels in one table."""
        return self.tables_dir / f"ffhq_aging_labels{self.suffix}.parquet"

    @property
    def splits_dir(self) -> Path:
        """Training splits: lists, and the optional folder layout."""
        return self.root / f"splits{self.suffix}"

    @property
    def splits_table(self) -> Path:
        """Every included image's split, gender, age group and whether it is kept."""
        return self.splits_dir / "splits.csv"

    def split_list(self, group: str) -> Path:
        """The kept images of a group such as ``males/train20-29``."""
        return self.splits_dir / f"{group}.txt"

    @property
    def split_folders(self) -> Path:
        """The optional folder layout the training code reads."""
        return self.splits_dir / "layout"

    def split_file(self, group: str, number: int, mask: bool = False) -> Path:
        """An image's (or its mask's) place in the folder layout of its group."""
        folder = self.split_folders / group
        return (folder / "parsings" if mask else folder) / image_name(number)

    @property
    def reports_dir(self) -> Path:
        """Pictures of the dataset (``*_{R}.png``)."""
        return self.root / "reports"

    @property
    def age_report(self) -> Path:
        """The age-by-gender histogram."""
        return self.reports_dir / f"age_distribution{self.suffix}.png"

    @property
    def manifest(self) -> Path:
        """Size and sha256 of every output file."""
        return self.root / f"manifest{self.suffix}.json"

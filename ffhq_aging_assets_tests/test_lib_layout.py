from pathlib import Path

from ffhq_aging_assets.lib.layout import DatasetLayout


def test_paths_are_the_documented_tree() -> None:
    root = Path("/data")
    layout = DatasetLayout(root, 256)
    expected = {
        layout.metadata_json: "metadata/ffhq-dataset-v2.json",
        layout.parsed_record: "metadata/ffhq-dataset-v2.parsed.json",
        layout.metadata_chunks_dir("abc"): "metadata/chunks-abc",
        layout.license_source: "metadata/LICENSE.txt",
        layout.labels_csv: "metadata/ffhq_aging_labels.csv",
        layout.checkpoint: "models/deeplab_model.pth",
        layout.compile_cache: "cache/torchinductor",
        layout.license: "ffhq_aging256x256/LICENSE.txt",
        layout.image(1042): "ffhq_aging256x256/01000/01042.png",
        layout.mask(1042): "ffhq_aging256x256/01000/parsings/01042.png",
        layout.colour_masks_dir("01000"): "ffhq_aging256x256/01000/parsings_color",
        layout.sources_dir("01000"): "sources/in-the-wild-images/01000",
        layout.image_metadata_table("01000"): "tables/image_metadata/01000.parquet",
        layout.alignments_table("01000"): "tables/alignments_256/01000.parquet",
        layout.mask_stats_table("01000"): "tables/mask_stats_256/01000.parquet",
        layout.precision_record("01000"): "tables/mask_fidelity_256/01000.json",
        layout.labels_table("01000"): "tables/labels_256/01000.parquet",
        layout.combined_labels: "tables/ffhq_aging_labels_256.parquet",
        layout.splits_table: "splits_256/splits.csv",
        layout.split_list("males/train20-29"): "splits_256/males/train20-29.txt",
        layout.split_file("males/train20-29", 7, mask=True): (
            "splits_256/layout/males/train20-29/parsings/00007.png"
        ),
        layout.age_report: "reports/age_distribution_256.png",
        layout.manifest: "manifest_256.json",
    }
    for path, rel in expected.items():
        assert path == root / rel


def test_readme_documents_every_output_folder() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for documented in (
        "<root>/ffhq_aging{R}x{R}/{chunk}/parsings/{NNNNN}.png",
        "<root>/tables/mask_stats_{R}/{chunk}.parquet",
        "<root>/splits_{R}/splits.csv",
        "<root>/manifest_{R}.json",
        "<root>/models/deeplab_model.pth",
    ):
        assert documented in readme, documented

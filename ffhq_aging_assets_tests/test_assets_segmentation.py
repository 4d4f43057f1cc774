from pathlib import Path

import dagster as dg
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pydantic
import pytest
import torch

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.assets.segmentation import (
    SegmentConfig,
    deeplab_checkpoint,
    segmentation_masks,
)
from ffhq_aging_assets.automation import NIGHTLY_MISSING
from ffhq_aging_assets.checks import MASK_GATES, MASK_WARNINGS
from ffhq_aging_assets.lib.images import is_valid_image
from ffhq_aging_assets.lib.segment_model import batch_size_for
from ffhq_aging_assets.resources import (
    DatasetResource,
    DeepLabWeights,
    FileSourceResource,
    MetadataLocations,
)
from ffhq_aging_assets_tests.fixtures import serve_synthetic

ASSETS = [
    ffhq_metadata_json,
    deeplab_checkpoint,
    image_metadata,
    alignments,
    aligned_images,
    segmentation_masks,
]


@pytest.mark.slow
def test_masks_for_a_chunk_on_cpu(drive, tmp_path: Path, seeded_checkpoint: Path) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    served = serve_synthetic(drive, folder, count=30, photos=range(4))
    root = tmp_path / "root"
    resources = {
        "dataset": DatasetResource(root=str(root), limit=4, resolution=64),
        "metadata_locations": MetadataLocations(**served.locations()),
        "file_source": FileSourceResource(num_attempts=2, backoff=0.01),
        "deeplab_weights": DeepLabWeights(url=str(seeded_checkpoint), md5=None, size=None),
    }
    config = dg.RunConfig(
        ops={
            "aligned_images": {"config": {"mode": "fast", "num_processes": 1}},
            "segmentation_masks": {"config": {"device": "cpu", "batch_size": 3}},
        }
    )
    result = dg.materialize(ASSETS, partition_key="00000", resources=resources, run_config=config)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in ("mask_count", "mask_format", "mask_classes", "mask_fidelity"):
        assert checks[name].passed, checks[name].description
    assert "fp32" in checks["mask_fidelity"].description
    assert checks["mask_plausible"].severity == dg.AssetCheckSeverity.WARN
    parsings = root / "ffhq_aging64x64" / "00000" / "parsings"
    masks = sorted(parsings.glob("*.png"))
    assert [p.name for p in masks] == [f"{n:05d}.png" for n in range(4)]
    for path in masks:
        assert is_valid_image(path, 64, "L")
        assert np.asarray(PIL.Image.open(path)).max() <= 18
    stats = pq.read_table(root / "tables" / "mask_stats_64" / "00000.parquet")
    fractions = np.stack(
        [stats.column(c).to_numpy() for c in stats.column_names if c.startswith("frac_")], 1
    )
    assert np.allclose(fractions.sum(axis=1), 1.0, atol=1e-5)
    materialized = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    meta = materialized["segmentation_masks"]
    assert meta["device"].value == "cpu" and meta["computed"].value == 4
    assert meta["preview"].value.startswith("![masks](data:image/jpeg;base64,")
    assert meta["precision_record"].value == {"precision": "fp32", "agreement": None, "sampled": 0}
    assert "precision_record_path" not in meta  # every mask fp32: no record file
    declared = materialized["mask_statistics"]
    assert declared["dagster/row_count"].value == 4
    assert declared["path"].value.endswith("mask_stats_64/00000.parquet")
    columns = [c.name for c in declared["dagster/column_schema"].schema.columns]
    assert columns == stats.column_names

    # A corrupt mask is redone; valid ones are kept.
    masks[1].write_bytes(b"broken")
    kept = masks[0].stat().st_mtime_ns
    again = dg.materialize(ASSETS, partition_key="00000", resources=resources, run_config=config)
    assert again.success
    meta = {
        m.asset_key.path[-1]: m.materialization.metadata
        for m in again.get_asset_materialization_events()
    }["segmentation_masks"]
    assert meta["computed"].value == 1
    assert masks[0].stat().st_mtime_ns == kept and is_valid_image(masks[1], 64, "L")

    # Masks an earlier bf16 run wrote with poor agreement keep failing the gate until redone.
    record = root / "tables" / "mask_fidelity_64" / "00000.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"precision": "bf16", "agreement": 0.95, "sampled": 8}')

    def fidelity_gate(raise_on_error: bool = False) -> dg.AssetCheckEvaluation:
        run = dg.materialize(
            ASSETS,
            partition_key="00000",
            resources=resources,
            run_config=config,
            raise_on_error=raise_on_error,
        )
        events = run.get_asset_materialization_events()
        recorded.update({m.asset_key.path[-1]: m.materialization.metadata for m in events})
        return {e.check_name: e for e in run.get_asset_check_evaluations()}["mask_fidelity"]

    recorded: dict = {}
    gate = fidelity_gate()
    assert not gate.passed and "95.00%" in gate.description and "precision fp32" in gate.description
    # The step still declares what it wrote, the record included, before the gate fails it.
    meta = recorded["segmentation_masks"]
    assert meta["precision_record"].value == {"precision": "bf16", "agreement": 0.95, "sampled": 8}
    assert meta["precision_record_path"].value == str(record)
    assert "mask_statistics" in recorded
    masks[2].unlink()  # one mask recomputed in fp32 does not make the bf16 ones published
    assert not fidelity_gate().passed
    for path in masks:
        path.unlink()
    assert fidelity_gate(raise_on_error=True).passed  # and the run succeeds
    assert not record.exists()


def test_segmentation_step_routes_to_gpu_workers() -> None:
    node = segmentation_masks.op
    assert node.pool == "gpu"
    assert node.tags["dagster-celery/queue"] == "gpu"


def test_mask_statistics_are_a_declared_output_of_the_same_step(tmp_path: Path) -> None:
    defs = dg.Definitions(
        assets=[segmentation_masks], resources={"dataset": DatasetResource(root=str(tmp_path))}
    )
    graph = defs.resolve_asset_graph()
    masks = graph.get(dg.AssetKey("segmentation_masks"))
    stats = graph.get(dg.AssetKey("mask_statistics"))
    assert {p.to_user_string() for p in stats.parent_keys} == {"segmentation_masks"}
    assert {p.to_user_string() for p in masks.parent_keys} == {
        "aligned_images",
        "deeplab_checkpoint",
    }
    assert stats.kinds == {"parquet"} and masks.kinds == {"pytorch"}
    for node in (masks, stats):
        assert node.group_name == "segmentation" and node.is_partitioned
        assert node.automation_condition == NIGHTLY_MISSING
        assert node.pools == {"gpu"}
    checks = {
        graph.get_check_spec(k).name: graph.get_check_spec(k).blocking for k in masks.check_keys
    }
    assert checks == {**dict.fromkeys(MASK_GATES, True), **dict.fromkeys(MASK_WARNINGS, False)}
    assert not stats.check_keys


def test_segment_config_states_the_batch_rule_and_the_precisions() -> None:
    # The description is the only text of the rule (the CLI's help is made from it).
    cpu, cuda = batch_size_for(torch.device("cpu"), 0), batch_size_for(torch.device("cuda"), 0)
    description = SegmentConfig.model_fields["batch_size"].description
    assert description == f"0: {cuda} on CUDA, {cpu} on CPU."
    assert SegmentConfig(precision="bf16").precision == "bf16"
    with pytest.raises(pydantic.ValidationError, match="precision"):
        SegmentConfig(precision="fp16")


def test_truncated_checkpoint_is_moved_aside_and_a_good_copy_used(
    tmp_path: Path, seeded_checkpoint: Path
) -> None:
    cut = tmp_path / "cut.pth"
    data = seeded_checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    root = tmp_path / "root"

    def materialize(weights: Path) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [deeplab_checkpoint],
            raise_on_error=False,
            resources={
                "dataset": DatasetResource(root=str(root)),
                "file_source": FileSourceResource(),
                "deeplab_weights": DeepLabWeights(url=str(weights), md5=None, size=None),
            },
        )

    result = materialize(cut)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.cause.message
    assert str(cut) in message and "moved aside to" in message
    assert "weights_only" not in message
    [aside] = (root / "models").glob("deeplab_model.pth.bad-*")
    assert aside.stat().st_size == len(data) // 3
    result = materialize(seeded_checkpoint)
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["parameters"].value > 50_000_000
    assert (root / "models/deeplab_model.pth").stat().st_size == len(data)

import datetime

import dagster as dg

from ffhq_aging_assets.automation import NIGHTLY_MISSING, nightly_backfill
from ffhq_aging_assets.definitions import defs


def test_nightly_condition_requests_exactly_the_missing_chunks(dagster_home) -> None:
    instance = dg.DagsterInstance.get()
    for chunk in ("00000", "01000"):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="image_metadata", partition=chunk)
        )
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="ffhq_metadata_json"))
    selection = dg.AssetSelection.assets("image_metadata")
    evening = datetime.datetime(2026, 11, 28, 20, 0, tzinfo=datetime.UTC)
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, evaluation_time=evening
    )
    assert first.total_requested == 0  # no nightly tick passed since the last evaluation
    night = evening + datetime.timedelta(hours=7)
    second = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=selection,
        evaluation_time=night,
        cursor=first.cursor,
    )
    requested = second.get_requested_partitions(dg.AssetKey("image_metadata"))
    assert requested == {f"{n:05d}" for n in range(2000, 70000, 1000)}
    third = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=selection,
        evaluation_time=night + datetime.timedelta(hours=1),
        cursor=second.cursor,
    )
    assert third.total_requested == 0  # once per tick


def test_sensor_is_off_unless_configured() -> None:
    assert nightly_backfill.default_status == dg.DefaultSensorStatus.STOPPED
    for key in (
        "ffhq_metadata_json",
        "image_metadata",
        "alignments",
        "aligned_images",
        "segmentation_masks",
        "labels_table",
    ):
        spec = next(s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey(key))
        assert spec.automation_condition == NIGHTLY_MISSING

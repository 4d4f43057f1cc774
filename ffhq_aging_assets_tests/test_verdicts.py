from pathlib import Path

import dagster as dg

from ffhq_aging_assets.checks import BLOCKING_GATES
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.verdicts import built_chunks, excluded_text, gate_verdicts, missing_text


def stand_ins(failing: set[str]) -> list[dg.AssetsDefinition]:
    """One asset per gated asset, under its key, whose checks fail exactly for ``failing``."""

    def stand_in(asset: str, names: list[str]) -> dg.AssetsDefinition:
        @dg.asset(
            name=asset,
            partitions_def=chunk_partitions,
            check_specs=[dg.AssetCheckSpec(name, asset=asset) for name in names],
        )
        def _stand_in() -> dg.MaterializeResult:
            return dg.MaterializeResult(
                check_results=[
                    dg.AssetCheckResult(check_name=name, passed=f"{asset}.{name}" not in failing)
                    for name in names
                ]
            )

        return _stand_in

    return [stand_in(asset, list(names)) for asset, names in BLOCKING_GATES.items()]


def test_latest_evaluations_decide_and_unchecked_chunks_stay_out() -> None:
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(stand_ins(set()), partition_key="00000", instance=instance).success
    assert dg.materialize(
        stand_ins({"labels_table.label_domains"}), partition_key="01000", instance=instance
    ).success
    verdicts = gate_verdicts(instance, ["00000", "01000", "02000"])
    assert set(verdicts) == {"01000", "02000"}
    assert verdicts["01000"] == "failed labels_table.label_domains"
    assert verdicts["02000"].startswith("never checked on this instance (image_metadata.")
    assert verdicts["02000"].endswith(" ...)")

    # A later run whose checks pass lets the chunk in: only the newest evaluation counts.
    assert dg.materialize(stand_ins(set()), partition_key="01000", instance=instance).success
    assert "01000" not in gate_verdicts(instance, ["01000"])


def test_built_chunks_are_those_with_a_labels_table(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path, 64)
    for chunk in ("03000", "01000"):
        layout.labels_table(chunk).parent.mkdir(parents=True, exist_ok=True)
        layout.labels_table(chunk).write_bytes(b"")
    assert built_chunks(layout) == ["01000", "03000"]


def test_texts() -> None:
    assert excluded_text({}) == "none"
    assert excluded_text({"05000": "failed x", "01000": "never checked"}) == (
        "- 01000: never checked\n- 05000: failed x"
    )
    assert missing_text([]) == "none"
    assert missing_text(list(CHUNK_KEYS)) == "all 70"
    assert missing_text(list(CHUNK_KEYS[:13])) == ", ".join(CHUNK_KEYS[:12]) + " and 1 more"

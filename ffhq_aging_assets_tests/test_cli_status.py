import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.assets.alignment import alignments
from ffhq_aging_assets.assets.images import aligned_images
from ffhq_aging_assets.assets.labels import ffhq_aging_labels_csv, labels_table
from ffhq_aging_assets.assets.metadata import ffhq_metadata_json, image_metadata
from ffhq_aging_assets.assets.products import (
    age_distribution,
    dataset_manifest,
    ffhq_aging_labels,
    training_splits,
)
from ffhq_aging_assets.assets.segmentation import deeplab_checkpoint, segmentation_masks
from ffhq_aging_assets.checks import BLOCKING_GATES
from ffhq_aging_assets.cli import main
from ffhq_aging_assets.cli_status import excluded_from_text
from ffhq_aging_assets.definitions import defs
from ffhq_aging_assets.jobs import CHUNK_ASSETS, PRODUCTS, SHARED_INPUTS
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.verdicts import excluded_text, gate_verdicts
from ffhq_aging_assets_tests.fixtures import materialize, serve_synthetic, world

GRAPH = defs.resolve_asset_graph()
SHARED = [ffhq_metadata_json, ffhq_aging_labels_csv, deeplab_checkpoint]
CHUNK = [image_metadata, alignments, aligned_images, segmentation_masks, labels_table]
PRODUCT_ASSETS = [ffhq_aging_labels, age_distribution, training_splits, dataset_manifest]
LABELS_FAILURE = "line 1002, column gender: 'unknown'"


def severity(key: dg.AssetCheckKey) -> dg.AssetCheckSeverity:
    blocking = key.name in BLOCKING_GATES.get(key.asset_key.to_user_string(), ())
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def chunk_stand_ins(failing: dict[str, dict[str, str]], raising: dict[str, str]) -> list:
    """The per-chunk assets under their keys, with their checks, wired as in the graph.

    ``failing``: per chunk, the checks ("asset.check") that fail and their descriptions;
    ``raising``: per chunk, the asset whose step fails.
    """
    per_chunk = CHUNK_ASSETS.resolve(GRAPH)

    def stand_in(key: dg.AssetKey) -> dg.AssetsDefinition:
        node = GRAPH.get(key)
        checks = sorted(node.check_keys, key=lambda c: c.name)

        @dg.asset(
            name=key.path[-1],
            partitions_def=chunk_partitions,
            deps=[k for k in node.parent_keys if k in per_chunk],
            check_specs=[dg.AssetCheckSpec(c.name, asset=key) for c in checks],
        )
        def _stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            chunk = context.partition_key
            if raising.get(chunk) == key.to_user_string():
                raise dg.Failure("stand-in step failed")
            fails = failing.get(chunk, {})
            results = []
            for c in checks:
                why = fails.get(f"{key.to_user_string()}.{c.name}")
                results.append(
                    dg.AssetCheckResult(
                        check_name=c.name,
                        passed=why is None,
                        severity=severity(c),
                        description=why or "fine",
                    )
                )
            return dg.MaterializeResult(check_results=results)

        return _stand_in

    return [stand_in(key) for key in GRAPH.toposorted_asset_keys if key in per_chunk]


def unpartitioned_stand_ins(selection: dg.AssetSelection, chunks: list[str]) -> list:
    """Shared inputs or products; a product that records its left-out chunks does it as the
    real ones do, from the instance's verdicts."""

    def stand_in(key: dg.AssetKey) -> dg.AssetsDefinition:
        checks = sorted(GRAPH.get(key).check_keys, key=lambda c: c.name)

        @dg.asset(
            name=key.path[-1], check_specs=[dg.AssetCheckSpec(c.name, asset=key) for c in checks]
        )
        def _stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            excluded = gate_verdicts(context.instance, chunks)
            metadata: dict = {}
            if key.to_user_string() in ("ffhq_aging_labels", "dataset_manifest"):
                metadata["chunks_excluded"] = dg.MetadataValue.md(excluded_text(excluded))
            if key.to_user_string() == "ffhq_aging_labels":
                metadata["chunks_built"] = len(chunks) - len(excluded)
            return dg.MaterializeResult(
                metadata=metadata,
                check_results=[
                    dg.AssetCheckResult(
                        check_name=c.name, passed=False, severity=severity(c), description="2 rows"
                    )
                    for c in checks
                ],
            )

        return _stand_in

    return [stand_in(key) for key in GRAPH.toposorted_asset_keys if key in selection.resolve(GRAPH)]


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance where chunk 00000 passes, 01000 fails a blocking check and 02000's
    aligned_images step fails, then the products were made; built once, copied per test."""
    home = tmp_path_factory.mktemp("recorded") / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    failing = {
        "01000": {
            "labels_table.label_domains": f"{LABELS_FAILURE}\n(and nothing else)",
            "segmentation_masks.mask_plausible": "no skin: 01001",
        }
    }
    chunks = ["00000", "01000", "02000"]
    chunk_assets = chunk_stand_ins(failing, {"02000": "aligned_images"})
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for chunk in chunks:
            dg.materialize(
                chunk_assets, partition_key=chunk, instance=instance, raise_on_error=False
            )
        shared = unpartitioned_stand_ins(SHARED_INPUTS, chunks)
        assert dg.materialize(shared, instance=instance).success
        assert dg.materialize(unpartitioned_stand_ins(PRODUCTS, chunks), instance=instance).success
    return home


@pytest.fixture
def recorded(
    recorded_home: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """A copy of that instance, in this test's DAGSTER_HOME."""
    shutil.rmtree(dagster_home)
    shutil.copytree(recorded_home, dagster_home)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        yield instance


def made(instance: dg.DagsterInstance, asset: str) -> str:
    entry = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert entry is not None
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.timestamp))


def test_status_shows_each_chunk_the_failed_checks_and_what_the_products_left_out(
    recorded: dg.DagsterInstance, dagster_home: Path, capsys
) -> None:
    assert main(["status"]) == 1
    never = "never checked on this instance (aligned_images.image_count, "
    never += "aligned_images.image_format, aligned_images.no_temp_files ...)"
    assert capsys.readouterr().out.splitlines() == [
        f"DAGSTER_HOME={dagster_home}",
        "chunk 00000: 6/6 assets materialized; checks: 16 passed",
        "chunk 01000: 6/6 assets materialized; checks: 14 passed, 1 warning "
        "(segmentation_masks.mask_plausible), 1 FAILED",
        f"    FAILED labels_table.label_domains: {LABELS_FAILURE} (and nothing else)",
        # Dagster counts the steps after the one that failed as failed too (planned, not
        # materialized); the report says they did not run.
        "chunk 02000: image_metadata, alignments materialized; aligned_images failed; "
        "segmentation_masks, mask_statistics, labels_table not run (the run failed before "
        "their steps); checks: 4 passed, 12 not run",
        "shared inputs: 3/3 assets materialized",
        "products: 4/4 assets materialized; checks: 1 warning "
        "(ffhq_aging_labels.labels_of_no_image)",
        f"    ffhq_aging_labels (made {made(recorded, 'ffhq_aging_labels')}): 1 chunk in, "
        "2 chunks left out",
        "        01000: failed labels_table.label_domains",
        f"        02000: {never}",
        f"    dataset_manifest (made {made(recorded, 'dataset_manifest')}): 2 chunks left out",
        "        01000: failed labels_table.label_domains",
        f"        02000: {never}",
        "summary: 3 chunks: 1 complete, 2 failed (01000..02000); the products left out 2 "
        "(01000..02000)",
    ]


def test_status_of_named_chunks_and_as_json(
    recorded: dg.DagsterInstance, dagster_home: Path, capsys
) -> None:
    # Only the chunks named count: 00000 passed, 05000 has nothing; the products only warn.
    assert main(["status", "--partitions", "00000,05000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "chunk 00000: 6/6 assets materialized; checks: 16 passed",
        "chunk 05000: nothing recorded",
    ]
    assert lines[-1] == (
        "summary: 2 chunks: 1 complete, 1 not recorded (05000); the products left out 2 "
        "(01000..02000)"
    )

    assert main(["status", "--partitions", "01000-02000", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] is True
    assert list(report["chunks"]) == ["01000", "02000"]
    failed = report["chunks"]["01000"]["checks"]["failed"]
    assert failed == {"labels_table.label_domains": f"{LABELS_FAILURE} (and nothing else)"}
    assert report["chunks"]["02000"]["assets"]["aligned_images"] == "failed"
    assert report["chunks"]["02000"]["assets"]["labels_table"] == "not run"
    assert report["chunks"]["02000"]["assets"]["alignments"] == "materialized"
    assert report["shared_inputs"]["assets"] == {
        "deeplab_checkpoint": "materialized",
        "ffhq_aging_labels_csv": "materialized",
        "ffhq_metadata_json": "materialized",
    }
    left_out = report["left_out"]["ffhq_aging_labels"]
    assert left_out["excluded"]["01000"] == "failed labels_table.label_domains"
    assert left_out["chunks_in"] == 1


def test_a_fixed_chunk_passes_and_an_empty_instance_says_so(
    recorded: dg.DagsterInstance, dagster_home: Path, monkeypatch, capsys
) -> None:
    # Only the latest evaluation counts: a later run whose checks pass clears the failure.
    assert dg.materialize(chunk_stand_ins({}, {}), partition_key="01000", instance=recorded).success
    assert main(["status", "--partitions", "01000"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "chunk 01000: 6/6 assets materialized; checks: 16 passed"
    )

    empty = dagster_home.parent / "empty_home"
    empty.mkdir()
    (empty / "dagster.yaml").write_text((dagster_home / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(empty))
    assert main(["status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"DAGSTER_HOME={empty}",
        "shared inputs: nothing materialized",
        "products: nothing materialized; checks: 1 not run",
        "summary: no chunk recorded on this instance",
    ]


def test_partitions_are_parsed_as_build_parses_them(dagster_home: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--partitions", "1000"])
    assert exit_info.value.code == 2
    assert "argument --partitions: '1000' is not a chunk key" in capsys.readouterr().err


def test_excluded_chunks_are_read_back_from_the_products_text() -> None:
    excluded = {"05000": "failed labels_table.label_domains", "01000": "never checked (x ...)"}
    assert excluded_from_text(excluded_text(excluded)) == dict(sorted(excluded.items()))
    assert excluded_from_text(excluded_text({})) == {}


@pytest.mark.slow
def test_status_after_a_real_build(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path, capsys
) -> None:
    """The real assets, checks and products on the small world, on this test's instance."""
    folder = tmp_path / "served"
    folder.mkdir()
    serve_synthetic(drive, folder, count=2100)
    # Line 1002 is image 1000: a gender out of its domain fails chunk 01000's label gates.
    lines = (folder / "ffhq_aging_labels.csv").read_text().splitlines()
    fields = lines[1001].split(",")
    fields[3] = "unknown"
    lines[1001] = ",".join(fields)
    labels = folder / "edited_labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    _, _, resources = world(drive, tmp_path, seeded_checkpoint, labels)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert materialize(SHARED, instance, resources).success
        for chunk in ("00000", "01000"):
            result = materialize(
                CHUNK, instance, resources, partition_key=chunk, raise_on_error=False
            )
            assert result.success == (chunk == "00000")
        assert dg.materialize(PRODUCT_ASSETS, instance=instance, resources=resources).success
        labels_made = made(instance, "ffhq_aging_labels")
        manifest_made = made(instance, "dataset_manifest")

    assert main(["status"]) == 1
    why = "failed labels_table.label_numbers, labels_table.label_domains"
    assert capsys.readouterr().out.splitlines() == [
        f"DAGSTER_HOME={dagster_home}",
        "chunk 00000: 6/6 assets materialized; checks: 16 passed",
        "chunk 01000: 6/6 assets materialized; checks: 14 passed, 2 FAILED",
        "    FAILED labels_table.label_domains: ffhq_aging_labels.csv: line 1002, column gender: "
        "'unknown' is not male or female",
        "    FAILED labels_table.label_numbers: missing 01000",
        "shared inputs: 3/3 assets materialized",
        "products: 4/4 assets materialized; checks: 1 passed",
        f"    ffhq_aging_labels (made {labels_made}): 1 chunk in, 1 chunk left out",
        f"        01000: {why}",
        f"    dataset_manifest (made {manifest_made}): 1 chunk left out",
        f"        01000: {why}",
        "summary: 2 chunks: 1 complete, 1 failed (01000); the products left out 1 (01000)",
    ]

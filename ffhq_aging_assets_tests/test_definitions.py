"""The definitions: they load, they are cheap to import, and the graph is the one intended."""

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from ffhq_aging_assets.definitions import defs
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS

SNAPSHOT = Path(__file__).parent / "data" / "asset_graph.json"


def test_defs_load() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"ffhq_metadata_json", "image_metadata"} <= keys
    assert defs.resolve_job_def("chunks").partitions_def.get_partition_keys() == list(CHUNK_KEYS)


def test_every_asset_has_a_description_and_group() -> None:
    for spec in defs.resolve_all_asset_specs():
        assert spec.description and len(spec.description) > 80, spec.key
        assert spec.group_name != "default", spec.key


def test_importing_definitions_is_cheap() -> None:
    code = (
        "import sys, ffhq_aging_assets.definitions; "
        "heavy = ('torch', 'torchvision', 'pydrive2', 'celery', 'dagster_celery'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FFHQ_EXECUTOR"}  # the default executor
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


def describe_graph() -> dict:
    """The asset graph as plain data: what a change to the graph's shape changes."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        checks = {
            check.name: graph.get_check_spec(check).blocking for check in sorted(node.check_keys)
        }
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partitioned": node.is_partitioned,
            "pools": sorted(node.pools or ()),
            "kinds": sorted(node.kinds),
            "automated": node.automation_condition is not None,
            "checks": checks,
        }
    jobs = {
        job.name: sorted(
            key.to_user_string()
            for key in defs.resolve_job_def(job.name).asset_layer.executable_asset_keys
        )
        for job in defs.jobs or ()
    }
    sensors = sorted(sensor.name for sensor in defs.sensors or ())
    return {"assets": assets, "jobs": jobs, "sensors": sensors}


def test_graph_matches_snapshot() -> None:
    """Any change to keys, groups, dependencies, checks, pools or jobs shows here as a diff.

    After an intended change, rewrite the snapshot with
    ``python -m ffhq_aging_assets_tests.test_definitions`` and commit it with the change.
    """
    expected = SNAPSHOT.read_text()
    found = json.dumps(describe_graph(), indent=1, sort_keys=True) + "\n"
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            found.splitlines(keepends=True),
            "asset_graph.json",
            "the graph now",
        )
    )
    assert not diff, diff


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(describe_graph(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")

import os
import subprocess
import sys

import dagster as dg

from ffhq_aging_assets.definitions import defs
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS


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

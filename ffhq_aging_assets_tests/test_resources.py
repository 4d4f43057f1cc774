"""The resources: checksums that follow the file they describe, and text the UI shows as written."""

import inspect
from pathlib import Path

import dagster as dg
import pydantic

from ffhq_aging_assets.definitions import defs
from ffhq_aging_assets.lib.files import file_digest
from ffhq_aging_assets.lib.inputs import fetch_input
from ffhq_aging_assets.lib.sources import DriveHttpSource
from ffhq_aging_assets.resources import (
    LICENSE_MD5,
    LICENSE_SIZE,
    METADATA_MD5,
    METADATA_SIZE,
    METADATA_URL,
    PUBLISHED_METADATA,
    PUBLISHED_WEIGHTS,
    WEIGHTS_MD5,
    WEIGHTS_SIZE,
    WEIGHTS_URL,
    DeepLabWeights,
    LabelsLocation,
    MetadataLocations,
    located,
)


def test_the_published_urls_keep_their_checksums() -> None:
    locations = MetadataLocations()
    assert (locations.metadata.url, locations.metadata.md5) == (METADATA_URL, METADATA_MD5)
    assert locations.metadata.size == METADATA_SIZE
    assert (locations.license.md5, locations.license.size) == (LICENSE_MD5, LICENSE_SIZE)
    weights = DeepLabWeights()
    assert (weights.spec.url, weights.spec.md5, weights.spec.size) == (
        WEIGHTS_URL,
        WEIGHTS_MD5,
        WEIGHTS_SIZE,
    )


def test_another_url_with_the_published_checksums_is_accepted_unverified() -> None:
    # What the launchpad sends when only the URL is edited: the other fields at their defaults.
    weights = DeepLabWeights(url="/models/mine.pth", md5=WEIGHTS_MD5, size=WEIGHTS_SIZE)
    assert (weights.spec.md5, weights.spec.size) == (None, None)
    locations = MetadataLocations(
        metadata_url="/data/ffhq-dataset-v2.json",
        metadata_md5=METADATA_MD5.upper(),
        metadata_size=METADATA_SIZE,
    )
    assert (locations.metadata.md5, locations.metadata.size) == (None, None)
    # Each file on its own: the LICENSE still comes from its published URL.
    assert (locations.license.md5, locations.license.size) == (LICENSE_MD5, LICENSE_SIZE)
    locations = MetadataLocations(license_url="/data/LICENSE.txt")
    assert (locations.license.md5, locations.license.size) == (None, None)
    assert locations.metadata.md5 == METADATA_MD5


def test_checksums_set_for_another_url_still_apply() -> None:
    weights = DeepLabWeights(url="/models/mine.pth", md5="0" * 32, size=10)
    assert (weights.spec.md5, weights.spec.size) == ("0" * 32, 10)
    # One set, the other left at the published value: only the set one applies.
    weights = DeepLabWeights(url="/models/mine.pth", md5="0" * 32)
    assert (weights.spec.md5, weights.spec.size) == ("0" * 32, None)
    locations = MetadataLocations(metadata_url="/m.json", metadata_size=5, license_url="/L.txt")
    assert (locations.metadata.md5, locations.metadata.size) == (None, 5)
    assert (LabelsLocation(url="/l.csv", md5="1" * 32).spec.md5) == "1" * 32


@dg.asset
def checkpoint_copy(
    context: dg.AssetExecutionContext, deeplab_weights: DeepLabWeights
) -> dg.MaterializeResult:
    """Fetches the configured checkpoint as `deeplab_checkpoint` does."""
    dest = Path(context.instance.storage_directory()) / "deeplab_model.pth"
    got = fetch_input(DriveHttpSource(), deeplab_weights.spec, dest, lambda path, md5: None)
    return dg.MaterializeResult(metadata={"md5": got.md5})


def test_a_local_checkpoint_set_in_the_launchpad_is_fetched_and_logged_once(
    tmp_path: Path,
) -> None:
    local = tmp_path / "mine.pth"
    local.write_bytes(b"not the published checkpoint")
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "instance"))
    resource = {"url": str(local), "md5": WEIGHTS_MD5, "size": WEIGHTS_SIZE}
    result = dg.materialize(
        [checkpoint_copy],
        resources={"deeplab_weights": DeepLabWeights()},
        run_config={"resources": {"deeplab_weights": {"config": resource}}},
        instance=instance,
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("checkpoint_copy")
    assert materialization.metadata["md5"].value == file_digest(local)[1]
    notes = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "deeplab_model.pth from" in entry.user_message
    ]
    assert notes == [
        f"deeplab_model.pth from {local} is accepted unverified: the published md5 and size do "
        "not apply to another file (set md5 to verify it)"
    ]


def test_the_note_says_how_the_file_is_checked() -> None:
    # What the command line sends for --weights alone: both checksums none.
    _, note = located(PUBLISHED_WEIGHTS, "/w.pth", None, None)
    assert note == (
        "deeplab_model.pth from /w.pth is accepted unverified: md5 and size are none "
        "(set md5 to verify it)"
    )
    _, note = located(PUBLISHED_METADATA, "/m.json", "0" * 32, METADATA_SIZE, "metadata_")
    assert note == (
        "ffhq-dataset-v2.json from /m.json is checked by its md5 only: the published "
        "metadata_size does not apply to another file"
    )
    assert located(PUBLISHED_WEIGHTS, "/w.pth", "0" * 32, 10)[1] is None
    assert located(PUBLISHED_WEIGHTS, WEIGHTS_URL, WEIGHTS_MD5, WEIGHTS_SIZE)[1] is None


def _config_classes() -> set[type[pydantic.BaseModel]]:
    """Every config and resource class the package defines, and the resources ``defs`` binds."""
    found: set[type[pydantic.BaseModel]] = {type(r) for r in defs.resources.values()}
    pending: list[type] = [dg.Config]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("ffhq_aging_assets."):
            found.add(cls)
    return found


def test_every_field_is_described_in_plain_text() -> None:
    classes = _config_classes()
    names = {cls.__name__ for cls in classes}
    assert {"AlignConfig", "SegmentConfig", "SplitsConfig", "FileSourceResource"} <= names
    for cls in classes:
        assert "``" not in (inspect.getdoc(cls) or ""), cls.__name__
        for name, field in cls.model_fields.items():
            assert field.description and field.description.strip(), f"{cls.__name__}.{name}"
            assert "``" not in field.description, f"{cls.__name__}.{name}"


def test_asset_and_check_descriptions_are_plain_text() -> None:
    specs = defs.resolve_all_asset_specs()
    assert specs
    for spec in specs:
        assert spec.description and "``" not in spec.description, spec.key.to_user_string()
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        description = graph.get_check_spec(key).description or ""
        assert "``" not in description, key.to_user_string()

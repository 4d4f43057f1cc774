import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ffhq_aging_assets.cli import build_parser, main, resolve_selection
from ffhq_aging_assets.cli_options import run_config
from ffhq_aging_assets.definitions import defs
from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic


def cli(
    args: list[str], cwd: Path, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "ffhq_aging_assets", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def source_args(s: SyntheticFFHQ) -> list[str]:
    return [
        "--metadata-url",
        s.metadata_url,
        "--metadata-md5",
        s.metadata_md5,
        "--metadata-size",
        str(s.metadata_size),
        "--license-url",
        s.license_url,
        "--license-md5",
        s.license_md5,
        "--num-attempts",
        "3",
        "--labels-csv",
        s.labels_url,
    ]


@pytest.mark.slow
def test_build_runs_on_the_persistent_instance(
    drive, tmp_path: Path, dagster_home: Path, seeded_checkpoint: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1200, photos=[*range(20), *range(1000, 1020)])
    drive.fail("wildPhoto00003x", "500")
    # Corrupt at every attempt: chunk 01000 fails, and the build goes on to the products.
    drive.fail("wildPhoto01003x", *["corrupt"] * 10)
    args = [
        "build",
        "--partitions",
        "00000,01000",
        "--limit",
        "20",
        "--root",
        "out",
        "--weights",
        str(seeded_checkpoint),
        "--device",
        "cpu",
    ]
    done = cli(args + source_args(served), tmp_path, dagster_home)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "chunk 00000: ok" in out and "16/16 checks passed" in out
    assert "products done" in out
    assert "chunk 01000: FAILED" in out and "01003" in out
    assert "1 chunk(s) failed: 01000" in out
    images = sorted((tmp_path / "out/ffhq_aging256x256/00000").glob("*.png"))
    assert [p.name for p in images] == [f"{n:05d}.png" for n in range(20)]
    # The geometry of the whole chunk, whatever --limit: a later, larger limit rebuilds nothing.
    geometry = pq.read_table(tmp_path / "out/tables/alignments_256/00000.parquet")
    assert geometry.column("image_number").to_pylist() == list(range(1000))

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    runs = instance.get_runs()
    assert len(runs) == 4  # shared inputs, one run per chunk, then the products
    by_partition = {r.tags.get("dagster/partition"): r.status for r in runs}
    assert by_partition["00000"] == dg.DagsterRunStatus.SUCCESS
    assert by_partition["01000"] == dg.DagsterRunStatus.FAILURE
    masks = sorted((tmp_path / "out/ffhq_aging256x256/00000/parsings").glob("*.png"))
    assert len(masks) == 20
    for key in ("image_metadata", "alignments", "aligned_images", "segmentation_masks"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None

    rerun = cli(
        ["build", "--partitions", "00000", "--limit", "20", "--root", "out"]
        + ["--weights", str(seeded_checkpoint)]
        + source_args(served),
        tmp_path,
        dagster_home,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert drive.body_requests["metadataJson0001"] == 1
    assert drive.body_requests["wildPhoto00000x"] == 1

    labels = pq.read_table(tmp_path / "out/tables/ffhq_aging_labels_256.parquet")
    assert labels.column("image_number").to_pylist() == list(range(20))
    assert (tmp_path / "out/reports/age_distribution_256.png").is_file()
    assert (tmp_path / "out/splits_256/splits.csv").is_file()
    verify = cli(["verify", "--root", "out"], tmp_path, dagster_home)
    assert verify.returncode == 0 and "files match" in verify.stdout, verify.stdout
    image = tmp_path / "out/ffhq_aging256x256/00000/00003.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    (tmp_path / "out/ffhq_aging256x256/00000/parsings/00004.png").unlink()
    verify = cli(["verify", "--root", "out"], tmp_path, dagster_home)
    assert verify.returncode == 1
    assert "changed: ffhq_aging256x256/00000/00003.png" in verify.stdout
    assert "missing: ffhq_aging256x256/00000/parsings/00004.png" in verify.stdout


def asset_names(keys: set) -> list[str]:
    return sorted(key.to_user_string() for key in keys)


def test_select_takes_comma_separated_keys_and_dagster_selections() -> None:
    graph = defs.resolve_asset_graph()
    assert asset_names(resolve_selection("ffhq_metadata_json,image_metadata", graph)) == [
        "ffhq_metadata_json",
        "image_metadata",
    ]
    assert asset_names(resolve_selection(" ffhq_metadata_json , image_metadata ", graph)) == [
        "ffhq_metadata_json",
        "image_metadata",
    ]
    assert asset_names(resolve_selection("group:metadata", graph)) == ["image_metadata"]
    assert asset_names(resolve_selection("+image_metadata", graph)) == [
        "ffhq_metadata_json",
        "image_metadata",
    ]
    assert asset_names(resolve_selection("key:image_*,group:alignment", graph)) == [
        "alignments",
        "image_metadata",
    ]
    assert asset_names(resolve_selection("group:inputs and kind:json", graph)) == [
        "ffhq_metadata_json"
    ]
    everything = asset_names(resolve_selection(None, graph))
    assert "training_splits" in everything and len(everything) == 13


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_metadata,nope", "no asset named 'nope' (the assets: age_distribution, "),
        ("+nope+", "no asset named 'nope'"),
        ("nope", "no asset named 'nope'"),
        ("group:metadata,a b", "'a b' is neither an asset key nor a Dagster asset selection"),
        ("group:nope", "'group:nope' selects no asset (the groups: alignment, images, inputs"),
    ],
)
def test_select_names_what_it_cannot_resolve(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        resolve_selection(text, defs.resolve_asset_graph())
    assert message in str(error.value)


def test_an_unknown_asset_stops_the_build_before_any_run(
    tmp_path: Path, dagster_home: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--select", "ffhq_metadata_json,image_metdata"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "ffhq-aging build: error: argument --select: no asset named 'image_metdata' (the assets: "
    )
    assert len(err.splitlines()) == 1
    assert dg.DagsterInstance.from_config(str(dagster_home)).get_runs() == []


def test_chunks_the_parsed_metadata_lacks_stop_the_build_before_any_run(
    tmp_path: Path, dagster_home: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    layout = DatasetLayout(tmp_path / "data", 256)
    layout.metadata_dir.mkdir(parents=True)
    record = {"md5": "0" * 32, "entries": 2100, "rows": {"00000": 1000, "01000": 1000}}
    layout.parsed_record.write_text(json.dumps({**record, "errors": {"02000": "bad entry"}}))
    argv = ["build", "--select", "image_metadata", "--partitions", "00000,05000-06000"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "ffhq-aging build: error: argument --partitions: chunks 05000..06000 are not in the "
        "metadata (the metadata has chunks 00000..02000), so running again cannot help: choose "
        "chunks it has, or point --metadata-url at a metadata file that has these"
    ]
    assert dg.DagsterInstance.from_config(str(dagster_home)).get_runs() == []


def test_a_root_or_resolution_other_than_the_instances_stops_the_build_before_any_run(
    tmp_path: Path, dagster_home: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = dagster_home / "ffhq-aging.toml"
    settings.write_text(f'[dataset]\nroot = "{tmp_path / "data"}"\nresolution = 256\n')
    for argv, flag, asked in (
        (["--root", "other"], "--root", f"{tmp_path / 'other'} at 256 px"),
        (["--resolution", "512"], "--resolution", f"{tmp_path / 'data'} at 512 px"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["build", "--select", "ffhq_metadata_json", *argv])
        assert exit_info.value.code == 2
        (err,) = capsys.readouterr().err.splitlines()
        assert err.startswith(
            f"ffhq-aging build: error: argument {flag}: this Dagster instance describes the "
            f"dataset at {tmp_path / 'data'} at 256 px ([dataset] in {settings}), not {asked}"
        )
    assert dg.DagsterInstance.from_config(str(dagster_home)).get_runs() == []
    assert not (tmp_path / "other").exists()


def test_build_selects_a_list_and_refuses_a_chunk_the_fetched_metadata_lacks(
    drive, tmp_path: Path, dagster_home: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1200)
    select = ["build", "--select", "ffhq_metadata_json,image_metadata", "--root", "out"]
    done = cli(select + ["--partitions", "05000"] + source_args(served), tmp_path, dagster_home)
    assert done.returncode == 2, done.stdout + done.stderr
    # The metadata is fetched and parsed first: only then is it known which chunks it has.
    assert "shared_inputs done" in done.stdout
    # Dagster's events went to the build's log file, so stderr holds the refusal alone.
    assert done.stderr.strip().splitlines() == [
        "ffhq-aging build: error: argument --partitions: chunk 05000 is not in the metadata "
        "(the metadata has chunks 00000..01000), so running again cannot help: choose chunks it "
        "has, or point --metadata-url at a metadata file that has these"
    ]
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert [run.job_name for run in instance.get_runs()] == ["shared_inputs"]

    done = cli(select + ["--partitions", "00000"] + source_args(served), tmp_path, dagster_home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chunk 00000: ok" in done.stdout
    table = pq.read_table(tmp_path / "out/tables/image_metadata/00000.parquet")
    assert table.num_rows == 1000


def test_run_config_from_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "build",
            "--source",
            f"local:{tmp_path}",
            "--metadata-url",
            "meta.json",
            "--limit",
            "50",
            "--resolution",
            "512",
            "--copy-on-quota",
            "--mode",
            "fast",
            "--keep-sources",
        ]
    )
    config = run_config(args)["resources"]
    assert config["file_source"]["config"]["kind"] == "local"
    assert config["file_source"]["config"]["local_dir"] == str(tmp_path)
    assert config["dataset"]["config"]["limit"] == 50
    locations = config["metadata_locations"]["config"]
    assert Path(locations["metadata_url"]).is_absolute()
    assert locations["metadata_md5"] is None  # a different file: published md5 no longer applies
    assert run_config(args)["ops"]["aligned_images"]["config"]["mode"] == "fast"
    assert run_config(args)["ops"]["aligned_images"]["config"]["keep_sources"]
    assert run_config(args)["resources"]["deeplab_weights"]["config"] == {}
    with pytest.raises(SystemExit):
        run_config(build_parser().parse_args(["build", "--source", "ftp"]))


def test_colorize_writes_colour_masks_beside_the_label_maps(tmp_path: Path, capsys) -> None:
    import numpy as np
    import PIL.Image

    from ffhq_aging_assets.cli import main
    from ffhq_aging_assets.lib.colors import PALETTE

    chunk = tmp_path / "ffhq_aging64x64" / "00000"
    (chunk / "parsings").mkdir(parents=True)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    mask[40:50, 40:50] = 13
    PIL.Image.fromarray(mask, "L").save(chunk / "parsings" / "00007.png")
    PIL.Image.new("RGB", (64, 64), (10, 20, 30)).save(chunk / "00007.png")
    assert main(["colorize", "--root", str(tmp_path), "--resolution", "64"]) == 0
    plain = (chunk / "parsings_color" / "00007.png").read_bytes()
    colour = np.asarray(PIL.Image.open(chunk / "parsings_color" / "00007.png"))
    assert (colour[20, 20] == PALETTE[1]).all() and (colour[45, 45] == PALETTE[13]).all()
    assert (colour[0, 0] == 0).all()
    assert not (chunk / "parsings_overlay").exists()
    capsys.readouterr()
    assert main(["colorize", "--root", str(tmp_path), "--resolution", "64", "--overlay"]) == 0
    assert f"1 overlaid masks in {chunk / 'parsings_overlay'}" in capsys.readouterr().out
    # The overlays go to their own folder: the plain colour masks are left as they were.
    assert (chunk / "parsings_color" / "00007.png").read_bytes() == plain
    assert [p.name for p in (chunk / "parsings_overlay").iterdir()] == ["00007.png"]
    assert (chunk / "parsings_overlay" / "00007.png").read_bytes() != plain
    blended = np.asarray(PIL.Image.open(chunk / "parsings_overlay" / "00007.png"))
    assert (blended[0, 0] == (10, 20, 30)).all() and not (blended[20, 20] == PALETTE[1]).all()
    assert main(["colorize", "--root", str(tmp_path / "none"), "--resolution", "64"]) == 1


def test_ui_prints_the_lineage_address_with_every_group_open() -> None:
    from ffhq_aging_assets.cli import lineage_address, ui_address

    assert ui_address([]) == "http://127.0.0.1:3000"
    assert ui_address(["-p", "3001", "--host=0.0.0.0"]) == "http://0.0.0.0:3001"
    assert ui_address(["--port=4000", "-h", "localhost"]) == "http://localhost:4000"
    address = lineage_address("http://127.0.0.1:3000")
    base, expanded = address.split("?expanded=")
    assert base == "http://127.0.0.1:3000/asset-groups"
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert len(groups) == 7
    assert sorted(expanded.split(",")) == sorted(f"global@global:{g}" for g in groups)

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ffhq_aging_assets.cli import build_parser
from ffhq_aging_assets.cli_options import run_config
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
    served = serve_synthetic(drive, served_dir, count=1200, photos=range(20))
    drive.fail("wildPhoto00003x", "500")
    args = [
        "build",
        "--partitions",
        "00000,05000",
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
    assert "chunk 05000: FAILED" in out and "none for chunk 05000" in out
    assert "1 chunk(s) failed: 05000" in out
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
    assert by_partition["05000"] == dg.DagsterRunStatus.FAILURE
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

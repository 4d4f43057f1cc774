"""The build options come from the config classes: names, bounds, choices, run config, README."""

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

from ffhq_aging_assets.assets.images import AlignConfig
from ffhq_aging_assets.assets.segmentation import SegmentConfig
from ffhq_aging_assets.cli import build_parser, main
from ffhq_aging_assets.cli_options import add_build_arguments, options, run_config

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_HEADER = "| option | sets | meaning |"


def build_config(*argv: str) -> dict:
    return run_config(build_parser().parse_args(["build", *argv]))


def parse_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["build", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def help_flags(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--help"])
    assert exit_info.value.code == 0
    # Option lines are indented by two spaces; wrapped help text is indented further.
    return set(re.findall(r"^ {2}(--[\w-]+)", capsys.readouterr().out, re.M)) - {"--help"}


def readme_table() -> list[str]:
    text = README.read_text()
    start = text.index(TABLE_HEADER)
    return text[start:].split("\n\n", 1)[0].splitlines()[2:]


def test_every_existing_flag_sets_its_field(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    config = build_config(
        *("--limit", "7", "--resolution", "128", "--root", "out", "--mode", "fast"),
        *("--num-processes", "3", "--keep-sources", "--no-verify-pixels", "--device", "cpu"),
        *("--batch-size", "2", "--precision", "fp32", "--fidelity-faces", "4", "--compile", "aot"),
        *("--weights", "w.pth", "--weights-md5", "abc", "--weights-size", "10"),
        *("--labels-csv", "https://example.com/l.csv", "--labels-md5", "def"),
        *("--num-threads", "2", "--num-attempts", "9", "--min-rate", "1000"),
        *("--deadline-grace", "30", "--metadata-url", "m.json", "--metadata-md5", "m5"),
        *("--metadata-size", "11", "--license-url", "L.txt", "--license-md5", "l5"),
        *("--license-size", "12", "--client-secrets", "cs.json", "--copy-on-quota"),
        *("--service-account", "key.json"),
        *("--source", "local:photos", "--local-only"),
    )
    ops, resources = config["ops"], config["resources"]
    assert ops["aligned_images"]["config"] == {
        "mode": "fast",
        "num_processes": 3,
        "keep_sources": True,
        "verify_pixel_md5": False,
    }
    assert ops["segmentation_masks"]["config"] == {
        "device": "cpu",
        "batch_size": 2,
        "precision": "fp32",
        "fidelity_faces": 4,
        "compile": "aot",
    }
    assert resources["dataset"]["config"] == {
        "root": str(tmp_path / "out"),
        "resolution": 128,
        "limit": 7,
    }
    assert resources["file_source"]["config"] == {
        "kind": "local",
        "local_dir": str(tmp_path / "photos"),
        "local_only": True,
        "client_secrets": str(tmp_path / "cs.json"),
        "service_account": str(tmp_path / "key.json"),
        "copy_on_quota": True,
        "num_threads": 2,
        "num_attempts": 9,
        "min_bytes_per_second": 1000.0,
        "deadline_grace": 30.0,
    }
    assert resources["metadata_locations"]["config"] == {
        "metadata_url": str(tmp_path / "m.json"),
        "metadata_md5": "m5",
        "metadata_size": 11,
        "license_url": str(tmp_path / "L.txt"),
        "license_md5": "l5",
        "license_size": 12,
    }
    assert resources["deeplab_weights"]["config"] == {
        "url": str(tmp_path / "w.pth"),
        "md5": "abc",
        "size": 10,
    }
    assert resources["labels_location"]["config"] == {
        "url": "https://example.com/l.csv",
        "md5": "def",
        "size": None,
    }


def test_unset_options_leave_the_definitions_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = build_config()
    assert all(op["config"] == {} for op in config["ops"].values())
    assert config["resources"]["dataset"]["config"] == {"root": str(tmp_path / "data")}
    assert config["resources"]["file_source"]["config"] == {"kind": "drive"}
    for name in ("metadata_locations", "deeplab_weights", "labels_location"):
        assert config["resources"][name]["config"] == {}


def test_a_new_url_drops_only_the_checksums_not_given() -> None:
    locations = build_config("--metadata-url", "https://example.com/m.json", "--metadata-size", "5")
    assert locations["resources"]["metadata_locations"]["config"] == {
        "metadata_url": "https://example.com/m.json",
        "metadata_md5": None,
        "metadata_size": 5,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resolution", "2000"], "argument --resolution: must be at most 1024, not 2000"),
        (["--resolution", "32"], "argument --resolution: must be at least 64, not 32"),
        (["--limit", "-1"], "argument --limit: must be at least 0, not -1"),
        (["--fidelity-faces", "-3"], "argument --fidelity-faces: must be at least 0, not -3"),
        (["--batch-size", "513"], "argument --batch-size: must be at most 512, not 513"),
        (["--min-rate", "0.5"], "argument --min-rate: must be at least 1, not 0.5"),
        (["--connect-timeout", "0"], "argument --connect-timeout: must be more than 0, not 0"),
        (["--weights-size", "-1"], "argument --weights-size: must be at least 0, not -1"),
        (["--num-threads", "two"], "argument --num-threads: invalid int value: 'two'"),
        (["--mode", "slow"], "argument --mode: invalid choice: 'slow'"),
        (["--source", "ftp"], "argument --source: must be drive, pydrive or local:DIR"),
        (["--source", "local:"], "argument --source: must be drive, pydrive or local:DIR"),
        (
            ["--source", "local:/nonexistent"],
            "argument --source: local:/nonexistent: /nonexistent does not exist",
        ),
        (
            ["--partitions", "123"],
            "argument --partitions: '123' is not a chunk key: a chunk key is 5 digits, a "
            "multiple of 1000 from 00000 to 69000",
        ),
        (["--partitions", "00000-70000"], "argument --partitions: '70000' is not a chunk key"),
    ],
)
def test_bad_values_fail_at_parse_time(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in parse_error(capsys, *argv)


def test_a_bad_value_is_one_line_after_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_error(capsys, "--partitions", "123").splitlines() == [
        "usage: ffhq-aging build [options]",
        "ffhq-aging build: error: argument --partitions: '123' is not a chunk key: a chunk key "
        "is 5 digits, a multiple of 1000 from 00000 to 69000",
    ]


def test_source_local_needs_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    message = parse_error(capsys, "--source", f"local:{tmp_path / 'file'}")
    assert f"argument --source: local:{tmp_path / 'file'}: {tmp_path / 'file'} is not a folder" in (
        message
    )
    args = build_parser().parse_args(["build", "--source", f"local:{tmp_path}"])
    assert args.source == f"local:{tmp_path}"


def test_partitions_are_parsed_with_the_options() -> None:
    def chunks(*argv: str) -> list[str]:
        return build_parser().parse_args(["build", *argv]).partitions

    assert chunks() == ["00000"]
    assert chunks("--partitions", "00000-05000") == [f"{n:05d}" for n in range(0, 6000, 1000)]
    assert len(chunks("--partitions", "all")) == 70


def test_verify_and_colorize_bound_the_resolution(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("verify", "colorize"):
        with pytest.raises(SystemExit):
            main([command, "--resolution", "4096"])
        assert "argument --resolution: must be at most 1024" in capsys.readouterr().err


@pytest.mark.parametrize("model", [AlignConfig, SegmentConfig])
def test_literal_fields_accept_only_their_choices(
    capsys: pytest.CaptureFixture[str], model: type
) -> None:
    flags = {option.name: option.flag for option in options() if option.section == "ops"}
    literals = {
        name: get_args(field.annotation)
        for name, field in model.model_fields.items()
        if get_origin(field.annotation) is Literal
    }
    for name, choices in literals.items():
        for choice in choices:
            config = build_config(flags[name], choice)
            assert choice in [op["config"].get(name) for op in config["ops"].values()]
        assert "invalid choice" in parse_error(capsys, flags[name], "no-such-choice")


def test_every_field_of_the_asset_configs_is_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    fields = set(AlignConfig.model_fields) | set(SegmentConfig.model_fields)
    derived = {option.name: option.flag for option in options() if option.section == "ops"}
    assert set(derived) == fields
    assert set(derived.values()) <= help_flags(capsys)


def test_run_config_rejects_what_a_run_would_reject() -> None:
    args = build_parser().parse_args(["build"])
    args.mode = "slow"
    with pytest.raises(SystemExit, match="mode"):
        run_config(args)
    args = build_parser().parse_args(["build"])
    args.resolution = 4096
    with pytest.raises(SystemExit, match="resolution"):
        run_config(args)


def test_readme_table_lists_exactly_the_parsers_flags(capsys: pytest.CaptureFixture[str]) -> None:
    in_readme = {
        flag for row in readme_table() for flag in re.findall(r"--[\w-]+", row.split("|")[1])
    }
    in_parser = help_flags(capsys)
    assert in_parser - in_readme == set(), "flags missing from README's table"
    assert in_readme - in_parser == set(), "README's table lists flags the parser lacks"


def test_building_the_parser_does_not_import_torch() -> None:
    code = "import sys, ffhq_aging_assets.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def table_rows() -> list[str]:
    """README's options table, from the parser.

    Rewrite it with ``python -m ffhq_aging_assets_tests.test_cli_options`` after a change.
    """
    fields = {option.dest: f"`{option.key}.{option.name}`" for option in options()}
    rows = [TABLE_HEADER, "|---|---|---|"]
    for action in add_build_arguments(argparse.ArgumentParser()):
        flag = action.option_strings[0]
        if action.choices:
            flag += " {" + ",".join(map(str, action.choices)) + "}"
        elif action.nargs != 0:
            flag += f" {action.dest.upper()}"
        meaning = (action.help or "").replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `{flag}` | {fields.get(action.dest, '—')} | {meaning} |")
    return rows


if __name__ == "__main__":
    text = README.read_text()
    start = text.index(TABLE_HEADER)
    end = text.index("\n\n", start)
    README.write_text(text[:start] + "\n".join(table_rows()) + text[end:])
    print(f"rewrote the options table of {README}")

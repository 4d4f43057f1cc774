from pathlib import Path

import pytest

from ffhq_aging_assets.lib.precision import (
    ALL_FP32,
    PrecisionRecord,
    choose_precision,
    fidelity_sample,
    merge_precision_record,
    read_precision_record,
    search_pays,
    step_precision,
    write_precision_record,
)


def test_auto_precision_takes_bf16_only_on_evidence() -> None:
    assert choose_precision(0.995) == "bf16"
    assert choose_precision(0.9899) == "fp32"
    assert choose_precision(None) == "fp32"


def test_the_cpu_computes_in_fp32_whatever_the_setting() -> None:
    assert [step_precision(s, "cpu") for s in ("auto", "bf16", "fp32")] == ["fp32"] * 3
    assert [step_precision(s, "cuda") for s in ("auto", "bf16", "fp32")] == [
        "auto",
        "bf16",
        "fp32",
    ]


def test_cudnn_search_only_where_it_pays() -> None:
    assert search_pays("bf16") and not search_pays("fp32")


def test_the_fidelity_sample_spreads_over_the_chunk() -> None:
    assert fidelity_sample(1000, 8) == [0, 143, 285, 428, 571, 714, 856, 999]
    assert fidelity_sample(3, 8) == [0, 1, 2]  # never more faces than there are
    assert fidelity_sample(1, 8) == [0]
    assert fidelity_sample(1000, 0) == []


def test_precision_record_remembers_bf16_masks() -> None:
    assert merge_precision_record(ALL_FP32, "fp32", None, 0) == ALL_FP32
    first = merge_precision_record(ALL_FP32, "bf16", 0.998, 8)
    assert first == PrecisionRecord("bf16", 0.998, 8)
    # The bf16 masks are still there after an fp32 step.
    assert merge_precision_record(first, "fp32", None, 0) == first
    assert merge_precision_record(first, "bf16", 0.9991, 8).agreement == 0.998  # lowest kept
    assert merge_precision_record(first, "bf16", None, 0).agreement == 0.998
    assert merge_precision_record(first, "bf16", 0.997, 4) == PrecisionRecord("bf16", 0.997, 8)


def test_precision_record_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "tables" / "mask_fidelity_256" / "00000.json"
    assert read_precision_record(path) == ALL_FP32
    record = PrecisionRecord("bf16", 0.998, 8)
    write_precision_record(path, record)
    assert read_precision_record(path) == record
    assert [p.name for p in path.parent.iterdir()] == ["00000.json"]  # no temporary left
    write_precision_record(path, ALL_FP32)  # every mask fp32 again: no record
    assert not path.exists()
    path.write_text('{"precision": "bf16", "agreement": null}')  # comparison switched off
    assert read_precision_record(path) == PrecisionRecord("bf16", None, 0)
    for bad in (
        b"not json",
        b"[1, 2]",
        b'{"precision": "fp16"}',
        b'{"precision": "bf16", "agreement": "high"}',
        b'{"precision": "bf16", "agreement": 0.99, "sampled": 2.5}',
    ):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="00000.json: unreadable precision record"):
            read_precision_record(path)

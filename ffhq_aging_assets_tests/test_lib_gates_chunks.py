import numpy as np
import pytest

from ffhq_aging_assets.lib import gates
from ffhq_aging_assets.lib.chunks import (
    CHUNK_KEYS,
    chunk_of,
    chunk_range,
    expected_numbers,
    parse_partitions,
)
from ffhq_aging_assets.lib.precision import ALL_FP32, PrecisionRecord


def test_chunk_keys_and_ranges() -> None:
    assert len(CHUNK_KEYS) == 70 and CHUNK_KEYS[0] == "00000" and CHUNK_KEYS[-1] == "69000"
    assert chunk_range("01000") == range(1000, 2000)
    assert chunk_of(69999) == "69000"
    assert expected_numbers("02000", 20) == range(2000, 2020)
    assert expected_numbers("02000", 0) == range(2000, 3000)
    with pytest.raises(ValueError):
        chunk_range("00500")


def test_parse_partitions() -> None:
    assert parse_partitions("00000,01000") == ["00000", "01000"]
    assert parse_partitions("00000-03000") == ["00000", "01000", "02000", "03000"]
    assert len(parse_partitions("all")) == 70
    with pytest.raises(ValueError, match="00500"):
        parse_partitions("00500")


def test_row_count_and_numbers_gates() -> None:
    assert gates.row_count("rows", 20, 20).passed
    assert not gates.row_count("rows", 19, 20).passed
    ok = gates.exact_numbers("n", list(range(1000, 1020)), range(1000, 1020))
    assert ok.passed
    bad = gates.exact_numbers("n", [1000, 1001, 1001, 5000], range(1000, 1003))
    assert not bad.passed
    assert "missing 01002" in bad.description and "unexpected 05000" in bad.description
    assert "duplicated 01001" in bad.description


def test_finite_gate_names_the_image() -> None:
    values = np.zeros((3, 10))
    assert gates.all_finite("f", [7, 8, 9], values, "landmarks").passed
    values[1, 4] = np.inf
    gate = gates.all_finite("f", [7, 8, 9], values, "landmarks")
    assert not gate.passed and "00008" in gate.description


def test_mask_fidelity_gate() -> None:
    assert gates.mask_fidelity("f", ALL_FP32).passed
    assert gates.mask_fidelity("f", PrecisionRecord("fp32")).passed
    low = gates.mask_fidelity("f", PrecisionRecord("bf16", 0.9899, 8))
    assert not low.passed and low.blocking
    assert "98.99%" in low.description and "precision fp32" in low.description
    assert low.metadata == {"agreement": 0.9899, "sampled_faces": 8}
    assert gates.mask_fidelity("f", PrecisionRecord("bf16", 0.99, 8)).passed
    off = gates.mask_fidelity("f", PrecisionRecord("bf16", None, 0))
    assert off.passed and "switched off" in off.description

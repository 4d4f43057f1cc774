"""Chunk keys as users type them: what `--partitions` accepts, refuses, and how chunks are named."""

import pytest

from ffhq_aging_assets.lib.chunks import CHUNK_KEYS, describe_chunks, parse_partitions


def test_keys_ranges_and_all_are_accepted() -> None:
    assert parse_partitions("01000") == ["01000"]
    assert parse_partitions(" 00000, 02000 ,00000") == ["00000", "02000"]
    assert parse_partitions("00000-05000") == [f"{n:05d}" for n in range(0, 6000, 1000)]
    assert parse_partitions("68000-69000,00000") == ["68000", "69000", "00000"]
    assert parse_partitions("all") == list(CHUNK_KEYS)


@pytest.mark.parametrize("text", ["123", "1000", "0", "00123", "70000", "abc", "000000"])
def test_a_key_that_is_not_a_chunk_is_named_as_typed(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_partitions(f"00000,{text}")
    message = str(error.value)
    assert message.startswith(f"'{text}' is not a chunk key: a chunk key is 5 digits, ")
    assert "a multiple of 1000 from 00000 to 69000" in message
    # The answer is about what was typed, never about a key made up from it.
    assert "'00123'" not in message or text == "00123"


def test_bad_ranges_name_their_part() -> None:
    with pytest.raises(ValueError, match="'123' is not a chunk key"):
        parse_partitions("00000-123")
    with pytest.raises(ValueError, match="range '05000-00000' runs backwards: write it as"):
        parse_partitions("05000-00000")
    with pytest.raises(ValueError, match="no chunks given"):
        parse_partitions(" , ")


def test_describe_chunks_folds_runs_into_ranges() -> None:
    assert describe_chunks(CHUNK_KEYS) == "00000..69000"
    assert describe_chunks(["05000", "00000", "01000", "02000", "07000", "08000"]) == (
        "00000..02000, 05000, 07000..08000"
    )
    assert describe_chunks(["01000"]) == "01000"
    assert describe_chunks([]) == "none"

"""The 70 chunks of 1,000 images that partition FFHQ, and their folder names."""

from __future__ import annotations

from collections.abc import Iterable

NUM_IMAGES = 70_000
CHUNK_SIZE = 1_000
CHUNK_KEYS: tuple[str, ...] = tuple(f"{start:05d}" for start in range(0, NUM_IMAGES, CHUNK_SIZE))


def chunk_range(chunk_key: str) -> range:
    """Image numbers of a chunk, e.g. ``"01000"`` -> ``range(1000, 2000)``.

    Raises:
        ValueError: if ``chunk_key`` is not one of the 70 chunk keys.
    """
    if chunk_key not in CHUNK_KEYS:
        raise ValueError(f"unknown chunk {chunk_key!r}: expected one of 00000, 01000, ... 69000")
    start = int(chunk_key)
    return range(start, start + CHUNK_SIZE)


def chunk_of(image_number: int) -> str:
    """Chunk key holding an image number."""
    if not 0 <= image_number < NUM_IMAGES:
        raise ValueError(f"image number {image_number} is outside 0..{NUM_IMAGES - 1}")
    return f"{image_number - image_number % CHUNK_SIZE:05d}"


def image_name(image_number: int) -> str:
    """File name FFHQ uses for an image, e.g. ``00042.png``."""
    return f"{image_number:05d}.png"


def expected_numbers(chunk_key: str, limit: int | None) -> range:
    """Image numbers a run over ``chunk_key`` handles: the whole chunk, or its first ``limit``."""
    numbers = chunk_range(chunk_key)
    if limit is None or limit <= 0:
        return numbers
    return numbers[: min(limit, CHUNK_SIZE)]


def parse_partitions(text: str) -> list[str]:
    """Parse a ``--partitions`` value: ``all``, or comma-separated chunk keys or ranges of them.

    ``"00000,01000"`` names two chunks; ``"00000-02000"`` names the chunks from the first to the
    second key inclusive.

    Raises:
        ValueError: naming the part that is not a chunk key, as it was typed, and what a chunk
            key is.
    """
    text = text.strip()
    if text == "all":
        return list(CHUNK_KEYS)
    keys: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part:
            first, last = (_known(p.strip()) for p in part.split("-", 1))
            if last < first:
                raise ValueError(f"range {part!r} runs backwards: write it as {last}-{first}")
            keys.extend(CHUNK_KEYS[CHUNK_KEYS.index(first) : CHUNK_KEYS.index(last) + 1])
        else:
            keys.append(_known(part))
    if not keys:
        raise ValueError("no chunks given: use chunk keys like 00000,01000, a range or 'all'")
    return list(dict.fromkeys(keys))


def describe_chunks(keys: Iterable[str]) -> str:
    """Chunk keys in order, each run of consecutive ones as a range: ``"00000..02000, 05000"``."""
    runs: list[list[str]] = []
    for key in sorted(set(keys)):
        if runs and int(key) == int(runs[-1][-1]) + CHUNK_SIZE:
            runs[-1].append(key)
        else:
            runs.append([key])
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs) or "none"


def _known(key: str) -> str:
    if key not in CHUNK_KEYS:
        # Not padded to five digits: "123" would then be answered about 00123, which nobody
        # typed, and "1000" could as well mean image 1000 as chunk 01000.
        raise ValueError(
            f"{key!r} is not a chunk key: a chunk key is 5 digits, a multiple of 1000 from "
            "00000 to 69000"
        )
    return key

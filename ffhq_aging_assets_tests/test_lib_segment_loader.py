from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib.segment_loader import default_loader_threads, thread_batches


def test_rotating_batch_buffers_hold_each_batch_intact(tmp_path: Path) -> None:
    # 11 faces, batches of 4, two batches decoded ahead into three rotating buffers.
    faces = [np.full((6, 5, 3), i, np.uint8) for i in range(11)]
    seen = []
    for indices, batch in thread_batches(faces, np.asarray, 4, workers=3, pin=False):
        assert batch.shape == (4, 6, 5, 3)
        rows = [int(batch[r, 0, 0, 0]) for r in range(4)]
        assert rows[: len(indices)] == indices
        assert rows[len(indices) :] == [indices[-1]] * (4 - len(indices))  # padding repeats
        seen += indices
    assert seen == list(range(11))

    odd = tmp_path / "00003.png"
    PIL.Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(odd)
    paths = [tmp_path / f"{i:05d}.png" for i in range(3)] + [odd]
    for path in paths[:3]:
        PIL.Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(path)
    load = lambda p: np.asarray(PIL.Image.open(p))  # noqa: E731
    with pytest.raises(ValueError, match="00003.png: a 5x7 face among 5x6 ones"):
        list(thread_batches(paths, load, 2, workers=2, pin=False))


def test_unpadded_batches_hold_only_real_faces() -> None:
    # The CPU's batches: no padding, the last one short.
    faces = [np.full((2, 2, 3), i, np.uint8) for i in range(5)]
    batches = list(thread_batches(faces, np.asarray, 2, workers=2, pin=False, pad=False))
    assert [indices for indices, _ in batches] == [[0, 1], [2, 3], [4]]
    assert [tuple(batch.shape) for _, batch in batches][-1] == (1, 2, 2, 3)
    assert 2 <= default_loader_threads() <= 16

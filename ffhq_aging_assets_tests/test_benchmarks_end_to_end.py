"""The end-to-end benchmark (``benchmarks/end_to_end.py``) on a tiny world.

Its baseline rebuilds the 2020 pipeline from the published whole-frame computations, so a build
in reference mode that writes the baseline's pixels is held, through Dagster, the download and
the alignment processes, to the published method on faces at a frame edge.
"""

import argparse
from pathlib import Path

import numpy as np
import pytest

from benchmarks.end_to_end import compare, edge_landmarks
from ffhq_aging_assets.lib.align import crop_geometry


def test_faces_near_an_edge_are_where_the_blur_pad_runs() -> None:
    for seed in range(40):
        rng = np.random.default_rng(seed)
        width, height = (int(v) for v in rng.integers(900, 2601, 2))
        lm = edge_landmarks(rng, width, height)
        for resolution in (256, 1024):
            assert crop_geometry(lm, width, height, resolution).blur_pad, (seed, resolution)


def test_a_reference_build_writes_the_published_pipelines_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        photos=3,
        near_edge=0.67,
        entries=1000,
        resolution=64,
        threads=4,
        runs="baseline,reference",
        world=str(tmp_path / "world"),
    )
    compare(args)
    out = capsys.readouterr().out
    assert "3 photos (2 near an edge)" in out
    assert out.count(", 3 images;") == 2, out
    assert "reference mode wrote the baseline's pixels for every image: True" in out
    assert "aligned_images" in out  # where the build's time went, read from its instance

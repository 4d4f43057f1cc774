import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from ffhq_aging_assets.lib.layout import DatasetLayout
from ffhq_aging_assets.lib.masks import write_mask
from ffhq_aging_assets.lib.precision import ALL_FP32, PrecisionRecord, write_precision_record
from ffhq_aging_assets.lib.segment_chunk import ChunkNotReady, segment_chunk

DATA = Path(__file__).parent / "data" / "deeplab"


def _faces(layout: DatasetLayout, count: int) -> list[int]:
    for n, image in enumerate(np.load(DATA / "seg_images.npy")[:count]):
        layout.image(n).parent.mkdir(parents=True, exist_ok=True)
        small = PIL.Image.fromarray(image).resize((layout.resolution, layout.resolution))
        small.save(layout.image(n))
    return list(range(count))


def test_an_absent_face_or_checkpoint_is_named(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path, 64)
    numbers = _faces(layout, 2)
    with pytest.raises(ChunkNotReady, match="chunk 00000: 1 aligned images are missing "):
        segment_chunk(layout, "00000", [*numbers, 2], device="cpu")
    with pytest.raises(ChunkNotReady, match=r"\(first 00002\): materialize aligned_images first"):
        segment_chunk(layout, "00000", [*numbers, 2], device="cpu")
    with pytest.raises(ChunkNotReady, match="materialize deeplab_checkpoint first") as err:
        segment_chunk(layout, "00000", numbers, device="cpu")
    assert str(layout.checkpoint) in str(err.value)
    assert not layout.precision_record("00000").exists()


def test_valid_masks_are_kept_and_described_without_the_model(tmp_path: Path) -> None:
    # No checkpoint under this root: a step with nothing to compute must not need it.
    layout = DatasetLayout(tmp_path, 64)
    numbers = _faces(layout, 3)
    for n in numbers:
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 1 + n
        write_mask(mask, layout.mask(n))
    kept = layout.mask(0).stat().st_mtime_ns
    record = PrecisionRecord("bf16", 0.995, 8)
    write_precision_record(layout.precision_record("00000"), record)
    dead = layout.parsings_dir("00000") / ".00001.png.partial-x-1-y"  # another host's writer
    dead.write_bytes(b"")
    os.utime(dead, (0, 0))  # untouched for long enough to count as abandoned
    lines: list[str] = []
    done = segment_chunk(layout, "00000", numbers, device="cpu", log=lines.append)
    assert done.computed == 0 and done.run is None and done.images_per_second == 0.0
    assert done.audit.valid == numbers and not done.audit.missing and not done.audit.malformed
    assert done.record == record and done.precision == "fp32" and done.agreement is None
    assert done.device == "cpu" and done.batch_size > 0 and done.engine == "eager"
    assert layout.mask(0).stat().st_mtime_ns == kept
    assert done.stats.num_rows == 3 and done.stats_path == layout.mask_stats_table("00000")
    assert done.stats_path.stat().st_size == done.stats_bytes
    assert done.mean_fractions()["frac_background"] == pytest.approx(0.75)
    assert done.preview_jpeg.startswith(b"\xff\xd8")  # a JPEG
    assert done.timings()["seconds"] >= 0
    assert not dead.exists() and done.leftovers == []
    assert "chunk 00000: removed 1 files a killed writer left" in lines


def test_a_broken_record_stops_a_step_that_keeps_masks(tmp_path: Path) -> None:
    layout = DatasetLayout(tmp_path, 64)
    numbers = _faces(layout, 1)
    write_mask(np.zeros((64, 64), np.uint8), layout.mask(0))
    layout.precision_record("00000").parent.mkdir(parents=True)
    layout.precision_record("00000").write_text("[]")
    with pytest.raises(ChunkNotReady, match="00000.json: unreadable precision record"):
        segment_chunk(layout, "00000", numbers, device="cpu")


def test_missing_masks_are_computed_in_fp32_on_the_cpu(
    tmp_path: Path, seeded_checkpoint: Path
) -> None:
    layout = DatasetLayout(tmp_path, 64)
    layout.checkpoint.parent.mkdir(parents=True)
    os.link(seeded_checkpoint, layout.checkpoint)
    numbers = _faces(layout, 2)
    write_mask(np.ones((64, 64), np.uint8), layout.mask(0))
    earlier = PrecisionRecord("bf16", 0.995, 8)  # bf16 masks of an earlier step remain
    write_precision_record(layout.precision_record("00000"), earlier)
    lines: list[str] = []
    done = segment_chunk(
        layout, "00000", numbers, device="cpu", precision="auto", compile="aot", log=lines.append
    )
    assert done.computed == 1 and done.run is not None and done.run.masks == 1
    assert done.engine == "eager" and done.aot_agreement is None
    assert "compile aot: ignored on cpu; the eager model computes the chunk" in lines
    assert done.precision == "fp32" and done.agreement is None  # the CPU never compares
    assert done.record == earlier and done.record != ALL_FP32
    assert done.audit.valid == [0, 1] and done.stats.num_rows == 2
    assert any(line.startswith("chunk 00000: ") and "/1 masks, " in line for line in lines)
    assert done.images_per_second > 0

import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image

from ffhq_aging_assets.lib.masks import (
    CLASS_NAMES,
    NUM_CLASSES,
    audit_masks,
    mask_stats,
    write_mask,
)


def test_masks_are_sorted_missing_malformed_or_valid(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n:05d}.png" for n in range(5)]
    write_mask(np.zeros((8, 8), np.uint8), paths[0])
    write_mask(np.zeros((4, 4), np.uint8), paths[1])  # wrong size
    PIL.Image.new("RGB", (8, 8)).save(paths[2])  # not greyscale
    paths[3].write_bytes(b"broken")
    audit = audit_masks(range(5), paths, 8)
    assert audit.valid == [0] and audit.malformed == [1, 2, 3] and audit.missing == [4]


def test_mask_stats_give_class_fractions() -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 1
    mask[0, 0] = NUM_CLASSES - 1
    stats = mask_stats([7], [mask])
    row = stats.to_pylist()[0]
    assert row["image_number"] == 7 and row["classes_present"] == 3
    assert row["max_class"] == NUM_CLASSES - 1 == len(CLASS_NAMES) - 1
    assert row["frac_skin"] == 7 / 16 and row["frac_background"] == 8 / 16
    assert np.isclose(sum(row[f"frac_{name}"] for name in CLASS_NAMES), 1.0)


def test_masks_and_the_precision_record_need_no_torch() -> None:
    # The checks read both while the definitions load, and those must not import torch.
    code = (
        "import sys, ffhq_aging_assets.lib.masks, ffhq_aging_assets.lib.precision; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

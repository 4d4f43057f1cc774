"""The 2020 segmentation script's loop, kept as the baseline the engine is held to.

One image at a time, fp32, weights standardised on every forward, PIL preprocessing: the tests
check the engine against it and the benchmarks measure it (``benchmarks/segment.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from torch import nn

from ffhq_aging_assets.lib.segment_input import normalize, published_input


def published_loop(
    model: nn.Module, images: Sequence[np.ndarray], resolution: int, device: str = "cpu"
) -> np.ndarray:
    """The 2020 script's loop: one image at a time, fp32, weights standardised every forward."""
    dev = torch.device(device)
    model = model.eval().to(dev)
    out = []
    with torch.no_grad():
        for image in images:
            x = normalize(torch.from_numpy(published_input(image))[None].to(dev))
            labels = model(x).argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            pil = PIL.Image.fromarray(labels).resize(
                (resolution, resolution), PIL.Image.Resampling.NEAREST
            )
            out.append(np.asarray(pil))
    return np.stack(out)

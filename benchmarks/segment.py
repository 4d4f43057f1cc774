"""Segmentation throughput: the published per-image loop against the batched engine.

Usage: python benchmarks/segment.py [--device cpu|cuda] [--images 16] [--batch-size 4]

Seeded random weights in the published architecture (no trained weights here); faces are the
reference inputs of the tests tiled to ``--images``. In one run: the published loop (batch 1,
fp32, weights standardised on every forward, PIL preprocessing), then the engine
(``segment_images``: weights folded, batched, loader threads; on CUDA channels-last, bf16
autocast, resize and normalisation on the device). Reports images per second of each including
everything after the model is built, the mask agreement between them, and the engine's logits
error against fp32 on the reference input.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from ffhq_aging_assets.lib.deeplab import build_deeplab
from ffhq_aging_assets.lib.segment import (
    prepare_model,
    published_loop,
    resolve_device,
    segment_images,
)
from ffhq_aging_assets.lib.synthetic import seeded_deeplab_state

DATA = Path(__file__).resolve().parents[1] / "ffhq_aging_assets_tests" / "data" / "deeplab"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    device = resolve_device(args.device)
    batch = args.batch_size or (32 if device.type == "cuda" else 4)
    faces = np.load(DATA / "seg_images.npy")
    images = [faces[i % len(faces)] for i in range(args.images)]
    model = build_deeplab()
    model.load_state_dict(seeded_deeplab_state())
    model.eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images"
    )

    published_loop(copy.deepcopy(model), images[:1], args.resolution, str(device))  # warm-up
    t = time.perf_counter()
    ref = published_loop(copy.deepcopy(model), images, args.resolution, str(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    published = args.images / (time.perf_counter() - t)

    t = time.perf_counter()
    engine = prepare_model(copy.deepcopy(model), device)
    segment_images(engine, images[:batch], args.resolution, device, batch, prepared=True)  # warm-up
    t_ready = time.perf_counter() - t
    t = time.perf_counter()
    ours = segment_images(engine, images, args.resolution, device, batch, prepared=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fast = args.images / (time.perf_counter() - t)

    x = torch.from_numpy(np.load(DATA / "deeplab_input.npy")).to(device)
    reference_logits = np.load(DATA / "deeplab_logits.npy")
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = engine(x.contiguous(memory_format=torch.channels_last)).float()
        else:
            logits = engine(x)
    rel = float(
        np.abs(logits.cpu().numpy() - reference_logits).max() / np.abs(reference_logits).max()
    )
    agreement = float((ours == ref).mean())
    print("| variant | batch | img/s | vs published |")
    print("|---|---|---|---|")
    print(f"| published loop (fp32, batch 1, WS every forward) | 1 | {published:.2f} | 1.0x |")
    print(
        f"| engine ({'bf16, channels-last' if device.type == 'cuda' else 'fp32'}, folded) "
        f"| {batch} | {fast:.2f} | {fast / published:.1f}x |"
    )
    print(f"engine set-up (fold, move, first batch): {t_ready:.1f} s")
    print(f"mask agreement engine vs published loop: {agreement * 100:.2f}%")
    print(f"engine logits max error vs fp32 reference, relative to max |logit|: {rel:.2e}")


if __name__ == "__main__":
    main()

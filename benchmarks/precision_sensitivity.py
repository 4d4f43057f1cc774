"""How far rounding moves the masks of a DeepLab: fp32 and bf16 against fp64, on the CPU.

Usage: python -m benchmarks.precision_sensitivity [--faces 2] [--damp 0.2 0.05]

Random weights are not trained weights: the seeded ones (DESIGN.md) give every residual branch
full weight through 33 blocks, and rounding errors grow through them. This measures it on the
tests' reference faces through the published preprocessing: the folded model in fp64 is the
reference; fp32 and bf16 autocast are compared with it by logits error (relative to the
largest logit) and argmax agreement, with the median top-2 logit margin. ``--damp`` repeats it
with each bottleneck's last GroupNorm scale (``bn3.weight``) multiplied by the factor, which
shrinks the residual branches as training tends to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ffhq_aging_assets.lib.deeplab import build_deeplab
from ffhq_aging_assets.lib.segment_input import normalize, published_input
from ffhq_aging_assets.lib.segment_model import prepare_model
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state

DATA = Path(__file__).resolve().parents[1] / "ffhq_aging_assets_tests" / "data" / "deeplab"


def measure(state: dict, x: torch.Tensor) -> dict:
    deeplab = build_deeplab()
    deeplab.load_state_dict(state)
    model = prepare_model(deeplab.eval(), torch.device("cpu"))
    with torch.inference_mode():
        ref = model.double()(x.double()).float()
        model = model.float()
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).float()
    scale = ref.abs().max()
    top2 = ref.topk(2, dim=1).values
    target = ref.argmax(1)
    return {
        "fp32_err": float((fp32 - ref).abs().max() / scale),
        "fp32_agree": float((fp32.argmax(1) == target).float().mean()),
        "bf16_err": float((bf16 - ref).abs().max() / scale),
        "bf16_agree": float((bf16.argmax(1) == target).float().mean()),
        "margin": float(((top2[:, 0] - top2[:, 1]) / scale).median()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=2)
    parser.add_argument("--damp", type=float, nargs="*", default=[0.2, 0.05])
    args = parser.parse_args()
    faces = np.load(DATA / "seg_images.npy")[: args.faces]
    x = normalize(torch.from_numpy(np.stack([published_input(f) for f in faces])))
    state = seeded_deeplab_state()
    print("| weights | fp32 err | fp32 agree | bf16 err | bf16 agree | median margin |")
    print("|---|---|---|---|---|---|")
    for label, factor in [("seeded", 1.0)] + [(f"bn3 x {d}", d) for d in args.damp]:
        damped = {k: v * factor if k.endswith("bn3.weight") else v for k, v in state.items()}
        r = measure(damped, x)
        print(
            f"| {label} | {r['fp32_err']:.1e} | {r['fp32_agree']:.2%} | {r['bf16_err']:.1e} "
            f"| {r['bf16_agree']:.2%} | {r['margin']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Segmentation throughput: the published per-image loop against the batched engine.

Usage:
    python -m benchmarks.segment throughput [--device cpu|cuda] [--images 16]
        [--variants eager-fp32:4,compiled-bf16:64] [--published-images 16] [--json out.json]
    python -m benchmarks.segment chunk --work DIR [--device cuda] [--images 1000]
        [--resolution 1024] [--batch-size 64] [--precision bf16] [--variants eager,cold,warm]

Seeded random weights in the published architecture (trained weights cannot be fetched here).

``throughput``: in one process, on faces held in memory (the reference faces resized to
``--face-size`` and cycled): the published loop (batch 1, fp32, weights standardised on every
forward, PIL preprocessing; on CUDA once with cuDNN's default TF32 and once in strict fp32),
then each engine variant (weights folded, batched, loader threads; on CUDA channels-last,
bf16 autocast or strict fp32, resize and normalisation on the device; eager or under
``torch.compile``). Each variant reports images per second after its
first batch (whose time, compilation included, is reported apart), its mask agreement with the
published loop, and its logits error against strict fp32 logits of the published model at 513.

``chunk``: the per-step figure that matters in a Dagster run: a fresh process per step, which
loads the checkpoint (written in the published format), prepares the model, segments
``--images`` face PNGs from disk and writes their masks, as ``segmentation_masks`` does (in
bf16 with its fp32 comparison on 8 faces). Variants: ``eager``, ``cold`` (compiled, empty
inductor cache), ``warm`` (compiled again in a new process with the cache the cold step
left), ``aotcold`` (the AOTInductor package built into an empty folder, then loaded) and
``aot`` (the package loaded, built only if missing); an AOT step compares its masks with the
eager model's on 8 faces and reports that, then runs the package on every face. ``published``
is the 2020 script's loop as a step (batch 1, one face file after another, PyTorch's default
numerics; ``published-fp32``: strict fp32), the baseline for whole steps. Each takes
optional ``-`` flags: ``device`` resizes on the GPU instead of with PIL on the
loaders; ``procs`` decodes in loader processes instead of threads (``threads``, the
default); ``fp32`` runs the step in strict fp32 (what ``precision auto`` falls back to)
without the comparison; ``search`` or ``nosearch`` forces cuDNN's algorithm search on or off
(default: on in bf16 only); ``limitN`` searches, trying at most N algorithms per convolution
(``cudnn.benchmark_limit``); ``nchw`` keeps the model in the default layout, not channels-last.
``device``, ``procs``, ``search`` and ``nosearch`` are the engine variants of
``benchmarks/segment_variants.py``; without them a step runs the production ``segment_files``.
Reports wall time per step from process start, where the step's time went (waiting for
decoded faces, the model, waiting for mask writes), images per second, and the masks'
agreement with the first step's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from benchmarks.segment_variants import segment_files_variant
from ffhq_aging_assets.lib.deeplab import build_deeplab, load_deeplab
from ffhq_aging_assets.lib.segment import fidelity, segment_files, segment_images
from ffhq_aging_assets.lib.segment_aot import (
    build_package,
    load_package,
    mask_agreement,
    package_for,
)
from ffhq_aging_assets.lib.segment_input import normalize, published_input, read_face
from ffhq_aging_assets.lib.segment_model import (
    forward,
    prepare_model,
    resolve_device,
    strict_fp32,
)
from ffhq_aging_assets_tests.published_segment import published_loop
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state, write_published_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "ffhq_aging_assets_tests" / "data" / "deeplab"


def seeded_model() -> torch.nn.Module:
    model = build_deeplab()
    model.load_state_dict(seeded_deeplab_state())
    return model.eval()


def faces(count: int, size: int) -> list[np.ndarray]:
    """The three reference faces at ``size`` (bicubic), cycled to ``count``."""
    base = [
        np.asarray(PIL.Image.fromarray(f).resize((size, size), PIL.Image.Resampling.BICUBIC))
        for f in np.load(DATA / "seg_images.npy")
    ]
    return [base[i % len(base)] for i in range(count)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def engine_logits(model, images, device, batch, precision) -> np.ndarray:
    """The prepared engine's 513 x 513 logits for ``images``, padded to ``batch`` as it runs."""
    padded = images + [images[-1]] * (batch - len(images))
    x = normalize(torch.from_numpy(np.stack([published_input(f) for f in padded])).to(device))
    return forward(model, x, precision)[: len(images)].float().cpu().numpy()


def throughput(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    images = faces(args.images, args.face_size)
    model = seeded_model()
    result: dict = {
        "mode": "throughput",
        "device": f"{device} ({name})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": args.images,
        "face_size": args.face_size,
        "variants": [],
    }
    print(f"device {result['device']}, torch {torch.__version__}, {args.images} images", flush=True)

    # The engines are prepared (and compiled) first: the published loop and the reference switch
    # TF32 off and on, and inductor's cache keys include those switches. Each timed run of the
    # published loop puts PyTorch's default back before the next engine run.
    probe = images[:4]
    engines = []
    for spec in args.variants.split(","):
        mode, rest = spec.split("-")
        precision, batch = rest.split(":")
        batch, compiled = int(batch), mode == "compiled"
        t = time.perf_counter()
        engine = prepare_model(
            copy.deepcopy(model),
            device,
            compile=compiled,
            cache_dir=Path(args.cache) if compiled and args.cache else None,
        )
        run = dict(prepared=True, precision=precision)
        segment_images(engine, images[:batch], args.resolution, device, batch, **run)
        sync(device)
        first = time.perf_counter() - t
        logits = engine_logits(engine, probe, device, batch, precision)
        kind = f"{precision}, channels-last" if cuda else "fp32"
        label = f"engine ({kind}, folded{', torch.compile' if compiled else ''}), batch {batch}"
        engines.append((label, batch, engine, run, first, logits))
        print(f"{label}: prepared, first batch {first:.1f} s", flush=True)

    # Strict fp32 logits of the published model at 513 on a few faces: the logits reference.
    with torch.inference_mode(), strict_fp32():
        published = copy.deepcopy(model).to(device)
        ref_in = torch.from_numpy(np.load(DATA / "deeplab_input.npy")).to(device)
        ref_err = np.abs(published(ref_in).cpu().numpy() - np.load(DATA / "deeplab_logits.npy"))
        result["published_vs_reference_logits"] = float(
            ref_err.max() / np.abs(np.load(DATA / "deeplab_logits.npy")).max()
        )
        # The published preprocessing (PIL), as the 2020 loop runs it.
        x = torch.from_numpy(np.stack([published_input(f) for f in probe])).to(device)
        reference = published(normalize(x)).cpu().numpy()
        del published
    scale = float(np.abs(reference).max())

    pub_images = images[: args.published_images]

    def published_run(strict: bool) -> np.ndarray:
        torch.backends.cudnn.allow_tf32 = not strict
        try:
            return published_loop(copy.deepcopy(model), pub_images, args.resolution, str(device))
        finally:
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's default

    # Every variant once per round, the order reversed every other round, so that a machine
    # whose speed drifts (other work on a shared VM) moves all of them alike: the ratios are
    # taken from medians over the rounds.
    timed: dict[str, tuple[int, Callable[[], np.ndarray], int]] = {}
    for strict in args.published_modes if cuda else (True,):
        label = "published loop (batch 1, WS every forward, " + (
            "fp32)" if strict else "cuDNN default TF32)"
        )
        published_run(strict)  # warm-up
        timed[label] = (1, functools.partial(published_run, strict), len(pub_images))
    for label, batch, engine, run, _, _ in engines:
        timed[label] = (
            batch,
            functools.partial(
                segment_images, engine, images, args.resolution, device, batch, **run
            ),
            len(images),
        )
    rates: dict[str, list[float]] = {label: [] for label in timed}
    masks_of: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for label in list(timed) if r % 2 == 0 else reversed(list(timed)):
            _, timed_call, count = timed[label]
            sync(device)
            before = resource.getrusage(resource.RUSAGE_SELF)
            t = time.perf_counter()
            masks_of[label] = timed_call()
            sync(device)
            rates[label].append(count / (time.perf_counter() - t))
            after = resource.getrusage(resource.RUSAGE_SELF)
            # Pages the process faulted in (fresh memory from the kernel) and kernel time.
            faulted = (after.ru_minflt - before.ru_minflt) * resource.getpagesize() / 2**20
            kernel = after.ru_stime - before.ru_stime
            print(
                f"round {r + 1}: {label}: {rates[label][-1]:.2f} img/s, "
                f"{faulted / count:.0f} MB faulted in and {kernel / count:.2f} s in the kernel "
                "per image",
                flush=True,
            )
    published_labels = [label for label in timed if label.startswith("published")]
    for label in published_labels:
        rate = statistics.median(rates[label])
        result["variants"].append(
            {"variant": label, "batch": 1, "img_s": rate, "rounds": rates[label], "agreement": None}
        )
    published_rate = max(v["img_s"] for v in result["variants"])
    # Agreement is measured against strict fp32 where it ran.
    baseline = masks_of[published_labels[-1]]

    for label, batch, _, _, first, logits in engines:
        masks = masks_of[label]
        rate = statistics.median(rates[label])
        row = {
            "variant": label,
            "batch": batch,
            "img_s": rate,
            "rounds": rates[label],
            "vs_published": rate / published_rate,
            "first_batch_s": first,
            "agreement": float((masks[: len(baseline)] == baseline).mean()),
            "logits_rel_err": float(np.abs(logits - reference).max() / scale),
        }
        result["variants"].append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"medians of {args.rounds} round(s); per round, each engine against the best published:")
    for label, *_ in engines:
        best = [max(rates[p][r] for p in published_labels) for r in range(args.rounds)]
        ratios = ", ".join(f"{e / b:.2f}x" for e, b in zip(rates[label], best, strict=True))
        print(f"  {label}: {ratios}")
    print()
    print("| variant | batch | img/s | vs published | first batch s | agreement | logits err |")
    print("|---|---|---|---|---|---|---|")
    for v in result["variants"]:
        extra = (
            f"| {v['vs_published']:.1f}x | {v['first_batch_s']:.1f} | "
            f"{v['agreement'] * 100:.2f}% | {v['logits_rel_err']:.1e} |"
            if v["agreement"] is not None
            else "| 1.0x | | | |"
        )
        print(f"| {v['variant']} | {v['batch']} | {v['img_s']:.2f} {extra}")
    print(f"published model vs the reference logits: {result['published_vs_reference_logits']:.1e}")
    return result


def step(args: argparse.Namespace) -> None:
    """One chunk step in this fresh process: load, prepare, segment, write masks."""
    device = resolve_device(args.device)
    t = time.perf_counter()
    mode, *flags = args.variant.split("-")
    limits = [int(f[5:]) for f in flags if f.startswith("limit") and f[5:].isdigit()]
    unknown = set(flags) - {"device", "threads", "procs", "fp32", "search", "nosearch", "nchw"}
    unknown -= {f"limit{n}" for n in limits}
    if mode not in ("eager", "cold", "warm", "aot", "aotcold", "published") or unknown:
        raise SystemExit(f"variant {args.variant!r}: unknown mode or flags {sorted(unknown)}")
    if mode == "published":
        published_step(args, device, strict="fp32" in flags)
        return
    compiled = mode in ("cold", "warm")
    processes = "procs" in flags
    search = True if "search" in flags else False if "nosearch" in flags else None
    if limits:
        # cuDNN tries at most this many algorithms per convolution in its search.
        torch.backends.cudnn.benchmark_limit = limits[0]
        search = True
    model = prepare_model(
        load_deeplab(Path(args.weights)),
        device,
        compile=compiled,
        cache_dir=Path(args.cache),
        channels_last="nchw" not in flags,
    )
    sync(device)
    load = time.perf_counter() - t
    face_files = sorted(Path(args.faces).glob("*.png"))
    t = time.perf_counter()
    agreement = None
    if args.precision == "bf16" and device.type == "cuda":
        agreement = fidelity(model, face_files[:8], args.resolution, device, args.batch_size)
    check = time.perf_counter() - t
    aot: dict = {}
    if mode.startswith("aot"):
        model, aot = ahead_of_time(model, args, device, face_files[:8])
    out = Path(args.masks)
    out.mkdir(parents=True, exist_ok=True)
    masks = [out / f.name for f in face_files]
    common = (model, face_files, masks, args.resolution, device, args.batch_size)
    if processes or "device" in flags or search is not None:
        run = segment_files_variant(
            *common,
            precision=args.precision,
            processes=-1 if processes else 0,
            device_resize="device" in flags,
            search=search,
        )
    else:
        run = segment_files(*common, precision=args.precision)
    row = {
        "load_s": load,
        "fidelity_s": check,
        "fidelity": agreement,
        "first_batch_s": run.first_batch_seconds,
        "segment_s": run.seconds,
        "input_wait_s": run.input_wait_seconds,
        "model_s": run.model_seconds,
        "write_wait_s": run.write_wait_seconds,
        "masks": run.masks,
        **aot,
    }
    print(json.dumps(row))


def published_step(args: argparse.Namespace, device: torch.device, strict: bool) -> None:
    """The 2020 script as one chunk step: the model as published (weights standardised every
    forward), then for each face file in turn: decode, preprocess, batch 1, argmax, resize,
    write its mask. PyTorch's default numerics as the script ran them (cuDNN may use TF32), or
    strict fp32 with ``strict``."""
    t = time.perf_counter()
    model = load_deeplab(Path(args.weights)).to(device).eval()
    sync(device)
    load = time.perf_counter() - t
    out = Path(args.masks)
    out.mkdir(parents=True, exist_ok=True)
    face_files = sorted(Path(args.faces).glob("*.png"))
    t = time.perf_counter()
    first = 0.0
    with strict_fp32() if strict else contextlib.nullcontext():
        for face in face_files:
            mask = published_loop(model, [read_face(face)], args.resolution, str(device))[0]
            PIL.Image.fromarray(mask).save(out / face.name)
            first = first or time.perf_counter() - t
    seconds = time.perf_counter() - t
    row = {
        "load_s": load,
        "fidelity_s": 0.0,
        "fidelity": None,
        "first_batch_s": first,
        "segment_s": seconds,
        "input_wait_s": 0.0,
        "model_s": seconds,
        "write_wait_s": 0.0,
        "masks": len(face_files),
    }
    print(json.dumps(row))


def ahead_of_time(
    eager: torch.nn.Module,
    args: argparse.Namespace,
    device: torch.device,
    sample: list[Path],
) -> tuple[torch.nn.Module, dict]:
    """Build (if missing) and load the step's AOTInductor package; its masks on ``sample``
    against the eager model's. The step then runs the package whatever they say, to time it
    (``segmentation_masks`` would keep the eager model unless they are equal)."""
    path = package_for(
        Path(args.aot_cache), eager, args.batch_size, args.precision, Path(args.weights)
    )
    t = time.perf_counter()
    built = build_package(eager, path, args.batch_size, args.precision)
    build = time.perf_counter() - t
    t = time.perf_counter()
    aot = load_package(path, eager, args.batch_size, args.precision)
    sync(device)
    load = time.perf_counter() - t
    agreement = mask_agreement(aot, eager, sample, args.resolution, args.batch_size, args.precision)
    return aot, {
        "aot_built": built,
        "aot_build_s": build,
        "aot_load_s": load,
        "aot_bytes": path.stat().st_size,
        "aot_vs_eager": agreement,
    }


def chunk(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    work = Path(args.work)
    face_dir = work / f"faces-{args.resolution}"
    weights = work / "deeplab_model.pth"
    if not weights.is_file():
        work.mkdir(parents=True, exist_ok=True)
        write_published_checkpoint(weights, seeded_deeplab_state())
    if len(list(face_dir.glob("*.png"))) != args.images:
        shutil.rmtree(face_dir, ignore_errors=True)
        face_dir.mkdir(parents=True)
        # The faces cycle through three images: encode each once, copy the files.
        base = faces(3, args.resolution)
        for i in range(args.images):
            if i < len(base):
                PIL.Image.fromarray(base[i]).save(face_dir / f"{i:05d}.png", compress_level=1)
            else:
                shutil.copyfile(face_dir / f"{i % len(base):05d}.png", face_dir / f"{i:05d}.png")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result: dict = {
        "mode": "chunk",
        "device": f"{device} ({name})",
        "torch": torch.__version__,
        "images": args.images,
        "resolution": args.resolution,
        "batch": args.batch_size,
        "precision": args.precision,
        "steps": [],
    }
    cache = work / "inductor"
    aot_cache = Path(args.aot_cache) if args.aot_cache else work / "aot"
    reference = None
    failed: list[str] = []
    for variant in args.variants.split(","):
        if variant == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        if variant.startswith("aotcold"):
            shutil.rmtree(aot_cache, ignore_errors=True)
        masks = work / f"masks-{variant}"
        shutil.rmtree(masks, ignore_errors=True)
        command = [sys.executable, "-m", "benchmarks.segment", "step", "--variant", variant]
        command += ["--device", str(device)]
        command += ["--weights", str(weights), "--faces", str(face_dir), "--masks", str(masks)]
        command += ["--cache", str(cache), "--resolution", str(args.resolution)]
        command += ["--aot-cache", str(aot_cache)]
        precision = "fp32" if "fp32" in variant.split("-") else args.precision
        if variant == "published":
            precision = "default"  # PyTorch's: fp32, cuDNN convolutions may use TF32
        command += ["--batch-size", str(args.batch_size), "--precision", precision]
        t = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode:
            # The next variants still run: one that fails on a machine lent for minutes must
            # not cost the others.
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
            print(f"step {variant} failed with exit code {proc.returncode}", flush=True)
            failed.append(variant)
            continue
        row = {"variant": variant, "precision": precision, "wall_s": wall}
        row.update(json.loads(proc.stdout.splitlines()[-1]))
        row["img_s_wall"] = args.images / wall
        written = np.stack([np.asarray(PIL.Image.open(p)) for p in sorted(masks.glob("*.png"))])
        if reference is None:
            reference = written
        row["agreement_with_first"] = float((written == reference).mean())
        result["steps"].append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{args.images} faces at {args.resolution}, batch {args.batch_size}, {result['device']}")
    print(
        "| step | precision | wall s | load s | fp32 check s | first batch s | input wait s "
        "| model s | write wait s | img/s (wall) | agreement | AOT build s | AOT load s "
        "| AOT vs eager |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["steps"]:
        aot = (
            f"| {r['aot_build_s']:.1f} | {r['aot_load_s']:.1f} | {r['aot_vs_eager'] * 100:.2f}% |"
            if "aot_vs_eager" in r
            else "| | | |"
        )
        print(
            f"| {r['variant']} | {r['precision']} | {r['wall_s']:.1f} | {r['load_s']:.1f} "
            f"| {r['fidelity_s']:.1f} | {r['first_batch_s']:.1f} | {r['input_wait_s']:.1f} "
            f"| {r['model_s']:.1f} "
            f"| {r['write_wait_s']:.1f} | {r['img_s_wall']:.1f} "
            f"| {r['agreement_with_first'] * 100:.2f}% {aot}"
        )
    if failed:
        print(f"failed: {', '.join(failed)}")
    result["failed"] = failed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--device", default="auto")
    t.add_argument("--images", type=int, default=16)
    t.add_argument("--published-images", type=int, default=16)
    t.add_argument("--face-size", type=int, default=256)
    t.add_argument("--resolution", type=int, default=256)
    t.add_argument(
        "--variants",
        default="eager-fp32:1",
        help="comma-separated MODE-PRECISION:BATCH, MODE eager|compiled, PRECISION bf16|fp32",
    )
    t.add_argument(
        "--published-modes",
        type=lambda s: [m == "fp32" for m in s.split(",")],
        default=[False, True],
        help="on CUDA: tf32 (cuDNN's default), fp32 (strict) or both [tf32,fp32]",
    )
    t.add_argument("--cache", default=None, help="inductor cache folder for the compiled run")
    t.add_argument(
        "--rounds", type=int, default=3, help="timed runs of every variant, order alternated"
    )
    t.add_argument("--json", default=None)
    c = sub.add_parser("chunk")
    c.add_argument("--work", required=True)
    c.add_argument("--device", default="auto")
    c.add_argument("--images", type=int, default=1000)
    c.add_argument("--resolution", type=int, default=1024)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--variants", default="eager,cold,warm")
    c.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    c.add_argument("--json", default=None)
    c.add_argument("--aot-cache", default=None, help="AOTInductor packages (default WORK/aot)")
    s = sub.add_parser("step")
    s.add_argument("--aot-cache", required=True)
    for flag in ("--variant", "--device", "--weights", "--faces", "--masks", "--cache"):
        s.add_argument(flag, required=True)
    s.add_argument("--resolution", type=int, required=True)
    s.add_argument("--batch-size", type=int, required=True)
    s.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    if args.mode == "step":
        step(args)
        return
    result = throughput(args) if args.mode == "throughput" else chunk(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

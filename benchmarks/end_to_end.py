"""End to end, download and align one chunk: ``ffhq-aging build`` against the 2020 pipeline.

Usage:
    python -m benchmarks.end_to_end [--photos 300] [--near-edge 0.4] [--entries 70000]
        [--resolution 256] [--runs baseline,reference,fast] [--threads 32] [--world DIR]

Serves, from the tests' fake Google Drive on loopback, a synthetic ``--entries``-entry
``ffhq-dataset-v2.json`` in the published layout and ``--photos`` in-the-wild PNGs of chunk
00000 (900-2600 px a side, a ``--near-edge`` share of the faces at a frame's edge or cut by it,
where the blur-pad runs). Then, each in a fresh process, side by side in one invocation:

``baseline``: the 2020 download script's structure as DESIGN.md describes it, built from the
project's own pieces: one process downloads the metadata JSON, loads it whole with
``json.load(..., object_pairs_hook=OrderedDict)``, shuffles the in-the-wild specs and starts
``--threads`` threads; each takes the next photo, downloads it with size and md5 checked
(today's Drive page handled by ``DriveHttpSource``), opens it and checks its pixel size and
pixel md5, aligns it with the published computation (the whole-frame shrink and the whole-frame
blur-pad of ``ffhq_aging_assets_tests/published_align.py``, the canvas by Pillow's
``transform`` and ``resize``), writes the PNG and deletes the photo.

``reference`` / ``fast``: ``ffhq-aging build --partitions 00000 --limit PHOTOS --select
ffhq_metadata_json,image_metadata,alignments,aligned_images`` in that alignment mode, into a
fresh instance and root, with the default executor and settings.

Reports each run's wall time, the peak resident memory of its whole process tree (sampled every
50 ms) and the ratios to the baseline; checks that reference mode wrote the baseline's pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from unittest import mock

import numpy as np
import PIL.Image

from benchmarks.build_runs import print_runs
from ffhq_aging_assets.lib import align
from ffhq_aging_assets.lib.align import align_face
from ffhq_aging_assets.lib.download import FileSpec, RetryPolicy
from ffhq_aging_assets.lib.images import pixel_md5
from ffhq_aging_assets.lib.sources import DriveHttpSource

PROJECT = Path(__file__).resolve().parents[1]
ASSETS = "ffhq_metadata_json,image_metadata,alignments,aligned_images"


def edge_landmarks(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A face touching a frame edge (left, top, right or bottom), or cut by it."""
    from ffhq_aging_assets_tests.synthetic import face_template

    size = rng.uniform(0.2, 0.45) * min(width, height)
    inset = rng.uniform(-0.15, 0.03) * size
    side = int(rng.integers(4))
    along = rng.uniform(0.1, 0.9) * (np.array([width, height]) - size)
    x0 = (inset, along[0], width - size - inset, along[0])[side]
    y0 = (along[1], inset, along[1], height - size - inset)[side]
    return face_template() * size + (x0, y0) + rng.normal(0.0, 0.004 * size, (68, 2))


# The fake Drive's address stands in the cached metadata as this, replaced when served.
PLACEHOLDER = "http://fake-drive.invalid"


def make_world(store: Path, photos: int, near_edge: float, entries: int) -> None:
    """Write the photos, the metadata JSON and the labels CSV of a world into ``store``."""
    from ffhq_aging_assets_tests.synthetic import (
        WildFile,
        random_landmarks,
        synthetic_photo,
        write_ffhq_json,
        write_labels_csv,
    )

    (store / "photos").mkdir(parents=True, exist_ok=True)
    files = {}
    edge = set(np.random.default_rng(0).permutation(photos)[: round(near_edge * photos)].tolist())
    for n in range(photos):
        rng = np.random.default_rng(1000 + n)
        width, height = (int(v) for v in rng.integers(900, 2601, 2))
        lm = (edge_landmarks if n in edge else random_landmarks)(rng, width, height)
        img = synthetic_photo(width, height, lm, seed=n)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        (store / "photos" / f"{n:05d}.png").write_bytes(data)
        url = f"{PLACEHOLDER}/uc?id=e2ePhoto{n:05d}x"
        files[n] = WildFile(
            url, len(data), hashlib.md5(data).hexdigest(), img.size, pixel_md5(img), lm
        )
    write_ffhq_json(store / "ffhq-dataset-v2.json", entries, seed=11, files=files)
    write_labels_csv(store / "ffhq_aging_labels.csv", entries, seed=3)
    (store / "edge.json").write_text(json.dumps(sorted(edge)))


def serve_world(drive, store: Path, photos: int, near_edge: float, entries: int):
    """Serve the metadata JSON, LICENSE and labels, and ``photos`` photos of chunk 00000.

    The world is made once into ``store`` and served from there on later runs.
    """
    from ffhq_aging_assets_tests.fixtures import serve_inputs

    if not (store / "edge.json").is_file():
        make_world(store, photos, near_edge, entries)
    total = 0
    for n in range(photos):
        data = (store / "photos" / f"{n:05d}.png").read_bytes()
        drive.add(f"e2ePhoto{n:05d}x", data, f"{n:05d}.png")
        total += len(data)
    raw = (
        (store / "ffhq-dataset-v2.json")
        .read_bytes()
        .replace(PLACEHOLDER.encode(), drive.base.encode())
    )
    labels = (store / "ffhq_aging_labels.csv").read_bytes()
    served = serve_inputs(drive, store / "ffhq-dataset-v2.json", raw, labels)
    edge = json.loads((store / "edge.json").read_text())
    print(
        f"{photos} photos ({len(edge)} near an edge), {total / 1e6:.0f} MB, "
        f"metadata {entries} entries {len(raw) / 1e6:.0f} MB, {os.cpu_count()} cores",
        flush=True,
    )
    return served


def baseline(args: argparse.Namespace) -> None:
    """The 2020 pipeline's structure (runs in its own process; see the module's docstring)."""
    from benchmarks.align import previous_shrunk_crop
    from ffhq_aging_assets.lib.quad_canvas import pillow_sample_quad
    from ffhq_aging_assets_tests.published_align import published_blur_pad

    out, work = Path(args.out), Path(args.out) / "work"
    work.mkdir(parents=True)
    source = DriveHttpSource(RetryPolicy(attempts=3))
    meta = source.fetch(
        FileSpec(args.metadata_url, "ffhq-dataset-v2.json", args.metadata_size, args.metadata_md5),
        work / "ffhq-dataset-v2.json",
    )
    with open(meta.path, "rb") as f:
        json_data = json.load(f, object_pairs_hook=OrderedDict)
    specs = [json_data[str(n)] for n in range(args.photos)]
    random.Random(123).shuffle(specs)
    queue = iter(list(enumerate(specs)))
    lock = threading.Lock()
    errors: list[BaseException] = []
    res = args.resolution
    (out / f"ffhq_aging{res}x{res}" / "00000").mkdir(parents=True)

    def worker() -> None:
        while not errors:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                wild = item[1]["in_the_wild"]
                name = Path(wild["file_path"]).name
                spec = FileSpec(wild["file_url"], name, wild["file_size"], wild["file_md5"])
                photo = source.fetch(spec, work / name).path
                with PIL.Image.open(photo) as img:
                    img.load()
                assert list(img.size) == wild["pixel_size"], name
                assert pixel_md5(img) == wild["pixel_md5"], name
                lm = np.array(wild["face_landmarks"], dtype=np.float64)
                dest = out / f"ffhq_aging{res}x{res}" / "00000" / name
                align_face(img, lm, res, mode="reference").save(dest, format="PNG")
                photo.unlink()
            except BaseException as exc:  # the 2020 script: one failure stops the run
                errors.append(exc)
                raise

    with (
        mock.patch.object(align, "_shrunk_crop", previous_shrunk_crop),
        mock.patch.object(align, "_blur_pad", published_blur_pad),
        mock.patch.object(align, "sample_quad", pillow_sample_quad),
    ):
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise SystemExit(f"baseline failed: {errors[0]!r}")


def describe(proc) -> str:
    """A process's role, from its command line."""
    words = proc.cmdline()
    text = " ".join(words)
    if "multiprocessing.spawn" in text:
        parent = proc.parent()
        under_server = parent is not None and "api grpc" in " ".join(parent.cmdline())
        return "run worker" if under_server else "alignment process"
    for needle, role in (
        ("multiprocessing.forkserver", "forkserver"),
        ("api execute_run", "run worker"),
        ("api grpc", "code server"),
        ("end_to_end baseline", "baseline"),
        ("ffhq_aging_assets build", "ffhq-aging build"),
    ):
        if needle in text:
            return role
    return " ".join(Path(w).name for w in words[:3])


def measure(command: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run ``command``; wall seconds and peak memory (MB) of its process tree.

    Sums each sample over the tree, both resident (RSS, counting pages shared between a parent
    and its children once per process) and proportional (PSS, shared pages divided among their
    sharers: what the tree costs the machine); the peak of each process role too.
    """
    import psutil

    t0, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = {"rss": 0.0, "pss": 0.0}
    roles: dict[str, float] = {}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        rss = pss = 0.0
        by_role: dict[str, float] = {}
        for p in procs:
            try:
                info = p.memory_full_info()
                role = describe(p)
            except psutil.Error:
                continue
            rss += info.rss / 2**20
            pss += info.pss / 2**20
            by_role[role] = by_role.get(role, 0.0) + info.pss / 2**20
        peak = {"rss": max(peak["rss"], rss), "pss": max(peak["pss"], pss)}
        for role, mb in by_role.items():
            roles[role] = max(roles.get(role, 0.0), mb)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"{command[3:5]} failed ({proc.returncode}):\n{''.join(output)[-4000:]}")
    return {"wall": wall, "started": started, **peak, "roles": roles}


def outputs(folder: Path) -> dict[str, bytes]:
    """The aligned images of one chunk folder, by file name: their decoded pixels."""
    return {p.name: np.asarray(PIL.Image.open(p)).tobytes() for p in folder.glob("[0-9]*.png")}


def compare(args: argparse.Namespace) -> None:
    from ffhq_aging_assets_tests.fake_drive import FakeDrive

    drive = FakeDrive().start()
    runs = args.runs.split(",")
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            world = args.world or str(work / "world")
            world += f"/p{args.photos}-e{args.near_edge}-n{args.entries}"
            served = serve_world(drive, Path(world), args.photos, args.near_edge, args.entries)
            results: dict[str, dict] = {}
            pixels: dict[str, dict[str, bytes]] = {}
            for name in runs:
                out = work / name
                env = {**os.environ}
                if name == "baseline":
                    command = [sys.executable, "-m", "benchmarks.end_to_end", "baseline"]
                    command += ["--out", str(out), "--metadata-url", served.metadata_url]
                    command += ["--metadata-md5", served.metadata_md5]
                    command += ["--metadata-size", str(served.metadata_size)]
                    command += ["--photos", str(args.photos), "--threads", str(args.threads)]
                    command += ["--resolution", str(args.resolution)]
                    cwd = PROJECT
                else:
                    home = out / "home"
                    home.mkdir(parents=True)
                    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
                    env["DAGSTER_HOME"] = str(home)
                    command = [sys.executable, "-m", "ffhq_aging_assets", "build"]
                    command += ["--partitions", "00000", "--limit", str(args.photos)]
                    command += ["--select", ASSETS, "--mode", name]
                    command += ["--resolution", str(args.resolution), "--root", str(out / "root")]
                    command += ["--metadata-url", served.metadata_url]
                    command += ["--metadata-md5", served.metadata_md5]
                    command += ["--metadata-size", str(served.metadata_size)]
                    command += ["--license-url", served.license_url]
                    command += ["--license-md5", served.license_md5]
                    command += ["--labels-csv", served.labels_url]
                    cwd = work
                print(f"{name} ...", flush=True)
                folder_out = (
                    out if name == "baseline" else out / "root"
                ) / f"ffhq_aging{args.resolution}x{args.resolution}"
                results[name] = measure(command, env, cwd)
                pixels[name] = outputs(folder_out / "00000")
                got = results[name]
                parts = ", ".join(f"{role} {mb:.0f}" for role, mb in got["roles"].items())
                print(
                    f"  {got['wall']:.1f} s, peak PSS {got['pss']:.0f} MB (RSS {got['rss']:.0f}), "
                    f"{len(pixels[name])} images; peak PSS MB by role: {parts}",
                    flush=True,
                )
                if name != "baseline":
                    print_runs(out / "home", got["started"])
                shutil.rmtree(out)
    finally:
        drive.stop()
    base = results.get("baseline")
    print(
        "\n| run | seconds | speed vs baseline | peak PSS MB (tree) | vs baseline | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    for name, got in results.items():
        speed = f"{base['wall'] / got['wall']:.2f}x" if base else "-"
        memory = f"{got['pss'] / base['pss']:.3f}" if base else "-"
        row = f"{got['wall']:.1f} | {speed} | {got['pss']:.0f} | {memory} | {got['rss']:.0f}"
        print(f"| {name} | {row} |")
    if "baseline" in pixels and "reference" in pixels:
        same = pixels["baseline"] == pixels["reference"]
        print(f"\nreference mode wrote the baseline's pixels for every image: {same}")
        if not same:
            raise SystemExit("reference mode differs from the published computation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")
    b = sub.add_parser("baseline", help="the 2020 structure (started by the comparison)")
    b.add_argument("--out", required=True)
    b.add_argument("--metadata-url", required=True)
    b.add_argument("--metadata-md5", required=True)
    b.add_argument("--metadata-size", type=int, required=True)
    for p in (parser, b):
        p.add_argument("--photos", type=int, default=300)
        p.add_argument("--threads", type=int, default=32)
        p.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--near-edge", type=float, default=0.4)
    parser.add_argument("--entries", type=int, default=70000)
    parser.add_argument("--runs", default="baseline,reference,fast")
    parser.add_argument(
        "--world", default=None, help="folder keeping the generated world for later runs"
    )
    args = parser.parse_args()
    (baseline if args.what == "baseline" else compare)(args)


if __name__ == "__main__":
    main()

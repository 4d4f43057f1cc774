"""``ffhq-aging``: build the dataset through Dagster from the command line.

``ffhq-aging build`` launches one run per chunk on the persistent Dagster instance (the one
``dagster dev`` shows, under ``$DAGSTER_HOME``), so every run, log and check result is in the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ffhq_aging_assets.launch import Launcher, LiveLine, RunWatch, events_to, launcher
from ffhq_aging_assets.lib.chunks import describe_chunks, parse_partitions
from ffhq_aging_assets.lib.layout import DatasetLayout

if TYPE_CHECKING:
    import dagster as dg

PROJECT_DIR = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    # Imported here, not above: the config classes take the instance's settings as defaults
    # when imported, so $DAGSTER_HOME must be settled first (see ``main``).
    from ffhq_aging_assets.cli_login import add_login_arguments
    from ffhq_aging_assets.cli_options import add_build_arguments, add_dataset_arguments
    from ffhq_aging_assets.cli_status import add_status_arguments

    parser = argparse.ArgumentParser(prog="ffhq-aging", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="materialize the asset graph for chosen chunks",
        # Every option in the usage line would bury each parse error under 30 lines.
        usage="%(prog)s [options]",
        description="Materialize the asset graph for chosen chunks, one Dagster run per chunk. "
        "The options under a resource or asset config set its fields of the same name, the "
        "settings the Dagster UI's launchpad shows. A file given by a URL or path other than "
        "the published one is accepted unverified unless its own md5 or size is given.",
    )
    add_build_arguments(b)
    login = sub.add_parser(
        "login",
        help="sign in to Google once for --source pydrive (or check the saved sign-in)",
        description="Sign in to Google for downloads with an account (--source pydrive): "
        "Google's installed-app flow with a redirect to this machine, the credentials saved "
        "readable by you only and refreshed when they expire. Runs never sign in themselves.",
    )
    add_login_arguments(login)
    v = sub.add_parser("verify", help="check a copy of the dataset against its manifest")
    add_dataset_arguments(v)
    c = sub.add_parser("colorize", help="write colour pictures of the segmentation masks")
    c.add_argument("--partitions", default="00000", help="chunk keys, a range, or 'all'")
    add_dataset_arguments(c)
    c.add_argument("--overlay", action="store_true", help="blend the colours over the faces")
    s = sub.add_parser(
        "status",
        help="what is built per chunk, its failed blocking checks and what the products left "
        "out, from the Dagster instance",
    )
    add_status_arguments(s)
    sub.add_parser(
        "ui",
        help="start the Dagster UI (dagster dev) on this project's instance; "
        "further options go to dagster dev, e.g. -p 3001",
    )
    return parser


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``./.dagster_home`` with the project's instance settings."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() and (PROJECT_DIR / "dagster.yaml").is_file():
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", settings)
    return home


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def build(args: argparse.Namespace) -> int:
    """Run ``ffhq-aging build``: shared inputs once, one run per chunk, then the products."""
    chunks: list[str] = args.partitions
    from ffhq_aging_assets.cli_options import default_jobs, gpu_count, run_config

    config = run_config(args)
    ensure_dagster_home()

    import dagster as dg

    from ffhq_aging_assets.definitions import defs
    from ffhq_aging_assets.jobs import PRODUCTS, SHARED_INPUTS
    from ffhq_aging_assets.resources import DatasetResource
    from ffhq_aging_assets.runs import RunRoom, fail_dead_runs, gpu_pool_limit
    from ffhq_aging_assets.settings import SettingsError, instance_settings_path, pin_dataset

    graph = defs.resolve_asset_graph()
    try:
        keys = resolve_selection(args.select, graph)
    except ValueError as exc:
        refuse("--select", str(exc))
    shared = keys & SHARED_INPUTS.resolve(graph)
    products = keys & PRODUCTS.resolve(graph)
    per_chunk = keys - shared - products
    instance = dg.DagsterInstance.get()
    root = config["resources"]["dataset"]["config"]["root"]
    layout = DatasetResource(**config["resources"]["dataset"]["config"]).layout
    try:
        pinned = pin_dataset(
            layout.root, layout.resolution, instance_settings_path(instance.root_directory)
        )
    except SettingsError as exc:
        only_resolution = args.root is None and args.resolution is not None
        refuse("--resolution" if only_resolution else "--root", str(exc))
    # The chunk steps read the metadata the last ffhq_metadata_json parsed under this root: the
    # one this build parses first when it selects that asset, else the one already there.
    parses_metadata = dg.AssetKey("ffhq_metadata_json") in shared
    if per_chunk and not parses_metadata:
        require_chunks_in_metadata(layout, chunks)
    log = None if args.verbose else build_log(Path(os.environ["DAGSTER_HOME"]))
    print(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}; root {root}")
    if pinned is not None:
        print(pinned)
    if log is not None:
        print(f"Dagster's event stream: {log} (--verbose shows it here)")
    sys.stdout.flush()
    resources_only = {"resources": config["resources"]}
    room = RunRoom(instance, _above_live_line)
    if room.limit == 0:
        print(
            "ffhq-aging build: error: the instance starts no runs (concurrency: runs: "
            f"max_concurrent_runs is 0 in {Path(instance.root_directory) / 'dagster.yaml'}): "
            "raise it to build",
            file=sys.stderr,
        )
        return 2
    gpus, pool = gpu_count(), gpu_pool_limit(instance)
    if dg.AssetKey("segmentation_masks") in per_chunk and pool is not None and gpus > pool:
        print(
            f"this host has {gpus} GPUs, and the gpu pool runs {pool} segmentation step(s) at "
            f"once: to use them all, set concurrency: pools: default_limit: {gpus} in "
            f"{Path(instance.root_directory) / 'dagster.yaml'} "
            f"(or: dagster instance concurrency set gpu {gpus})"
        )
    with events_to(log), launcher(instance, room) as runs:
        fail_dead_runs(instance, print)
        if shared and not _run_once(runs, "shared_inputs", resources_only, shared):
            return 1
        if per_chunk and parses_metadata:
            require_chunks_in_metadata(layout, chunks)
        failed: list[str] = []
        if per_chunk:
            ops = {k: v for k, v in config["ops"].items() if dg.AssetKey(k) in per_chunk}
            jobs = min(args.jobs or default_jobs(), len(chunks))
            if room.limit is not None and jobs > room.limit:
                print(
                    f"{jobs} chunk runs in flight {'asked' if args.jobs else 'by default'}; "
                    f"the instance runs at most {room.limit} "
                    f"at once (concurrency: runs: max_concurrent_runs in dagster.yaml): "
                    f"{room.limit} in flight"
                )
                jobs = room.limit
            failed = _run_chunks(runs, {**config, "ops": ops}, chunks, per_chunk, jobs)
        if products and not _run_once(runs, "products", resources_only, products):
            return 1
    if failed:
        print(
            f"{len(failed)} chunk(s) failed: {', '.join(failed)}. Run the same command again to "
            "redo only what is missing or invalid."
        )
        return 1
    return 0


def _above_live_line(text: str) -> None:
    """Print a line where a chunk's live line may stand: it replaces the live line."""
    if sys.stdout.isatty():
        sys.stdout.write("\r\x1b[K")
    print(text, flush=True)


def build_log(home: Path) -> Path:
    """A new log file for one build's Dagster output: ``$DAGSTER_HOME/logs/build-*.log``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return home / "logs" / f"build-{stamp}-{os.getpid()}.log"


def refuse(option: str, message: str) -> NoReturn:
    """Stop the build as argparse stops on a bad value: one line on stderr, exit status 2."""
    print(f"ffhq-aging build: error: argument {option}: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_selection(text: str | None, graph: Any) -> set[dg.AssetKey]:
    """The asset keys ``--select`` names (all when none): what ``dagster asset materialize`` takes.

    That is comma-separated parts, each an asset key or a clause of Dagster's selection syntax
    (``group:metadata``, ``key:image_*``, ``+image_metadata``). The whole is first read as one
    selection, so an expression such as ``group:inputs or kind:parquet`` keeps its meaning.

    Raises:
        ValueError: a part that is not a selection, an asset key the graph lacks, or a
            selection of nothing; the message names it and the assets there are.
    """
    import dagster as dg

    known = dg.AssetSelection.all().resolve(graph)
    if not text or not text.strip():
        return set(known)
    names = ", ".join(sorted(key.to_user_string() for key in known))
    try:
        parts = [(text.strip(), dg.AssetSelection.from_string(text.strip()))]
    except dg.DagsterError:
        parts = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                parts.append((part, dg.AssetSelection.from_string(part)))
            except dg.DagsterError:
                raise ValueError(
                    f"{part!r} is neither an asset key nor a Dagster asset selection "
                    f"(the assets: {names})"
                ) from None
    selected: set[dg.AssetKey] = set()
    for part, selection in parts:
        try:
            selected |= selection.resolve(graph)
        except dg.DagsterInvalidSubsetError:
            raise ValueError(
                f"no asset named {_clause_key(part)!r} (the assets: {names})"
            ) from None
    if not selected:
        groups = ", ".join(sorted({graph.get(key).group_name for key in known}))
        raise ValueError(f"{text!r} selects no asset (the groups: {groups}; the assets: {names})")
    return selected


def _clause_key(clause: str) -> str:
    """The asset key in a clause such as ``++name+`` or ``*name``."""
    match = re.fullmatch(r"\*?\+*(.*?)\+*\*?", clause)
    return match.group(1) if match and match.group(1) else clause


def require_chunks_in_metadata(layout: DatasetLayout, chunks: Sequence[str]) -> None:
    """Refuse chunks the parsed metadata under this root lacks: their steps could only fail.

    A metadata file that covers part of FFHQ (a sample, a test's) holds only some chunks; a
    step of any other chunk fails the same way however often it runs. Nothing is checked before
    the metadata has been parsed: the steps then say what to materialize first.
    """
    present = chunks_in_metadata(layout)
    if present is None:
        return
    missing = [chunk for chunk in chunks if chunk not in present]
    if missing:
        which = (
            f"chunks {describe_chunks(missing)} are" if missing[1:] else f"chunk {missing[0]} is"
        )
        has = f"has chunks {describe_chunks(present)}" if present else "has no chunk"
        refuse(
            "--partitions",
            f"{which} not in the metadata (the metadata {has}), so running again cannot help: "
            "choose chunks it has, or point --metadata-url at a metadata file that has these",
        )


def chunks_in_metadata(layout: DatasetLayout) -> set[str] | None:
    """The chunks the last parse of the metadata JSON found entries for; None before one."""
    try:
        record = json.loads(layout.parsed_record.read_text())
        return set(record["rows"]) | set(record["errors"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_once(runs: Launcher, job_name: str, config: dict, keys: Set) -> bool:
    from ffhq_aging_assets.runs import HOST_TAG, this_host

    live = LiveLine(sys.stdout)
    run, watch = runs.run(
        job_name, config, {HOST_TAG: this_host()}, keys, lambda w: live.show(w.live())
    )
    live.clear()
    if not run.is_success:
        print(f"{job_name} failed (run {run.run_id}):", *watch.failure_lines(), sep="\n  ")
        return False
    print(f"{job_name} done (run {run.run_id})")
    return True


def _run_chunks(runs: Launcher, config: dict, chunks: list[str], keys: Set, jobs: int) -> list[str]:
    """One run per chunk, ``jobs`` at a time, on after a failure; returns the chunks that failed.

    Before each launch, runs left by dead processes meanwhile are failed, so their pool slots
    cannot hold a chunk's GPU step; GPU steps of chunks in flight together wait on the ``gpu``
    pool. A line per chunk as it ends; in a terminal a live line below shows each chunk in
    flight with its running step and that step's latest report (images done, rate, ETA).
    """
    from ffhq_aging_assets.runs import HOST_TAG, fail_dead_runs, this_host

    def start(chunk: str) -> Callable[[], str]:
        tags = {"dagster/partition": chunk, HOST_TAG: this_host()}
        return lambda: runs.launch("chunks", config, tags, keys)

    live = LiveLine(sys.stdout)

    def show(flying: dict[str, tuple[float, RunWatch]]) -> None:
        now = time.monotonic()
        live.show(
            " | ".join(
                f"chunk {chunk} {now - t0:.0f} s · {watch.live() or 'starting'}"
                for chunk, (t0, watch) in sorted(flying.items())
            )
        )

    failed: list[str] = []
    started = time.monotonic()
    ended = runs.run_all(
        [(chunk, start(chunk)) for chunk in chunks],
        jobs,
        show,
        lambda: fail_dead_runs(runs.instance, print),
    )
    for done, (chunk, seconds, run, watch) in enumerate(ended, start=1):
        live.clear()
        failed_checks = watch.failed_checks()
        eta = (time.monotonic() - started) / done * (len(chunks) - done)
        status = "ok" if run.is_success and not failed_checks else "FAILED"
        passed = sum(c.passed for c in watch.checks)
        print(
            f"[{done}/{len(chunks)}] chunk {chunk}: {status} in {seconds:.1f} s, "
            f"{passed}/{len(watch.checks)} checks passed, ETA {_duration(eta)} (run {run.run_id})"
        )
        if status != "ok":
            failed.append(chunk)
            lines = watch.failure_lines() if not run.is_success else []
            for line in lines + [f"check failed: {c}" for c in failed_checks]:
                print(f"    {line}")
    return failed


def verify(args: argparse.Namespace) -> int:
    """Check a copy against its manifest: 0 when it matches, 1 when not.

    2 when there is no manifest or it cannot be trusted (not JSON, truncated, edited, another
    version): one line saying why, never a traceback.
    """
    from ffhq_aging_assets.lib.manifest import ManifestError
    from ffhq_aging_assets.lib.manifest import verify as check

    root = Path(args.root).resolve()
    path = DatasetLayout(root, args.resolution).manifest
    if not path.is_file():
        print(
            f"ffhq-aging verify: no manifest at {path}: materialize dataset_manifest first",
            file=sys.stderr,
        )
        return 2
    try:
        result = check(root, path, args.resolution)
    except ManifestError as exc:
        print(f"ffhq-aging verify: {exc}", file=sys.stderr)
        return 2
    for kind in ("missing", "changed", "unexpected", "unreadable"):
        for rel in getattr(result, kind):
            print(f"{kind}: {rel}")
    for chunk, reason in result.excluded.items():
        # A gate's reason may span lines; the note stays one line per chunk.
        print(f"excluded: chunk {chunk} ({' '.join(reason.split())}); its files are not verified")
    good = result.checked - len(result.missing) - len(result.changed) - len(result.unreadable)
    summary = f"{good} of {result.checked} files match {path.name}"
    if not result.ok:
        counts = {
            kind: len(getattr(result, kind))
            for kind in ("missing", "changed", "unexpected", "unreadable")
        }
        summary += "; " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    if result.excluded:
        summary += f"; {len(result.excluded)} chunk(s) excluded"
    print(summary)
    return 0 if result.ok else 1


def colorize(args: argparse.Namespace) -> int:
    """Write colour masks beside each chunk's ``parsings/`` folder.

    ``{chunk}/parsings_color/{NNNNN}.png``, or with ``--overlay`` the colours blended over the
    faces in ``{chunk}/parsings_overlay/``, so neither kind replaces the other.
    """
    from ffhq_aging_assets.lib.masks import write_color

    try:
        chunks = parse_partitions(args.partitions)
    except ValueError as exc:
        raise SystemExit(f"ffhq-aging: {exc}") from None
    layout = DatasetLayout(Path(args.root).resolve(), args.resolution)
    kind = "overlaid masks" if args.overlay else "colour masks"
    folder_of = layout.overlay_masks_dir if args.overlay else layout.colour_masks_dir
    total = 0
    for chunk in chunks:
        masks = sorted(layout.parsings_dir(chunk).glob("[0-9][0-9][0-9][0-9][0-9].png"))
        folder = folder_of(chunk)
        for mask in masks:
            face = layout.chunk_dir(chunk) / mask.name if args.overlay else None
            write_color(mask, folder / mask.name, face)
        print(f"chunk {chunk}: {len(masks)} {kind} in {folder}")
        total += len(masks)
    if not total:
        print(f"no masks under {layout.dataset_dir}: build segmentation_masks first")
        return 1
    return 0


def ui_address(extra: Sequence[str]) -> str:
    """Where ``dagster dev`` given ``extra`` serves the UI (its -h/--host and -p/--port)."""
    host, port = "127.0.0.1", "3000"
    for i, arg in enumerate(extra):
        for names, name in ((("-h", "--host"), "host"), (("-p", "--port"), "port")):
            value = None
            if arg in names and i + 1 < len(extra):
                value = extra[i + 1]
            elif arg.startswith(f"{names[1]}="):
                value = arg.split("=", 1)[1]
            if value is not None and name == "host":
                host = value
            elif value is not None:
                port = value
    return f"http://{host}:{port}"


def lineage_address(base: str) -> str:
    """The UI's global lineage at ``base`` with every asset group open.

    Dagster's UI opens the lineage of several groups with each one collapsed, unless the
    address lists the open ones (``?expanded=``) or the browser remembers them.
    """
    from ffhq_aging_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = sorted({graph.get(key).group_name for key in graph.get_all_asset_keys()})
    return f"{base}/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in groups)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ffhq-aging`` console script."""
    os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "ui":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "build":
        return build(args)
    if args.command == "login":
        from ffhq_aging_assets.cli_login import login

        return login(args)
    if args.command == "verify":
        return verify(args)
    if args.command == "colorize":
        return colorize(args)
    if args.command == "status":
        ensure_dagster_home()
        from ffhq_aging_assets.cli_status import status

        return status(args)
    if args.command == "ui":
        ensure_dagster_home()
        print(f"The lineage with every group open: {lineage_address(ui_address(extra))}")
        sys.stdout.flush()
        command = [sys.executable, "-m", "dagster", "dev", "-m", "ffhq_aging_assets.definitions"]
        return subprocess.call(command + extra)
    return 2


if __name__ == "__main__":
    sys.exit(main())

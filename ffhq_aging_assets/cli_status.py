"""``ffhq-aging status``: what is built per chunk, read from the Dagster instance.

The facts are the instance's (``$DAGSTER_HOME``), as the UI shows them, never the files under a
root: each asset's latest materialization or failed attempt, the latest evaluation of each
check (per chunk, from the chunk's runs, as the products decide which chunks go in), and what
the products' latest materializations recorded they left out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from ffhq_aging_assets.jobs import CHUNK_ASSETS, PRODUCTS, SHARED_INPUTS
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS, describe_chunks, parse_partitions
from ffhq_aging_assets.partitions import chunk_partitions
from ffhq_aging_assets.verdicts import latest_evaluations

MATERIALIZED, FAILED, IN_PROGRESS, MISSING = "materialized", "failed", "in progress", "missing"
# Planned by a run that failed before the asset's step started (an upstream step failed, or the
# run died first): Dagster counts it as failed; the report tells it apart from a step that failed.
NOT_RUN = "not run"
STATES = (MATERIALIZED, FAILED, NOT_RUN, IN_PROGRESS, MISSING)
# An unpartitioned check's latest records may all be plans (runs that died before evaluating
# it); this many are read before it counts as not run.
_PLANNED_DEPTH = 20


@dataclass
class Checks:
    """The latest evaluation of each check of a chunk or a group, in four piles."""

    passed: int = 0
    warnings: list[str] = field(default_factory=list)
    # "asset.check" -> the check's description of what failed; ERROR severity: blocking.
    failed: dict[str, str] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)


@dataclass
class Group:
    """A chunk, the shared inputs or the products: each asset's state, and the checks."""

    assets: dict[str, str]
    checks: Checks = field(default_factory=Checks)

    @property
    def failed(self) -> bool:
        """A blocking check failed at its latest evaluation, or an asset's latest attempt.

        An attempt failed when its step failed or its run failed before the step started.
        """
        states = set(self.assets.values())
        return bool(self.checks.failed) or FAILED in states or NOT_RUN in states

    @property
    def complete(self) -> bool:
        """Every asset materialized, every check evaluated, none blocking failed."""
        done = all(state == MATERIALIZED for state in self.assets.values())
        return done and not self.checks.failed and not self.checks.not_run

    @property
    def recorded(self) -> bool:
        """Any of its assets has a materialization, a failed attempt or a run in progress."""
        return any(state != MISSING for state in self.assets.values())


@dataclass
class LeftOut:
    """What one product's latest materialization recorded it left out (``chunks_excluded``)."""

    made: float
    run_id: str
    excluded: dict[str, str]
    chunks_in: int | None = None


@dataclass
class Status:
    """Everything ``status`` reports."""

    dagster_home: str
    chunks: dict[str, Group]
    shared_inputs: Group
    products: Group
    left_out: dict[str, LeftOut]

    @property
    def failed(self) -> bool:
        """Any chunk shown, shared input or product failed (see :attr:`Group.failed`)."""
        groups = [*self.chunks.values(), self.shared_inputs, self.products]
        return any(group.failed for group in groups)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``status``."""
    parser.add_argument(
        "--partitions",
        type=_partitions,
        default=None,
        help="chunk keys (00000,01000), a range (00000-05000) or 'all' [every chunk with "
        "anything recorded]",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _partitions(text: str) -> list[str]:
    try:
        return parse_partitions(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def status(args: argparse.Namespace) -> int:
    """Run ``ffhq-aging status``: one line per chunk, the shared inputs, the products, a summary.

    Exit status 0 when nothing shown failed; 1 when a chunk shown, a shared input or a product
    failed: a blocking (ERROR) check failed at its latest evaluation, or an asset's latest
    attempt failed. Assets not built yet are not failures. A chunk named by ``--partitions``
    that has nothing recorded is shown as such. (A bad ``--partitions`` exits 2, from argparse.)
    """
    instance = dg.DagsterInstance.get()
    report = collect(instance, args.partitions)
    if args.json:
        data = asdict(report)
        data["failed"] = report.failed
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(render(report)))
    return 1 if report.failed else 0


def collect(instance: dg.DagsterInstance, chunks: Sequence[str] | None = None) -> Status:
    """What the instance records of ``chunks`` (default: those with anything recorded)."""
    # Imported here: the definitions read the instance's settings, so $DAGSTER_HOME must be
    # settled first.
    from ffhq_aging_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    order = list(graph.toposorted_asset_keys)

    def keys_of(selection: dg.AssetSelection) -> list[dg.AssetKey]:
        chosen = selection.resolve(graph)
        return [key for key in order if key in chosen]

    per_chunk = keys_of(CHUNK_ASSETS)
    wanted = list(chunks) if chunks is not None else list(CHUNK_KEYS)
    states: dict[str, dict[str, str]] = {chunk: {} for chunk in wanted}
    for key in per_chunk:
        by_partition = instance.get_status_by_partition(key, wanted, chunk_partitions) or {}
        for chunk in wanted:
            states[chunk][key.to_user_string()] = _state(by_partition.get(chunk))
    _tell_not_run(instance, states)

    def checks_of(keys: Sequence[dg.AssetKey]) -> list[dg.AssetCheckKey]:
        return [c for key in keys for c in sorted(graph.get(key).check_keys, key=lambda c: c.name)]

    checks = checks_of(per_chunk)
    groups = {chunk: _chunk(instance, chunk, states[chunk], checks) for chunk in wanted}
    if chunks is None:
        groups = {chunk: group for chunk, group in groups.items() if group.recorded}
    shared, products = keys_of(SHARED_INPUTS), keys_of(PRODUCTS)
    return Status(
        dagster_home=os.environ.get("DAGSTER_HOME", ""),
        chunks=groups,
        shared_inputs=_unpartitioned(instance, shared, checks_of(shared)),
        products=_unpartitioned(instance, products, checks_of(products)),
        left_out=_left_out(instance, products),
    )


def _state(status: Any) -> str:
    return {
        dg.AssetPartitionStatus.MATERIALIZED: MATERIALIZED,
        dg.AssetPartitionStatus.FAILED: FAILED,
        dg.AssetPartitionStatus.IN_PROGRESS: IN_PROGRESS,
    }.get(status, MISSING)


def _tell_not_run(instance: dg.DagsterInstance, states: dict[str, dict[str, str]]) -> None:
    """Mark as not run the failed assets whose step never started in the run that planned them.

    Dagster marks every asset a failed run planned and did not materialize as failed; the
    planned event names the asset's step, and the run's step stats list the steps that started.
    """
    started: dict[str, set[str]] = {}
    planned: dict[str, dict[tuple[str, str | None], str | None]] = {}
    for chunk, assets in states.items():
        for name, state in assets.items():
            if state != FAILED:
                continue
            info = instance.get_latest_planned_materialization_info(
                dg.AssetKey.from_user_string(name), chunk
            )
            if info is None:
                continue
            run_id = info.run_id
            if run_id not in started:
                started[run_id] = {stats.step_key for stats in instance.get_run_step_stats(run_id)}
                planned[run_id] = _planned_steps(instance, run_id)
            step = planned[run_id].get((name, chunk))
            if step is not None and step not in started[run_id]:
                assets[name] = NOT_RUN


def _planned_steps(
    instance: dg.DagsterInstance, run_id: str
) -> dict[tuple[str, str | None], str | None]:
    """(asset, partition) -> the step that was to materialize it, from the run's planned events."""
    steps = {}
    for entry in instance.all_logs(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ):
        event = entry.dagster_event
        if event is not None and event.asset_key is not None:
            steps[(event.asset_key.to_user_string(), event.partition)] = event.step_key
    return steps


def _chunk(
    instance: dg.DagsterInstance,
    chunk: str,
    assets: dict[str, str],
    checks: Sequence[dg.AssetCheckKey],
) -> Group:
    recorded = any(state != MISSING for state in assets.values())
    return Group(assets, _sort(checks, latest_evaluations(instance, chunk) if recorded else {}))


def _sort(
    checks: Iterable[dg.AssetCheckKey], latest: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]
) -> Checks:
    piles = Checks()
    for check in checks:
        name = f"{check.asset_key.to_user_string()}.{check.name}"
        evaluation = latest.get(check)
        if evaluation is None:
            piles.not_run.append(name)
        elif evaluation.passed:
            piles.passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.ERROR:
            # Descriptions may span lines; the report keeps one line per failed check.
            piles.failed[name] = " ".join((evaluation.description or "failed").split())
        else:
            piles.warnings.append(name)
    return piles


def _unpartitioned(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], checks: Sequence[dg.AssetCheckKey]
) -> Group:
    """Each asset's state, from its latest materialization and the run that last planned it.

    Failed attempts of unpartitioned assets are not stored as events of their own: an asset
    whose last run ended without materializing it failed (or is still in progress).
    """
    assets = {}
    for record in instance.get_asset_records(list(keys)):
        entry = record.asset_entry
        state = MATERIALIZED if entry.last_materialization is not None else MISSING
        last = entry.last_materialization
        if entry.last_run_id and (last is None or last.run_id != entry.last_run_id):
            run = instance.get_run_by_id(entry.last_run_id)
            if run is not None and not run.is_finished:
                state = IN_PROGRESS
            elif run is not None and run.status != dg.DagsterRunStatus.SUCCESS:
                state = FAILED
        assets[entry.asset_key.to_user_string()] = state
    names = [key.to_user_string() for key in keys]
    latest = {}
    for check in checks:
        history = instance.event_log_storage.get_asset_check_execution_history(
            check, limit=_PLANNED_DEPTH
        )
        for row in history:
            event = row.event.dagster_event if row.event else None
            evaluation = event.event_specific_data if event else None
            if isinstance(evaluation, dg.AssetCheckEvaluation):
                latest[check] = evaluation
                break
    return Group({name: assets.get(name, MISSING) for name in names}, _sort(checks, latest))


def _left_out(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]) -> dict[str, LeftOut]:
    """The chunks each product's latest materialization recorded it left out, and why."""
    left_out = {}
    latest = instance.get_latest_materialization_events(keys)
    for key in keys:
        entry = latest.get(key)
        materialization = entry.asset_materialization if entry is not None else None
        if entry is None or materialization is None:
            continue
        metadata = materialization.metadata
        if "chunks_excluded" not in metadata:
            continue
        built = metadata["chunks_built"].value if "chunks_built" in metadata else None
        left_out[key.to_user_string()] = LeftOut(
            made=entry.timestamp,
            run_id=entry.run_id,
            excluded=excluded_from_text(str(metadata["chunks_excluded"].value)),
            chunks_in=built if isinstance(built, int) else None,
        )
    return left_out


def excluded_from_text(text: str) -> dict[str, str]:
    """The chunks and reasons of ``verdicts.excluded_text`` (``- chunk: why`` lines, or none)."""
    excluded: dict[str, str] = {}
    for line in text.strip().splitlines():
        chunk, _, why = line.removeprefix("- ").partition(": ")
        if line.startswith("- ") and chunk in CHUNK_KEYS:
            excluded[chunk] = why.strip()
        elif excluded and line.strip():
            last = list(excluded)[-1]
            excluded[last] += " " + line.strip()
    return excluded


def render(report: Status) -> list[str]:
    """The report as lines of text."""
    lines = [f"DAGSTER_HOME={report.dagster_home}"]
    for chunk, group in report.chunks.items():
        if not group.recorded:
            lines.append(f"chunk {chunk}: nothing recorded")
            continue
        lines += _group_lines(f"chunk {chunk}", group)
    lines += _group_lines("shared inputs", report.shared_inputs)
    lines += _group_lines("products", report.products)
    for product, left in report.left_out.items():
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(left.made))
        count = len(left.excluded)
        went_in = f"{_count(left.chunks_in, 'chunk')} in, " if left.chunks_in is not None else ""
        lines.append(f"    {product} (made {made}): {went_in}{_count(count, 'chunk')} left out")
        lines += [f"        {chunk}: {why}" for chunk, why in left.excluded.items()]
    lines.append(_summary(report))
    return lines


def _group_lines(title: str, group: Group) -> list[str]:
    parts = [_assets_text(group.assets)]
    checks = group.checks
    counts = [f"{checks.passed} passed"] if checks.passed else []
    if checks.warnings:
        counts.append(f"{_count(len(checks.warnings), 'warning')} ({', '.join(checks.warnings)})")
    if checks.failed:
        counts.append(f"{len(checks.failed)} FAILED")
    if checks.not_run:
        counts.append(f"{len(checks.not_run)} not run")
    if counts:
        parts.append("checks: " + ", ".join(counts))
    lines = [f"{title}: " + "; ".join(parts)]
    return lines + [f"    FAILED {name}: {why}" for name, why in checks.failed.items()]


def _assets_text(assets: dict[str, str]) -> str:
    if assets and all(state == MATERIALIZED for state in assets.values()):
        return f"{len(assets)}/{len(assets)} assets materialized"
    if all(state == MISSING for state in assets.values()):
        return "nothing materialized"
    parts = []
    for state in STATES:
        names = [name for name, s in assets.items() if s == state]
        if names:
            why = " (the run failed before their steps)" if state == NOT_RUN else ""
            parts.append(f"{', '.join(names)} {state}{why}")
    return "; ".join(parts)


def _summary(report: Status) -> str:
    chunks = report.chunks
    if not chunks:
        return "summary: no chunk recorded on this instance"
    piles: dict[str, list[str]] = {
        "complete": [],
        "failed": [],
        "incomplete": [],
        "not recorded": [],
    }
    for chunk, group in chunks.items():
        if group.failed:
            piles["failed"].append(chunk)
        elif group.complete:
            piles["complete"].append(chunk)
        elif group.recorded:
            piles["incomplete"].append(chunk)
        else:
            piles["not recorded"].append(chunk)
    parts = [f"{len(piles['complete'])} complete"] + [
        f"{len(found)} {pile} ({describe_chunks(found)})"
        for pile, found in piles.items()
        if pile != "complete" and found
    ]
    text = f"summary: {_count(len(chunks), 'chunk')}: " + ", ".join(parts)
    left = sorted({chunk for product in report.left_out.values() for chunk in product.excluded})
    if left:
        text += f"; the products left out {len(left)} ({describe_chunks(left)})"
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")

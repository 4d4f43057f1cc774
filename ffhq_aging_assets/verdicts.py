"""Which chunks the dataset-wide products take: those built whose blocking gates all passed.

The verdicts come from the Dagster instance (the latest evaluation of every blocking check of
every per-chunk asset, per chunk), which is why this lives beside the Dagster wiring and not in
``lib/``.
"""

import dagster as dg

from ffhq_aging_assets.checks import BLOCKING_GATES
from ffhq_aging_assets.lib.chunks import CHUNK_KEYS
from ffhq_aging_assets.lib.layout import DatasetLayout


def built_chunks(layout: DatasetLayout) -> list[str]:
    """Chunks whose labels table exists under the root."""
    return [chunk for chunk in CHUNK_KEYS if layout.labels_table(chunk).is_file()]


def gate_verdicts(instance: dg.DagsterInstance, chunks: list[str]) -> dict[str, str]:
    """Why each of ``chunks`` is left out of the products; chunks that may go in are absent.

    A chunk is left out when the latest evaluation of any blocking check of any of its assets
    failed, or when a check never ran for it on this instance (its files came from elsewhere,
    or its run died before the check).
    """
    latest: dict[tuple[str, str, str], bool] = {}
    for chunk in chunks:
        for check, evaluation in latest_evaluations(instance, chunk).items():
            asset = check.asset_key.to_user_string()
            if check.name in BLOCKING_GATES.get(asset, ()):
                latest[(asset, check.name, chunk)] = evaluation.passed
    reasons = {}
    for chunk in chunks:
        failed = [
            f"{asset}.{name}"
            for asset, names in BLOCKING_GATES.items()
            for name in names
            if latest.get((asset, name, chunk)) is False
        ]
        unchecked = [
            f"{asset}.{name}"
            for asset, names in BLOCKING_GATES.items()
            for name in names
            if (asset, name, chunk) not in latest
        ]
        if failed:
            reasons[chunk] = "failed " + ", ".join(failed)
        elif unchecked:
            shown = ", ".join(unchecked[:3]) + (" ..." if len(unchecked) > 3 else "")
            reasons[chunk] = f"never checked on this instance ({shown})"
    return reasons


def latest_evaluations(
    instance: dg.DagsterInstance, chunk: str
) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    """The latest evaluation of each check evaluated for ``chunk`` on this instance.

    Read from the runs of the chunk (tagged ``dagster/partition``): a check result yielded in a
    chunk's run does not carry its partition itself. Newest run first, and within a run the
    newest evaluation first: the first seen wins.
    """
    latest: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation] = {}
    for run in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": chunk})):
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        for record in reversed(records):
            event = record.event_log_entry.dagster_event
            evaluation = event.event_specific_data if event else None
            if isinstance(evaluation, dg.AssetCheckEvaluation):
                latest.setdefault(evaluation.asset_check_key, evaluation)
    return latest


def excluded_text(excluded: dict[str, str]) -> str:
    """The left-out chunks and why, one ``- chunk: why`` line each (``none`` when none)."""
    if not excluded:
        return "none"
    return "\n".join(f"- {chunk}: {why}" for chunk, why in sorted(excluded.items()))


def missing_text(missing: list[str]) -> str:
    """Chunks not built yet, for a metadata value: the first dozen, then how many more."""
    if not missing:
        return "none"
    if len(missing) == len(CHUNK_KEYS):
        return "all 70"
    return ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")

"""Scheduled backfills: build missing chunks after each nightly tick, never complete ones.

The chunk assets carry :data:`NIGHTLY_MISSING` as their automation condition; the sensor below
evaluates it and turns what it requests into one backfill per tick.
"""

import os

import dagster as dg

from ffhq_aging_assets.jobs import CHUNK_ASSETS, SHARED_INPUTS

NIGHTLY = "0 2 * * *"

# Missing, the nightly tick has passed since the last evaluation, every upstream gate passed,
# and not already running: complete chunks are never requested again.
NIGHTLY_MISSING = (
    dg.AutomationCondition.missing()
    & dg.AutomationCondition.cron_tick_passed(NIGHTLY, "UTC")
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
    & ~dg.AutomationCondition.in_progress()
).with_label("missing after the nightly tick, upstream gates passed")

nightly_backfill = dg.AutomationConditionSensorDefinition(
    "nightly_backfill",
    target=CHUNK_ASSETS | SHARED_INPUTS,
    emit_backfills=True,
    # Off unless asked for: a fresh clone must not start fetching 955 GB on its own.
    default_status=dg.DefaultSensorStatus.RUNNING
    if os.environ.get("FFHQ_NIGHTLY_BACKFILL") == "1"
    else dg.DefaultSensorStatus.STOPPED,
    description="Each night, one backfill of every chunk that is missing and whose upstream "
    "checks passed. Set FFHQ_NIGHTLY_BACKFILL=1 to start it by default.",
)

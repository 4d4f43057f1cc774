"""The executor every job runs on: one machine's processes, or Celery workers across a cluster.

``FFHQ_EXECUTOR`` picks it where the code is loaded (the webserver, the daemon, ``ffhq-aging
build`` and every worker must agree):

- ``in_process`` (default): every step of a run in the run's own process, one after another.
  A chunk's steps form a chain, so running them in one process loses no parallelism and saves
  a process start and a load of the code per step: 0.3 s of a chunk run outside its steps
  against 15 s (docs/benchmarks.md). Chunks run in parallel as separate runs (``--jobs``, or a
  backfill through the run queue); the shared inputs are fetched one after another.
- ``multiprocess``: each step in a fresh process on this machine.
- ``celery``: each step a Celery task on a Redis (or any Celery) broker named by
  ``FFHQ_CELERY_BROKER``; results come back through ``FFHQ_CELERY_BACKEND`` if set, else the
  broker. Steps tagged ``dagster-celery/queue: gpu`` (segmentation) go to the ``gpu`` queue,
  the rest to ``dagster``. Workers start from ``deploy/celery.yaml`` (see the README).

Only the variables' names are read here; their values (which may hold passwords) are resolved
by Dagster when a run starts.
"""

import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "celery")

# Steps run for minutes: a worker takes one task at a time and acknowledges it only once done,
# so a worker that dies mid-step hands its task back to the queue. Redis hands an unacknowledged
# task to another worker after the visibility timeout: 12 hours, far beyond any chunk's step.
# deploy/celery.yaml gives the workers the same settings.
CELERY_SETTINGS = {
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "broker_transport_options": {"visibility_timeout": 12 * 3600},
}


def executor_from_env() -> dg.ExecutorDefinition:
    """The executor ``FFHQ_EXECUTOR`` names; an unknown name is refused with the choices."""
    name = os.environ.get("FFHQ_EXECUTOR", "in_process")
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        # Imported only here: the cluster extra is optional, and every step imports this module.
        from dagster_celery import celery_executor

        backend = "FFHQ_CELERY_BACKEND" if "FFHQ_CELERY_BACKEND" in os.environ else None
        return celery_executor.configured(
            {
                "broker": {"env": "FFHQ_CELERY_BROKER"},
                "backend": {"env": backend or "FFHQ_CELERY_BROKER"},
                "config_source": CELERY_SETTINGS,
            },
            name="celery",
        )
    raise ValueError(f"FFHQ_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")

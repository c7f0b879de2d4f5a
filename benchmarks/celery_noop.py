"""Celery's side of `compare_peers.py`: a task that does nothing, on the local Redis.

Kept apart so that `compare_peers.py` imports without Celery installed; the
worker processes load this module by name (``celery -A celery_noop worker``).
Every key the benchmark writes in Redis, the broker's and the result
backend's, starts with ``$SAGAKIT_CELERY_PREFIX``, so that the parent can
remove them all afterwards without touching anything else in that Redis.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

REDIS = os.environ.get("SAGAKIT_CELERY_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("SAGAKIT_CELERY_PREFIX", "sagakit-compare:")
QUEUE = PREFIX.rstrip(":")

app = Celery("sagakit_compare", broker=REDIS, backend=REDIS)
app.conf.update(
    task_default_queue=QUEUE,
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    # The durable settings Celery documents for tasks that must survive a
    # worker's crash: a task is acknowledged only after it ran, and a task
    # whose worker process died is put back on the queue (redelivered once
    # Redis's visibility timeout lapses), not dropped.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """A step that does nothing."""
    return None

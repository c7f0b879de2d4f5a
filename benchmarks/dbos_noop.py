"""DBOS Transact's side of `compare_dbos.py`: a workflow of five no-op steps.

Kept apart from `compare_dbos.py` so that the comparison script imports
without DBOS installed: only the child processes that measure DBOS import
this module. DBOS registers decorated functions in a process-wide registry
when they are decorated, so both styles are declared here, at import time,
before ``DBOS(config=...)`` is constructed.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from dbos import DBOS, Queue

STEPS = 5
QUEUE = "sagakit_compare"
APP_NAME = "sagakit-compare"
# Every process of one PostgreSQL measurement must share one application
# version: DBOS only dequeues workflows enqueued under its own version, and
# the default is a hash of the registered code, which we do not want to
# depend on.
APP_VERSION = "bench"


@DBOS.step(name="noop_async")
async def noop_async() -> None:
    """A step that does nothing, as a coroutine."""
    return None


@DBOS.workflow(name="five_noops_async")
async def five_noops_async() -> None:
    """Five no-op steps, each checkpointed by DBOS."""
    for _ in range(STEPS):
        await noop_async()


@DBOS.step(name="noop_sync")
def noop_sync() -> None:
    """A step that does nothing, as a plain function."""
    return None


@DBOS.workflow(name="five_noops_sync")
def five_noops_sync() -> None:
    """Five no-op steps, each checkpointed by DBOS."""
    for _ in range(STEPS):
        noop_sync()


# What a counted step does (`count_steps_with`): set before launch, since
# DBOS may resume workflows as soon as it is launched.
_step_hook: list[Callable[[int], Awaitable[None]]] = []


@DBOS.step(name="counted_step")
async def counted_step(index: int) -> None:
    """A step that hands its index to the hook of `count_steps_with`."""
    await _step_hook[0](index)


@DBOS.workflow(name="five_counted_steps")
async def five_counted_steps() -> None:
    """Five counted steps, for the recovery row (`compare_recovery.py`)."""
    for index in range(STEPS):
        await counted_step(index)


def count_steps_with(hook: Callable[[int], Awaitable[None]]) -> None:
    """Have every `counted_step` await ``hook(index)``; call before `launch`."""
    _step_hook[:] = [hook]


def workflow(style: str) -> Callable[[], Any]:
    """The workflow of the given step style: ``"async"`` or ``"sync"``."""
    return five_noops_async if style == "async" else five_noops_sync


def use_wal(path: str) -> None:
    """Put a new SQLite file in WAL mode before DBOS creates its tables there.

    DBOS sets no journal mode; WAL is kept in the file, so setting it first
    gives DBOS the durability setting sagakit has (synchronous stays
    SQLite's default, FULL).
    """
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()


def launch(url: str, *, executor_id: str, listen: bool = True) -> None:
    """Construct and launch the DBOS singleton on a system database.

    Args:
        url: The system database (``sqlite:///...`` or ``postgresql://...``).
        executor_id: This process's name; distinct per process, so that one
            process's launch-time recovery never adopts another's workflows.
        listen: Whether this process dequeues from the benchmark's queue
            (the process that only enqueues must not).
    """
    DBOS(
        config={
            "name": APP_NAME,
            "system_database_url": url,
            "application_version": APP_VERSION,
            "executor_id": executor_id,
            # Its info logs would interleave with the table; warnings still show.
            "log_level": "WARNING",
        }
    )
    if not listen:
        DBOS.listen_queues([])
    DBOS.launch()


def register_queue(worker_concurrency: int, polling_interval: float) -> Queue:
    """The benchmark's queue, with the same settings in every process."""
    return DBOS.register_queue(
        QUEUE,
        worker_concurrency=worker_concurrency,
        polling_interval_sec=polling_interval,
        on_conflict="always_update",
    )


def serve_until_sigterm() -> None:
    """Keep this launched DBOS process dequeuing until SIGTERM, then shut down."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    DBOS.destroy()

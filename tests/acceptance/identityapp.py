"""A saga served by the worker-identity tests' real ``sagakit worker`` processes.

Three steps; each call is counted in a ledger (a SQLite file of its own, named
by ``IDENTITYAPP_LEDGER``). With ``IDENTITYAPP_HANG`` set, the second step
counts itself and then hangs for an hour, so that the test can SIGKILL the
worker with every run inside it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sagakit import Saga, StepContext

LEDGER = Path(os.environ.get("IDENTITYAPP_LEDGER", "ledger.db"))
HANG = bool(os.environ.get("IDENTITYAPP_HANG"))


def count(step: str, ctx: StepContext) -> None:
    """Record one call of ``step`` for this run, with the process that made it."""
    with sqlite3.connect(LEDGER, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS calls (run TEXT, step TEXT, pid INT)")
        db.execute("INSERT INTO calls VALUES (?, ?, ?)", (ctx.run_id, step, os.getpid()))
    db.close()


saga: Saga[Any] = Saga("held")


@saga.step()
def first(state: dict[str, Any], ctx: StepContext) -> None:
    count("first", ctx)


@saga.step()
def second(state: dict[str, Any], ctx: StepContext) -> None:
    count("second", ctx)
    if HANG:
        time.sleep(3600)


@saga.step()
def third(state: dict[str, Any], ctx: StepContext) -> None:
    count("third", ctx)

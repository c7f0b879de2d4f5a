"""A saga application served by real `sagakit worker` processes in the
PostgreSQL tests.

Every call of a step or compensation writes a row to a ``calls`` table (which
process, when it started and finished) and its effect to an ``effects`` table
keyed by idempotency key, as an external service that deduplicates would. The
tests read both to prove that effects happen once and that no two processes
ever run the same step at the same time.

Environment:
    LEDGER_URL      the PostgreSQL connection string of the ledger
    LEDGER_SCHEMA   the schema that holds the ledger tables
    STEP_SECONDS    how long each call takes (default 0.02)

A run's input may hold ``fail_at``: the step that fails for good, so the run
rolls back through the compensations of the steps before it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg

from sagakit import PermanentError, Saga, StepContext

STEPS = ("s1", "s2", "s3", "s4", "s5")
SCHEMA = os.environ.get("LEDGER_SCHEMA", "public")
_local = threading.local()


def ledger() -> psycopg.Connection[Any]:
    """This thread's connection to the ledger (steps run on a thread pool)."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["LEDGER_URL"], autocommit=True)
        _local.conn = conn
    return conn


def create_ledger(url: str, schema: str) -> None:
    """Create the ledger tables (the test calls this before starting workers)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.calls (id bigserial PRIMARY KEY, "
            "key text NOT NULL, attempt int NOT NULL, pid int NOT NULL, "
            "started double precision NOT NULL, finished double precision)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.effects (key text PRIMARY KEY, pid int NOT NULL)"
        )


def call(ctx: StepContext) -> None:
    """Record one call and its effect, taking STEP_SECONDS."""
    conn = ledger()
    row = conn.execute(
        f"INSERT INTO {SCHEMA}.calls (key, attempt, pid, started) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        (ctx.idempotency_key, ctx.attempt, os.getpid(), time.time()),
    ).fetchone()
    assert row is not None
    time.sleep(float(os.environ.get("STEP_SECONDS", "0.02")))
    conn.execute(
        f"INSERT INTO {SCHEMA}.effects (key, pid) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (ctx.idempotency_key, os.getpid()),
    )
    conn.execute(f"UPDATE {SCHEMA}.calls SET finished = %s WHERE id = %s", (time.time(), row[0]))


saga: Saga[Any] = Saga("ledgered")


def _make(name: str) -> None:
    def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        call(ctx)
        if state.get("fail_at") == name:
            raise PermanentError(f"{name} refused the order")
        return {name: "done"}

    def undo(state: dict[str, Any], ctx: StepContext) -> None:
        call(ctx)

    saga.add_step(action, name=name).compensate(undo)


for _step in STEPS:
    _make(_step)

"""A saga with a local-transaction step, run as a real subprocess by the
local-transaction crash tests (and imported by them to recover its runs).

``create_org`` inserts a row into the orgs table through ``ctx.connection``
(the store's own database, in the transaction that also records the step's
success); ``notify`` is an ordinary step after it. Every call of either
appends a line ``STEP ATTEMPT PID`` to a calls file, so the test can count
how often each ran, whichever process ran it.

Environment (read at each call, so the test process can set its own):
    LOCALTX_TABLE   the orgs table (in the store's database, default search_path)
    LOCALTX_CALLS   the calls file
    LOCALTX_HANG    ``inside``: hang in create_org's first attempt, after its
                    insert, before it returns; ``after``: hang in notify's
                    first attempt (create_org has committed by then)
    LOCALTX_MARKER  written just before hanging

Usage: python localtxapp.py STORE_URL RUN_ID
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from sagakit import Engine, Saga, StepContext
from sagakit.store.postgresql import parse_url

State = dict[str, Any]


def _record(step: str, ctx: StepContext) -> None:
    with open(os.environ["LOCALTX_CALLS"], "a") as calls:
        calls.write(f"{step} {ctx.attempt} {os.getpid()}\n")


def _hang_if(where: str, ctx: StepContext) -> None:
    if os.environ.get("LOCALTX_HANG") == where and ctx.attempt == 1:
        Path(os.environ["LOCALTX_MARKER"]).write_text(where)
        time.sleep(3600)


saga: Saga[Any] = Saga("org-signup")


@saga.step(local_transaction=True)
def create_org(state: State, ctx: StepContext) -> State:
    _record("create_org", ctx)
    conn = ctx.connection
    p = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    table = os.environ["LOCALTX_TABLE"]
    conn.execute(
        f"INSERT INTO {table} (name, run_id) VALUES ({p}, {p})", (state["org"], ctx.run_id)
    )
    _hang_if("inside", ctx)
    return {"org_created": True}


@saga.step
def notify(state: State, ctx: StepContext) -> State:
    _record("notify", ctx)
    _hang_if("after", ctx)
    return {"notified": True}


# -- the orgs table, for the test ------------------------------------------------------


def _connect(url: str) -> Any:
    """An autocommit connection to the database of the store at ``url``."""
    if url.startswith("sqlite:"):
        return sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10, isolation_level=None)
    import psycopg

    return psycopg.connect(parse_url(url)[0], autocommit=True)


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection; the rows it returned, if any."""
    conn = _connect(url)
    try:
        cur = conn.execute(query)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []
    finally:
        conn.close()


def main() -> None:
    url, run_id = sys.argv[1:3]
    with Engine(url, lease_seconds=1.0) as engine:
        print(engine.run(saga, {"org": "acme"}, run_id=run_id).status)


if __name__ == "__main__":
    main()

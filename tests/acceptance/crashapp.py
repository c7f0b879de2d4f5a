"""A saga application driven as a real subprocess by the crash tests.

Every call records itself in a ledger (a SQLite file of its own) keyed by
idempotency key, as an external service that deduplicates would. The
environment decides where it hangs (so the test can SIGKILL it there) and
what fails:

    SAGAKIT_HANG=step|undo:step   hang inside that action or compensation
    SAGAKIT_FAIL=step             that action fails for good
    SAGAKIT_FLAKY=step            that action fails on its first attempt,
                                  with a retry due 5 s later
    CRASHAPP_LEASE=SECONDS        the engine's lease (default 1)

Usage: CRASHAPP_LEDGER=FILE python crashapp.py run DB_URL RUN_ID
       CRASHAPP_LEDGER=FILE python crashapp.py recover DB_URL
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from sagakit import Engine, PermanentError, RetryPolicy, Saga, StepContext

HANG = os.environ.get("SAGAKIT_HANG", "")
FAIL = os.environ.get("SAGAKIT_FAIL", "")
FLAKY = os.environ.get("SAGAKIT_FLAKY", "")
# From the environment, so that `sagakit recover --app crashapp` can import it.
LEDGER = Path(os.environ.get("CRASHAPP_LEDGER", "ledger.db"))


def record(what: str, ctx: StepContext) -> None:
    """Count the call, and the effect once per idempotency key."""
    with sqlite3.connect(LEDGER, timeout=10) as db:
        db.execute("CREATE TABLE IF NOT EXISTS calls (what TEXT, key TEXT, attempt INT)")
        db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, what TEXT)")
        db.execute("INSERT INTO calls VALUES (?, ?, ?)", (what, ctx.idempotency_key, ctx.attempt))
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (ctx.idempotency_key, what))
    db.close()


def hang_here(what: str) -> None:
    if what == HANG:
        (LEDGER.parent / "hanging").write_text(what)
        time.sleep(3600)


saga: Saga[Any] = Saga("crashy")


def make(name: str) -> None:
    def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        record(name, ctx)
        hang_here(name)
        if name == FAIL:
            raise PermanentError(f"{name} failed")
        if name == FLAKY and ctx.attempt == 1:
            (LEDGER.parent / "waiting").write_text(name)
            raise ConnectionError(f"{name} flaked")
        return {name: "done"}

    def undo(state: dict[str, Any], ctx: StepContext) -> None:
        record(f"undo:{name}", ctx)
        hang_here(f"undo:{name}")

    step = saga.add_step(
        action,
        name=name,
        retry=RetryPolicy(max_attempts=3, initial_delay=5.0, backoff=1.0, jitter=0.0),
    )
    step.compensate(undo)


for _name in ("a", "b", "c", "d"):
    make(_name)


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    lease = float(os.environ.get("CRASHAPP_LEASE", "1.0"))
    with Engine(url, lease_seconds=lease) as engine:
        engine.register(saga)
        if command == "run":
            run = engine.run(saga, {}, run_id=sys.argv[3])
            print(run.status)
        else:
            for run in engine.recover():
                print(run.id, run.status)


if __name__ == "__main__":
    main()

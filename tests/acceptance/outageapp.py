"""A saga application run by real workers while their PostgreSQL goes away.

Every call appends one line to a file (``OUTAGE_CALLS``), outside the database
that goes down: its idempotency key, when it started and ended, and the pid
of the process that ran it. The test reads the file to tell whether two calls
of one key ever ran at the same time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sagakit import Saga, StepContext

CALLS = os.environ.get("OUTAGE_CALLS", "calls.txt")
STEP_SECONDS = float(os.environ.get("STEP_SECONDS", "0.2"))
STEPS = ("s1", "s2", "s3")

saga: Saga[Any] = Saga("outage")


def _record(ctx: StepContext) -> None:
    started = time.time()
    time.sleep(STEP_SECONDS)
    line = f"{ctx.idempotency_key}\t{started:.6f}\t{time.time():.6f}\t{os.getpid()}\n"
    # One write of a short line with O_APPEND: the workers' lines never interleave.
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _make(name: str) -> None:
    def action(state: dict[str, Any], ctx: StepContext) -> None:
        _record(ctx)

    def undo(state: dict[str, Any], ctx: StepContext) -> None:
        _record(ctx)

    saga.add_step(action, name=name).compensate(undo)


for _name in STEPS:
    _make(_name)

"""Waiting for a run to settle: reading it again at doubling intervals until
it rests with no mail unread, or the time given runs out."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from sagakit.errors import RunTimeout, SagaError
from sagakit.journal import EventKind
from sagakit.store import ACTIVE_STATUSES, RunRecord

if TYPE_CHECKING:
    from sagakit.engine.async_engine import AsyncEngine
    from sagakit.run import Run


async def wait(engine: AsyncEngine, run_id: str, *, timeout: float | None, poll: float) -> Run:
    """The run once it has settled (`AsyncEngine.wait`)."""
    if poll <= 0:
        raise SagaError(f"poll must be positive, got {poll}")
    # Real time, not engine.clock: a test's fake clock must not stretch the wait.
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = min(0.01, poll)
    while True:
        record = await engine._record(run_id)
        # The row's mail count is read with its status, in one read: a
        # cancel or signal not yet read keeps the run unsettled.
        resting = record.status not in ACTIVE_STATUSES and not record.mail
        if resting and await _quiet(engine, record):
            return engine._to_run(record)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                assert timeout is not None
                raise RunTimeout(run_id, timeout, record.status)
            await asyncio.sleep(min(pause, left))
        else:
            await asyncio.sleep(pause)
        pause = min(pause * 2, poll)


async def _quiet(engine: AsyncEngine, record: RunRecord) -> bool:
    """Whether a run in a resting status stays there: its last event is no
    cancel, which the next commit answers (by starting the undo or refusing)."""
    events = await engine.store.journal(record.id, after_seq=record.last_seq - 1)
    last = next((e for e in events if e.seq == record.last_seq), None)
    return last is None or last.kind is not EventKind.CANCEL_REQUESTED

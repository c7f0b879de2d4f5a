"""Waiting for a run to settle.

The run is read again at doubling intervals until it rests with no mail
unread, or the time given runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sagakit.errors import RunTimeout, SagaError
from sagakit.journal import EventKind
from sagakit.store import ACTIVE_STATUSES, RunRecord, Store

if TYPE_CHECKING:
    from sagakit.engine.registry import SagaRegistry
    from sagakit.run import Run


async def wait(
    run_id: str,
    *,
    store: Store,
    registry: SagaRegistry,
    read: Callable[[str], Awaitable[RunRecord]],
    timeout: float | None,
    poll: float,
) -> Run:
    """The run once it has settled (`AsyncEngine.wait`).

    Args:
        run_id: The run.
        store: Where its journal is read.
        registry: The sagas registered, to show the run with its state model.
        read: The stored run by id (`AsyncEngine`'s read, which opens the
            store and raises `RunNotFound`), called at each look.
        timeout: Give up after this many seconds (None: never).
        poll: The longest interval between two reads, in seconds.

    Raises:
        RunNotFound: no such run.
        RunTimeout: the run had not settled in time.
    """
    if poll <= 0:
        raise SagaError(f"poll must be positive, got {poll}")
    # Real time, not engine.clock: a test's fake clock must not stretch the wait.
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = min(0.01, poll)
    while True:
        record = await read(run_id)
        # The row's mail count is read with its status, in one read: a
        # cancel or signal not yet read keeps the run unsettled.
        resting = record.status not in ACTIVE_STATUSES and not record.mail
        if resting and await _quiet(store, record):
            return registry.to_run(record)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                assert timeout is not None
                raise RunTimeout(run_id, timeout, record.status)
            await asyncio.sleep(min(pause, left))
        else:
            await asyncio.sleep(pause)
        pause = min(pause * 2, poll)


async def _quiet(store: Store, record: RunRecord) -> bool:
    """Whether a run in a resting status stays there.

    It does if its last event is no cancel, which the next commit answers (by
    starting the undo or refusing).
    """
    events = await store.journal(record.id, after_seq=record.last_seq - 1)
    last = next((e for e in events if e.seq == record.last_seq), None)
    return last is None or last.kind is not EventKind.CANCEL_REQUESTED

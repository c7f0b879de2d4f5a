"""Driving a run in a test until it settles or pauses: `drive` and `adrive`.

`Engine.run` already drives a run it starts until it settles or pauses.
These carry on with a run that was started elsewhere (`Engine.start`), that
was handed back on a timer, or whose timer the test moved the clock past (a
paused run's deadline after `SkippingClock.advance`): they do here, in the
test, what a worker would do, and return the run once only a person, a
signal or more time could move it on.
"""

from __future__ import annotations

import asyncio

from sagakit.engine import AsyncEngine, Engine
from sagakit.errors import RunNotFound, SagaError
from sagakit.journal import RunStatus
from sagakit.run import Run
from sagakit.store import ACTIVE_STATUSES, RunRecord

__all__ = ["adrive", "drive"]

_HELD_ELSEWHERE_POLL = 0.01
"""Real seconds between looks at a run another process (or task) is driving."""


def drive(engine: Engine, run_id: str, *, rounds: int = 10_000) -> Run:
    """Drive run ``run_id`` here until it settles or pauses, and return it.

    Every run of the engine's sagas that is due is driven along with it (as
    `Engine.recover` does), and none is handed back on a timer: under a
    `SkippingClock` the timers skip. A run that waits on a timer nobody
    holds (handed back by a worker, say) has the clock moved to its timer,
    or, under a real clock, is waited for. A paused run is returned as it
    is, even if it has a deadline: move the clock past it
    (`SkippingClock.advance`) and drive again to see the deadline pass.

    Args:
        engine: The engine, with the run's saga registered.
        run_id: The run.
        rounds: How many times at most to drive due runs before giving up
            (a run that keeps coming back without settling is a bug).

    Raises:
        RunNotFound: no such run.
        SagaError: the run did not settle within ``rounds``.
    """
    return engine.call(adrive(engine.async_engine, run_id, rounds=rounds))


async def adrive(engine: AsyncEngine, run_id: str, *, rounds: int = 10_000) -> Run:
    """`drive` for an `AsyncEngine`, on its own event loop."""
    clock = engine.clock
    for _ in range(rounds):
        with clock.busy():  # a read of the store under way: no timer skips over it
            record = await _read(engine, run_id)
        if _resting(record, clock()):
            return engine.registry.to_run(record)
        if _free(engine, record, clock()) and _due(record, clock()):
            # Not busy here: the drives hold the clock while they work, and
            # let time skip while they wait on timers.
            await engine.recover(park_after=None)
            continue
        if not _free(engine, record, clock()):
            # Another drive holds it (a worker, a task of the test's): let it work.
            await asyncio.sleep(_HELD_ELSEWHERE_POLL)
        elif record.wake_at is not None:
            await clock.sleep_until(record.wake_at)  # a skipping clock jumps there
    raise SagaError(
        f"run {run_id!r} did not settle or pause after {rounds} rounds of driving; "
        "is something starting it again and again?"
    )


async def _read(engine: AsyncEngine, run_id: str) -> RunRecord:
    await engine.open()
    record = await engine.store.get_run(run_id)
    if record is None:
        raise RunNotFound(run_id)
    return record


def _resting(record: RunRecord, now: float) -> bool:
    """Whether only a person, a signal or the clock moved by hand moves it on now."""
    if record.status in ACTIVE_STATUSES or record.mail:
        return False
    # A paused run whose deadline has passed goes on (it compensates). Any other
    # timer of a resting run is an alert owed, which is a worker's to deliver.
    paused = record.status == RunStatus.PAUSED
    return not paused or record.wake_at is None or record.wake_at > now


def _free(engine: AsyncEngine, record: RunRecord, now: float) -> bool:
    """Whether no drive holds the run: none of this engine's, and no live lease."""
    if record.id in engine.drives:
        return False
    return record.owner is None or (record.lease_until or 0) < now


def _due(record: RunRecord, now: float) -> bool:
    return bool(record.mail) or record.wake_at is None or record.wake_at <= now

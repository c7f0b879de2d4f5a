"""Driving runs in this process: a driver for a run (a new one, or one just
claimed, from its journal), the drive until the run is let go, and the drives
known here, whose leases the heartbeat renews and whose mail pokes them."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from sagakit import core
from sagakit.definition import Saga
from sagakit.driver import Driver
from sagakit.engine import attention, heartbeat
from sagakit.errors import JournalMismatch, LeaseLost
from sagakit.journal import Event
from sagakit.store import Lease, RunRecord

if TYPE_CHECKING:
    from sagakit.engine.async_engine import AsyncEngine

logger = logging.getLogger("sagakit")


def new_driver(
    engine: AsyncEngine,
    saga: Saga[Any],
    record: RunRecord,
    progress: core.Progress,
    *,
    park_after: float | None = None,
) -> Driver:
    """A driver for a run of ``saga`` that ``engine`` owns (or will create)."""
    if engine._executor is None:
        engine._executor = ThreadPoolExecutor(
            engine._max_threads, thread_name_prefix="sagakit-step"
        )
    return Driver(
        saga=saga,
        store=engine.store,
        record=record,
        lease=Lease(engine.owner, record.lease_epoch),
        progress=progress,
        clock=engine.clock,
        random=engine._random.random,
        executor=engine._executor,
        commit_patience=engine.lease_seconds / 2,
        park_after=park_after,
    )


async def drive(engine: AsyncEngine, driver: Driver) -> Driver:
    """Drive a claimed run, or a new one; return the driver of its last drive here.

    A run is claimed before it is driven, and a live lease cannot be
    claimed twice, so one process never holds two drivers of one run.
    """
    while True:
        if driver.unborn:
            # Known here once stored: until then another drive of the same
            # id (which this one will then not create) keeps its place.
            driver.on_stored = partial(_register, engine)
        else:
            _register(engine, driver)
        heartbeat.start(engine)
        try:
            await driver.drive()
        except LeaseLost:
            pass  # logged by the driver; the new owner carries on
        finally:
            if engine._drivers.get(driver.run_id) is driver:
                del engine._drivers[driver.run_id]
        if driver.halted is not None:
            # Only now: the run is released and no longer this engine's, so a
            # slow hook delays nothing and an operator may already act on it.
            await attention.alert(engine, driver, driver.halted)
        if not (driver.released and driver.mail_waiting and driver.handed_back is None):
            return driver
        # Mail arrived as the run was let go (a cancel, a signal): take it
        # back and act on it, unless another process was quicker.
        now = engine.clock()
        taken = await engine.store.claim(
            driver.run_id, owner=engine.owner, now=now, lease_until=now + engine.lease_seconds
        )
        if taken is None:
            return driver
        driver = await claimed(engine, taken, park_after=driver.park_after)


async def claimed(
    engine: AsyncEngine,
    record: RunRecord,
    *,
    park_after: float | None = None,
    events: list[Event] | None = None,
) -> Driver:
    """A driver for a run this engine has just claimed, from its journal.

    Raises:
        SagaNotRegistered: the run's saga is not registered here.
        JournalMismatch: the journal does not fit the registered saga.
    """
    saga = engine.saga_for(record)
    if events is None:
        events = await engine.store.journal(record.id)
    try:
        progress = core.replay(saga.plan(), events)
    except (KeyError, ValueError) as exc:
        raise JournalMismatch(record.id, record.saga, record.version, exc) from exc
    return new_driver(engine, saga, record, progress, park_after=park_after)


def carry_on(engine: AsyncEngine, taken: RunRecord) -> bool:
    """Whether a drive of this engine takes over ``taken``, a run it drives
    that was just claimed again because its lease lapsed (`Driver.adopt`)."""
    driver = engine._drivers.get(taken.id)
    if driver is None or not driver.adopt(taken):
        return False
    logger.warning(
        "run %s: its lease lapsed before it was renewed (is this process "
        "overloaded?); claimed it again and carried on with the drive in flight",
        taken.id,
    )
    return True


def _register(engine: AsyncEngine, driver: Driver) -> None:
    """Know a run's drive here: its lease is renewed, its mail pokes it."""
    engine._drivers[driver.run_id] = driver

"""Recovery: doing, once, what a worker does with the runs that are due now.

`recover` claims the runs a worker would claim (`Store.claim_due`: owned by
nobody or with a lapsed lease, and active with no timer running, or with a
timer that is due, or with mail waiting) and drives each until nothing is
left to do now. A run that would then wait on a long retry timer is handed
back with the timer kept, exactly as a worker parks it; a run whose timer is
not due is not taken at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sagakit.errors import SagaError
from sagakit.store import ACTIVE_STATUSES, Lease, RunRecord, Store

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.drives import Drives
    from sagakit.engine.registry import SagaRegistry
    from sagakit.run import Run

logger = logging.getLogger("sagakit")

_PAGE = 500
UNFIT_HOLD = 60.0
"""Seconds a run whose journal does not fit its saga is held back (as a worker does)."""


async def recover(
    *,
    store: Store,
    registry: SagaRegistry,
    drives: Drives,
    read: Callable[[str], Awaitable[RunRecord]],
    park_after: float | None = 2.0,
) -> list[Run]:
    """Drive every due run of the registered sagas until nothing is left to do now.

    The work of `AsyncEngine.recover`.

    Args:
        store: Where runs are kept (open).
        registry: The sagas whose runs are resumed here.
        drives: The drives of this process, which take the runs.
        read: The stored run by id (`AsyncEngine`'s read), for the runs as they ended.
        park_after: Hand back a run whose next retry is more than this many
            seconds away, with its timer kept (None: wait here however long).

    Returns:
        The runs taken, as they ended.
    """
    _report_unserved(await _waiting_unserved(store, registry, drives.clock()), registry)
    sagas = [(saga.name, saga.version) for saga in registry.sagas]
    recovering: dict[str, asyncio.Task[Driver]] = {}
    while sagas:
        now = drives.clock()
        page = await store.claim_due(
            owner=drives.owner,
            now=now,
            lease_until=now + drives.lease_seconds,
            limit=_PAGE,
            sagas=sagas,
        )
        for record in page:
            driver = await _take(record, store=store, drives=drives, park_after=park_after)
            if driver is not None:  # drive it now: its heartbeat starts at once
                recovering[record.id] = asyncio.ensure_future(drives.drive(driver))
        if len(page) < _PAGE:
            break
    recovered: list[Run] = []
    for run_id, drive in recovering.items():
        try:
            await drive
        except SagaError as exc:
            logger.error("run %s could not be recovered: %s", run_id, exc)
            continue
        recovered.append(registry.to_run(await read(run_id)))
    return recovered


async def _take(
    record: RunRecord, *, store: Store, drives: Drives, park_after: float | None
) -> Driver | None:
    """A driver for a run `recover` has just claimed, or None if it is not driven here."""
    if drives.carry_on(record):  # this process drives it already (its lease had lapsed)
        return None
    try:
        return await drives.claimed(record, park_after=park_after)
    except SagaError as exc:
        # Held back, as a worker does: released plainly, a run with mail or
        # still active would be due again at once.
        logger.error(
            "run %s cannot be resumed, left as it is for %gs: %s", record.id, UNFIT_HOLD, exc
        )
        lease = Lease(drives.owner, record.lease_epoch)
        await store.release(record.id, lease, hold_until=drives.clock() + UNFIT_HOLD)
        return None


async def _waiting_unserved(store: Store, registry: SagaRegistry, now: float) -> list[RunRecord]:
    """The active runs nobody holds whose saga version is not registered here."""
    found: list[RunRecord] = []
    for status in ACTIVE_STATUSES:
        offset = 0
        while True:
            page = await store.list_runs(status=status, limit=_PAGE, offset=offset)
            offset += len(page)
            found.extend(
                record
                for record in page
                if (record.owner is None or (record.lease_until or 0) < now)
                and registry.find(record.saga, record.version) is None
            )
            if len(page) < _PAGE:
                break
    return found


def _report_unserved(records: list[RunRecord], registry: SagaRegistry) -> None:
    for record in records:
        logger.warning(
            "run %s of saga %s version %s is not registered here (versions here: %s); "
            "left untouched: a run only ever runs on its own version's code",
            record.id,
            record.saga,
            record.version,
            ", ".join(registry.versions(record.saga)) or "none",
        )

"""Recovery: resuming the unsettled runs whose lease lapsed (their owner died)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sagakit.engine import drives
from sagakit.errors import SagaError
from sagakit.store import ACTIVE_STATUSES, Lease, RunRecord

if TYPE_CHECKING:
    from sagakit.driver import Driver
    from sagakit.engine.async_engine import AsyncEngine
    from sagakit.run import Run

logger = logging.getLogger("sagakit")

_PAGE = 500


async def recover(engine: AsyncEngine) -> list[Run]:
    """Drive every run `take_over` claims until it settles (`AsyncEngine.recover`)."""
    await engine.open()
    recovering: dict[str, asyncio.Task[Driver]] = {}
    for status in ACTIVE_STATUSES:
        offset = 0
        while True:
            page = await engine.store.list_runs(status=status, limit=_PAGE, offset=offset)
            offset += len(page)
            for record in page:
                driver = await take_over(engine, record)
                if driver is not None:  # drive it now: its heartbeat starts at once
                    recovering[record.id] = asyncio.ensure_future(drives.drive(engine, driver))
            if len(page) < _PAGE:
                break
    recovered: list[Run] = []
    for run_id, drive in recovering.items():
        try:
            await drive
        except SagaError as exc:
            logger.error("run %s could not be recovered: %s", run_id, exc)
            continue
        recovered.append(await engine.get(run_id))
    return recovered


async def take_over(engine: AsyncEngine, record: RunRecord) -> Driver | None:
    """Claim a run for `recover` if its lease lapsed and its saga is known."""
    now = engine.clock()
    if record.owner is not None and (record.lease_until or 0) >= now:
        return None
    if (record.saga, record.version) not in engine._sagas:
        logger.warning(
            "run %s of saga %s version %s is not registered here (versions here: %s); "
            "left untouched: a run only ever runs on its own version's code",
            record.id,
            record.saga,
            record.version,
            ", ".join(engine.versions(record.saga)) or "none",
        )
        return None
    taken = await engine.store.claim(
        record.id, owner=engine.owner, now=now, lease_until=now + engine.lease_seconds
    )
    if taken is None or drives.carry_on(engine, taken):
        return None
    lease = Lease(engine.owner, taken.lease_epoch)
    if taken.status not in ACTIVE_STATUSES:  # settled meanwhile
        await engine.store.release(taken.id, lease)
        return None
    try:
        return await drives.claimed(engine, taken)
    except SagaError as exc:
        logger.error("run %s cannot be resumed, left as it is: %s", record.id, exc)
        await engine.store.release(taken.id, lease)
        return None

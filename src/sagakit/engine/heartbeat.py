"""The heartbeat: renewing the leases of the runs an engine drives.

One task per engine renews the leases of all its drives in one call, every
third of a lease, and tells a drive when its run was taken by another
process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sagakit.errors import SagaError

if TYPE_CHECKING:
    from sagakit.engine.async_engine import AsyncEngine

logger = logging.getLogger("sagakit")


def start(engine: AsyncEngine) -> None:
    """Start the engine's heartbeat, unless it beats already."""
    if engine._heartbeat is None or engine._heartbeat.done():
        engine._heartbeat = asyncio.ensure_future(beat(engine))


async def beat(engine: AsyncEngine) -> None:
    """Renew the leases of the engine's drives until cancelled (`AsyncEngine.close`)."""
    # Renew well before expiry so one slow round trip does not lose a lease.
    interval = engine.lease_seconds / 3
    delay = interval
    while True:
        await asyncio.sleep(delay)
        if not engine._drivers:
            delay = interval
            continue
        leases = {run_id: d.lease for run_id, d in engine._drivers.items()}
        try:
            lost = await engine.store.renew(
                leases, lease_until=engine.clock() + engine.lease_seconds
            )
        except SagaError as exc:
            # A cut connection fails one call: try again soon, backing off,
            # not a third of the lease later, when two failures in a row
            # would let every lease lapse and another process take the runs
            # while their calls still run here.
            delay = interval / 10 if delay >= interval else min(delay * 2, interval)
            logger.warning("could not renew leases (again in %.2fs): %s", delay, exc)
            continue
        delay = interval
        for run_id in lost:
            driver = engine._drivers.get(run_id)
            # Only the driver whose lease was renewed: a newer one may hold a newer lease.
            if driver is not None and driver.lease == leases[run_id]:
                driver.lost = True
                logger.warning("run %s: lease lost to another process", run_id)

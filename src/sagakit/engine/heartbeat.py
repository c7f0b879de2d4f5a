"""`Heartbeat`: renewing the leases of the runs a process drives.

One task per engine renews the leases of all its drives in one call, every
third of a lease, and tells a drive when its run was taken by another
process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sagakit.errors import SagaError
from sagakit.store import Store

if TYPE_CHECKING:
    from sagakit.driver import Driver

logger = logging.getLogger("sagakit")


class Heartbeat:
    """The task renewing the leases of the drives in ``drivers``.

    Args:
        store: Where the leases are kept.
        drivers: The drives whose leases to renew, by run id; read live at
            each beat (the `Drives` map, as drives start and end).
        clock: Seconds since the epoch.
        lease_seconds: How long a renewed lease lasts.
    """

    def __init__(
        self,
        store: Store,
        drivers: Mapping[str, Driver],
        *,
        clock: Callable[[], float],
        lease_seconds: float,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating, unless it beats already."""
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self.beat())

    def stop(self) -> None:
        """Stop beating: the leases held lapse unless renewed otherwise."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def beat(self) -> None:
        """Renew the leases of the drives until cancelled (`stop`)."""
        drivers = self.drivers
        # Renew well before expiry so one slow round trip does not lose a lease.
        interval = self.lease_seconds / 3
        delay = interval
        while True:
            await asyncio.sleep(delay)
            if not drivers:
                delay = interval
                continue
            leases = {run_id: d.lease for run_id, d in drivers.items()}
            try:
                lost = await self.store.renew(leases, lease_until=self.clock() + self.lease_seconds)
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
                driver = drivers.get(run_id)
                # Only the driver whose lease was renewed: a newer one may hold a newer lease.
                if driver is not None and driver.lease == leases[run_id]:
                    driver.lost = True
                    logger.warning("run %s: lease lost to another process", run_id)

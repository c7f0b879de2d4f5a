"""`Heartbeat`: renewing the leases of the runs a process drives.

One task per engine renews the leases of all its drives in one call, every
third of a lease, and tells a drive when its run was taken by another
process. A renewal never waits longer than a third of a lease for the store
(a pool waiting for a connection, a server that does not answer): it is
given up and tried again soon, and each drive knows how long its lease lasts
at the earliest, so that it starts no call that its lease might not cover.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
        self.failing: str | None = None
        """Why the last renewal failed, until one succeeds again (None: it did)."""

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
            # Real time, not the engine's clock: a lease lapses by this host's
            # measure (see `Driver.lease_known_until`), whatever a test's clock says.
            await asyncio.sleep(delay)
            if not drivers:
                delay = interval
                continue
            leases = {run_id: d.lease for run_id, d in drivers.items()}
            sent_at = time.monotonic()
            try:
                # Bounded: a renewal that waits longer (on the pool, on a server
                # that went away) would let the leases lapse while it waits.
                now = self.clock()
                lost = await asyncio.wait_for(
                    self.store.renew(leases, lease_until=now + self.lease_seconds, now=now),
                    timeout=interval,
                )
            except (SagaError, TimeoutError) as exc:
                # A cut connection fails one call: try again soon, backing off,
                # not a third of the lease later, when two failures in a row
                # would let every lease lapse and another process take the runs
                # while their calls still run here.
                delay = interval / 10 if delay >= interval else min(delay * 2, interval)
                reason = str(exc) or f"no answer within {interval:.2f}s"
                self.failing = reason
                logger.warning(
                    "could not reach the store to renew the leases of %d runs (again in %.2fs): %s",
                    len(leases),
                    delay,
                    reason,
                )
                continue
            self.failing = None
            delay = interval
            for run_id, renewed in drivers.items():
                if run_id not in lost and renewed.lease == leases.get(run_id):
                    renewed.renewed(sent_at)
            for run_id in lost:
                driver = drivers.get(run_id)
                # Only the driver whose lease was renewed: a newer one may hold a newer lease.
                if driver is not None and driver.lease == leases[run_id]:
                    driver.lost = True
                    driver.log.warning("run %s: lease lost to another process", run_id)

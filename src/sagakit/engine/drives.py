"""`Drives`: the runs this process drives, each by its driver.

A driver for a run (a new one, or one just claimed, from its journal), the
drive until the run is let go, and the drives known here, whose leases the
`Heartbeat` renews and whose mail pokes them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sagakit import core, runlog
from sagakit.clock import Clock
from sagakit.definition import Saga
from sagakit.driver import Driver
from sagakit.driver.calls import LingeringCalls
from sagakit.engine.heartbeat import Heartbeat
from sagakit.engine.registry import SagaRegistry
from sagakit.errors import LeaseLost, SagaError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.observe import Observers
from sagakit.store import Lease, RunRecord, Store
from sagakit.store.encrypted import refuse_encrypted

logger = logging.getLogger("sagakit")


class Drives(Mapping[str, Driver]):
    """The drives in this process, by run id: the runs it leases and drives now.

    Args:
        store: Where runs are kept.
        registry: The sagas whose runs may be driven here.
        owner: This process's name in leases.
        clock: The engine's clock: the time, and its timer waits.
        lease_seconds: How long a lease taken or renewed here lasts.
        max_threads: Threads for synchronous step functions.
        on_halted: Awaited with a driver and its ``needs_attention`` event
            once a drive has halted and released its run.
        hang_grace: How long (seconds) a call that timed out and still runs
            (a thread, or a coroutine that ignores its cancellation) may hold
            up the next call of its step before the run needs attention.
        commit_patience: How long (seconds) a drive keeps retrying a commit
            the store refuses for a passing reason before it stops; None:
            half a lease.
        observers: Told of every commit of the drives here, and of leases lost.

    Attributes:
        lingering: The timed-out calls still running in this process. A run
            halted on one is resumed here once it returns.
    """

    def __init__(
        self,
        store: Store,
        registry: SagaRegistry,
        *,
        owner: str,
        clock: Clock,
        lease_seconds: float,
        max_threads: int,
        on_halted: Callable[[Driver, Event], Awaitable[None]],
        hang_grace: float = 30.0,
        commit_patience: float | None = None,
        observers: Observers | None = None,
    ) -> None:
        self.store = store
        self.observers = observers
        self.registry = registry
        self.owner = owner
        # The lease of every run started here (a `Lease` is immutable, so one
        # serves them all): one made less for every run.
        self._first_lease = Lease(owner, 1)
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.commit_patience = lease_seconds / 2 if commit_patience is None else commit_patience
        self._max_threads = max_threads
        self._on_halted = on_halted
        self._random = random.Random()
        self._executor: ThreadPoolExecutor | None = None
        self._drivers: dict[str, Driver] = {}
        self.hang_grace = hang_grace
        self.lingering = LingeringCalls()
        self._resuming: set[asyncio.Task[None]] = set()
        self._hung_halts: dict[str, Event] = {}  # the runs halted on a hung call, by id
        self.heartbeat = Heartbeat(store, self._drivers, clock=clock, lease_seconds=lease_seconds)

    # -- the map ----------------------------------------------------------------------

    def __getitem__(self, run_id: str) -> Driver:
        return self._drivers[run_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._drivers)

    def __len__(self) -> int:
        return len(self._drivers)

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        """The threads synchronous steps run on, once a driver has needed them."""
        return self._executor

    def close(self) -> None:
        """Stop the heartbeat and let go of the step threads (without waiting).

        Runs in flight keep their leases until they lapse. A run halted on a
        timed-out call still running is no longer resumed here when it
        returns: an operator's retry resumes it.
        """
        self.heartbeat.stop()
        for task in self._resuming:
            task.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- drivers ----------------------------------------------------------------------

    def new_driver(
        self,
        saga: Saga[Any],
        record: RunRecord,
        progress: core.Progress,
        *,
        park_after: float | None = None,
        leased_at: float | None = None,
    ) -> Driver:
        """A driver for a run of ``saga`` that this process owns (or will create).

        ``leased_at`` is when (`time.monotonic`) the claim that took the run
        was sent (default: now), the earliest its lease can have started.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="sagakit-step"
            )
        lease = self._first_lease
        if record.lease_epoch != 1 or lease.owner is not self.owner:
            lease = Lease(self.owner, record.lease_epoch)
        # Positional, in the order of `Driver`'s parameters: made for every run.
        return Driver(
            saga,
            self.store,
            record,
            lease,
            progress,
            self.clock,
            self._random.random,
            self._executor,
            self.commit_patience,
            park_after,
            self.lingering,
            self.hang_grace,
            self.registry.failures,
            self.lease_seconds,
            leased_at,
            self.observers,
        )

    async def claimed(
        self,
        record: RunRecord,
        *,
        park_after: float | None = None,
        events: list[Event] | None = None,
        leased_at: float | None = None,
    ) -> Driver:
        """A driver for a run this process has just claimed, from its journal.

        ``leased_at``: see `new_driver`.

        Raises:
            EncryptionError: the run's data is encrypted and this engine has no key.
            SagaNotRegistered: the run's saga is not registered here.
            JournalMismatch: the journal does not fit the registered saga.
        """
        refuse_encrypted(record)
        self.registry.saga_for(record)  # refused before its journal is read
        if events is None:
            events = await self.store.journal(record.id)
        saga, progress = self.registry.replay(record, events)
        return self.new_driver(saga, record, progress, park_after=park_after, leased_at=leased_at)

    async def claim(self, run_id: str, *, now: float | None = None) -> RunRecord | None:
        """Claim a run in this process's name if no live lease holds it.

        Args:
            run_id: The run.
            now: The time of the claim (default: the clock, read now).

        Returns:
            The run as claimed, or None if another process holds it (or it is gone).
        """
        if now is None:
            now = self.clock()
        return await self.store.claim(
            run_id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
        )

    # -- driving ----------------------------------------------------------------------

    async def drive(self, driver: Driver) -> Driver:
        """Drive a claimed run, or a new one; return the driver of its last drive here.

        A run is claimed before it is driven, and a live lease cannot be
        claimed twice, so one process never holds two drivers of one run.
        """
        drivers = self._drivers
        while True:
            if driver.unborn:
                # Known here once stored: until then another drive of the same
                # id (which this one will then not create) keeps its place.
                driver.on_stored = self._register
            else:
                drivers[driver.run_id] = driver
            self.heartbeat.start()
            try:
                await driver.drive()
            except LeaseLost:
                # Logged by the driver; the new owner carries on.
                if self.observers is not None:
                    self.observers.lease_lost(
                        run_id=driver.run_id,
                        saga=driver.saga.name,
                        version=driver.saga.version,
                        at=self.clock(),
                    )
            finally:
                if drivers.get(driver.run_id) is driver:
                    del drivers[driver.run_id]
            if driver.halted is not None:
                if "hung" in driver.halted.data:
                    self._resume_when_returned(driver.run_id, driver.halted)
                # Only now: the run is released and no longer this process's, so a
                # slow hook delays nothing and an operator may already act on it.
                await self._on_halted(driver, driver.halted)
            if not (driver.released and driver.mail_waiting and driver.handed_back is None):
                return driver
            # Mail arrived as the run was let go (a cancel, a signal): take it
            # back and act on it, unless another process was quicker.
            taken = await self.claim(driver.run_id)
            if taken is None:
                return driver
            driver = await self.claimed(taken, park_after=driver.park_after)

    def carry_on(self, taken: RunRecord, *, leased_at: float | None = None) -> bool:
        """Whether a drive here takes over ``taken``, a run it drives, just claimed again.

        That claim took the run because its lease lapsed; the drive in flight
        adopts the new lease (`Driver.adopt`). ``leased_at``: when
        (`time.monotonic`) that claim was sent, if known.
        """
        driver = self._drivers.get(taken.id)
        if driver is None or not driver.adopt(taken):
            return False
        if leased_at is not None:
            driver.renewed(leased_at)
        failing = self.heartbeat.failing
        if failing is not None:
            driver.log.warning(
                "run %s: its lease lapsed while the store could not be reached to renew "
                "it (%s); claimed it again and carried on with the drive in flight",
                taken.id,
                failing,
            )
        else:
            driver.log.warning(
                "run %s: its lease lapsed before it was renewed (is this process "
                "overloaded?); claimed it again and carried on with the drive in flight",
                taken.id,
            )
        return True

    # -- runs halted on a hung call -----------------------------------------------------

    def _resume_when_returned(self, run_id: str, halted: Event) -> None:
        """Resume ``run_id``, halted by ``halted`` on a hung call, once that call returns.

        Only this process knows when its thread (or coroutine) ends, so it
        is the one to take the run up again, as an operator's retry would.
        """
        assert halted.step is not None  # a halt on a hung call names its step
        held = self.lingering.get(run_id, halted.step)
        # Only the latest halt is resumed: an operator's retry in this process
        # while the call still ran halted the run again, on the same call.
        self._hung_halts[run_id] = halted

        def returned(_: object = None) -> None:
            latest = self._hung_halts.pop(run_id, None)
            if latest is None:
                return  # resumed already
            task = asyncio.ensure_future(self._resume(run_id, latest))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

        if held is None:  # it returned just as the run halted
            returned()
        else:
            held.future.add_done_callback(returned)

    async def _resume(self, run_id: str, halted: Event) -> None:
        """Journal ``retried`` on a run halted on a call that has now returned, and drive it."""
        try:
            taken = await self.claim(run_id)
            if taken is None:
                return  # another process holds it: an operator acted there
            events = await self.store.journal(run_id)
            halts = [e.seq for e in events if e.kind is EventKind.NEEDS_ATTENTION]
            last_halt = halts[-1] if halts else 0
            if taken.status is not RunStatus.NEEDS_ATTENTION or last_halt != halted.seq:
                # An operator acted first (retry, resolve, cancel): leave it be.
                await self.store.release(run_id, Lease(self.owner, taken.lease_epoch))
                return
            try:
                driver = await self.claimed(taken, events=events)
            except SagaError:
                await self.store.release(run_id, Lease(self.owner, taken.lease_epoch))
                raise
            hung = halted.data["hung"]
            driver.append(
                EventKind.RETRIED,
                step=halted.step,
                data={
                    "phase": halted.data.get("phase"),
                    "note": f"the timed-out {hung.get('phase')} of step {halted.step!r} "
                    f"(attempt {hung.get('attempt')}) returned",
                    "by": "sagakit",
                },
            )
            driver.log.warning(
                "run %s: the timed-out call of step %r returned; resuming the run",
                run_id,
                halted.step,
                extra=runlog.at(halted.step),
            )
            await self.drive(driver)
        except SagaError as exc:  # an operator's retry still resumes it
            logger.warning(
                "run %s: could not resume it after its hung call returned: %s",
                run_id,
                exc,
                extra=runlog.extra(run_id, step=halted.step),
            )

    def _register(self, driver: Driver) -> None:
        """Know a run's drive here: its lease is renewed, its mail pokes it."""
        self._drivers[driver.run_id] = driver

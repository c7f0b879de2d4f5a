"""`Worker`: drives the runs that `AsyncEngine.start` leaves in the store.

A worker claims due runs of the sagas its engine knows (new runs, runs whose
retry timer is due, runs whose owner died or handed them back), drives each
in its own task, and asks for more as runs settle. Any number of workers, in
any number of processes, may share a store: a run is claimed by one at a
time, and its lease fences out the others.

A run waiting on a long retry timer is *parked* (released with its timer
kept in the store) rather than held, so a worker's slots go to work that can
be done now. On `Worker.stop` a worker starts no new call, lets the calls in
flight finish and be recorded, and hands its runs back for another worker to
continue at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sagakit import runlog
from sagakit.driver import Driver
from sagakit.engine.async_engine import AsyncEngine
from sagakit.engine.identity import Takeover
from sagakit.errors import EncryptionError, SagaError, StoreError
from sagakit.journal import Event, RunStatus
from sagakit.runlog import RunFields
from sagakit.store import ACTIVE_STATUSES, Lease, RunRecord

__all__ = ["Worker", "WorkerStats"]

logger = logging.getLogger("sagakit")

# Waits after a failed claim: short enough to notice a database that is back,
# capped so that a long outage costs one log line every few seconds.
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 5.0

# How often (seconds) a worker looks for processes of its host that died
# holding runs, to take them back before their leases lapse. One small query
# (the owners named by leases) each time.
_LOOK_FOR_GONE = 5.0


@dataclass(slots=True)
class WorkerStats:
    """What a worker has done so far (for logs, metrics and benchmarks).

    Attributes:
        claimed: Runs claimed (a run parked and taken again counts twice).
        finished: Drives that left the run settled: completed, rolled back,
            failed, or needing attention.
        parked: Drives that released the run to wait on a retry timer.
        handed_back: Runs given back unsettled because the worker stopped.
        errors: Drives that ended in an error (a store failure, a lost
            lease, a journal that does not fit its saga); the run is taken
            again later, by this worker or another.
        alerted: Runs claimed to deliver the alert they owe (sent or failed).
        taken_back: Runs taken at once from an earlier owner known to be
            gone (an earlier process under the engine's worker id, or a dead
            process of this host), without waiting for their leases to lapse.
            They count in ``claimed`` too.
    """

    claimed: int = 0
    finished: int = 0
    parked: int = 0
    handed_back: int = 0
    errors: int = 0
    alerted: int = 0
    taken_back: int = 0


@dataclass(slots=True)
class _Held:
    """A run in a worker's hand.

    Its lease, its journal as claimed (until the driver is built from it), and
    its driver once built.
    """

    lease: Lease
    journal: list[Event] | None = None
    driver: Driver | None = None
    leased_at: float | None = None
    """When (`time.monotonic`) the claim that took the run was sent."""


class Worker:
    """Claims due runs from the engine's store and drives them, until stopped.

    Args:
        engine: The engine whose store, registered sagas, owner name, lease
            length and ``on_attention`` hook the worker uses. Only runs of its
            registered sagas (name and version) are claimed.
        concurrency: At most this many runs driven at once.
        poll_interval: With nothing to claim, look again after this many
            seconds (sooner if the store announces new work).
        park_after: Release a run whose next retry is more than this many
            seconds away, instead of holding it; None holds it however long.
        unfit_retry: A run whose journal does not fit its registered saga is
            given back and not claimed again for this many seconds.
        report_interval: How often (seconds) to look for runs of a served
            saga whose version no worker here has loaded. Each is logged once
            as a warning and left untouched: a run only runs on its own
            version's code.

    Example:
        >>> async with AsyncEngine("sqlite:///orders.db") as engine:  # doctest: +SKIP
        ...     engine.register(order_saga)
        ...     await Worker(engine, concurrency=20).run()  # until worker.stop()
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        concurrency: int = 10,
        poll_interval: float = 1.0,
        park_after: float | None = 2.0,
        unfit_retry: float = 60.0,
        report_interval: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise SagaError(f"concurrency must be at least 1, got {concurrency}")
        if poll_interval <= 0:
            raise SagaError(f"poll_interval must be positive, got {poll_interval}")
        if park_after is not None and park_after < 0:
            raise SagaError(f"park_after must not be negative, got {park_after}")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.park_after = park_after
        self.unfit_retry = unfit_retry
        self.report_interval = report_interval
        self._next_report = 0.0
        self._reported: set[str] = set()
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._grace: float | None = 30.0
        self._grace_changed = asyncio.Event()
        self._freed = asyncio.Event()  # a drive ended: a slot is free
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[str, _Held] = {}  # the runs in hand, by id
        self._listening: asyncio.Task[None] | None = None
        # Why the worker stopped by itself: a run it has no key for.
        self._refused: EncryptionError | None = None
        # Earlier owners whose runs are taken back at once, and why; kept until
        # a claim from them comes back short (they hold no more).
        self._earlier: dict[str, Takeover] = {}
        self._next_look: float | None = None  # None: the first look, at start
        # Earlier owners under this worker id found at start, until when their
        # runs (those waiting on a timer) are still taken back as they fall due.
        self._promised: dict[str, float] = {}
        self._told: set[str] = set()  # owners already logged (taken back, or live under our id)

    @property
    def in_flight(self) -> int:
        """How many runs the worker holds now."""
        return len(self._tasks)

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called."""
        return self._stop.is_set()

    def stop(self, grace: float | None = 30.0) -> None:
        """Ask the worker to stop; `run` returns once it has.

        No more runs are claimed and no new call starts. The calls in flight
        may finish for up to ``grace`` seconds (None: however long they
        take); their outcomes are recorded and their runs handed back, so
        another worker continues them at once. Calls still running after
        ``grace`` are abandoned and their runs released; each is run again,
        with the same idempotency key, by the next worker.

        Safe to call from a signal handler installed with
        ``loop.add_signal_handler``, from another thread, or before `run`.
        Calling again only shortens the grace: ``stop(0)`` stops at once.
        """
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is not loop:
                loop.call_soon_threadsafe(self._request_stop, grace)
                return
        self._request_stop(grace)

    def _request_stop(self, grace: float | None) -> None:
        # The first request sets the grace; later ones may only shorten it.
        shorter = grace is not None and (self._grace is None or grace < self._grace)
        if shorter or not self._stop.is_set():
            self._grace = grace
        self._stop.set()
        self._grace_changed.set()
        for held in self._held.values():
            if held.driver is not None:
                held.driver.request_stop()

    async def run(self) -> None:
        """Claim and drive runs until `stop` is called, then hand back what is left.

        Store failures while claiming are logged and retried with backoff;
        they never end the worker. A worker runs once: after `stop`, `run`
        returns at once; make a new one to start again.

        Raises:
            SagaError: the worker is already running.
            StoreError: the store cannot be opened.
            EncryptionError: it met a run whose data is encrypted and its
                engine has no key: it handed that run back as it was and
                stopped (the other runs in hand as on `stop`).
        """
        if self._running:
            raise SagaError("this worker is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        # A worker delivers every alert it finds due: with no hook, to its log.
        # It claims a failed alert again when its next try is due, like a timer.
        alerts = self.engine.alerts
        shared = (alerts.to_log, alerts.retry_here)
        alerts.to_log, alerts.retry_here = True, False
        try:
            await self.engine.open()
            served = ", ".join(f"{s.name} v{s.version}" for s in self.engine.sagas)
            if not served:
                served = "none"
                logger.warning("the worker's engine has no saga registered: it claims nothing")
            logger.info(
                "worker %s started: sagas %s; up to %d runs at once",
                self.engine.owner,
                served,
                self.concurrency,
            )
            await self._work()
        except asyncio.CancelledError:
            self._request_stop(0)  # cancelled: hand everything back without waiting
            raise
        finally:
            handed_back = await self._shutdown()
            self._running = False
            alerts.to_log, alerts.retry_here = shared
            logger.info(
                "worker %s stopped: %d runs claimed, %d finished, %d parked, %d handed back",
                self.engine.owner,
                self.stats.claimed,
                self.stats.finished,
                self.stats.parked,
                handed_back,
            )
        if self._refused is not None:
            raise self._refused

    # -- claiming ---------------------------------------------------------------------

    async def _work(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stop.is_set():
            self._freed.clear()
            await self._report_unserved()
            free = self.concurrency - len(self._tasks)
            claimed: list[RunRecord] = []
            leased_at = time.monotonic()  # the claims' leases start no earlier
            if free > 0:
                try:
                    claimed = await self._take_back(free)
                    if len(claimed) < free:
                        claimed += await self._claim(free - len(claimed))
                except StoreError as exc:
                    logger.warning("could not claim runs: %s; trying again in %.1fs", exc, backoff)
                    await self._first(self._stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                backoff = _FIRST_BACKOFF
            # Before anything is awaited: a renewal or commit of the drive in
            # flight answered meanwhile would find its lease gone and end it.
            claimed = [record for record in claimed if not self._carried_on(record, leased_at)]
            journals = await self._journals(claimed)
            for record in claimed:
                # An empty journal is read again by the drive (and then said to be wrong).
                # Popped, so the read's result holds no journal while the drives run.
                self._hold(record, journals.pop(record.id, None) or None, leased_at)
            if len(claimed) == free > 0:
                continue  # there may be more: ask again (with no slot free, this waits)
            full = len(self._tasks) >= self.concurrency
            listening = self._listen()
            await self._first(
                asyncio.wait({listening}),
                self._stop.wait(),
                *([self._freed.wait()] if full else []),
                # Real time: polling is infrastructure, not a run's timer. (Under a
                # skipping clock a worker sees runs parked on timers once the
                # clock is moved past them, at its next poll.)
                timeout=self.poll_interval,  # in case the store overstays its timeout
            )
            if listening.done():
                self._listening = None
                error = listening.exception()
                if isinstance(error, StoreError):  # a store that listens lost its connection
                    logger.warning(
                        "could not wait for work: %s; trying again in %.1fs", error, backoff
                    )
                    await self._first(self._stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                elif error is not None:
                    raise error

    async def _report_unserved(self) -> list[RunRecord]:
        """Log, once each, the waiting runs of served sagas whose version is not loaded.

        Such a run is never claimed (claims name each served version), so
        without this it would wait in silence for a worker that has its code.
        """
        engine = self.engine
        now = engine.clock()
        if now < self._next_report:
            return []
        self._next_report = now + self.report_interval
        served = {(s.name, s.version) for s in engine.sagas}
        found: list[RunRecord] = []
        try:
            for name in sorted({n for n, _ in served}):
                for status in ACTIVE_STATUSES:
                    for record in await engine.store.list_runs(status=status, saga=name):
                        waiting = record.owner is None or (record.lease_until or 0) < now
                        if waiting and (record.saga, record.version) not in served:
                            found.append(record)
        except StoreError as exc:  # claiming reports store trouble; this can wait
            logger.debug("could not look for runs of versions not loaded: %s", exc)
            return []
        for record in found:
            if record.id not in self._reported:
                self._reported.add(record.id)
                logger.warning(
                    "run %s of saga %s is on version %s, which this worker does not have "
                    "(it has %s); left untouched until a worker with that version serves it",
                    record.id,
                    record.saga,
                    record.version,
                    ", ".join(engine.versions(record.saga)),
                    extra=runlog.extra(record.id, record.saga, record.version),
                )
        return found

    def _listen(self) -> asyncio.Task[None]:
        """The pending `Store.wait_for_work`, started if there is none.

        It is left to end by its own timeout rather than cancelled when
        something else wakes the worker first: a store call cut short in the
        middle (a connection being opened, a query on the wire) could leave
        its connection in a state nobody cleans up.
        """
        if self._listening is None:
            self._listening = asyncio.ensure_future(
                self.engine.store.wait_for_work(self.poll_interval)
            )
        return self._listening

    async def _take_back(self, limit: int) -> list[RunRecord]:
        """Claim up to ``limit`` runs of earlier owners known to be gone, leases live or not.

        At start, the leases' owners are searched for earlier processes under
        this engine's worker id (on any host: the operator promises the id is
        unique) and for processes of this host that are provably gone; later,
        every few seconds, for the latter, and for the runs of the former
        whose timers fall due within a lease of the start. Each claim bumps
        the run's lease epoch: an earlier owner somehow alive is fenced out.
        """
        engine = self.engine
        sagas = [(s.name, s.version) for s in engine.sagas]
        if not sagas:
            return []
        started = self._next_look is None
        # Later looks find dead processes of this host (pointless where none can
        # be proven), and runs of the earlier processes under this worker id
        # whose retry timer has come due since.
        looking = engine.identity.proves_gone or bool(self._promised)
        later = looking and time.monotonic() >= (self._next_look or 0.0)
        if started or later:
            owners = await engine.store.owners()
            self._next_look = time.monotonic() + _LOOK_FOR_GONE
            self._find_earlier(owners, at_start=started)
        if not self._earlier:
            return []
        now = engine.clock()
        taken = await engine.store.claim_held(
            list(self._earlier),
            owner=engine.owner,
            now=now,
            lease_until=now + engine.lease_seconds,
            limit=limit,
            sagas=sagas,
        )
        if len(taken) < limit:
            self._earlier.clear()  # they hold nothing more of ours to take
        if taken:
            self.stats.taken_back += len(taken)
            logger.info(
                "worker %s took back %d runs at once from earlier owners", engine.owner, len(taken)
            )
        return taken

    def _find_earlier(self, owners: set[str], *, at_start: bool) -> None:
        """Note which of the leases' ``owners`` this worker may take runs back from."""
        identity = self.engine.identity
        now = time.monotonic()
        for lapsed in [o for o, until in self._promised.items() if until <= now]:
            del self._promised[lapsed]
        for owner in sorted(owners - set(self._earlier)):
            reason = identity.takeover(owner)
            if reason is Takeover.SAME_WORKER_ID:
                # On the id's promise alone: the owners found at start, for one
                # lease (their runs on a retry timer are taken once due; after
                # that any worker takes them), so that two live processes wrongly
                # sharing an id do not go on taking each other's runs.
                if at_start:
                    self._promised[owner] = now + self.engine.lease_seconds
                elif owner not in self._promised:
                    continue
            if reason is not None:
                self._earlier[owner] = reason
                if owner not in self._told:  # an owner may hold runs not yet due
                    self._told.add(owner)
                    logger.info("runs held by %s (%s) are taken back at once", owner, reason.value)
            elif (
                identity.worker_id is not None
                and owner.startswith(f"{identity.worker_id}/")
                and owner != self.engine.owner
                and owner not in self._told
                and identity.alive_here(owner)
            ):
                self._told.add(owner)
                logger.warning(
                    "worker id %s is also used by %s, a live process of this host: "
                    "its runs are left to it; worker ids must be unique",
                    identity.worker_id,
                    owner,
                )

    async def _claim(self, limit: int) -> list[RunRecord]:
        engine = self.engine
        sagas = [(s.name, s.version) for s in engine.sagas]
        if not sagas:
            return []  # claim_due(sagas=None) would claim runs of every saga
        now = engine.clock()
        claimed = await engine.store.claim_due(
            owner=engine.owner,
            now=now,
            lease_until=now + engine.lease_seconds,
            limit=limit,
            sagas=sagas,
        )
        observers = engine.observers
        if observers is not None:
            for record in claimed:
                # A run never driven (its journal holds its start alone) was due
                # from its creation. Other claims are not told: the claim cleared
                # the timer that said since when they were due.
                if record.last_seq == 1 and record.status is RunStatus.PENDING:
                    observers.run_claimed(
                        run_id=record.id,
                        saga=record.saga,
                        version=record.version,
                        due_at=record.created_at,
                        at=now,
                    )
        return claimed

    async def _journals(self, claimed: list[RunRecord]) -> dict[str, list[Event]]:
        """The journals of the runs just claimed, in one read of the store."""
        if len(claimed) < 2:
            return {}
        try:
            return await self.engine.store.journals([record.id for record in claimed])
        except StoreError as exc:  # each drive reads its own journal, and says why it cannot
            logger.debug("could not read the journals of the runs claimed: %s", exc)
            return {}

    def _hold(
        self, record: RunRecord, events: list[Event] | None = None, leased_at: float | None = None
    ) -> None:
        self.stats.claimed += 1
        lease = Lease(self.engine.owner, record.lease_epoch)
        self._held[record.id] = _Held(lease, events, leased_at=leased_at)
        task = asyncio.ensure_future(self._drive(record))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _carried_on(self, record: RunRecord, leased_at: float) -> bool:
        """Whether a drive in hand of a run just claimed goes on with its new lease.

        Otherwise a second drive would start beside it.

        A worker whose renewals fall behind its lease (thousands of runs on a
        busy machine) sees its own runs become due and claims them again. A
        second drive would fence the first out and run the step in flight
        once more.
        """
        held = self._held.get(record.id)
        if held is None:
            return False
        if held.driver is None:  # not built yet: it is built with the newer lease
            if record.lease_epoch != held.lease.epoch + 1:
                return False
        elif not self.engine.drives.carry_on(record, leased_at=leased_at):
            return False
        held.lease = Lease(self.engine.owner, record.lease_epoch)
        return True

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed.set()
        if not task.cancelled() and task.exception() is not None:
            # _drive handles what it expects; anything else is a bug worth a traceback.
            logger.error("a drive of the worker failed", exc_info=task.exception())

    # -- driving ----------------------------------------------------------------------

    async def _drive(self, record: RunRecord) -> None:
        held = self._held[record.id]
        # The task's own context: whatever is logged for this run carries its fields.
        runlog.bind(RunFields(record.id, record.saga, record.version))
        try:
            await self._drive_held(record, held)
        finally:
            # Only this drive's entry: the run, released by it, may be claimed
            # again (a short timer parked) before this task has quite ended.
            if self._held.get(record.id) is held:
                del self._held[record.id]

    async def _drive_held(self, record: RunRecord, held: _Held) -> None:
        drives = self.engine.drives
        # Not kept for the whole drive: the driver holds what it derived from it.
        events, held.journal = held.journal, None
        try:
            driver = await drives.claimed(
                record, park_after=self.park_after, events=events, leased_at=held.leased_at
            )
            del events
            # Claimed again while the journal was read (see _carried_on).
            driver.lease = held.lease
        except EncryptionError as exc:
            await self._refuse(record.id, held.lease, exc)
            return
        except StoreError as exc:
            self._store_failed(record.id, exc)
            return
        except SagaError as exc:  # JournalMismatch, or a saga unregistered since
            await self._unfit(record, held.lease, exc)
            return
        if self._stop.is_set():  # stopped while the journal was read: hand it back as is
            await self._release(record.id, held.lease)
            return
        held.driver = driver
        if driver.progress.alert_due is not None and not record.mail:
            # Claimed for the alert it owes (its timer): nothing to drive.
            try:
                await self.engine.alerts.deliver(driver)
            except StoreError as exc:
                self._store_failed(record.id, exc)
                return
            self.stats.alerted += 1
            return
        try:
            await drives.drive(driver)
        except EncryptionError as exc:  # encrypted mail, read without a key
            await self._refuse(record.id, held.lease, exc)
            return
        except StoreError as exc:
            self._store_failed(record.id, exc)
            return
        if driver.lost:
            self.stats.errors += 1
        elif driver.handed_back == "timer":
            self.stats.parked += 1
        elif driver.handed_back == "stop":
            self.stats.handed_back += 1
        elif driver.progress.status not in ACTIVE_STATUSES:
            self.stats.finished += 1

    async def _refuse(self, run_id: str, lease: Lease, exc: EncryptionError) -> None:
        """Hand back a run this worker has no key for, as it was, and stop.

        Each run of an encrypted store would be refused the same way, so the
        worker does not go on claiming them: it stops, and `run` raises why.
        """
        self.stats.errors += 1
        if self._refused is None:
            self._refused = exc
        try:
            await self.engine.store.release(run_id, lease)
        except SagaError as failed:
            logger.warning(
                "run %s: could not hand it back: %s", run_id, failed, extra=runlog.extra(run_id)
            )
        self._request_stop(self._grace)

    def _store_failed(self, run_id: str, exc: StoreError) -> None:
        # The store failed past the driver's patience. The lease is not
        # renewed any more, so it lapses and the run is claimed again once the
        # store answers, and resumed from its journal.
        self.stats.errors += 1
        logger.error("run %s: left for later: %s", run_id, exc, extra=runlog.extra(run_id))

    async def _unfit(self, record: RunRecord, lease: Lease, exc: SagaError) -> None:
        """Give back a run that cannot be driven here, held for ``unfit_retry`` seconds.

        Without the hold it would be due again at once (it is active, or has
        mail waiting), and this worker (or any other running the same code)
        would claim it in a hot loop. An operator may still act on it.
        """
        self.stats.errors += 1
        now = self.engine.clock()
        logger.error(
            "run %s cannot be driven here: %s; it is left as it is and looked at again in %gs",
            record.id,
            exc,
            self.unfit_retry,
            extra=runlog.extra(record.id, record.saga, record.version),
        )
        try:
            await self.engine.store.release(record.id, lease, hold_until=now + self.unfit_retry)
        except SagaError as failed:
            logger.warning(
                "run %s: could not hand it back: %s",
                record.id,
                failed,
                extra=runlog.extra(record.id, record.saga, record.version),
            )

    # -- stopping ---------------------------------------------------------------------

    async def _shutdown(self) -> int:
        """Wait out the grace for the drives in flight, then release what is left.

        Returns:
            How many runs were handed back in all.
        """
        self._request_stop(self._grace)  # also when run() ends by an error
        started = time.monotonic()
        while self._tasks:
            grace = self._grace
            left = None if grace is None else started + grace - time.monotonic()
            if left is not None and left <= 0:
                break
            self._grace_changed.clear()
            await self._first(
                asyncio.wait(set(self._tasks), return_when=asyncio.ALL_COMPLETED),
                self._grace_changed.wait(),
                timeout=left,
            )
        # Which runs are still ours, noted before the cancelled drives forget them.
        cut = dict(self._held)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for run_id, held in cut.items():
            driver = held.driver
            if driver is None or not (driver.released or driver.lost):
                await self._release(run_id, held.lease)
        await self._stop_listening()
        return self.stats.handed_back

    async def _stop_listening(self) -> None:
        """Let the pending wait for work end (by its timeout) before the store may close."""
        listening, self._listening = self._listening, None
        if listening is None:
            return
        # The store's own timeout ends it; cancelling is the last resort for a
        # store that overstays it.
        await asyncio.wait({listening}, timeout=self.poll_interval + 5.0)
        if not listening.done():
            listening.cancel()
            await asyncio.wait({listening})
        if not listening.cancelled() and listening.exception() is not None:
            logger.debug("the last wait for work failed: %s", listening.exception())

    async def _release(self, run_id: str, lease: Lease) -> None:
        """Hand an unsettled run back as it stands, so another worker takes it at once."""
        try:
            await self.engine.store.release(run_id, lease)
        except SagaError as exc:
            # Best effort: otherwise the run waits for its lease to lapse.
            logger.warning(
                "run %s: could not release it (%s); it is taken up once its lease lapses",
                run_id,
                exc,
                extra=runlog.extra(run_id),
            )
            return
        self.stats.handed_back += 1

    @staticmethod
    async def _first(*waits: Any, timeout: float | None) -> None:
        """Wait until one of ``waits`` (coroutines) finishes, or ``timeout``; cancel the rest.

        Raises:
            Exception: what the first one to finish raised.
        """
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in tasks:
                task.cancel()
        # Retrieve every error, so that none is reported as never retrieved.
        errors = [t.exception() for t in done if not t.cancelled() and t.exception()]
        if errors:
            raise errors[0]

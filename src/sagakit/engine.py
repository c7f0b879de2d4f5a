"""`AsyncEngine`: start, drive, inspect and repair runs.

The async engine does the work; the sync `Engine` (`sagakit.sync_engine`)
runs the same coroutines on a private event loop thread, so both behave
identically and the logic is written once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sagakit import core
from sagakit.definition import Saga, version_key
from sagakit.driver import Driver, RunExists
from sagakit.errors import (
    InvalidRunState,
    JournalMismatch,
    LeaseLost,
    RunBusy,
    RunIdConflict,
    RunNotFound,
    RunTimeout,
    SagaError,
    SagaNotRegistered,
    StateError,
)
from sagakit.journal import JSON, ErrorInfo, Event, EventKind, Phase, RunStatus
from sagakit.jsonutil import to_jsonable
from sagakit.run import AttentionReport, Run
from sagakit.store import ACTIVE_STATUSES, Lease, RunRecord, Store, open_store

T = TypeVar("T")
Deadline = datetime | timedelta | None
AttentionHook = Callable[[AttentionReport], Awaitable[None] | None]

logger = logging.getLogger("sagakit")

DEFAULT_URL = "sqlite:///sagakit.db"
_PAGE = 500


class AsyncEngine:
    """Runs sagas durably on a store, as coroutines.

    Args:
        url: Where runs are kept: ``sqlite:///file.db`` (the default,
            ``sagakit.db`` in the working directory) or ``memory://``.
        store: A store object to use instead of ``url``.
        lease_seconds: How long a run stays owned by this process without a
            heartbeat; after a crash, other processes wait this long before
            resuming its runs.
        on_attention: Called (sync or async) with an `AttentionReport` when a
            run needs a person. Its errors are logged, never raised.
        owner: This process's name in leases (default: host, pid, random).
        clock: Seconds since the epoch; inject a fake one in tests.
        max_threads: Threads for synchronous step functions.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        store: Store | None = None,
        lease_seconds: float = 30.0,
        on_attention: AttentionHook | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        max_threads: int = 32,
    ) -> None:
        if lease_seconds <= 0:
            raise SagaError(f"lease_seconds must be positive, got {lease_seconds}")
        self.store = store if store is not None else open_store(url)
        self.lease_seconds = lease_seconds
        self.on_attention = on_attention
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self._random = random.Random()
        self._sagas: dict[tuple[str, str], Saga[Any]] = {}
        self._drivers: dict[str, Driver] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._max_threads = max_threads
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Open the store (done on first use; call it to fail early)."""
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.store.open()
                self._opened = True

    async def close(self) -> None:
        """Stop the heartbeat and close the store. Runs in flight keep their
        leases until they lapse, then any engine's `recover` resumes them."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._opened:
            await self.store.close()
            self._opened = False
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> AsyncEngine:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- definitions ----------------------------------------------------------

    def register(self, *sagas: Saga[Any]) -> Awaitable[None]:
        """Make sagas known to this engine, so it can drive their runs.

        Takes effect at once; the result may be awaited or ignored, so that
        ``engine.register(saga)`` and ``await engine.register(saga)`` both work.

        Raises:
            DefinitionError: a saga's definition breaks a rule.
        """
        for saga in sagas:
            saga.plan()  # validates
            self._sagas[(saga.name, saga.version)] = saga
        return _DONE

    @property
    def sagas(self) -> tuple[Saga[Any], ...]:
        """The sagas this engine knows (every version of each)."""
        return tuple(self._sagas.values())

    def versions(self, name: str) -> list[str]:
        """The versions of saga ``name`` registered here, oldest first."""
        return sorted((v for n, v in self._sagas if n == name), key=version_key)

    def saga(self, name: str, version: str | None = None) -> Saga[Any]:
        """A registered saga by name: the given version, or the newest.

        Versions compare part by part, numbers as numbers (``1.10`` is newer
        than ``1.9``).

        Raises:
            SagaError: no saga of that name (or that version) is registered.
        """
        versions = self.versions(name)
        if not versions:
            known = ", ".join(sorted({n for n, _ in self._sagas})) or "none"
            raise SagaError(f"no saga named {name!r} is registered (registered: {known})")
        if version is None:
            version = versions[-1]
        saga = self._sagas.get((name, str(version)))
        if saga is None:
            raise SagaError(
                f"saga {name!r} has no version {version!r} registered "
                f"(registered: {', '.join(versions)})"
            )
        return saga

    def saga_for(self, record: RunRecord) -> Saga[Any]:
        """The registered saga a run belongs to: its own name and version, never another.

        Raises:
            SagaNotRegistered: that name and version are not registered.
        """
        saga = self._sagas.get((record.saga, record.version))
        if saga is None:
            raise SagaNotRegistered(
                record.id, record.saga, record.version, loaded=self.versions(record.saga)
            )
        return saga

    # -- starting and driving ---------------------------------------------------------

    async def run(
        self,
        saga: Saga[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        deadline: Deadline = None,
    ) -> Run:
        """Start a run and drive it here until it settles.

        Starting is idempotent: if ``run_id`` exists, that run is returned as
        it stands and nothing is executed.

        Args:
            saga: The saga to run (registered on the way), or the name of a
                registered saga, which runs its newest version.
            input: The initial state: a dict or an instance of the state model.
            run_id: The run's id; a random one by default.
            deadline: When the run must have finished going forward: a
                ``datetime``, or a ``timedelta`` from now (default: the
                saga's ``deadline``, if any). Before the pivot a missed
                deadline compensates; after it, the run needs attention.

        Raises:
            StateError: the input does not fit the state model or is not JSON.
            RunIdConflict: ``run_id`` belongs to a run of another saga.
        """
        record, first, chosen = self._new_run(saga, input, run_id, deadline, owned=True)
        await self.open()
        driver = self._driver(chosen, record, core.replay(chosen.plan(), [first]))
        driver.create_with(first)  # stored with its first step's write-ahead record
        try:
            last = await self._drive(driver)
        except RunExists as exists:
            return self._to_run(self._existing(exists.record, chosen))
        settled = last.settled_record()
        # Read the row back only when this drive did not leave it settled and
        # known (it handed the run on, lost it, or mail came in meanwhile).
        return self._to_run(settled) if settled is not None else await self.get(record.id)

    async def start(
        self,
        saga: Saga[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        deadline: Deadline = None,
    ) -> Run:
        """Record a new run and return at once; a worker drives it.

        The run is stored ``pending`` and owned by nobody, so any `Worker`
        (``sagakit worker``) serving its saga, or `recover`, takes it up. Use
        `wait` to block until it settles. Starting is idempotent: if
        ``run_id`` exists, that run is returned as it stands.

        Args:
            saga: The saga to run (registered on the way), or the name of a
                registered saga, which runs its newest version.
            input: The initial state: a dict or an instance of the state model.
            run_id: The run's id; a random one by default.
            deadline: As for `run`.

        Raises:
            StateError: the input does not fit the state model or is not JSON.
            RunIdConflict: ``run_id`` belongs to a run of another saga.
        """
        record, first, chosen = self._new_run(saga, input, run_id, deadline, owned=False)
        await self.open()
        stored, created = await self.store.create_run(record, [first])
        return self._to_run(stored if created else self._existing(stored, chosen))

    def _new_run(
        self,
        chosen: Saga[Any] | str,
        input: Any,
        run_id: str | None,
        deadline: Deadline,
        *,
        owned: bool,
    ) -> tuple[RunRecord, Event, Saga[Any]]:
        """A new run's row and ``run_started`` event, owned here or by nobody,
        not yet stored; and the saga it is for (a name resolved to its newest
        version).

        Raises:
            StateError: the input does not fit the state model or is not JSON.
        """
        if isinstance(chosen, str):
            saga = self.saga(chosen)
        else:
            saga = chosen
            self.register(saga)
        state = saga.dump_state(input if input is not None else {})
        now = self.clock()
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        record = RunRecord(
            id=run_id,
            saga=saga.name,
            version=saga.version,
            status=RunStatus.PENDING,
            state=state,
            error=None,
            created_at=now,
            updated_at=now,
            owner=self.owner if owned else None,
            lease_epoch=1 if owned else 0,
            lease_until=now + self.lease_seconds if owned else None,
            last_seq=1,
        )
        data: JSON = {"state": state}
        due = _deadline(deadline, saga, now)
        if due is not None:
            data["deadline"] = due
        return record, Event(run_id, 1, EventKind.RUN_STARTED, now, data=data), saga

    @staticmethod
    def _existing(stored: RunRecord, saga: Saga[Any]) -> RunRecord:
        """The stored run that holds a new run's id, if it is a run of the same saga.

        Raises:
            RunIdConflict: it is a run of another saga.
        """
        if stored.saga != saga.name:
            raise RunIdConflict(stored.id, stored.saga, saga.name)
        return stored

    async def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 0.5) -> Run:
        """Wait until a run settles, and return it.

        A run has settled once its status is no longer pending, running or
        compensating: it completed, rolled back, failed, needs attention (or
        was cancelled or paused), and no cancel or signal posted to it waits
        to be read (a completed run being cancelled has not settled). The
        store is read again at intervals that
        start at 10 ms and double up to ``poll`` seconds, so a quick run is
        seen quickly and a long one costs few reads.

        Args:
            run_id: The run.
            timeout: Give up after this many seconds (None: wait as long as it takes).
            poll: The longest interval between two reads, in seconds.

        Raises:
            RunNotFound: no such run (raised at once).
            RunTimeout: the run had not settled after ``timeout`` seconds.
        """
        if poll <= 0:
            raise SagaError(f"poll must be positive, got {poll}")
        # Real time, not self.clock: a test's fake clock must not stretch the wait.
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(0.01, poll)
        while True:
            record = await self._record(run_id)
            # The row's mail count is read with its status, in one read: a
            # cancel or signal not yet read keeps the run unsettled.
            resting = record.status not in ACTIVE_STATUSES and not record.mail
            if resting and await self._quiet(record):
                return self._to_run(record)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    assert timeout is not None
                    raise RunTimeout(run_id, timeout, record.status)
                await asyncio.sleep(min(pause, left))
            else:
                await asyncio.sleep(pause)
            pause = min(pause * 2, poll)

    async def _quiet(self, record: RunRecord) -> bool:
        """Whether a run in a resting status stays there: its last event is no
        cancel, which the next commit answers (by starting the undo or refusing)."""
        events = await self.store.journal(record.id, after_seq=record.last_seq - 1)
        last = next((e for e in events if e.seq == record.last_seq), None)
        return last is None or last.kind is not EventKind.CANCEL_REQUESTED

    def _driver(
        self,
        saga: Saga[Any],
        record: RunRecord,
        progress: core.Progress,
        *,
        park_after: float | None = None,
    ) -> Driver:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="sagakit-step"
            )
        return Driver(
            saga=saga,
            store=self.store,
            record=record,
            lease=Lease(self.owner, record.lease_epoch),
            progress=progress,
            clock=self.clock,
            random=self._random.random,
            executor=self._executor,
            commit_patience=self.lease_seconds / 2,
            park_after=park_after,
        )

    async def _drive(self, driver: Driver) -> Driver:
        """Drive a claimed run, or a new one; return the driver of its last drive here.

        A run is claimed before it is driven, and a live lease cannot be
        claimed twice, so one process never holds two drivers of one run.
        """
        while True:
            if driver.unborn:
                # Known here once stored: until then another drive of the same
                # id (which this one will then not create) keeps its place.
                driver.on_stored = self._register
            else:
                self._register(driver)
            self._start_heartbeat()
            try:
                await driver.drive()
            except LeaseLost:
                pass  # logged by the driver; the new owner carries on
            finally:
                if self._drivers.get(driver.run_id) is driver:
                    del self._drivers[driver.run_id]
            if driver.halted is not None:
                # Only now: the run is released and no longer this engine's, so a
                # slow hook delays nothing and an operator may already act on it.
                await self._alert(driver, driver.halted)
            if not (driver.released and driver.mail_waiting and driver.handed_back is None):
                return driver
            # Mail arrived as the run was let go (a cancel, a signal): take it
            # back and act on it, unless another process was quicker.
            now = self.clock()
            taken = await self.store.claim(
                driver.run_id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
            )
            if taken is None:
                return driver
            driver = await self._claimed(taken, park_after=driver.park_after)

    async def _claimed(
        self,
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
        saga = self.saga_for(record)
        if events is None:
            events = await self.store.journal(record.id)
        try:
            progress = core.replay(saga.plan(), events)
        except (KeyError, ValueError) as exc:
            raise JournalMismatch(record.id, record.saga, record.version, exc) from exc
        return self._driver(saga, record, progress, park_after=park_after)

    def _carry_on(self, taken: RunRecord) -> bool:
        """Whether a drive of this engine takes over ``taken``, a run it drives
        that was just claimed again because its lease lapsed (`Driver.adopt`)."""
        driver = self._drivers.get(taken.id)
        if driver is None or not driver.adopt(taken):
            return False
        logger.warning(
            "run %s: its lease lapsed before it was renewed (is this process "
            "overloaded?); claimed it again and carried on with the drive in flight",
            taken.id,
        )
        return True

    def _register(self, driver: Driver) -> None:
        """Know a run's drive here: its lease is renewed, its mail pokes it."""
        self._drivers[driver.run_id] = driver

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        # Renew well before expiry so one slow round trip does not lose a lease.
        interval = self.lease_seconds / 3
        delay = interval
        while True:
            await asyncio.sleep(delay)
            if not self._drivers:
                delay = interval
                continue
            leases = {run_id: d.lease for run_id, d in self._drivers.items()}
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
                driver = self._drivers.get(run_id)
                # Only the driver whose lease was renewed: a newer one may hold a newer lease.
                if driver is not None and driver.lease == leases[run_id]:
                    driver.lost = True
                    logger.warning("run %s: lease lost to another process", run_id)

    async def _alert(self, driver: Driver, event: Event) -> None:
        progress = driver.progress
        phase = Phase(event.data.get("phase", Phase.ACTION))
        name = event.step or ""
        history = await self.store.journal(driver.run_id)
        failures = (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED)
        errors = tuple(e.error for e in history if e.kind in failures and e.error is not None)
        run = await self.get(driver.run_id)
        report = AttentionReport(
            run=run,
            cause=run.error,
            step=name,
            phase=phase,
            reason=str(event.data.get("reason", "")),
            attempts=progress.attempts(phase, name).started,
            errors=errors,
            state=dict(progress.state),
        )
        logger.error(
            "run %s needs attention: %s of step %r: %s (after %d attempts)",
            driver.run_id,
            phase.value,
            name,
            report.reason,
            report.attempts,
            extra={"run_id": driver.run_id, "saga": driver.saga.name, "step": name},
        )
        hook = self.on_attention
        if hook is None:
            return
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(report)
            else:  # on a thread, so a slow pager does not stall the runs in flight
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(self._executor, hook, report)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception:
            logger.exception("the on_attention hook failed for run %s", driver.run_id)

    async def recover(self) -> list[Run]:
        """Resume every unsettled run whose lease lapsed and whose saga is registered.

        Each is driven here until it settles (waiting out its retry timers).
        Runs of sagas this engine does not know are left untouched and logged;
        a run that cannot be resumed (its journal does not fit its saga) is
        logged, released and skipped, never a reason to leave the others.

        Returns:
            The recovered runs, as they ended.
        """
        await self.open()
        drives: dict[str, asyncio.Task[Driver]] = {}
        for status in ACTIVE_STATUSES:
            offset = 0
            while True:
                page = await self.store.list_runs(status=status, limit=_PAGE, offset=offset)
                offset += len(page)
                for record in page:
                    driver = await self._take_over(record)
                    if driver is not None:  # drive it now: its heartbeat starts at once
                        drives[record.id] = asyncio.ensure_future(self._drive(driver))
                if len(page) < _PAGE:
                    break
        recovered: list[Run] = []
        for run_id, drive in drives.items():
            try:
                await drive
            except SagaError as exc:
                logger.error("run %s could not be recovered: %s", run_id, exc)
                continue
            recovered.append(await self.get(run_id))
        return recovered

    async def _take_over(self, record: RunRecord) -> Driver | None:
        """Claim a run for `recover` if its lease lapsed and its saga is known."""
        now = self.clock()
        if record.owner is not None and (record.lease_until or 0) >= now:
            return None
        if (record.saga, record.version) not in self._sagas:
            logger.warning(
                "run %s of saga %s version %s is not registered here (versions here: %s); "
                "left untouched: a run only ever runs on its own version's code",
                record.id,
                record.saga,
                record.version,
                ", ".join(self.versions(record.saga)) or "none",
            )
            return None
        taken = await self.store.claim(
            record.id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
        )
        if taken is None or self._carry_on(taken):
            return None
        lease = Lease(self.owner, taken.lease_epoch)
        if taken.status not in ACTIVE_STATUSES:  # settled meanwhile
            await self.store.release(taken.id, lease)
            return None
        try:
            return await self._claimed(taken)
        except SagaError as exc:
            logger.error("run %s cannot be resumed, left as it is: %s", record.id, exc)
            await self.store.release(taken.id, lease)
            return None

    # -- cancel and signals -----------------------------------------------------------

    async def cancel(self, run_id: str, *, reason: str | None = None, force: bool = False) -> Run:
        """Cancel a run: stop it going forward and compensate what it did.

        A pending run ends ``cancelled`` at once. A running one stops after
        the steps under way, then compensates. A completed (or paused) one
        compensates its completed steps: the "cancel my order the next day"
        case. Compensations learn why through ``ctx.reason == "cancel"`` and
        ``ctx.cancel_reason``. The run ends ``cancelled``.

        The request is journaled by whoever drives the run. If this engine
        knows the saga and the run is free, it drives the undo here and
        returns the run settled; if another process holds the run, that
        process acts on it at its next step and this returns at once (use
        `wait`); if the saga is not registered here, a worker serving it
        does the work.

        Args:
            run_id: The run.
            reason: Why, kept in the journal and handed to compensations.
            force: Cancel even after the pivot: the steps before it are
                compensated; the pivot and later steps cannot be.

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run already finished undone, is already
                compensating, or passed its pivot (without ``force``).
        """
        data: JSON = {"reason": reason, "force": force}
        return await self._deliver(run_id, "cancel", data)

    async def signal(self, run_id: str, name: str, payload: Any = None) -> Run:
        """Deliver a signal to a run: a decision, an approval, new input.

        The payload (a dict or a model) is merged into the run's state. A run
        paused on a step (`Pause`) goes on as the step's ``on_signal``
        handler says, by default running the step again with the new state;
        a step declared with ``wait_for=name`` starts; otherwise the signal is
        kept for the step that will wait for it. Delivery is durable and
        exactly-once, whoever drives the run (see `cancel`).

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run has finished, or it is paused on a
                question that ``name`` is not one of the answers to.
            StateError: the payload is not JSON, or does not fit the state model.
        """
        if not isinstance(name, str) or not name.strip():
            raise SagaError(f"a signal needs a name, got {name!r}")
        if hasattr(payload, "model_dump"):
            payload = payload.model_dump(mode="json", exclude_unset=True)
        body = {} if payload is None else payload
        if not isinstance(body, dict):
            raise StateError(f"the payload of signal {name!r} must be a dict or a model")
        body = to_jsonable(body, f"payload of signal {name!r}")
        return await self._deliver(run_id, "signal", {"name": name, "payload": body})

    async def _deliver(self, run_id: str, kind: str, data: JSON) -> Run:
        """Post mail for a run, then act on it here if the run is free and known."""
        record = await self._record(run_id)
        saga = self._sagas.get((record.saga, record.version))
        self._check_delivery(record, saga, kind, data)
        if saga is not None:
            progress = core.replay(saga.plan(), await self.store.journal(run_id))
            self._check_against_journal(record, saga, progress, kind, data)
        posted = await self.store.post(run_id, kind, data, at=self.clock())
        if posted is None:
            raise RunNotFound(run_id)
        driver = self._drivers.get(run_id)
        if driver is not None:  # driven by this engine: it reads the mail now
            driver.poke()
            return await self.get(run_id)
        if saga is None:
            return await self.get(run_id)  # a worker serving the saga acts on it
        now = self.clock()
        taken = await self.store.claim(
            run_id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
        )
        if taken is None:  # another process drives it and reads the mail at its next step
            return await self.get(run_id)
        try:
            claimed = await self._claimed(taken)
        except SagaError:
            await self.store.release(run_id, Lease(self.owner, taken.lease_epoch))
            raise
        await self._drive(claimed)
        return await self.get(run_id)

    @staticmethod
    def _check_delivery(record: RunRecord, saga: Saga[Any] | None, kind: str, data: JSON) -> None:
        finished = (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED)
        status = RunStatus(record.status)
        if kind == "cancel" and status in finished:
            raise InvalidRunState(
                record.id, status, "cancel", f"the run has already finished as {status.value}"
            )
        if kind == "signal":
            if status.terminal:
                raise InvalidRunState(
                    record.id, status, f"signal {data['name']!r}", "the run has finished"
                )
            if saga is not None:
                saga.dump_state({**record.state, **data["payload"]})  # StateError if unfit

    @staticmethod
    def _check_against_journal(
        record: RunRecord, saga: Saga[Any], progress: core.Progress, kind: str, data: JSON
    ) -> None:
        if kind == "cancel":
            refusal = core.cancel_refusal(saga.plan(), progress, force=bool(data.get("force")))
            if refusal is not None:
                raise InvalidRunState(record.id, progress.status, "cancel", refusal)
            return
        paused = progress.paused
        options = paused.get("options") if paused else None
        if paused and options and not paused.get("waiting_for") and data["name"] not in options:
            raise InvalidRunState(
                record.id,
                progress.status,
                f"signal {data['name']!r}",
                f"the run is paused on {paused.get('question')!r}, answered by the signals "
                f"{', '.join(map(repr, options))}",
            )

    # -- operator actions -------------------------------------------------------------

    async def retry(self, run_id: str, *, note: str | None = None, step: str | None = None) -> Run:
        """Resume a run that needs attention exactly where it stopped.

        The step or compensation it halted on gets a fresh retry budget. On a
        run in any other status this does nothing and returns it unchanged:
        a finished run is never re-run.

        Args:
            run_id: The run.
            note: Why, kept in the journal.
            step: The step the caller saw the run halted on; if given and the
                run is now halted elsewhere (another operator acted first),
                nothing is done and `InvalidRunState` is raised.

        Raises:
            RunNotFound: no such run.
            SagaNotRegistered: the run's saga is not registered here.
            RunBusy: another live process holds the run.
        """
        data = {"note": note} if note else {}
        return await self._operator_action(
            run_id, EventKind.RETRIED, data, strict=False, expected=step
        )

    async def resolve(self, run_id: str, *, note: str, step: str | None = None) -> Run:
        """Record that a person did by hand what the run is halted on, and go on.

        The step or compensation counts as done; the remaining work (the
        rest of the undo, or the rest of the steps) continues here.

        Args:
            run_id: The run.
            note: What was done by hand, kept in the journal.
            step: The step the caller saw the run halted on; if given and the
                run is now halted elsewhere, nothing is done and
                `InvalidRunState` is raised.

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run does not need attention.
            SagaNotRegistered: the run's saga is not registered here.
            RunBusy: another live process holds the run.
        """
        if not note or not note.strip():
            raise SagaError(f"resolving run {run_id!r} needs a note saying what was done")
        return await self._operator_action(
            run_id, EventKind.RESOLVED, {"note": note}, strict=True, expected=step
        )

    async def _operator_action(
        self,
        run_id: str,
        kind: EventKind,
        data: dict[str, Any],
        *,
        strict: bool,
        expected: str | None,
    ) -> Run:
        await self.open()
        action = "resolve" if kind is EventKind.RESOLVED else "retry"
        record = await self._record(run_id)
        if record.status is not RunStatus.NEEDS_ATTENTION:
            if strict:
                raise InvalidRunState(run_id, record.status, action)
            return self._to_run(record)
        self.saga_for(record)
        now = self.clock()
        taken = await self.store.claim(
            run_id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
        )
        if taken is None:
            raise RunBusy(run_id, record.owner)
        driver = await self._claimed(taken)
        if driver.progress.status is not RunStatus.NEEDS_ATTENTION:  # raced with another operator
            await self.store.release(run_id, driver.lease)
            if strict:
                raise InvalidRunState(run_id, driver.progress.status, action)
            return self._to_run(taken)
        halted = driver.progress.attention
        if expected is not None and (halted is None or halted[1] != expected):
            await self.store.release(run_id, driver.lease)
            where = f"step {halted[1]!r}" if halted else "nothing"
            raise InvalidRunState(run_id, f"halted on {where}, not on step {expected!r}", action)
        if halted is not None:
            data = {"phase": halted[0].value, **data}
        driver.append(kind, step=halted[1] if halted else None, data=data)
        await self._drive(driver)
        return await self.get(run_id)

    # -- reading --------------------------------------------------------------------

    async def _record(self, run_id: str) -> RunRecord:
        await self.open()
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record

    async def get(self, run_id: str) -> Run:
        """The run with this id.

        Raises:
            RunNotFound: no such run; the message names the id.
        """
        return self._to_run(await self._record(run_id))

    async def runs(
        self,
        *,
        status: RunStatus | str | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        """Runs, newest first, optionally only those in one status or of one saga."""
        await self.open()
        try:
            wanted = RunStatus(status) if status is not None else None
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise SagaError(f"unknown run status {status!r}; use one of {known}") from None
        records = await self.store.list_runs(status=wanted, saga=saga, limit=limit, offset=offset)
        return [self._to_run(r) for r in records]

    async def history(self, run_id: str) -> list[Event]:
        """The run's journal, oldest event first.

        Raises:
            RunNotFound: no such run.
        """
        await self._record(run_id)
        return await self.store.journal(run_id)

    def _to_run(self, record: RunRecord) -> Run:
        saga = self._sagas.get((record.saga, record.version))
        state: Any = record.state
        if saga is not None and saga.state_type is not None:
            try:
                state = saga.load_state(record.state)
            except SagaError:
                state = dict(record.state)  # an old row the model no longer accepts: show raw
        error = record.error or {}
        cause = error.get("cause")
        return Run(
            id=record.id,
            saga=record.saga,
            version=record.version,
            status=RunStatus(record.status),
            state=state,
            data=record.state,
            error=ErrorInfo.from_json(cause) if cause else None,
            compensation_errors=tuple(
                ErrorInfo.from_json(e) for e in error.get("compensation", [])
            ),
            created_at=record.created_at,
            updated_at=record.updated_at,
            owner=record.owner,
        )


def _deadline(deadline: Deadline, saga: Saga[Any], now: float) -> float | None:
    """A run's deadline in seconds since the epoch (the engine's clock)."""
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise SagaError("a deadline datetime must be timezone-aware, e.g. datetime.now(UTC)")
        return deadline.timestamp()
    if isinstance(deadline, timedelta):
        return now + deadline.total_seconds()
    if deadline is not None:
        raise SagaError(f"deadline must be a datetime or a timedelta, got {deadline!r}")
    return None if saga.deadline is None else now + saga.deadline


class _Done:
    """An awaitable that is already complete (see `AsyncEngine.register`)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator that finishes at once


_DONE = _Done()

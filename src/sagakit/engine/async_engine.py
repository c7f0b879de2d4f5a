"""`AsyncEngine`: start, drive, inspect and repair runs.

The async engine does the work; the sync `Engine` (`sagakit.engine.async_engine.sync_engine`)
runs the same coroutines on a private event loop thread, so both behave
identically and the logic is written once.

The class is the API, and knows the sagas registered; the work behind it has
modules of its own: `engine_starting` (a new run), `engine_drives` (driving
runs here), `engine_heartbeat` (their leases), `engine_attention` (a run that
needs a person), `engine_waiting`, `engine_recovery`, and `engine_actions`
(cancel, signal, retry, resolve).
"""

from __future__ import annotations

import asyncio
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
from sagakit.engine import actions, drives, recovery, starting, waiting
from sagakit.errors import RunNotFound, SagaError, SagaNotRegistered
from sagakit.journal import JSON, ErrorInfo, Event, EventKind, RunStatus
from sagakit.run import AttentionReport, Run
from sagakit.store import RunRecord, Store, open_store

T = TypeVar("T")
Deadline = datetime | timedelta | None
AttentionHook = Callable[[AttentionReport], Awaitable[None] | None]

DEFAULT_URL = "sqlite:///sagakit.db"


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
        record, first, chosen = starting.new_run(self, saga, input, run_id, deadline, owned=True)
        await self.open()
        driver = drives.new_driver(self, chosen, record, core.replay(chosen.plan(), [first]))
        driver.create_with(first)  # stored with its first step's write-ahead record
        try:
            last = await drives.drive(self, driver)
        except RunExists as exists:
            return self._to_run(starting.existing(exists.record, chosen))
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
        record, first, chosen = starting.new_run(self, saga, input, run_id, deadline, owned=False)
        await self.open()
        stored, created = await self.store.create_run(record, [first])
        return self._to_run(stored if created else starting.existing(stored, chosen))

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
        return await waiting.wait(self, run_id, timeout=timeout, poll=poll)

    async def recover(self) -> list[Run]:
        """Resume every unsettled run whose lease lapsed and whose saga is registered.

        Each is driven here until it settles (waiting out its retry timers).
        Runs of sagas this engine does not know are left untouched and logged;
        a run that cannot be resumed (its journal does not fit its saga) is
        logged, released and skipped, never a reason to leave the others.

        Returns:
            The recovered runs, as they ended.
        """
        return await recovery.recover(self)

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
        return await actions.deliver(self, run_id, "cancel", data)

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
        data = actions.signal_data(name, payload)
        return await actions.deliver(self, run_id, "signal", data)

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
        return await actions.operator_action(
            self, run_id, EventKind.RETRIED, data, strict=False, expected=step
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
        return await actions.operator_action(
            self, run_id, EventKind.RESOLVED, {"note": note}, strict=True, expected=step
        )

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


class _Done:
    """An awaitable that is already complete (see `AsyncEngine.register`)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator that finishes at once


_DONE = _Done()

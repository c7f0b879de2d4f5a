"""`AsyncEngine`: start, drive, inspect and repair runs.

The async engine does the work; the sync `Engine` (`sagakit.engine.sync_engine`)
runs the same coroutines on a private event loop thread, so both behave
identically and the logic is written once.

The class is the API, and composes the parts behind it: a `SagaRegistry`
(``registry.py``, the sagas it knows) and `Drives` (``drives.py``, the runs
driven here, whose leases the `Heartbeat` of ``heartbeat.py`` renews). The
work on runs has modules of its own, each given the store, the registry and
the drives: ``starting`` (a new run), ``attention`` (the `Alerts` owed by
runs that need a person), ``waiting``, ``recovery``, and ``actions`` (cancel, signal, retry,
resolve), and ``checking`` (the runs in flight held against the definitions
loaded, before a deploy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from datetime import timedelta
from typing import Any

from sagakit import core
from sagakit.clock import Clock, as_clock
from sagakit.definition import RetryPolicy, Saga
from sagakit.driver import Driver, RunExists
from sagakit.engine import actions, recovery, starting, waiting
from sagakit.engine.attention import (
    DEFAULT_ALERT_RETRY,
    DEFAULT_ALERT_TIMEOUT,
    Alerts,
    AttentionHook,
)
from sagakit.engine.checking import CheckReport, Misfit, check_runs
from sagakit.engine.drives import Drives
from sagakit.engine.identity import LeaseIdentity
from sagakit.engine.registry import SagaRegistry
from sagakit.engine.starting import Deadline
from sagakit.errors import RunNotFound, SagaError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.observe import Observer, Observers
from sagakit.reconcile import ReconcileReport, reconcile
from sagakit.run import Run
from sagakit.store import (
    Backlog,
    Mail,
    Reservation,
    RunCounts,
    RunCursor,
    RunFilter,
    RunRecord,
    Store,
    open_store,
)
from sagakit.store.encrypted import EncryptedStore

__all__ = ["DEFAULT_RECONCILE_GRACE", "DEFAULT_URL", "AsyncEngine", "AttentionHook", "Deadline"]

DEFAULT_URL = "sqlite:///sagakit.db"

DEFAULT_RECONCILE_GRACE = 600.0
"""How long (seconds) `AsyncEngine.reconcile` leaves a new resource alone: 10 minutes."""


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
            run needs a person. The alert is owed from the commit that makes
            the run need attention and is delivered at least once: by this
            engine right after a run it drives halts, else by any `Worker`.
            A hook that raises is tried again with capped exponential
            backoff (``alert_retry``); each try is journaled
            (``alert_sent``, ``alert_failed``), never raised. With no hook,
            this engine only logs the halt and leaves the alert owed for a
            worker (see docs/operations.md).
        owner: This process's name in leases (default: host, pid, random,
            and the process's start, from which a later process on this host
            can prove it gone: see ``worker_id``). Not with ``worker_id``.
        worker_id: This worker's identity, which the operator promises no
            other live process has: the leases it takes name it, and a
            `Worker` started later under the same id takes back at once the
            runs an earlier process under it held, on any host (fenced: each
            claim bumps the lease epoch), instead of waiting for their leases
            to lapse. Without it, a worker takes back at once only the runs
            of processes of its own host that are provably gone (Linux).
            1 to 100 printable characters, without ``/`` or white space.
        clock: The time, and every timer wait (retry backoff, deadlines,
            reservation waits, alerts tried again): a `Clock`, such as
            `sagakit.testing.SkippingClock`, under which tests of retries and
            deadlines take no real time; or a plain function returning
            seconds since the epoch (a clock moved by hand), whose waits
            stay real. Default: the system's clock.
        max_threads: Threads for synchronous step functions.
        encryption_keys: Fernet keys, newest first: the user's data (states,
            inputs, results, signal payloads) is encrypted at rest with the
            first and read with any (`sagakit.store.encrypted.EncryptedStore`;
            see docs/encryption.md). Without keys, a run whose data is
            encrypted is refused (`EncryptionError`), never driven.
        alert_retry: When a failed alert is tried again (default: after 5 s,
            doubling up to 5 minutes, with no limit on attempts).
        alert_timeout: How long one try at an alert may take (seconds); a
            hook still running then has failed. Should the process die
            during a try, the alert is due again this long (and a lease)
            after the try started.
        hang_grace: How long (seconds) a call that timed out but goes on
            running (a sync function's thread cannot be stopped; a coroutine
            may ignore its cancellation) may hold up the next call of its step
            (a retry, or its compensation), counted from the timeout. Past
            it, the run needs attention, naming the step; once the call
            returns, this engine resumes the run by itself (if it is still
            open), or an operator's retry or resolve does.
        commit_patience: How long (seconds) a drive keeps retrying a commit
            that the store refused for a passing reason (a cut connection,
            a database restarting) before it stops and leaves the run to be
            resumed from its journal. None: half of ``lease_seconds``.
        observers: `Observer` instances told of every journal event this
            engine commits, once it is durable, on a thread of the engine's
            own: one that raises is logged and ignored, one that is slow
            delays no run (see docs/observability.md). For OpenTelemetry
            traces: ``observers=[sagakit.observe.otel.Tracing()]``.

    Attributes:
        store: The store runs are kept in.
        registry: The sagas this engine knows (`SagaRegistry`).
        drives: The runs this engine drives now, and their heartbeat (`Drives`).
        alerts: Delivers the alerts owed by runs that need attention (`Alerts`).
        observers: The engine's observers and the thread that tells them
            (`Observers`), or None when it has none.
        identity: This process's identity in leases (`LeaseIdentity`): which
            earlier owners' runs a `Worker` of this engine may take back at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        store: Store | None = None,
        lease_seconds: float = 30.0,
        on_attention: AttentionHook | None = None,
        owner: str | None = None,
        worker_id: str | None = None,
        clock: Clock | Callable[[], float] = time.time,
        max_threads: int = 32,
        encryption_keys: Sequence[str | bytes] | None = None,
        alert_retry: RetryPolicy = DEFAULT_ALERT_RETRY,
        alert_timeout: float = DEFAULT_ALERT_TIMEOUT,
        hang_grace: float = 30.0,
        commit_patience: float | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        if lease_seconds <= 0:
            raise SagaError(f"lease_seconds must be positive, got {lease_seconds}")
        if store is None:
            store = open_store(url, encryption_keys=encryption_keys)
        elif encryption_keys is not None:
            store = EncryptedStore(store, encryption_keys)
        if not hang_grace >= 0:
            raise SagaError(f"hang_grace must not be negative, got {hang_grace}")
        if commit_patience is not None and not commit_patience >= 0:
            raise SagaError(f"commit_patience must not be negative, got {commit_patience}")
        if owner is not None and worker_id is not None:
            raise SagaError("give an engine owner= or worker_id=, not both")
        self.identity = LeaseIdentity(worker_id)
        # None, not an empty Observers: with none, each commit tests one attribute.
        self.observers = Observers(observers) if observers else None
        self.registry = SagaRegistry()
        self.drives = Drives(
            store,
            self.registry,
            owner=owner or self.identity.owner,
            clock=as_clock(clock),
            lease_seconds=lease_seconds,
            max_threads=max_threads,
            on_halted=self._halted,
            hang_grace=hang_grace,
            commit_patience=commit_patience,
            observers=self.observers,
        )
        self.alerts = Alerts(
            self.drives,
            self.registry,
            hook=on_attention,
            retry=alert_retry,
            timeout=alert_timeout,
        )
        self._opened = False
        self._open_lock: asyncio.Lock | None = None

    # The settings live in the drives, which use them; the engine shows them
    # read-only, so that what it shows is what its drives, claims and timers do.

    @property
    def on_attention(self) -> AttentionHook | None:
        """The hook called when a run needs a person (see the class's arguments)."""
        return self.alerts.hook

    @on_attention.setter
    def on_attention(self, hook: AttentionHook | None) -> None:
        self.alerts.hook = hook

    @property
    def store(self) -> Store:
        """The store runs are kept in."""
        return self.drives.store

    @property
    def owner(self) -> str:
        """This process's name in leases."""
        return self.drives.owner

    @property
    def clock(self) -> Clock:
        """This engine's clock: call it for seconds since the epoch."""
        return self.drives.clock

    @property
    def lease_seconds(self) -> float:
        """How long a lease taken or renewed here lasts."""
        return self.drives.lease_seconds

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
        """Stop the heartbeat and close the store.

        Runs in flight keep their leases until they lapse, then any engine's
        `recover` resumes them.
        """
        # The heartbeat first, so that no renewal meets a closed store.
        self.drives.heartbeat.stop()
        self.alerts.close()
        if self._opened:
            await self.store.close()
            self._opened = False
        self.drives.close()
        if self.observers is not None:
            # What was committed is told before the engine is gone (bounded wait).
            await asyncio.to_thread(self.observers.close)

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
        self.registry.register(*sagas)
        return _DONE

    @property
    def sagas(self) -> tuple[Saga[Any], ...]:
        """The sagas this engine knows (every version of each)."""
        return self.registry.sagas

    def versions(self, name: str) -> list[str]:
        """The versions of saga ``name`` registered here, oldest first."""
        return self.registry.versions(name)

    def saga(self, name: str, version: str | None = None) -> Saga[Any]:
        """A registered saga by name: the given version, or the newest.

        Versions compare part by part, numbers as numbers (``1.10`` is newer
        than ``1.9``).

        Raises:
            SagaError: no saga of that name (or that version) is registered.
        """
        return self.registry.saga(name, version)

    def saga_for(self, record: RunRecord) -> Saga[Any]:
        """The registered saga a run belongs to: its own name and version, never another.

        Raises:
            SagaNotRegistered: that name and version are not registered.
        """
        return self.registry.saga_for(record)

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

        Starting is idempotent: if ``run_id`` exists and was started with the
        same input, that run is returned as it stands and nothing is
        executed (its ``created`` is False; True when this call created it).
        Use ``run(...).raise_for_status()`` to get an exception when the run
        did not complete.

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
            InvalidRunId: ``run_id`` breaks the run id rule (`sagakit.run.check_run_id`).
            RunIdConflict: ``run_id`` belongs to a run of another saga.
            RunInputConflict: ``run_id`` belongs to a run of this saga started
                with another input (a `RunIdConflict`).
        """
        drives = self.drives  # read once, not through the properties: this runs per run
        record, first, chosen = starting.new_run(
            self.registry,
            saga,
            input,
            run_id,
            deadline,
            owner=drives.owner,
            clock=drives.clock,
            lease_seconds=drives.lease_seconds,
            observers=self.observers,
        )
        if not self._opened:
            await self.open()
        driver = drives.new_driver(chosen, record, core.replay(chosen.plan(), [first]))
        driver.create_with(first)  # stored with its first step's write-ahead record
        try:
            last = await drives.drive(driver)
        except RunExists as exists:
            stored = await starting.existing(self.store, exists.record, chosen, first)
            return self.registry.to_run(stored)
        commit = last.settled_commit()
        if commit is not None:
            # The row as the drive's last commit left it (`Driver.settled_record`),
            # shown without a `RunRecord` made for it: one less for every run.
            row = last.record
            return self.registry.run_of(
                row.id,
                row.saga,
                row.version,
                commit.status,
                commit.state,
                commit.error,
                row.created_at,
                commit.at,  # updated_at
                None,  # owner: released
                0,  # mail: none waits
                True,  # created
            )
        # Read the row back only when this drive did not leave it settled and
        # known (it handed the run on, lost it, or mail came in meanwhile).
        return self.registry.to_run(await self._record(record.id), created=True)

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
        ``run_id`` exists and was started with the same input, that run is
        returned as it stands. The returned run's ``created`` tells which
        happened: True when this call created it, False when it was there.

        Args:
            saga: The saga to run (registered on the way), or the name of a
                registered saga, which runs its newest version.
            input: The initial state: a dict or an instance of the state model.
            run_id: The run's id; a random one by default.
            deadline: As for `run`.

        Raises:
            StateError: the input does not fit the state model or is not JSON.
            InvalidRunId: ``run_id`` breaks the run id rule (`sagakit.run.check_run_id`).
            RunIdConflict: ``run_id`` belongs to a run of another saga.
            RunInputConflict: ``run_id`` belongs to a run of this saga started
                with another input (a `RunIdConflict`).
        """
        record, first, chosen = starting.new_run(
            self.registry,
            saga,
            input,
            run_id,
            deadline,
            owner=None,
            clock=self.clock,
            lease_seconds=self.lease_seconds,
            observers=self.observers,
        )
        await self.open()
        stored, created = await self.store.create_run(record, [first])
        if not created:
            stored = await starting.existing(self.store, stored, chosen, first)
        elif self.observers is not None:
            self.observers.committed(
                chosen.name,
                chosen.version,
                (first,),
                state=record.state,
                sensitive=chosen.sensitive,
                trace=first.data.get("trace"),
                run_started_at=first.at,
            )
        return self.registry.to_run(stored, created=created)

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
        return await waiting.wait(
            run_id,
            store=self.store,
            registry=self.registry,
            read=self._record,
            timeout=timeout,
            poll=poll,
        )

    async def recover(self, *, park_after: float | None = 2.0) -> list[Run]:
        """Do, once, what a worker does: drive the due runs of the registered sagas.

        Takes every run a `Worker` would claim now: owned by nobody (or with
        a lapsed lease: its process died) and active with no timer running,
        or with a timer that is due (a retry, a paused run's deadline), or
        with a cancel or signal waiting (a completed run being cancelled
        too). Each is driven here until nothing is left to do now: it
        settles, or would wait on a retry timer longer than ``park_after``
        and is handed back with its timer kept, for a worker or a later
        `recover`. A run whose timer is not due is left alone.

        Runs that an earlier incarnation of this process held are taken at
        once, their leases live or not, as a `Worker` takes them back (a
        dead process of this host, or one under this engine's ``worker_id``).
        Runs of sagas (or versions) this engine does not know are left
        untouched and logged; a run that cannot be resumed (its journal does
        not fit its saga) is logged and held back for a minute, as a worker
        does, never a reason to leave the others.

        Args:
            park_after: Hand back a run whose next retry is more than this
                many seconds away; None waits here however long.

        Returns:
            The runs taken, as they ended (a run handed back is still active).

        Raises:
            SagaError: ``park_after`` is negative.
        """
        if park_after is not None and not park_after >= 0:
            raise SagaError(f"park_after must not be negative, got {park_after}")
        await self.open()
        return await recovery.recover(
            store=self.store,
            registry=self.registry,
            drives=self.drives,
            read=self._record,
            park_after=park_after,
            identity=self.identity,
        )

    # -- cancel and signals -----------------------------------------------------------

    async def cancel(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        force: bool = False,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
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
            by: Who asks, journaled with the request and shown in the
                timeline (``"dashboard:alice"``); None for nobody named.
            park_after: Hand the run back to the workers (its retry timer
                kept in the store) rather than wait here on a retry more
                than this many seconds away; None waits here (the default).

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run already finished undone, is already
                compensating, or passed its pivot (without ``force``).
        """
        data: JSON = {"reason": reason, "force": force}
        if by is not None:
            data["by"] = actions.checked_by(by)
        return await actions.deliver(
            run_id,
            "cancel",
            data,
            store=self.store,
            registry=self.registry,
            drives=self.drives,
            read=self._record,
            park_after=park_after,
        )

    async def signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """Deliver a signal to a run: a decision, an approval, new input.

        The payload (a dict or a model) is merged into the run's state. A run
        paused on a step (`Pause`) goes on as the step's ``on_signal``
        handler says, by default running the step again with the new state;
        a step declared with ``wait_for=name`` starts; otherwise the signal is
        kept for the step that will wait for it. Delivery is durable and
        exactly-once, whoever drives the run (see `cancel`). ``by`` names who
        sent it, journaled with it and shown in the timeline; ``park_after``
        is as for `cancel`.

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run has finished, or it is paused on a
                question that ``name`` is not one of the answers to.
            StateError: the payload is not JSON, or does not fit the state model.
        """
        data = actions.signal_data(name, payload)
        if by is not None:
            data["by"] = actions.checked_by(by)
        return await actions.deliver(
            run_id,
            "signal",
            data,
            store=self.store,
            registry=self.registry,
            drives=self.drives,
            read=self._record,
            park_after=park_after,
        )

    # -- operator actions -------------------------------------------------------------

    async def retry(
        self,
        run_id: str,
        *,
        note: str | None = None,
        step: str | None = None,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
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
            by: Who retries, journaled and shown in the timeline
                (``"dashboard:alice"``); None for an operator not named.
            park_after: Hand the run back to the workers (its retry timer
                kept in the store) rather than wait here on a retry more
                than this many seconds away; None waits here (the default).

        Raises:
            RunNotFound: no such run.
            SagaNotRegistered: the run's saga is not registered here.
            RunBusy: another live process holds the run.
        """
        data: dict[str, Any] = {"note": note} if note else {}
        if by is not None:
            data["by"] = actions.checked_by(by)
        await self.open()
        return await actions.operator_action(
            run_id,
            EventKind.RETRIED,
            data,
            strict=False,
            expected=step,
            store=self.store,
            registry=self.registry,
            drives=self.drives,
            read=self._record,
            park_after=park_after,
        )

    async def resolve(
        self,
        run_id: str,
        *,
        note: str,
        step: str | None = None,
        by: str | None = None,
        park_after: float | None = None,
    ) -> Run:
        """Record that a person did by hand what the run is halted on, and go on.

        The step or compensation counts as done; the remaining work (the
        rest of the undo, or the rest of the steps) continues here.

        Args:
            run_id: The run.
            note: What was done by hand, kept in the journal.
            step: The step the caller saw the run halted on; if given and the
                run is now halted elsewhere, nothing is done and
                `InvalidRunState` is raised.
            by: Who resolves, journaled and shown in the timeline.
            park_after: Hand the run back to the workers (its retry timer
                kept in the store) rather than wait here on a retry more
                than this many seconds away; None waits here (the default).

        Raises:
            RunNotFound: no such run.
            InvalidRunState: the run does not need attention.
            SagaNotRegistered: the run's saga is not registered here.
            RunBusy: another live process holds the run.
        """
        if not note or not note.strip():
            raise SagaError(f"resolving run {run_id!r} needs a note saying what was done")
        data: dict[str, Any] = {"note": note}
        if by is not None:
            data["by"] = actions.checked_by(by)
        await self.open()
        return await actions.operator_action(
            run_id,
            EventKind.RESOLVED,
            data,
            strict=True,
            expected=step,
            store=self.store,
            registry=self.registry,
            drives=self.drives,
            read=self._record,
            park_after=park_after,
        )

    # -- reading --------------------------------------------------------------------

    async def _record(self, run_id: str) -> RunRecord:
        """The stored run by id, the store opened first.

        Raises:
            RunNotFound: no such run.
        """
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
        return self.registry.to_run(await self._record(run_id))

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
        wanted = _status(status)
        records = await self.store.list_runs(status=wanted, saga=saga, limit=limit, offset=offset)
        to_run = self.registry.to_run
        return [to_run(r) for r in records]

    async def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        saga: str | None = None,
        version: str | None = None,
        status: RunStatus | str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Run]:
        """One page of runs, newest first, read from where the last page ended.

        Keyset pagination (see `Store.page_runs`): pass ``after=RunCursor.of(
        page[-1])`` for the next (older) page, ``before=RunCursor.of(page[0])``
        for the previous one; a page deep in a million runs costs what the
        first does.

        Args:
            after: Only runs older than this place in the list.
            before: Only runs newer than it: the page just before it. Not with ``after``.
            limit: At most this many runs.
            saga: Only runs of this saga.
            version: Only runs of this saga version.
            status: Only runs in this status.
            since: Only runs created at or after this time (seconds since the epoch).
            until: Only runs created before this time.

        Raises:
            SagaError: an unknown status, or both ``after`` and ``before``.
        """
        await self.open()
        wanted = _status(status)
        if after is not None and before is not None:
            raise SagaError("page_runs takes after= or before=, not both")
        where = RunFilter(saga=saga, version=version, status=wanted, since=since, until=until)
        records = await self.store.page_runs(after=after, before=before, limit=limit, where=where)
        to_run = self.registry.to_run
        return [to_run(r) for r in records]

    async def count_runs(self) -> RunCounts:
        """How many runs each saga has in each status, every run counted (one query on SQL)."""
        await self.open()
        return await self.store.count_runs()

    async def backlog(self) -> Backlog:
        """What waits in the store now, across every process: runs due, the oldest, alerts owed."""
        await self.open()
        return await self.store.backlog(now=self.clock())

    async def history(self, run_id: str) -> list[Event]:
        """The run's journal, oldest event first.

        Raises:
            RunNotFound: no such run.
        """
        await self._record(run_id)
        return await self.store.journal(run_id)

    async def pending(self, run_id: str) -> list[Mail]:
        """The requests recorded for the run and not yet acted on, oldest first.

        A cancel or signal for a run another process drives, or that no
        worker has taken yet, waits as mail until the run's driver reads it;
        until then the run's status is what it was. Each has its ``kind``
        (``"cancel"`` or ``"signal"``), its ``data`` (a cancel's ``reason``
        and ``force``; a signal's ``name`` and ``payload``) and when it was
        recorded (``at``). Reads only.

        Raises:
            RunNotFound: no such run.
        """
        await self._record(run_id)
        return await self.store.mail(run_id)

    async def reservations(self, *, run_id: str | None = None) -> list[Reservation]:
        """The reservations held now (not expired by the engine's clock), by name.

        Args:
            run_id: Only this run's.
        """
        return await self.store.reservations(run_id=run_id, now=self.clock())

    # -- before a deploy ----------------------------------------------------------------

    async def check(self, *, saga: str | None = None) -> CheckReport:
        """Hold every run not settled against the definitions registered here.

        Each pending, running, compensating, paused or needs-attention run is
        checked with the function an engine calls on a run it claims, and
        with the checks of `sagakit.core.fit`: the report lists the runs a
        worker with these definitions would leave untouched (no definition
        for their saga version), hold back (a step in the journal renamed or
        removed) or drive on a definition that contradicts their journal (a
        step added before steps done, a compensation removed, a kind
        changed). Reads only; runs are read a page at a time. Settled runs
        are not checked. See docs/operations.md.

        Args:
            saga: Only the runs of the saga of this name.

        Returns:
            How many runs were checked, and those that do not fit.
        """
        await self.open()
        checked = 0
        misfits: list[Misfit] = []
        async for _, misfit in check_runs(self.store, self.registry, saga=saga):
            checked += 1
            if misfit is not None:
                misfits.append(misfit)
        return CheckReport(checked=checked, misfits=misfits, saga=saga)

    # -- reconciliation ---------------------------------------------------------------

    async def reconcile(
        self,
        *,
        apply: bool = False,
        grace: float | timedelta = DEFAULT_RECONCILE_GRACE,
        saga: str | None = None,
    ) -> ReconcileReport:
        """Find the external resources no run owns any more; remove them if ``apply``.

        Each registered saga that declares reconcilers (`sagakit.Reconciler`)
        lists its resources; each resource's idempotency key is matched to
        its run and step. An orphan is one whose step was compensated, whose
        run finished without that step succeeding, or whose run is not
        stored at all; it is removed only with ``apply``, each removal
        journaled on its run (``orphan_removed``). A resource younger than
        ``grace``, or whose run is still going, is never touched. See
        docs/reconcile.md.

        Args:
            apply: Remove the orphans (default: only report them).
            grace: Leave resources created less than this long ago alone
                (seconds or a ``timedelta``; default 10 minutes).
            saga: Only this saga's reconcilers (default: every saga's).

        Returns:
            Every resource listed with its verdict, and what was done. A
            ``list`` or ``remove`` that raises is reported there, not raised.

        Raises:
            SagaError: no saga registered here (or not ``saga``) declares a
                reconciler; ``grace`` is negative.
        """
        seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
        if not seconds >= 0:
            raise SagaError(f"the reconcile grace must not be negative, got {grace!r}")
        targets = self._reconciled(saga)
        await self.open()
        return await reconcile(
            self.store,
            targets,
            owner=self.owner,
            clock=self.clock,
            lease_seconds=self.lease_seconds,
            grace=seconds,
            apply=apply,
            observers=self.observers,
        )

    def _reconciled(self, name: str | None) -> list[tuple[Saga[Any], frozenset[str]]]:
        """Per saga name: its newest version declaring reconcilers, and every version's steps."""
        names = [name] if name is not None else list(dict.fromkeys(s.name for s in self.sagas))
        targets: list[tuple[Saga[Any], frozenset[str]]] = []
        for each in names:
            self.registry.saga(each)  # SagaError naming the sagas registered
            versions = [self.registry.saga(each, v) for v in self.registry.versions(each)]
            declaring = [s for s in versions if s.reconcilers]
            if declaring:
                steps = frozenset(step.name for s in versions for step in s.steps)
                targets.append((declaring[-1], steps))
            elif name is not None:
                raise SagaError(
                    f"saga {name!r} declares no reconciler; declare one with "
                    "Saga(..., reconcilers=[Reconciler(...)]) (see docs/reconcile.md)"
                )
        if not targets:
            raise SagaError(
                "no saga registered here declares a reconciler; declare one with "
                "Saga(..., reconcilers=[Reconciler(...)]) (see docs/reconcile.md)"
            )
        return targets

    async def _halted(self, driver: Driver, event: Event) -> None:
        """Tell people that a drive here halted on ``event``: a run needs attention."""
        await self.alerts.halted(driver, event)


class _Done:
    """An awaitable that is already complete (see `AsyncEngine.register`)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator that finishes at once


_DONE = _Done()


def _status(status: RunStatus | str | None) -> RunStatus | None:
    """``status`` as a `RunStatus`, or None.

    Raises:
        SagaError: it is not a status.
    """
    try:
        return RunStatus(status) if status is not None else None
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise SagaError(f"unknown run status {status!r}; use one of {known}") from None

"""The driver: carries out the core's decisions for one run.

It asks `sagakit.core.decide.decide` what to do, journals each call before making it
(write-ahead), runs the user's function, journals the outcome, and asks again.
Outcomes and the next write-ahead record share one commit, so a sequential
saga costs one commit per step, and the store may batch the commits of many
runs together (group commit).

A `Driver` composes the parts beside it: a `StepCaller` makes the calls
(`calls`), a `RunWriter` journals and commits under the lease (`writer`), and
`outcomes` and `mail` say what to journal of a call's outcome and of the
run's mail.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any, Literal

from sagakit import core, runlog
from sagakit.clock import Clock
from sagakit.context import run_logger
from sagakit.core import decide
from sagakit.definition import Saga
from sagakit.driver import mail, outcomes
from sagakit.driver.calls import Lingering, LingeringCalls, Outcome, StepCaller, resolve
from sagakit.driver.failures import Failures
from sagakit.driver.outcomes import succeeded
from sagakit.driver.writer import Hold, RunWriter
from sagakit.errors import EncryptionError, LeaseLapsed, LeaseLost, StoreError
from sagakit.journal import JSON, STARTED, SUCCEEDED, Event, EventKind, Phase, RunStatus
from sagakit.observe import Observers
from sagakit.redaction import Redactor
from sagakit.runlog import RunFields
from sagakit.store import Commit, Lease, RunRecord, Store

# Bound once: an enum member read through its class costs several times a global.
_UNBORN = Hold.UNBORN
_RELEASED = Hold.RELEASED
# Bound once too: on Python 3.11 a member read through its enum class goes
# through the metaclass's __getattr__ hook (about a thousand instructions).
_RUN_FINISHED = EventKind.RUN_FINISHED
_NEEDS_ATTENTION = EventKind.NEEDS_ATTENTION
_new_tuple = tuple.__new__


class Driver:
    """Drives one claimed run until nothing is left to do here now.

    A drive ends when the run settles, halts for a person, is parked on a
    timer, is asked to stop, or its lease is lost. How it ended is told by
    `lost` (the lease went to another process), `released` (this drive gave
    the run up), `handed_back` (given up while still active, and why) and
    `halted` (given up needing attention).

    Args:
        saga: The run's saga.
        store: The store the run lives in.
        record: The run's row as claimed (or as it is to be created).
        lease: The lease the run is held under.
        progress: The run as its journal folds (advanced as events are journaled).
        clock: The engine's clock: the time, and the waits on retry timers
            and deadlines.
        random: A number in [0, 1) for the jitter of retry delays.
        executor: Where sync step functions and blocking store calls run.
        commit_patience: Seconds to keep retrying a commit the store refused
            for a passing reason.
        park_after: Give the run back instead of waiting on a retry timer
            longer than this (seconds); None waits here however long.
        lingering: The timed-out calls still running in this process (see
            `LingeringCalls`); a fresh registry if None.
        hang_grace: How long (seconds) after a call timed out the next call
            of its step may wait for it to return; after that the run needs
            attention.
        failures: Where to remember the exceptions of calls that fail for
            good, for the caller to re-raise (`Run.raise_for_status`).
        lease_seconds: How long the run's lease lasts; with it, the drive
            starts no call once less than half of it is left unrenewed.
        leased_at: When (``time.monotonic()``) the claim or renewal behind
            the lease was sent; now if None.
        observers: Told of each commit's events once it is durable.
    """

    __slots__ = (
        "_caller",
        "_calls_until",
        "_on_stored",
        "_running",
        "_stop_requested",
        "_stop_waiter",
        "_woken",
        "_writer",
        "clock",
        "failures",
        "halted",
        "handed_back",
        "hang_grace",
        "lease_known_until",
        "lease_seconds",
        "loop",
        "park_after",
        "plan",
        "progress",
        "random",
        "record",
        "saga",
        "store",
    )

    # Not keyword-only: `Drives.new_driver` passes the arguments by position, for
    # every run (sixteen keywords cost a type's call several thousand
    # instructions more); tests/unit/test_field_order.py pins the order.
    def __init__(  # noqa: PLR0917
        self,
        saga: Saga[Any],
        store: Store,
        record: RunRecord,
        lease: Lease,
        progress: core.Progress,
        clock: Clock,
        random: Callable[[], float],
        executor: Executor,
        commit_patience: float,
        park_after: float | None = None,
        lingering: LingeringCalls | None = None,
        hang_grace: float = 30.0,
        failures: Failures | None = None,
        lease_seconds: float | None = None,
        leased_at: float | None = None,
        observers: Observers | None = None,
    ) -> None:
        self.saga = saga
        self.failures = failures
        self.store = store
        self.record = record
        self.progress = progress
        self.plan = saga.plan()
        self.clock = clock
        self.random = random
        self.park_after = park_after
        """Give the run back instead of waiting on a retry timer longer than this
        (seconds); None waits here however long (what `AsyncEngine.run` wants)."""
        self.hang_grace = hang_grace
        """Seconds a timed-out call still running may hold up the next call of its step."""
        self.lease_seconds = lease_seconds
        """How long a lease taken or renewed lasts; None: the drive never checks it."""
        self.lease_known_until = (
            math.inf
            if lease_seconds is None
            else (time.monotonic() if leased_at is None else leased_at) + lease_seconds
        )
        """When (`time.monotonic`) the lease lapses at the earliest: the time the
        last claim or renewal that took it was *sent*, plus `lease_seconds`. A
        measure of this host alone, whatever its clock of the day says."""
        # A call starts only while at least half a lease is left (see `_lease_for_calls`).
        self._calls_until = self.lease_known_until - self._lease_margin()
        self.halted: Event | None = None
        """The ``needs_attention`` event, when the drive ended on one."""
        self.handed_back: Literal["timer", "stop"] | None = None
        """Why the drive released a run that is still active: it was parked on a
        retry timer (``park_after``), or a stop was requested."""
        self._on_stored: Callable[[Driver], None] | None = None
        self.loop: asyncio.AbstractEventLoop
        """The event loop of the drive (set when `drive` starts)."""
        # Positional, in the order of the parameters: made for every run.
        self._caller = StepCaller(saga, store, record.id, progress, clock, executor, lingering)
        self._writer = RunWriter(
            store,
            record,
            lease,
            self.plan,
            progress,
            clock,
            commit_patience,
            self._caller.in_thread,
            observers,
            saga.sensitive,
        )
        # The calls running now (only when more than one runs, or one beside a timer).
        self._running: dict[tuple[Phase, str], asyncio.Task[Outcome]] = {}
        # A plain flag, and futures made only while something waits on them: a
        # worker holds thousands of drivers, most of which never wait for either.
        self._stop_requested = False
        self._stop_waiter: asyncio.Future[None] | None = None
        self._woken: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Driver of run {self.record.id!r} ({self.saga.name})>"

    # -- what the engine reads and sets -------------------------------------------

    @property
    def run_id(self) -> str:
        """The id of the run being driven."""
        return self.record.id

    @property
    def lease(self) -> Lease:
        """The lease the run is held under.

        The engine may set a newer one of its own before the drive starts.
        """
        return self._writer.lease

    @lease.setter
    def lease(self, lease: Lease) -> None:
        self._writer.lease = lease

    @property
    def lost(self) -> bool:
        """Whether the run's lease was found taken by another process.

        Set by the engine's heartbeat when a renewal fails, and by the drive
        when a commit is fenced out; the next commit first checks whether it
        was this same process that took the run again (see `adopt`).
        """
        return self._writer.lease_lost

    @lost.setter
    def lost(self, lost: bool) -> None:
        self._writer.lease_lost = lost

    @property
    def released(self) -> bool:
        """Whether the run's lease has been given up (the run is no longer ours)."""
        return self._writer.hold is _RELEASED

    @property
    def unborn(self) -> bool:
        """Whether the run is not stored yet.

        Then the first flush creates it with its events (see `create_with`).
        """
        return self._writer.hold is _UNBORN

    @property
    def over(self) -> bool:
        """Whether `drive` has returned or raised: nothing more is written."""
        return self._writer.closed

    @property
    def mail_waiting(self) -> bool:
        """Whether the store said mail waits for the run that this drive has not read."""
        return self._writer.mail_waiting

    @property
    def stopping(self) -> bool:
        """Whether `request_stop` was called."""
        return self._stop_requested

    @property
    def on_stored(self) -> Callable[[Driver], None] | None:
        """Called with this driver once the first flush has stored the run (see `create_with`)."""
        return self._on_stored

    @on_stored.setter
    def on_stored(self, on_stored: Callable[[Driver], None] | None) -> None:
        self._on_stored = on_stored
        # The writer holds this driver only until it calls back or the drive
        # ends, so that a driver is freed by reference counting, not left to
        # the garbage collector in a cycle (which costs every run).
        self._writer.on_stored = None if on_stored is None else partial(on_stored, self)

    @property
    def redactor(self) -> Callable[[], Redactor] | None:
        """Makes the run's `Redactor` as it stands; None if its saga marks nothing sensitive."""
        return self._caller.redactor

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """The run's logger (made when something is logged, which is seldom)."""
        return run_logger(
            self.record.id,
            self.saga.name,
            version=self.saga.version,
            redactor=self.redactor,
        )

    def create_with(self, first: Event) -> None:
        """Have the first flush create the run, with ``first`` and what follows.

        ``first`` is already applied. So a run started here costs no write of
        its own: it is created with the write-ahead record of its first step.
        Should the id turn out to be taken, the flush raises `RunExists`
        before anything has run.
        """
        self._writer.create_with(first)

    def adopt(self, claimed: RunRecord) -> bool:
        """Carry on under the lease of ``claimed``; whether it did.

        ``claimed`` is this same run, just claimed again by this drive's own
        process. When renewals fall behind the lease (a process busy with many
        runs), the lease lapses and the process's next claim may take the run
        again, at the next epoch. A second drive would fence this one out and
        run its step in flight once more; instead this drive takes the new
        lease, and its next commit is made under it. Refused (False) unless
        nobody else held the run in between (the epoch is the very next one)
        and this drive still holds it (not over, not released).
        """
        if not self._writer.adopt(claimed):
            return False
        if claimed.mail > 0:
            resolve(self._woken)
        return True

    def renewed(self, sent_at: float) -> None:
        """Know that a renewal sent at ``sent_at`` (`time.monotonic`) renewed the lease."""
        if self.lease_seconds is not None:
            self.lease_known_until = max(self.lease_known_until, sent_at + self.lease_seconds)
            self._calls_until = self.lease_known_until - self._lease_margin()

    def request_stop(self) -> None:
        """Ask the drive to end soon, leaving the run to another process.

        No new step or compensation call starts; the calls already running
        finish and their outcomes are recorded; then the run is released
        (keeping its retry timer, if it was waiting on one) and `drive`
        returns. Must be called on the driver's event loop.
        """
        self._stop_requested = True
        resolve(self._stop_waiter)
        resolve(self._woken)

    def poke(self) -> None:
        """Tell the drive that mail was posted for its run (it reads it soon).

        Must be called on the driver's event loop.
        """
        self._writer.mail_waiting = True
        resolve(self._woken)

    def append(
        self,
        kind: EventKind,
        *,
        step: str | None = None,
        attempt: int | None = None,
        data: JSON | None = None,
    ) -> Event:
        """Record an event in memory; it reaches the store with the next flush."""
        return self._writer.append(kind, step, attempt, data)

    async def hand_back(self, wake_at: float) -> None:
        """Release a run claimed but not driven, with ``wake_at`` as its timer.

        Raises:
            LeaseLost: another process holds the run's lease.
            StoreError: the store failed past the commit patience.
        """
        await self._writer.flush(release=True, wake_at=wake_at)

    async def journal_alert(self, kind: EventKind, attempt: int, data: JSON) -> Event:
        """Journal how a try at the run's alert went (``alert_sent``, ``alert_failed``), release.

        For a run claimed to record its alert (it is not driven). The run
        keeps the alert's next try as its timer, if one is still owed.

        Raises:
            LeaseLost: another process holds the run's lease.
            StoreError: the store failed past the commit patience.
        """
        writer = self._writer
        event = writer.append(kind, None, attempt, data)
        await writer.flush(release=True, wake_at=self.progress.alert_due)
        return event

    def settled_record(self) -> RunRecord | None:
        """The run's row as this drive's last commit left it, if known here.

        Known if that commit released the run settled for now with no mail
        waiting. Otherwise the row may have moved on and only the store knows
        it: the run was handed on or lost, mail came in, or it halted for
        attention (the engine's attention hook may act on it once the drive is
        over).
        """
        if self.handed_back is not None or self.halted is not None:
            return None
        return self._writer.settled_record()

    def settled_commit(self) -> Commit | None:
        """The commit that left the run's row as `settled_record` says, if known here.

        The row is then ``record`` (the run's id, saga, version and
        ``created_at``) with the commit's status, state, error and time as
        ``updated_at``, no owner and no mail: for a caller that wants the
        row's fields without a `RunRecord` made for them.
        """
        if self.handed_back is not None or self.halted is not None:
            return None
        return self._writer.settled_commit()

    # -- the drive ------------------------------------------------------------------

    async def drive(self) -> None:
        """Run the saga forward or backward until nothing is left to do now.

        Raises:
            LeaseLost: another process took the run over (nothing more is written).
            StoreError: the store failed past the commit patience.
            EncryptionError: the run's mail is encrypted and the store has no key.
            RunExists: the run to be created (`create_with`) was stored already.
        """
        self.loop = self._caller.loop = asyncio.get_running_loop()
        # What is logged during the drive (by sagakit, by the steps, by their
        # libraries) says which run it is about, and masks its sensitive values.
        # tuple.__new__ skips the generated __new__ (a Python call), and the
        # caller's redactor is read without the property that reads it here:
        # made for every drive.
        saga = self.saga
        fields = _new_tuple(
            RunFields,
            (self.record.id, saga.name, saga.version, None, None, None, self._caller.redactor),
        )
        token = runlog.bind(fields)
        try:
            await self._loop()
        except LeaseLost as exc:
            self._writer.lease_lost = True
            if not isinstance(exc, LeaseLapsed):  # which says so itself
                self.log.warning("run %s: lease lost to another process; dropping it", self.run_id)
            raise
        except StoreError as exc:
            if self._writer.hold is _UNBORN or isinstance(exc, EncryptionError):
                # Nothing was stored, nothing ran: a failed start; or mail this
                # process has no key for (it says so itself).
                raise
            self.log.error("run %s: the store failed: %s", self.run_id, exc)
            raise StoreError(
                f"run {self.run_id!r} stopped: {exc}. Everything recorded before is kept; "
                "the run resumes from its journal (engine.recover() or `sagakit recover`) "
                "once the database answers again"
            ) from exc
        finally:
            self._writer.closed = True
            self._writer.on_stored = None  # see `on_stored`
            for task in self._running.values():
                task.cancel()
            if self._stop_waiter is not None:
                self._stop_waiter.cancel()
            runlog.unbind(token)

    def _stopped(self) -> asyncio.Future[Any]:
        """A future done once a stop is requested, to wait on beside other things."""
        if self._stop_waiter is None:
            self._stop_waiter = self.loop.create_future()
            if self._stop_requested:
                self._stop_waiter.set_result(None)
        return self._stop_waiter

    async def _loop(self) -> None:
        # Bound once: these are used at every step.
        writer = self._writer
        append = writer.append
        # A clock whose hold does nothing (the system clock's) is not held.
        caller = self._caller
        unheld = caller.holds_nothing
        flush = writer.flush_unheld if unheld else writer.flush
        run_call = caller.run_unheld if unheld else caller.run
        bind_call = self._caller.bind
        unbind = runlog.unbind_fields
        plan = self.plan
        progress = self.progress
        running = self._running
        clock = self.clock
        lingering = self._caller.lingering.runs
        run_id = self.run_id
        monotonic = time.monotonic
        while True:
            if writer.mail_waiting and not self._stop_requested:
                await self._read_mail()
            if progress.deadline is not None:
                self._check_deadline()
            decision = decide(plan, progress, running.keys())
            transition = decision.transition
            if transition is not None:
                if transition.kind is _RUN_FINISHED and self._caller.taken:
                    # The commit that finishes the run frees its reservations.
                    for mark in self._caller.finished():
                        append(*mark)
                event = append(transition.kind, transition.step, None, transition.data)
                if transition.kind is _NEEDS_ATTENTION:
                    # The alert is owed in this same commit: its timer makes the
                    # run due for whoever delivers it, should this process die.
                    await flush(release=True, wake_at=progress.alert_due)
                    self.halted = event  # the engine alerts once this drive is over
                    return
                if transition.kind is _RUN_FINISHED:
                    await flush(release=True)
                    return
                self._log_transition(event)
                continue
            now = clock()
            stopping = self._stop_requested
            invoke = decision.invoke
            # Tuples, not lists: they stay alive while the run waits for its
            # commit, and every object a thousand waiting runs keep alive is
            # one more for the garbage collector to visit.
            ready = (
                invoke
                if len(invoke) == 1 and invoke[0].not_before is None
                else tuple([c for c in invoke if c.not_before is None or c.not_before <= now])
            )
            due = () if stopping else ready  # once asked to stop, start nothing new
            if due and lingering and run_id in lingering:  # seldom: a timed-out call runs on
                due, hung = await self._unhung(due)
                if self._stop_requested:
                    continue  # asked to stop while waiting: start nothing
                if hung is not None and not due and not running:
                    await self._halt_hung(*hung)
                    return
            for call in due:
                append(STARTED[call.phase], call.step, call.attempt)
            await flush()  # write-ahead: the attempt is durable before it runs
            if due and writer.mail_waiting and await self._withdrawn(due):
                continue
            if due and monotonic() > self._calls_until:
                await self._lease_for_calls(due)  # seldom: renewals are failing
            later: Sequence[float] = (
                [c.not_before for c in invoke if c not in ready and c.not_before]
                if len(ready) < len(invoke)
                else ()
            )
            if len(due) == 1 and not running and not later:
                # The common, sequential case: no task or wait set is needed,
                # and a plain success is recorded without a coroutine.
                token = bind_call(due[0])  # what is logged during the call names it
                outcome = await run_call(due[0], True)  # alone: see `run_unheld`
                unbind(token)  # (on an exception, the drive's own unbind restores all)
                # Let go of now, not when the next call rebinds it: while the
                # run waits for its commit, whatever this frame holds lives on,
                # one more object for the garbage collector to walk.
                del token
                if (
                    outcome.error is None
                    and outcome.pause is None
                    and outcome.transaction is None
                    and outcome.reserved is None
                ):
                    # `succeeded(outcome)` written out: a call less at every step.
                    made = outcome.call
                    merged = outcome.merged
                    append(
                        SUCCEEDED[made.phase],
                        made.step,
                        made.attempt,
                        {"result": outcome.result}
                        if merged is None
                        else {"result": outcome.result, "state": merged},
                    )
                else:
                    await self._record(outcome)
                del outcome  # as the token above
                continue
            for call in due:
                token = bind_call(call)  # the task takes a copy of the context
                running[(call.phase, call.step)] = asyncio.ensure_future(run_call(call))
                unbind(token)
            if not running:
                if stopping and decision.invoke:
                    # Hand the run back; keep its timer unless a call is due now,
                    # so the next owner neither waits for nothing nor starts early.
                    self.handed_back = "stop"
                    timers = [*later, *filter(None, [self._deadline_timer()])]
                    await flush(release=True, wake_at=None if ready else min(timers))
                    return
                deadline = self._deadline_timer()
                if not later:
                    # Nothing running and nothing to do: the run is settled (or
                    # paused, and then its deadline is its timer; or it needs
                    # attention, and then its owed alert, if any, is).
                    paused = progress.status is RunStatus.PAUSED
                    await flush(release=True, wake_at=deadline if paused else progress.alert_due)
                    return
                wake_at = min(later) if deadline is None else min(*later, deadline)
                if self.park_after is not None and wake_at - clock() > self.park_after:
                    # A long wait holds no lease: the store keeps the timer, and
                    # whichever worker is free when it is due carries on.
                    self.handed_back = "timer"
                    await flush(release=True, wake_at=wake_at)
                    return
                await flush(wake_at=wake_at)  # a durable timer, should this process die
                await self._sleep(wake_at)
                continue
            waiting: set[asyncio.Future[Any]] = set(running.values())
            if not stopping:  # once stopping, only the running calls matter
                waiting.add(self._stopped())
            if later:
                # A timer beside the running calls: it is the clock's to wait
                # on (the calls keep a skipping clock from skipping meanwhile).
                await clock.sleep_until(min(later), waiting)
                done = {task for task in waiting if task.done()}
            else:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is self._stop_waiter:
                    continue
                outcome = task.result()
                del running[(outcome.call.phase, outcome.call.step)]
                await self._record(outcome)

    def _lease_margin(self) -> float:
        """The lease left below which no call starts until a renewal lands (half a lease)."""
        return 0.0 if self.lease_seconds is None else self.lease_seconds / 2

    async def _lease_for_calls(self, due: Sequence[core.Invoke]) -> None:
        """Wait for a renewal before starting ``due``; give the run up if none lands in time.

        A call started this close to the lease's end could still be running
        when another process, finding the lease lapsed, starts it again. The
        calls are journaled as started but not made: the next owner makes
        them, as after a crash, and alone.

        Raises:
            LeaseLapsed: the lease lapsed (as far as this host can tell) first.
            LeaseLost: a renewal found the run taken.
        """
        while time.monotonic() > self._calls_until:
            if self._writer.lease_lost:
                raise LeaseLost(self.run_id)
            left = self.lease_known_until - time.monotonic()
            if left <= 0:
                steps = ", ".join(repr(call.step) for call in due)
                reason = "the store could not be reached to renew it"
                self.log.warning(
                    "run %s: %s before the lease lapsed; not calling %s here: the "
                    "process that takes the run over calls it",
                    self.run_id,
                    reason,
                    steps,
                )
                raise LeaseLapsed(self.run_id, reason)
            with self.clock.busy():  # real time: a lease is this host's measure
                await asyncio.sleep(min(left, 0.05))

    async def _record(self, outcome: Outcome) -> None:
        """Journal how a call ended (a success in a local transaction is committed in it)."""
        writer = self._writer
        if self._caller.marks:  # what its reservations went through, first
            for mark in self._caller.take_marks():
                writer.append(*mark)
        pause = outcome.pause
        if pause is not None:
            writer.append(*outcomes.paused(outcome, pause, self.log, self.run_id))
            return
        if outcome.error is None and outcome.reserved:
            # Its success stands only if the run still holds what it reserved
            # (checked in the commit that records it); if not, another run may
            # have acted on the same names meanwhile: its outcome is unknown.
            lapse = await writer.commit_requiring(succeeded(outcome), tuple(outcome.reserved))
            if lapse is None:
                return
            outcome = self._caller.lapsed(outcome, lapse)
            for mark in self._caller.take_marks():
                writer.append(*mark)
        elif outcome.error is None:
            writer.append(*succeeded(outcome))
            if outcome.transaction is not None:
                await writer.flush(via=outcome.transaction)
            return
        entries = await outcomes.failed(
            outcome,
            saga=self.saga,
            plan=self.plan,
            progress=self.progress,
            clock=self.clock,
            random=self.random,
            ask=self._caller.ask,
            log=self.log,
            run_id=self.run_id,
        )
        for entry in entries:
            writer.append(*entry)
        failures, exception, error = self.failures, outcome.exception, outcome.error
        if failures is not None and exception is not None and error is not None:
            data = entries[0][3] or {}
            if data.get("retry_at") is None:  # failed for good: it may become the run's error
                failures.remember(self.run_id, error, exception)

    async def _unhung(
        self, due: tuple[core.Invoke, ...]
    ) -> tuple[tuple[core.Invoke, ...], tuple[core.Invoke, Lingering] | None]:
        """Wait, up to the hang grace, for timed-out calls of ``due``'s steps to return.

        No call of a step may overlap an earlier one still running. Returns
        the calls free to start and, if any is not, the first such call
        with the timed-out call it waits for.
        """
        calls = self._caller.lingering.runs.get(self.run_id, {})
        blocking = {c: calls[c.step] for c in due if c.step in calls}
        if not blocking:
            return due, None
        loop = self.loop
        pending = {held.future for held in blocking.values() if not held.future.done()}
        give_up = max(held.timed_out_at for held in blocking.values()) + self.hang_grace
        if pending and give_up > loop.time():
            self.log.warning(
                "run %s: waiting up to %.3gs for a timed-out call of step %s to return "
                "before the next",
                self.run_id,
                give_up - loop.time(),
                " and ".join(repr(c.step) for c in blocking),
            )
        while pending and not self._stop_requested and give_up > loop.time():
            # Real time, and busy: the hung call really runs on (a thread, say),
            # and a skipping clock must not pass time over it.
            with self.clock.busy():
                _, pending = await asyncio.wait(
                    {*pending, self._stopped()},
                    timeout=give_up - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            pending.discard(self._stopped())
        hung = [(c, held) for c, held in blocking.items() if not held.future.done()]
        if not hung:
            return due, None
        stuck = {c for c, _ in hung}
        return tuple(c for c in due if c not in stuck), hung[0]

    async def _halt_hung(self, call: core.Invoke, held: Lingering) -> None:
        """Halt the run for attention: ``call`` cannot start while ``held`` still runs."""
        what = f"{held.phase.value} of step {call.step!r} (attempt {held.attempt})"
        then = f"attempt {call.attempt}" if held.phase is call.phase else f"its {call.phase.value}"
        where = (
            "(its coroutine ignored the cancellation)"
            if isinstance(held.future, asyncio.Task)
            else "on its thread"
        )
        reason = (
            f"the timed-out {what} is still running {where} {self.hang_grace:g}s after its "
            f"timeout; {then} cannot start before it returns"
        )
        self.log.error(
            "run %s: %s",
            self.run_id,
            reason,
            extra=runlog.at(call.step, call.phase.value, call.attempt),
        )
        event = self._writer.append(
            EventKind.NEEDS_ATTENTION,
            call.step,
            None,
            {
                "phase": call.phase.value,
                "reason": reason,
                "error": held.error,
                "hung": {"phase": held.phase.value, "attempt": held.attempt},
            },
        )
        await self._writer.flush(release=True)
        self.halted = event  # the engine alerts once this drive is over

    async def _read_mail(self) -> None:
        """Journal what the run's unread mail does; the next commit consumes it."""
        writer = self._writer
        for message in await writer.unread_mail():
            entries = await mail.take(
                message,
                saga=self.saga,
                plan=self.plan,
                progress=self.progress,
                clock=self.clock,
                ask=self._caller.ask,
                log=self.log,
            )
            for entry in entries:
                writer.append(*entry)

    async def _withdrawn(self, calls: Sequence[core.Invoke]) -> bool:
        """Read mail that came with the write-ahead commit, before making the calls.

        A cancel posted while the previous step ran is seen here, when the
        next step is journaled but not yet called: that call is withdrawn, so
        the run stops after the step that was under way, not one step later.
        """
        await self._read_mail()
        if self.progress.cancel is None:
            return False
        for entry in mail.withdrawals(calls):
            self._writer.append(*entry)
        return True

    async def _sleep(self, until: float) -> None:
        """Wait for a timer, a stop request or mail, whichever comes first."""
        if self._writer.mail_waiting:
            return
        woken = self._woken = self.loop.create_future()
        try:
            await self.clock.sleep_until(until, (self._stopped(), woken))
        finally:
            self._woken = None
            woken.cancel()

    def _deadline_timer(self) -> float | None:
        """The run's deadline, if it still applies (going forward, not yet passed)."""
        progress = self.progress
        if (
            progress.deadline is None
            or progress.deadline_passed
            or progress.reason is not None
            or progress.status.terminal
            or progress.status is RunStatus.NEEDS_ATTENTION
        ):
            return None
        return progress.deadline

    def _check_deadline(self) -> None:
        deadline = self._deadline_timer()
        if deadline is not None and self.clock() >= deadline:
            self.log.warning("run %s: its deadline passed", self.run_id)
            self._writer.append(EventKind.DEADLINE_PASSED, data={"deadline": deadline})

    def _log_transition(self, event: Event) -> None:
        if event.kind is EventKind.ROLLBACK_STARTED:
            why = {
                core.CANCEL: "it was cancelled",
                core.DEADLINE: "its deadline passed",
            }.get(str(event.data.get("reason")), f"step {event.step!r} failed for good")
            self.log.warning(
                "run %s: %s; compensating", self.run_id, why, extra=runlog.at(event.step)
            )

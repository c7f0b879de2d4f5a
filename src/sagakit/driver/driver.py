"""The driver: carries out the core's decisions for one run.

It asks `sagakit.core.decide.decide` what to do, journals each call before making it
(write-ahead), runs the user's function, journals the outcome, and asks again.
Outcomes and the next write-ahead record share one commit, so a sequential
saga costs one commit per step, and the store may batch the commits of many
runs together (group commit).

Beside it: how a call is made (`driver_calls`), how its outcome is journaled
(`driver_outcomes`), the run's mail (`driver_mail`) and its commits
(`driver_commits`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sagakit import core
from sagakit.context import run_logger
from sagakit.core import decide
from sagakit.definition import Saga
from sagakit.driver.calls import Outcome, resolve, run_call
from sagakit.driver.mail import read_mail, withdrawn
from sagakit.driver.outcomes import record_outcome, record_success
from sagakit.driver.writer import flush
from sagakit.errors import LeaseLost, ReservationBusy, SagaError, StoreError
from sagakit.journal import JSON, STARTED, Event, EventKind, Phase, RunStatus
from sagakit.store import Commit, Lease, Reservation, RunRecord, Store

Clock = Callable[[], float]


@dataclass(eq=False, slots=True)
class Driver:
    """Drives one claimed run until it settles, halts for a person, is parked on
    a timer, is asked to stop, or its lease is lost."""

    saga: Saga[Any]
    store: Store
    record: RunRecord
    lease: Lease
    progress: core.Progress
    clock: Clock
    random: Callable[[], float]
    executor: Executor
    commit_patience: float
    """Seconds to keep retrying a commit the store refused for a passing reason."""
    plan: core.Plan = field(init=False)
    park_after: float | None = None
    """Give the run back instead of waiting on a retry timer longer than this
    (seconds); None waits here however long (what `AsyncEngine.run` wants)."""
    lost: bool = False
    over: bool = False
    """`drive` has returned or raised: nothing more is written."""
    halted: Event | None = None
    """The ``needs_attention`` event, when the drive ended on one."""
    released: bool = False
    """Whether the run's lease has been given up (the run is no longer ours)."""
    handed_back: Literal["timer", "stop"] | None = None
    """Why the drive released a run that is still active: it was parked on a
    retry timer (``park_after``), or a stop was requested."""
    mail_waiting: bool = False
    """The store said mail waits for the run that this drive has not read."""
    unborn: bool = False
    """The run is not stored yet: the first flush creates it with its events
    (see `create_with`)."""
    on_stored: Callable[[Driver], None] | None = None
    """Called once the first flush has stored the run."""
    loop: asyncio.AbstractEventLoop = field(init=False)
    _buffer: list[Event] = field(default_factory=list)
    _mail_read: list[int] = field(default_factory=list)
    _in_local_transaction: bool = False
    _running: dict[tuple[Phase, str], asyncio.Task[Outcome]] = field(default_factory=dict)
    _lingering: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # Plain flags, and futures made only while something waits on them: a
    # worker holds thousands of drivers, most of which never wait for either.
    _stop_requested: bool = False
    _stop_waiter: asyncio.Future[None] | None = None
    _woken: asyncio.Future[None] | None = None
    # What the run's row holds now (only the lease holder changes these):
    # the claim this drive started from, then this drive's last commit.
    _row_status: str = ""
    _row_wake_at: float | None = None
    # The last commit, once it released the run (see `settled_record`); the
    # others are let go as soon as they land, with their events.
    _last_commit: Commit | None = None

    def __post_init__(self) -> None:
        self.plan = self.saga.plan()
        self.mail_waiting = self.record.mail > 0
        self._row_status = self.record.status
        self._row_wake_at = self.record.wake_at

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """The run's logger (made when something is logged, which is seldom)."""
        return run_logger(self.record.id, self.saga.name)

    def create_with(self, first: Event) -> None:
        """Have the first flush store the run, ``first`` (already applied) and
        what follows it together, instead of committing to a stored run.

        So a run started here costs no write of its own: it is created with
        the write-ahead record of its first step. Should the id turn out to be
        taken, the flush raises `RunExists` before anything has run.
        """
        self.unborn = True
        self._buffer = [first]

    def adopt(self, claimed: RunRecord) -> bool:
        """Carry on under the lease of ``claimed``: this same run, just claimed
        again by this drive's own process. Returns whether it did.

        When renewals fall behind the lease (a process busy with many runs),
        the lease lapses and the process's next claim may take the run again,
        at the next epoch. A second drive would fence this one out and run its
        step in flight once more; instead this drive takes the new lease, and
        its next commit is made under it. Refused (False) unless nobody else
        held the run in between (the epoch is the very next one) and this
        drive still holds it (not over, not released).
        """
        if (
            self.over
            or self.released
            or claimed.owner != self.lease.owner
            # The same epoch: adopted already (see `driver_commits._reclaimed_here`).
            or claimed.lease_epoch not in (self.lease.epoch, self.lease.epoch + 1)
        ):
            return False
        self.lease = Lease(self.lease.owner, claimed.lease_epoch)
        self.lost = False  # a renewal under the old lease may have said so
        if claimed.mail > 0:
            self.mail_waiting = True
            resolve(self._woken)
        return True

    @property
    def run_id(self) -> str:
        """The id of the run being driven."""
        return self.record.id

    @property
    def stopping(self) -> bool:
        """Whether `request_stop` was called."""
        return self._stop_requested

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
        self.mail_waiting = True
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
        # Positional: this runs twice per step, and keywords cost a frozen
        # dataclass half as much again. (Order: run_id, seq, kind, at, step,
        # attempt, data.)
        event = Event(
            self.record.id,
            self.progress.last_seq + 1,
            kind,
            self.clock(),
            step,
            attempt,
            data if data is not None else {},
        )
        core.apply(self.plan, self.progress, event)
        self._buffer.append(event)
        return event

    def settled_record(self) -> RunRecord | None:
        """The run's row as this drive's last commit left it, if that commit
        released the run settled for now with no mail waiting.

        Otherwise the row may have moved on and only the store knows it: the
        run was handed on or lost, mail came in, or it halted for attention
        (the engine's attention hook may act on it once the drive is over).
        """
        commit = self._last_commit
        if (
            commit is None
            or not self.released
            or self.lost
            or self.mail_waiting
            or self.handed_back is not None
            or self.halted is not None
        ):
            return None
        return replace(
            self.record,
            status=commit.status,
            state=commit.state,
            error=commit.error,
            updated_at=commit.at,
            owner=None,
            lease_epoch=self.lease.epoch,
            lease_until=None,
            wake_at=commit.wake_at,
            last_seq=self.progress.last_seq,
            mail=0,
        )

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.loop.run_in_executor(self.executor, fn, *args)

    async def drive(self) -> None:
        """Run the saga forward or backward until nothing is left to do now.

        Raises:
            LeaseLost: another process took the run over (nothing more is written).
        """
        self.loop = asyncio.get_running_loop()
        try:
            await self._loop()
        except LeaseLost:
            self.lost = True
            self.log.warning("run %s: lease lost to another process; dropping it", self.run_id)
            raise
        except StoreError as exc:
            if self.unborn:
                raise  # nothing was stored, nothing ran: a failed start
            self.log.error("run %s: the store failed: %s", self.run_id, exc)
            raise StoreError(
                f"run {self.run_id!r} stopped: {exc}. Everything recorded before is kept; "
                "the run resumes from its journal (engine.recover() or `sagakit recover`) "
                "once the database answers again"
            ) from exc
        finally:
            self.over = True
            for task in self._running.values():
                task.cancel()
            if self._stop_waiter is not None:
                self._stop_waiter.cancel()

    def _stopped(self) -> asyncio.Future[Any]:
        """A future done once a stop is requested, to wait on beside other things."""
        if self._stop_waiter is None:
            self._stop_waiter = self.loop.create_future()
            if self._stop_requested:
                self._stop_waiter.set_result(None)
        return self._stop_waiter

    async def _loop(self) -> None:
        while True:
            if self.mail_waiting and not self._stop_requested:
                await read_mail(self)
            if self.progress.deadline is not None:
                self._check_deadline()
            decision = decide(self.plan, self.progress, self._running.keys())
            transition = decision.transition
            if transition is not None:
                event = self.append(transition.kind, step=transition.step, data=transition.data)
                if transition.kind is EventKind.NEEDS_ATTENTION:
                    await flush(self, release=True)
                    self.halted = event  # the engine alerts once this drive is over
                    return
                if transition.kind is EventKind.RUN_FINISHED:
                    await flush(self, release=True)
                    return
                self._log_transition(event)
                continue
            now = self.clock()
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
            for call in due:
                self.append(STARTED[call.phase], step=call.step, attempt=call.attempt)
            await flush(self)  # write-ahead: the attempt is durable before it runs
            if due and self.mail_waiting and await withdrawn(self, due):
                continue
            later: Sequence[float] = (
                [c.not_before for c in invoke if c not in ready and c.not_before]
                if len(ready) < len(invoke)
                else ()
            )
            if len(due) == 1 and not self._running and not later:
                # The common, sequential case: no task or wait set is needed,
                # and a plain success is recorded without a coroutine.
                outcome = await run_call(self, due[0])
                if outcome.error is None and outcome.pause is None and outcome.transaction is None:
                    record_success(self, outcome)
                else:
                    await record_outcome(self, outcome)
                continue
            for call in due:
                self._running[(call.phase, call.step)] = asyncio.ensure_future(run_call(self, call))
            if not self._running:
                if stopping and decision.invoke:
                    # Hand the run back; keep its timer unless a call is due now,
                    # so the next owner neither waits for nothing nor starts early.
                    self.handed_back = "stop"
                    timers = [*later, *filter(None, [self._deadline_timer()])]
                    await flush(self, release=True, wake_at=None if ready else min(timers))
                    return
                deadline = self._deadline_timer()
                if not later:
                    # Nothing running and nothing to do: the run is settled (or
                    # paused, and then its deadline is its timer).
                    paused = self.progress.status is RunStatus.PAUSED
                    await flush(self, release=True, wake_at=deadline if paused else None)
                    return
                wake_at = min(later) if deadline is None else min(*later, deadline)
                if self.park_after is not None and wake_at - self.clock() > self.park_after:
                    # A long wait holds no lease: the store keeps the timer, and
                    # whichever worker is free when it is due carries on.
                    self.handed_back = "timer"
                    await flush(self, release=True, wake_at=wake_at)
                    return
                await flush(self, wake_at=wake_at)  # a durable timer, should this process die
                await self._sleep(wake_at)
                continue
            timeout = max(0.0, min(later) - self.clock()) if later else None
            waiting: set[asyncio.Future[Any]] = set(self._running.values())
            if not stopping:  # once stopping, only the running calls matter
                waiting.add(self._stopped())
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is self._stop_waiter:
                    continue
                outcome = task.result()
                del self._running[(outcome.call.phase, outcome.call.step)]
                await record_outcome(self, outcome)

    async def _sleep(self, until: float) -> None:
        """Wait for a timer, a stop request or mail, whichever comes first."""
        if self.mail_waiting:
            return
        woken = self._woken = self.loop.create_future()
        try:
            await asyncio.wait(
                {self._stopped(), woken},
                timeout=max(0.0, until - self.clock()),
                return_when=asyncio.FIRST_COMPLETED,
            )
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
            self.append(EventKind.DEADLINE_PASSED, data={"deadline": deadline})

    # -- reservations (`StepContext.reserve`) ---------------------------------------

    async def reserve(self, name: str, *, ttl: float, wait: float) -> Reservation:
        """Take or refresh a reservation for this run, waiting up to ``wait`` seconds."""
        if not (ttl > 0 and wait >= 0):
            raise SagaError(f"reserve({name!r}): ttl must be positive and wait not negative")
        if self._in_local_transaction:
            # On SQLite the step's transaction holds the write lock that the
            # reservation needs: it would wait for itself. Refused on every store alike.
            raise SagaError(
                f"reserve({name!r}) inside a local-transaction step: reserve in the step before it"
            )
        give_up = time.monotonic() + wait
        pause = 0.02
        while True:
            now = self.clock()
            held = await self.store.reserve(name, run_id=self.run_id, now=now, expires_at=now + ttl)
            if held.run_id == self.run_id:
                return held
            left = give_up - time.monotonic()
            if left <= 0:
                raise ReservationBusy(name, held.run_id, held.expires_at)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)

    async def release(self, names: Sequence[str] | None) -> int:
        """Free this run's reservations (only ``names`` if given)."""
        return await self.store.release_reservations(self.run_id, names)

    def _log_transition(self, event: Event) -> None:
        if event.kind is EventKind.ROLLBACK_STARTED:
            why = {
                core.CANCEL: "it was cancelled",
                core.DEADLINE: "its deadline passed",
            }.get(str(event.data.get("reason")), f"step {event.step!r} failed for good")
            self.log.warning("run %s: %s; compensating", self.run_id, why)

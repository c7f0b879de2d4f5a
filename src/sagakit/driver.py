"""The driver: carries out the core's decisions for one run.

It asks `sagakit.decide.decide` what to do, journals each call before making it
(write-ahead), runs the user's function, journals the outcome, and asks again.
Outcomes and the next write-ahead record share one commit, so a sequential
saga costs one commit per step, and the store may batch the commits of many
runs together (group commit).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextvars import copy_context
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from sagakit import core
from sagakit.context import StepContext, idempotency_key, run_logger
from sagakit.control import Next, Pause, Signal
from sagakit.decide import decide
from sagakit.definition import Saga
from sagakit.errors import (
    LeaseLost,
    PermanentError,
    ReservationBusy,
    SagaError,
    StateError,
    StoreError,
)
from sagakit.journal import (
    FAILED,
    JSON,
    STARTED,
    SUCCEEDED,
    ErrorInfo,
    Event,
    EventKind,
    Phase,
    RunStatus,
)
from sagakit.jsonutil import to_jsonable
from sagakit.step import Handler
from sagakit.store.base import (
    Commit,
    Lease,
    LocalTransaction,
    Mail,
    Reservation,
    RunRecord,
    Store,
)

Clock = Callable[[], float]

# How many of the latest compensation errors the run's row keeps.
_ROW_ERRORS = 50


class RunExists(Exception):
    """The run a drive was to create was already stored: nothing was run."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(record.id)
        self.record = record


@dataclass(slots=True)
class Outcome:
    """How one call ended."""

    call: core.Invoke
    result: JSON | None = None
    merged: JSON | None = None
    """What of ``result`` goes into the state, when the state model keeps less."""
    error: ErrorInfo | None = None
    permanent: bool = False
    unknown: bool = False
    pause: Pause | None = None
    """The action asked to pause the run."""
    transaction: LocalTransaction | None = None
    """A local transaction left open for the success record to commit in."""


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
            # The same epoch: adopted already (see `_reclaimed_here`).
            or claimed.lease_epoch not in (self.lease.epoch, self.lease.epoch + 1)
        ):
            return False
        self.lease = Lease(self.lease.owner, claimed.lease_epoch)
        self.lost = False  # a renewal under the old lease may have said so
        if claimed.mail > 0:
            self.mail_waiting = True
            _resolve(self._woken)
        return True

    async def _reclaimed_here(self) -> bool:
        """Whether the lease this drive lost went to its own process (then
        adopted here), rather than to another.

        The answer to the claim that took the run again may reach this
        process after the renewal or commit that found the old lease gone (on
        PostgreSQL they travel on different connections); the run's row
        already tells. One read, and only once the lease is found lost.
        """
        try:
            row = await self.store.get_run(self.run_id)
        except StoreError:
            return False
        # Only a newer lease: a commit refused under the very lease this drive
        # holds (a retry whose first try landed unacknowledged) is not ours
        # to make again.
        return row is not None and row.lease_epoch == self.lease.epoch + 1 and self.adopt(row)

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
        _resolve(self._stop_waiter)
        _resolve(self._woken)

    def poke(self) -> None:
        """Tell the drive that mail was posted for its run (it reads it soon).

        Must be called on the driver's event loop.
        """
        self.mail_waiting = True
        _resolve(self._woken)

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

    async def flush(
        self,
        *,
        release: bool = False,
        wake_at: float | None = None,
        via: LocalTransaction | None = None,
    ) -> None:
        """Commit buffered events with the run's derived row, in one transaction.

        With ``via``, the commit goes through that local transaction, so the
        step's own writes and these events become durable together.
        """
        if not self._buffer and not release and wake_at is None and not self._mail_read:
            return
        progress = self.progress
        error: JSON | None = None
        if progress.error is not None or progress.compensation_errors:
            # The row carries a summary (the journal keeps every error whole), so
            # a compensation retried many times does not make each commit bigger.
            error = {
                "cause": progress.error,
                "compensation": [
                    {**e, "traceback": ""} for e in progress.compensation_errors[-_ROW_ERRORS:]
                ],
            }
        # Positional, in field order: this runs at every step.
        commit = Commit(
            self.record.id,
            self.lease,
            tuple(self._buffer),
            progress.status,
            dict(progress.state),
            error,
            self.clock(),
            wake_at,
            release,
            tuple(self._mail_read),
            progress.status == self._row_status and wake_at == self._row_wake_at,  # keeps_status
        )
        if self.lost:
            if await self._reclaimed_here():
                commit = replace(commit, lease=self.lease)
            else:
                if via is not None:
                    await self._in_thread(via.close)
                raise LeaseLost(self.record.id)
        if self.unborn:
            await self._create(commit)
            return
        if via is not None:
            # No retry here: once this transaction fails, the step's local
            # writes are gone with it. Like a crash, the step then runs again.
            try:
                self.mail_waiting = await self._in_thread(via.commit, commit) or self.mail_waiting
            finally:
                await self._in_thread(via.close)
            self._committed(commit)
            return
        # The buffer is kept until the commit lands, so a passing failure (a
        # lock held too long, a dropped connection) can be retried: commits are
        # fenced and event seqs are unique, so a retry cannot write twice.
        give_up = time.monotonic() + self.commit_patience
        pause = 0.05
        while True:
            try:
                self.mail_waiting = await self.store.commit(commit) or self.mail_waiting
                break
            except LeaseLost:
                if commit.lease == self.lease and not await self._reclaimed_here():
                    raise
                # The drive adopted a newer lease of its own while this commit
                # was under way (see `adopt`): fenced out, it wrote nothing.
                commit = replace(commit, lease=self.lease)
            except StoreError as exc:
                if time.monotonic() + pause > give_up:
                    raise
                self.log.warning(
                    "run %s: the store failed (%s); retrying in %.2fs", self.run_id, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        self._committed(commit)

    async def _create(self, commit: Commit) -> None:
        """Store the run with the commit's events, as the commit leaves its row.

        Not retried as commits are: if the store fails, nothing was run yet
        and the caller hears of it, as of any failed start.
        """
        assert commit.events, "a run is created with its first event"
        record = replace(
            self.record,
            status=commit.status,
            state=commit.state,
            error=commit.error,
            updated_at=commit.at,
            owner=None if commit.release else self.lease.owner,
            lease_until=None if commit.release else self.record.lease_until,
            wake_at=commit.wake_at,
            last_seq=commit.events[-1].seq,
        )
        stored, created = await self.store.create_run(record, commit.events)
        if not created:
            raise RunExists(stored)
        self.unborn = False
        self._committed(commit)
        if self.on_stored is not None:
            self.on_stored(self)

    def _committed(self, commit: Commit) -> None:
        self._buffer = []
        self._mail_read = []
        self._row_status = commit.status
        self._row_wake_at = commit.wake_at
        if commit.release:
            self.released = True
            self._last_commit = commit

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
                await self._read_mail()
            if self.progress.deadline is not None:
                self._check_deadline()
            decision = decide(self.plan, self.progress, self._running.keys())
            transition = decision.transition
            if transition is not None:
                event = self.append(transition.kind, step=transition.step, data=transition.data)
                if transition.kind is EventKind.NEEDS_ATTENTION:
                    await self.flush(release=True)
                    self.halted = event  # the engine alerts once this drive is over
                    return
                if transition.kind is EventKind.RUN_FINISHED:
                    await self.flush(release=True)
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
            await self.flush()  # write-ahead: the attempt is durable before it runs
            if due and self.mail_waiting and await self._withdrawn(due):
                continue
            later: Sequence[float] = (
                [c.not_before for c in invoke if c not in ready and c.not_before]
                if len(ready) < len(invoke)
                else ()
            )
            if len(due) == 1 and not self._running and not later:
                # The common, sequential case: no task or wait set is needed,
                # and a plain success is recorded without a coroutine.
                outcome = await self._call(due[0])
                if outcome.error is None and outcome.pause is None and outcome.transaction is None:
                    self._succeeded(outcome)
                else:
                    await self._record(outcome)
                continue
            for call in due:
                self._running[(call.phase, call.step)] = asyncio.ensure_future(self._call(call))
            if not self._running:
                if stopping and decision.invoke:
                    # Hand the run back; keep its timer unless a call is due now,
                    # so the next owner neither waits for nothing nor starts early.
                    self.handed_back = "stop"
                    timers = [*later, *filter(None, [self._deadline_timer()])]
                    await self.flush(release=True, wake_at=None if ready else min(timers))
                    return
                deadline = self._deadline_timer()
                if not later:
                    # Nothing running and nothing to do: the run is settled (or
                    # paused, and then its deadline is its timer).
                    paused = self.progress.status is RunStatus.PAUSED
                    await self.flush(release=True, wake_at=deadline if paused else None)
                    return
                wake_at = min(later) if deadline is None else min(*later, deadline)
                if self.park_after is not None and wake_at - self.clock() > self.park_after:
                    # A long wait holds no lease: the store keeps the timer, and
                    # whichever worker is free when it is due carries on.
                    self.handed_back = "timer"
                    await self.flush(release=True, wake_at=wake_at)
                    return
                await self.flush(wake_at=wake_at)  # a durable timer, should this process die
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
                await self._record(outcome)

    async def _withdrawn(self, calls: Sequence[core.Invoke]) -> bool:
        """Read mail that came with the write-ahead commit, before making the calls.

        A cancel posted while the previous step ran is seen here, when the
        next step is journaled but not yet called: that call is withdrawn, so
        the run stops after the step that was under way, not one step later.
        """
        await self._read_mail()
        if self.progress.cancel is None:
            return False
        for call in calls:
            self.append(EventKind.STEP_WITHDRAWN, step=call.step, attempt=call.attempt)
        return True

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

    async def _record(self, outcome: Outcome) -> None:
        call = outcome.call
        if outcome.pause is not None:
            self.log.info("run %s: step %r paused: %s", self.run_id, call.step, outcome.pause)
            self.append(
                EventKind.PAUSED, step=call.step, attempt=call.attempt, data=outcome.pause.to_json()
            )
            return
        if outcome.error is None:
            self._succeeded(outcome)
            if outcome.transaction is not None:
                await self.flush(via=outcome.transaction)
            return
        final = core.is_final_failure(
            self.plan, self.progress, call.phase, call.step, permanent=outcome.permanent
        )
        step = self.saga[call.step]
        policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
        retry_at: float | None = None
        if not final:
            failures = self.progress.attempts(call.phase, call.step).failures + 1
            retry_at = self.clock() + policy.delay(failures, self.random())
        data: JSON = {
            "error": outcome.error.to_json(),
            "permanent": outcome.permanent,
            "unknown": outcome.unknown,
            "retry_at": retry_at,
        }
        pause: Pause | None = None
        if final and call.phase is Phase.ACTION and step.failure_handler is not None:
            answer = await self._ask(step.failure_handler, call, outcome.error)
            if isinstance(answer, Pause):
                pause = answer
                data["handled"] = core.PAUSE
            elif answer is Next.RETRY:
                data["handled"] = core.RETRY
                data["retry_at"] = self.clock() + policy.delay(1, self.random())
            elif answer is Next.CONTINUE:
                data["handled"] = core.CONTINUE
        handled = data.get("handled")
        self.log.log(
            logging.WARNING if final else logging.INFO,
            "run %s: %s; %s",
            self.run_id,
            outcome.error,
            f"failed for good, the failure handler says {handled}"
            if handled
            else "failed for good"
            if final
            else f"retrying in {max(0.0, (retry_at or 0.0) - self.clock()):.3g}s",
        )
        self.append(FAILED[call.phase], step=call.step, attempt=call.attempt, data=data)
        if pause is not None:
            self.append(EventKind.PAUSED, step=call.step, data=pause.to_json())

    def _succeeded(self, outcome: Outcome) -> None:
        call = outcome.call
        self.append(
            SUCCEEDED[call.phase],
            step=call.step,
            attempt=call.attempt,
            data=(
                {"result": outcome.result}
                if outcome.merged is None
                else {"result": outcome.result, "state": outcome.merged}
            ),
        )

    async def _ask(self, handler: Handler, call: core.Invoke, about: Any) -> Next | Pause | None:
        """Call a failure or signal handler; what it answers, or None (the default)."""
        try:
            state = self.saga.load_state(self.progress.state)
            answer = handler(state, self._context(call), about)
            while inspect.isawaitable(answer):
                answer = await answer
        except Pause as pause:
            return pause
        except Exception:
            self.log.exception(
                "run %s: the handler of step %r failed; taking the default", self.run_id, call.step
            )
            return None
        if answer is None or isinstance(answer, Pause):
            return answer
        try:
            return Next(answer)
        except ValueError:
            self.log.error(
                "run %s: the handler of step %r answered %r, which is not a Next or a Pause; "
                "taking the default",
                self.run_id,
                call.step,
                answer,
            )
            return None

    # -- mail: cancel requests and signals posted by other processes ---------------

    async def _read_mail(self) -> None:
        self.mail_waiting = False
        for mail in await self.store.mail(self.run_id):
            if mail.id in self._mail_read:
                continue
            self._mail_read.append(mail.id)  # consumed by the commit that journals it
            if mail.kind == "cancel":
                self._take_cancel(mail)
            elif mail.kind == "signal":
                await self._take_signal(mail)
            else:
                self.log.error("run %s: dropping mail of unknown kind %r", self.run_id, mail.kind)

    def _take_cancel(self, mail: Mail) -> None:
        reason = mail.data.get("reason")
        force = bool(mail.data.get("force"))
        refusal = core.cancel_refusal(self.plan, self.progress, force=force)
        if refusal is not None:
            self.log.warning("run %s: cancel refused: %s", self.run_id, refusal)
            self.append(EventKind.CANCEL_REFUSED, data={"reason": reason, "why": refusal})
            return
        self.log.warning("run %s: cancel requested (%s)", self.run_id, reason or "no reason given")
        self.append(EventKind.CANCEL_REQUESTED, data={"reason": reason, "force": force})

    async def _take_signal(self, mail: Mail) -> None:
        name = str(mail.data.get("name"))
        payload = mail.data.get("payload") or {}
        data: JSON = {"name": name, "payload": payload}
        progress = self.progress
        if progress.status.terminal:
            data["ignored"] = f"the run had already finished as {progress.status.value}"
            self.append(EventKind.SIGNAL_RECEIVED, data=data)
            return
        try:
            self.saga.dump_state({**progress.state, **payload})
        except StateError as exc:
            data["ignored"] = f"its payload does not fit the state: {exc}"
            self.log.error("run %s: signal %r ignored: %s", self.run_id, name, exc)
            self.append(EventKind.SIGNAL_RECEIVED, data=data)
            return
        paused = progress.paused
        step = paused.get("step") if paused else None
        options = paused.get("options") if paused else None
        answers = (
            paused is not None
            and isinstance(step, str)
            and paused.get("waiting_for") is None
            and (not options or name in options)
        )
        if not answers:  # merged into the state, kept for a step that waits for it
            self.append(EventKind.SIGNAL_RECEIVED, data=data)
            return
        assert isinstance(step, str)
        handler = self.saga[step].signal_handler
        call = core.Invoke(Phase.ACTION, step, progress.attempts(Phase.ACTION, step).started)
        answer: Next | Pause | None = Next.RETRY
        if handler is not None:
            # The handler sees the state with the payload merged, as the step will.
            saved = progress.state
            progress.state = {**saved, **payload}
            try:
                answer = await self._ask(handler, call, Signal(name, payload, self.clock()))
            finally:
                progress.state = saved
        if isinstance(answer, Pause):
            self.append(EventKind.SIGNAL_RECEIVED, data=data)
            self.append(EventKind.PAUSED, step=step, data=answer.to_json())
            return
        data["decision"] = (answer or Next.RETRY).value
        if answer is Next.COMPENSATE and progress.attempts(Phase.ACTION, step).error is None:
            data["error"] = ErrorInfo(
                type="sagakit.Declined",
                message=f"the signal {name!r} answered the pause with compensate",
                step=step,
            ).to_json()
        self.log.info("run %s: signal %r: %s step %r", self.run_id, name, data["decision"], step)
        self.append(EventKind.SIGNAL_RECEIVED, data=data)

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

    def _context(self, call: core.Invoke) -> StepContext:
        # Built in one go: this runs for every call, and dataclasses.replace
        # on a frozen context costs as much as the rest of it.
        progress = self.progress
        extra: dict[str, Any] = {}
        if call.phase is Phase.COMPENSATION:
            forward = progress.attempts(Phase.ACTION, call.step)
            error = progress.error
            extra = {
                "reason": progress.reason,
                "error": ErrorInfo.from_json(error) if error else None,
                "cancel_reason": progress.cancel_reason,
                "step_result": forward.result,
                "step_finished_at": forward.finished_at,
            }
        else:
            signal = self.saga[call.step].wait_for
            if signal is not None and signal in progress.signals:
                extra["signal"] = Signal(signal, progress.signals[signal])
            extra["previous_step_result"] = self._previous_result(call.step)
        return StepContext(
            run_id=self.record.id,
            saga=self.saga.name,
            version=self.saga.version,
            step=call.step,
            phase=call.phase,
            attempt=call.attempt,
            idempotency_key=idempotency_key(self.record.id, call.step, call.phase),
            started_at=self.clock(),
            log=run_logger(self.record.id, self.saga.name, call.step),
            clock=self.clock,
            reserver=self,
            **extra,
        )

    def _previous_result(self, step: str) -> JSON | None:
        """What the stage before ``step`` returned (a parallel stage's results merged)."""
        before = self.saga.plan().previous_stage(step)
        if not before:
            return None
        merged: JSON = {}
        for name in before:
            result = self.progress.attempts(Phase.ACTION, name).result
            if result:
                merged.update(result)
        return merged

    async def _call(self, call: core.Invoke) -> Outcome:
        step = self.saga[call.step]
        if call.phase is Phase.ACTION:
            fn, timeout = step.action, step.timeout
        else:
            assert step.compensation is not None  # the core compensates only such steps
            fn, timeout = step.compensation, step.compensation_timeout
        lingering = self._lingering.pop(call.step, None)
        if lingering is not None and not lingering.done():
            # A timed-out call of this step is still running on its thread: no
            # retry or compensation may overlap it.
            self.log.warning(
                "run %s: waiting for a timed-out call of step %r to return before the next",
                self.run_id,
                call.step,
            )
            await asyncio.wait({lingering})

        def caught(exc: BaseException, *, timed_out: bool = False) -> ErrorInfo:
            return ErrorInfo.from_exception(
                exc, step=call.step, phase=call.phase, attempt=call.attempt, timed_out=timed_out
            )

        # The state as handed to this call: what it changed in place is told
        # against this, not against the run's state when it returns, which
        # the other members of a parallel stage may have changed meanwhile.
        # (A shallow copy is enough: the journal replaces values, never edits them.)
        handed = dict(self.progress.state)
        try:
            state = self.saga.load_state(handed)
        except StateError as exc:  # the function never ran: a known, permanent failure
            return Outcome(call, error=caught(exc), permanent=True)
        local = step.local_transaction and call.phase is Phase.ACTION
        transaction: LocalTransaction | None = None
        try:
            if local:
                self._in_local_transaction = True
                try:
                    value, transaction = await self._in_thread(
                        self._run_local, fn, state, self._context(call)
                    )
                finally:
                    self._in_local_transaction = False
            elif not timeout and _is_async(fn):
                # The common case, without the coroutine of `_invoke`.
                value = await fn(state, self._context(call))
                if value is not None and type(value) is not dict:
                    value = await _unwrap(value)
            else:
                value = await self._invoke(call, fn, state, self._context(call), timeout)
            result, merged = self._normalise(call, value, state, handed)
            return Outcome(call, result=result, merged=merged, transaction=transaction)
        except Pause as pause:
            if transaction is not None:
                await self._in_thread(transaction.close)
            if call.phase is Phase.ACTION:
                return Outcome(call, pause=pause)
            return Outcome(call, error=caught(SagaError(f"a compensation cannot pause: {pause}")))
        except TimeoutError as exc:
            return Outcome(call, error=caught(exc, timed_out=True), unknown=True)
        except StateError as exc:
            if transaction is not None:  # its local writes are rolled back: nothing stands
                await self._in_thread(transaction.close)
                return Outcome(call, error=caught(exc), permanent=True)
            # The function ran (its effects may stand) but its result cannot be
            # recorded: retrying would not help, and the outcome is unknown.
            return Outcome(call, error=caught(exc), permanent=True, unknown=True)
        except Exception as exc:
            policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
            return Outcome(call, error=caught(exc), permanent=policy.is_permanent(exc))

    def _run_local(
        self, fn: Callable[..., Any], state: Any, ctx: StepContext
    ) -> tuple[Any, LocalTransaction]:
        """Run a local-transaction action on this thread, leaving its transaction open."""
        if type(self.store).local_transaction is Store.local_transaction:
            # No database to share: no later attempt can do better.
            raise PermanentError(
                f"step {ctx.step!r} needs a local transaction, which the store "
                f"{self.store.url} cannot run; use a SQLite or PostgreSQL store"
            )
        transaction = self.store.local_transaction()
        try:
            value = fn(state, replace(ctx, connection=transaction.connection))
        except BaseException:
            transaction.close()  # rolls the step's writes back
            raise
        return value, transaction

    async def _invoke(
        self,
        call: core.Invoke,
        fn: Callable[..., Any],
        state: Any,
        ctx: StepContext,
        timeout: float | None,
    ) -> Any:
        if _is_async(fn):
            # Only with a timeout (`_call` awaits the others itself). Cancelling
            # a coroutine stops it, so a timed-out one leaves nothing behind.
            return await asyncio.wait_for(_await_result(fn(state, ctx)), timeout)
        # Sync functions run on threads so one slow call does not stall the
        # other runs this engine drives; the context travels with them.
        loop = asyncio.get_running_loop()
        if timeout is None:
            return await _await_result(
                loop.run_in_executor(self.executor, copy_context().run, fn, state, ctx)
            )
        started: asyncio.Future[None] = loop.create_future()

        def run() -> Any:
            loop.call_soon_threadsafe(_resolve, started)
            return fn(state, ctx)

        future = loop.run_in_executor(self.executor, copy_context().run, run)
        # The clock starts when a thread takes the call, not while it queues.
        await asyncio.wait({started, future}, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            # A thread cannot be stopped: remember it, so that nothing else of
            # this step starts before it returns.
            future.add_done_callback(_consume)
            self._lingering[call.step] = future
            raise TimeoutError(f"{call.phase.value} of step {call.step!r} ran past {timeout}s")
        return await _await_result(future)

    def _normalise(
        self, call: core.Invoke, value: Any, state: Any, handed: JSON
    ) -> tuple[JSON | None, JSON | None]:
        """The call's result as JSON, and (if it differs) the part the state keeps.

        The whole result is journaled, so a compensation's ``ctx.step_result``
        and the timeline show everything a step returned, even keys its state
        model has no field for; only what the model keeps is merged.
        """
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if value is not None and not isinstance(value, dict):
            raise StateError(
                f"{self._result_of(call)} must be a dict, a pydantic model or None, "
                f"not {type(value).__name__}"
            )
        # A function may also change the state object it was handed (Ruvon's
        # tutorial appends to ``state.compensations_run``). Those changes are
        # recorded like a returned result, which wins where both name a key, so
        # nothing a step did to the state is lost on the next replay.
        changed = self._changes(state, handed, call)
        if value is None and not changed:
            return None, None
        result: JSON = {**changed, **to_jsonable(value or {}, self._result_of(call))}
        if self.saga.state_type is None:
            return result, None
        merged = self.saga.dump_state({**self.progress.state, **result})
        # Keep only what the model kept, in the form it stores it, so that
        # replaying the journal yields exactly the state the model validated.
        kept = {key: merged[key] for key in result if key in merged}
        return result, (None if kept == result else kept)

    def _result_of(self, call: core.Invoke) -> str:
        return f"the result of {call.phase.value} of step {call.step!r} (run {self.record.id!r})"

    def _changes(self, state: Any, before: JSON, call: core.Invoke) -> JSON:
        """The top-level keys of ``state`` that the call changed in place."""
        after = state.model_dump(mode="json") if isinstance(state, BaseModel) else state
        if not isinstance(after, dict):
            return {}
        changed = {key: item for key, item in after.items() if before.get(key, _ABSENT) != item}
        if not changed or isinstance(state, BaseModel):  # a JSON-mode dump is JSON already
            return changed
        where = f"the state after {call.phase.value} of step {call.step!r} (run {self.record.id!r})"
        jsonable: JSON = to_jsonable(changed, where)
        return jsonable


_ABSENT = object()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _consume(future: asyncio.Future[Any]) -> None:
    # Nobody awaits a timed-out call's outcome; retrieve it so asyncio does not
    # report an exception that was never retrieved.
    if not future.cancelled():
        future.exception()


def _is_async(fn: Callable[..., Any]) -> bool:
    try:
        return _is_async_remembered(fn)
    except TypeError:  # an unhashable callable object (a dataclass instance, say)
        return inspect.iscoroutinefunction(fn)


@functools.lru_cache(maxsize=1024)
def _is_async_remembered(fn: Callable[..., Any]) -> bool:
    # Asked at every call, of the few functions a saga has: worth remembering.
    return inspect.iscoroutinefunction(fn)


async def _await_result(pending: Awaitable[Any]) -> Any:
    value = await pending
    if value is None or type(value) is dict:  # the common results, and not awaitable
        return value
    return await _unwrap(value)


async def _unwrap(value: Any) -> Any:
    while inspect.isawaitable(value):  # a sync wrapper that returned a coroutine
        value = await value
    return value

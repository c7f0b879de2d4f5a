"""Calling a step's functions for one run: `StepCaller`.

A `StepCaller` hands a function the run's state and a `StepContext`, runs it
(awaited, on a thread, under its timeout, or in a local transaction) and
turns what it returned or raised into an `Outcome`, with the result as JSON
and the part of it the state keeps. It also asks a step's failure and signal
handlers what to do, and serves the reservations the calls make. Nothing
here writes to the journal: what the reservations went through waits in
`StepCaller.marks` for the driver to journal with the next outcome.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from contextvars import Token, copy_context
from dataclasses import dataclass, replace
from typing import Any

from sagakit import core, runlog
from sagakit.clock import Clock, holds_nothing
from sagakit.context import StepContext, logger, run_logger
from sagakit.control import Next, Pause, Signal
from sagakit.definition import Handler, Saga, Step
from sagakit.errors import (
    PermanentError,
    ReservationBusy,
    ReservationLapsed,
    SagaError,
    StateError,
)
from sagakit.journal import JSON, ErrorInfo, EventKind, Phase, idempotency_key
from sagakit.jsonutil import dumps, is_model, loads, to_jsonable
from sagakit.redaction import Redactor
from sagakit.runlog import RunFields, RunLogger
from sagakit.store import LocalTransaction, Reservation, Store

Ask = Callable[[Handler, core.Invoke, Any], Awaitable[Next | Pause | None]]
"""Calls a failure or signal handler about a call: `StepCaller.ask`."""

# Bound once: reading a member through its enum class costs about a thousand
# instructions on Python 3.11 (the metaclass's __getattr__ hook), at every call.
_ACTION = Phase.ACTION
_COMPENSATION = Phase.COMPENSATION

_bound_fields = runlog.bound_fields
_bind_fields = runlog.bind_fields
_new_tuple = tuple.__new__
_UNCHANGED: JSON = {}  # never changed: read only (see `_normalise`)


def _own(value: JSON) -> JSON:
    """``value`` as a step's own to change: a new dict, its lists and dicts copied.

    A result or a signal's payload shares its values with the run's state
    (the fold merges them into it): a step that changed one in place would
    change the state behind the journal's back.
    """
    if core.IMMUTABLE.issuperset(map(type, value.values())):
        return dict(value)
    copied: JSON = loads(dumps(value))
    return copied


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
    exception: BaseException | None = None
    """The exception that ``error`` records (kept in memory only: `Failures`)."""
    reserved: dict[str, float] | None = None
    """The reservations the call took or refreshed and still holds, with their
    ttl: its success is recorded only if the run still holds them then. Not
    None (maybe empty) whenever the call reserved or released anything, so
    that its outcome is recorded with the `StepCaller.marks` it left."""


@dataclass(slots=True)
class Lingering:
    """A call that timed out and is still running.

    A thread cannot be stopped, and a coroutine may ignore its cancellation:
    either goes on after its outcome was journaled as a timeout.
    """

    phase: Phase
    attempt: int
    future: asyncio.Future[Any]
    """Done once the call has returned (or raised)."""
    timed_out_at: float
    """When it timed out, on the event loop's clock (`loop.time`)."""
    error: JSON | None = None
    """The timeout as journaled (an `ErrorInfo` as JSON)."""


class LingeringCalls:
    """The timed-out calls still running in this process, by run and step.

    Kept by the engine rather than by one drive: a later drive of the same
    run in this process (an operator's retry, a worker's next claim) must not
    overlap them either. An entry goes away by itself when its call returns.
    """

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Lingering]] = {}
        """By run id, then by step; a plain dict, so a drive checks it at little cost."""

    def add(self, run_id: str, step: str, lingering: Lingering) -> None:
        """Remember ``lingering``, a timed-out call of ``step``, until it returns."""
        self.runs.setdefault(run_id, {})[step] = lingering

        def forget(_: asyncio.Future[Any]) -> None:
            calls = self.runs.get(run_id)
            if calls is not None and calls.get(step) is lingering:
                del calls[step]
                if not calls:
                    del self.runs[run_id]

        lingering.future.add_done_callback(_consume)
        lingering.future.add_done_callback(forget)

    def get(self, run_id: str, step: str) -> Lingering | None:
        """The timed-out call of ``step`` of ``run_id`` still running, if any."""
        calls = self.runs.get(run_id)
        return None if calls is None else calls.get(step)


class StepCaller:
    """Makes the calls of one run: step actions, compensations and handlers.

    It owns what the calls need while they run: the threads that sync
    functions run on, and whether a local-transaction step is running; it
    records the calls that time out and go on running in ``lingering``
    (the driver starts no call of such a step before it returns). Steps
    reserve resources through it (it is their context's `Reserver`).

    Args:
        saga: The run's saga.
        store: The store (local transactions and reservations).
        run_id: The run's id.
        progress: The run's progress, read for the state handed to each call.
        clock: The engine's clock; a call holds it busy while it runs.
        executor: Where sync functions and blocking store calls run.
        lingering: The timed-out calls still running in this process (a
            fresh registry if None).
    """

    __slots__ = (
        "_busy",
        "_now",
        "_previous_stage",
        "clock",
        "executor",
        "held",
        "holds_nothing",
        "in_local_transaction",
        "lingering",
        "loop",
        "marks",
        "progress",
        "run_id",
        "saga",
        "store",
        "taken",
    )

    # Not keyword-only: the `Driver` passes the arguments by position, for every
    # run; tests/unit/test_field_order.py pins the order.
    def __init__(  # noqa: PLR0917
        self,
        saga: Saga[Any],
        store: Store,
        run_id: str,
        progress: core.Progress,
        clock: Clock,
        executor: Executor,
        lingering: LingeringCalls | None = None,
    ) -> None:
        self.saga = saga
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.clock = clock
        self.holds_nothing = holds_nothing(clock)
        """The clock's hold does nothing: `run_unheld` makes a call as `run` does."""
        self._now = clock.__call__  # bound once: for the system clock, `time.time` itself
        # The steps of the stage before each step (see `core.Plan.previous_stage`).
        self._previous_stage = saga.plan().previous_stages().get
        self.executor = executor
        self.loop: asyncio.AbstractEventLoop
        """The drive's event loop (set when the drive starts)."""
        self.in_local_transaction = False
        """Whether a local-transaction action runs now (a reservation would wait for it)."""
        self.lingering = LingeringCalls() if lingering is None else lingering
        self.held: dict[tuple[Phase, str], dict[str, float]] = {}
        """The reservations each running call took, by call: name to ttl."""
        self.marks: list[Mark] = []
        """Reservation events (taken, refreshed, released, lapsed) not journaled yet."""
        self.taken: dict[str, float] = {}
        """The reservations this drive took and did not release: name to expiry."""
        # Each running call's hold on the clock, which it lets go of while it
        # waits for a reservation (a wait that time alone may end).
        self._busy: dict[tuple[Phase, str], AbstractContextManager[None]] = {}

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """The run's logger (made when something is logged, which is seldom)."""
        return run_logger(
            self.run_id, self.saga.name, version=self.saga.version, redactor=self.redactor
        )

    @property
    def redactor(self) -> Callable[[], Redactor] | None:
        """Makes the run's `Redactor` as it stands; None if the saga marks nothing sensitive."""
        return self._redactor if self.saga.sensitive else None

    def _redactor(self) -> Redactor:
        return Redactor(self.saga.sensitive).collect(self.progress.state)

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking function on the executor; what it returns."""
        return await self.loop.run_in_executor(self.executor, fn, *args)

    async def ask(self, handler: Handler, call: core.Invoke, about: Any) -> Next | Pause | None:
        """Call a failure or signal handler; what it answers, or None (the default)."""
        try:
            state = self.saga.load_state(self.progress.state)
            answer = handler(state, self.context(call), about)
            while inspect.isawaitable(answer):
                answer = await answer
        except Pause as pause:
            return pause
        except Exception:
            self.log.exception(
                "run %s: the handler of step %r failed; taking the default",
                self.run_id,
                call.step,
                extra=runlog.at(call.step, call.phase.value, call.attempt),
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
                extra=runlog.at(call.step, call.phase.value, call.attempt),
            )
            return None

    def context(self, call: core.Invoke, definition: Step | None = None) -> StepContext:
        """The `StepContext` handed to ``call``'s function or handler.

        ``definition``: the step of ``call``, when the caller has it at hand.
        """
        # Built in one go: this runs for every call, and dataclasses.replace
        # on a frozen context costs as much as the rest of it.
        progress = self.progress
        saga = self.saga
        step = call.step
        phase = call.phase
        clock = self.clock
        # Positional, in field order (see tests/unit/test_field_order.py):
        # keywords would cost a dict at every call.
        if phase is _COMPENSATION:
            forward = progress.attempts(_ACTION, step)
            error = progress.error
            return StepContext(
                self.run_id,
                saga.name,
                saga.version,
                step,
                phase,
                call.attempt,
                idempotency_key(self.run_id, step, phase),
                self._now(),  # started_at
                progress.reason,
                ErrorInfo.from_json(error) if error else None,
                progress.cancel_reason,
                None if forward.result is None else _own(forward.result),  # step_result
                forward.finished_at,  # step_finished_at
                None,  # signal
                None,  # previous_step_result
                None,  # connection
                self._call_logger(call),
                clock,
                self,  # reserver
            )
        wanted = (saga[step] if definition is None else definition).wait_for
        signal = (
            Signal(wanted, _own(progress.signals[wanted]))
            if wanted is not None and wanted in progress.signals
            else None
        )
        # What the stage before returned (a parallel stage's results merged):
        # written out, as this runs at every call.
        before = self._previous_stage(step, ())
        previous: JSON | None = None
        if before:
            previous = {}
            actions = progress.actions
            for name in before:
                record = actions.get(name)
                if record is not None and record.result:
                    previous.update(record.result)
            # Its lists and dicts are the run's state's: the step gets copies.
            if previous and not core.IMMUTABLE.issuperset(map(type, previous.values())):
                previous = loads(dumps(previous))
        run_id = self.run_id
        return StepContext(
            run_id,
            saga.name,
            saga.version,
            step,
            phase,
            call.attempt,
            f"{run_id}/{step}",  # idempotency_key(run_id, step, phase) of an action
            self._now(),  # started_at
            None,  # reason
            None,  # error
            None,  # cancel_reason
            None,  # step_result
            None,  # step_finished_at
            signal,
            previous,  # previous_step_result
            None,  # connection
            self._call_logger(call),
            clock,
            self,  # reserver
        )

    def _call_logger(self, call: core.Invoke) -> RunLogger:
        """``ctx.log`` for ``call``: its records carry the run, step, phase and attempt."""
        fields = _bound_fields()  # those `bind` bound for the call, most often
        phase = call.phase
        if (
            fields is None
            or fields.step != call.step
            or fields.attempt != call.attempt
            or fields.phase != phase
            or fields.run_id != self.run_id
        ):
            fields = RunFields(
                self.run_id,
                self.saga.name,
                self.saga.version,
                call.step,
                phase,
                call.attempt,
                self.redactor,
            )
        return RunLogger(logger, fields)

    def bind(self, call: core.Invoke) -> Token[RunFields | None]:
        """Bind ``call``'s fields in this context, until `runlog.unbind` of the token.

        What is logged meanwhile, by sagakit or by the call (on its thread
        too, and in a task started meanwhile), carries the call's step, phase
        and attempt (see `sagakit.runlog`).
        """
        fields = _bound_fields()
        run_id = self.run_id
        if fields is None or fields[0] != run_id:
            return _bind_fields(
                RunFields(
                    run_id, self.saga.name, self.saga.version, call.step, call.phase, call.attempt
                )
            )
        # `fields.at(...)` written out (this runs at every call): tuple.__new__
        # skips the generated __new__ and its defaults.
        return _bind_fields(
            _new_tuple(
                RunFields,
                (run_id, fields[1], fields[2], call.step, call.phase, call.attempt, fields[6]),
            )
        )

    async def run(self, call: core.Invoke, alone: bool = False) -> Outcome:
        """Make ``call`` (an action or a compensation); how it ended.

        The clock is held busy while the call runs: a clock that skips time
        waits for it (its own timeout, though, is real time). With a clock
        whose hold does nothing (`holds_nothing`), `run_unheld` is the same
        call, one coroutine shorter: the driver calls that one then.
        """
        key = (call.phase, call.step)
        busy = self._busy[key] = self.clock.busy()
        try:
            with busy:
                return await self.run_unheld(call, alone)
        finally:
            del self._busy[key]

    def _caught(self, call: core.Invoke, exc: BaseException, timed_out: bool = False) -> ErrorInfo:
        """``exc``, raised by ``call``, as journaled (sensitive values masked)."""
        error = ErrorInfo.from_exception(
            exc, step=call.step, phase=call.phase, attempt=call.attempt, timed_out=timed_out
        )
        if self.saga.sensitive:
            # Errors are journaled in clear (even in an encrypted store) and
            # messages often quote values: a sensitive one never gets there.
            redactor = Redactor(self.saga.sensitive).collect(self.progress.state)
            return redactor.error(error)
        return error

    async def run_unheld(self, call: core.Invoke, alone: bool = False) -> Outcome:
        """`run` without holding the clock (for a clock whose hold does nothing).

        ``alone``: no other call of the run is under way, so nothing changes
        the run's state until this one returns.
        """
        step = self.saga[call.step]
        if call.phase is _ACTION:
            fn, timeout = step.action, step.timeout
        else:
            assert step.compensation is not None  # the core compensates only such steps
            fn, timeout = step.compensation, step.compensation_timeout

        # The state as handed to this call: what it changed in place is told
        # against this, not against the run's state when it returns, which
        # the other members of a parallel stage may have changed meanwhile.
        # (A shallow copy is enough: the journal replaces values, never edits
        # them; and none at all for a call alone, during which nothing does.)
        progress = self.progress
        handed = progress.state if alone else dict(progress.state)
        if self.held:  # an earlier attempt's reservations are not this one's
            self.held.pop((call.phase, call.step), None)
        nested = progress.nested
        if nested is None and len(handed) > 16 and self.saga.state_type is None:
            # A big dict state: from now on the fold notes which keys may
            # hold a list or a dict, so a step's copy looks at those alone.
            # (Checked in C first: a big state mostly holds none, and a Python
            # loop over 1,000 values cost twice as much, at every run's start.)
            nested = progress.nested = (
                set()
                if core.IMMUTABLE.issuperset(map(type, handed.values()))
                else {key for key, value in handed.items() if type(value) not in core.IMMUTABLE}
            )
        try:
            state = self.saga.load_state(handed, nested)
        except StateError as exc:  # the function never ran: a known, permanent failure
            return Outcome(call, error=self._caught(call, exc), permanent=True, exception=exc)
        local = step.local_transaction and call.phase is _ACTION
        transaction: LocalTransaction | None = None
        reserve = step.reserve  # None for most steps: checked first
        names: list[str] = []
        if reserve is not None:
            if call.phase is not Phase.ACTION:
                reserve = None  # a compensation reserves nothing by itself
            else:
                try:
                    names = reserve.names_for(handed)
                except (KeyError, ValueError, TypeError) as exc:  # never ran: known, permanent
                    unfit = StateError(_unfit_names(call.step, reserve.names, exc))
                    return Outcome(
                        call, error=self._caught(call, unfit), permanent=True, exception=unfit
                    )
        is_async = False  # asked only of a call awaited as it is (no transaction, no timeout)
        if not local and not timeout:
            try:
                is_async = _async_known[fn]  # `_is_async` without its call, mostly
            except (KeyError, TypeError):
                is_async = _is_async(fn)
        try:
            if reserve is not None:
                # Before the action, as if it reserved them itself (all or none).
                key = (call.phase, call.step)
                await self._take(names, ttl=reserve.ttl, wait=reserve.wait, call=key)
            if local:
                self.in_local_transaction = True
                try:
                    value, transaction = await self.in_thread(
                        copy_context().run, self._run_local, fn, state, self.context(call, step)
                    )
                finally:
                    self.in_local_transaction = False
            elif is_async:
                # The common case, without the coroutine of `_invoke`.
                value = await fn(state, self.context(call, step))
                if value is not None and type(value) is not dict:
                    value = await _unwrap(value)
            else:
                value = await self._invoke(
                    call, fn, state, self.context(call, step), timeout=timeout
                )
            result, merged = self._normalise(call, value, state, handed)
            if self.held:
                reserved = self.held.pop((call.phase, call.step), None)
                return Outcome(call, result, merged, transaction=transaction, reserved=reserved)
            return Outcome(call, result=result, merged=merged, transaction=transaction)
        except Pause as pause:
            if transaction is not None:
                await self.in_thread(transaction.close)
            if call.phase is Phase.ACTION:
                return Outcome(call, pause=pause)
            refused = SagaError(f"a compensation cannot pause: {pause}")
            return Outcome(call, error=self._caught(call, refused), exception=refused)
        except TimeoutError as exc:
            error = self._caught(call, exc, timed_out=True)
            lingering = self.lingering.get(self.run_id, call.step)
            if lingering is not None and lingering.attempt == call.attempt:
                lingering.error = error.to_json()
            return Outcome(call, error=error, unknown=True, exception=exc)
        except StateError as exc:
            if transaction is not None:  # its local writes are rolled back: nothing stands
                await self.in_thread(transaction.close)
                return Outcome(call, error=self._caught(call, exc), permanent=True, exception=exc)
            # The function ran (its effects may stand) but its result cannot be
            # recorded: retrying would not help, and the outcome is unknown.
            return Outcome(
                call, error=self._caught(call, exc), permanent=True, unknown=True, exception=exc
            )
        except Exception as exc:
            policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
            return Outcome(
                call,
                error=self._caught(call, exc),
                permanent=policy.is_permanent(exc),
                exception=exc,
            )

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
        *,
        timeout: float | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        if _is_async(fn):
            # Only with a timeout (`run` awaits the others itself). Not
            # asyncio.wait_for: it waits for the cancelled coroutine to end,
            # forever if the coroutine ignores its cancellation.
            task = asyncio.ensure_future(_await_result(fn(state, ctx)))
            try:
                finished, _ = await asyncio.wait({task}, timeout=timeout)
            except asyncio.CancelledError:  # the drive is cancelled: so is its call
                task.cancel()
                raise
            if finished:
                return task.result()
            task.cancel()
            # Most coroutines end within a turn of the loop once cancelled; one
            # that does not lingers like a thread.
            await asyncio.wait({task}, timeout=0)
            if not task.done():
                self.lingering.add(
                    self.run_id, call.step, Lingering(call.phase, call.attempt, task, loop.time())
                )
            else:
                task.add_done_callback(_consume)
            raise TimeoutError(f"{call.phase.value} of step {call.step!r} ran past {timeout}s")
        # Sync functions run on threads so one slow call does not stall the
        # other runs this engine drives; the context travels with them.
        if timeout is None:
            return await _await_result(
                loop.run_in_executor(self.executor, copy_context().run, fn, state, ctx)
            )
        started: asyncio.Future[None] = loop.create_future()

        def run() -> Any:
            loop.call_soon_threadsafe(resolve, started)
            return fn(state, ctx)

        future = loop.run_in_executor(self.executor, copy_context().run, run)
        # The clock starts when a thread takes the call, not while it queues.
        await asyncio.wait({started, future}, return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            # A thread cannot be stopped: remember it, so that nothing else of
            # this step starts before it returns.
            self.lingering.add(
                self.run_id, call.step, Lingering(call.phase, call.attempt, future, loop.time())
            )
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
        # `type(...) is dict` first: most results are None or a dict, and
        # `is_model` is a call (an isinstance through pydantic's metaclass).
        if value is not None and type(value) is not dict and is_model(value):
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
        # A plain dict equal to what it was handed changed nothing: no call,
        # no comprehension (the common case, at every call).
        changed = (
            _UNCHANGED
            if type(state) is dict and state == handed
            else self._changes(state, handed, call)
        )
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
        return f"the result of {call.phase.value} of step {call.step!r} (run {self.run_id!r})"

    def _changes(self, state: Any, before: JSON, call: core.Invoke) -> JSON:
        """The top-level keys of ``state`` that the call changed in place."""
        model = type(state) is not dict and is_model(state)  # a dict, mostly: no call
        after = state.model_dump(mode="json") if model else state
        if not isinstance(after, dict):
            return {}
        changed = {key: item for key, item in after.items() if before.get(key, _ABSENT) != item}
        if not changed or model:  # a JSON-mode dump is JSON already
            return changed
        where = f"the state after {call.phase.value} of step {call.step!r} (run {self.run_id!r})"
        jsonable: JSON = to_jsonable(changed, where)
        return jsonable

    # -- reservations (`StepContext.reserve`) ---------------------------------------

    def lapsed(self, outcome: Outcome, lapse: ReservationLapsed) -> Outcome:
        """``outcome``, a success whose commit found a reservation lapsed, as a failure.

        Its outcome is unknown, as a timeout's is: the call's effects may stand.
        """
        call = outcome.call
        ttl = (outcome.reserved or {}).get(lapse.name)
        self.taken.pop(lapse.name, None)
        self.marks.append(
            _mark(
                EventKind.RESERVATION_LAPSED,
                (call.phase, call.step),
                {"name": lapse.name, "holder": lapse.holder, "ttl": ttl, "found": "commit"},
            )
        )
        error = ReservationLapsed(lapse.run_id, lapse.name, lapse.holder, ttl=ttl)
        info = ErrorInfo.from_exception(
            error, step=call.step, phase=call.phase, attempt=call.attempt
        )
        return Outcome(call, error=info, unknown=True)

    async def reserve(
        self, name: str, *, ttl: float, wait: float, call: tuple[Phase, str] | None = None
    ) -> Reservation:
        """Take or refresh a reservation for this run, waiting up to ``wait`` seconds.

        ``call`` (its phase and step) is the call that asks: its success will
        be recorded only if the run still holds the reservation then.

        Raises:
            SagaError: a bad ``ttl`` or ``wait``, or asked inside a local-transaction step.
            ReservationBusy: another run still holds it after ``wait`` seconds.
        """
        if not (ttl > 0 and wait >= 0):
            raise SagaError(f"reserve({name!r}): ttl must be positive and wait not negative")
        if self.in_local_transaction:
            # On SQLite the step's transaction holds the write lock that the
            # reservation needs: it would wait for itself. Refused on every store alike.
            raise SagaError(
                f"reserve({name!r}) inside a local-transaction step: reserve in the step before it"
            )
        (held,) = await self._take([name], ttl=ttl, wait=wait, call=call)
        return held

    async def reserve_all(
        self,
        names: Sequence[str],
        *,
        ttl: float,
        wait: float,
        call: tuple[Phase, str] | None = None,
    ) -> list[Reservation]:
        """Take or refresh every one of ``names`` for this run, or none; see `reserve`.

        Waits (up to ``wait`` seconds) holding none of them, so two runs
        asking for overlapping sets cannot deadlock.

        Raises:
            SagaError: no name, a bad ``ttl`` or ``wait``, or asked inside a
                local-transaction step.
            ReservationBusy: another run still holds one of them after ``wait`` seconds.
        """
        wanted = list(dict.fromkeys(names))
        shown = ", ".join(map(repr, wanted))
        if isinstance(names, str) or not wanted or not all(isinstance(n, str) for n in wanted):
            raise SagaError(f"reserve_all({names!r}): give a list of one or more names")
        if not (ttl > 0 and wait >= 0):
            raise SagaError(f"reserve_all({shown}): ttl must be positive and wait not negative")
        if self.in_local_transaction:
            raise SagaError(
                f"reserve_all({shown}) inside a local-transaction step: reserve in the step "
                "before it"
            )
        return await self._take(wanted, ttl=ttl, wait=wait, call=call)

    async def _take(
        self, names: list[str], *, ttl: float, wait: float, call: tuple[Phase, str] | None
    ) -> list[Reservation]:
        """Take ``names`` (all or none), polling until ``wait`` runs out.

        The wait is over once ``wait`` seconds have passed on the engine's
        clock or in real time, whichever comes first: a skipping clock's time
        passes at once, and a clock moved by hand may stand still.
        """
        clock = self.clock
        give_up = time.monotonic() + wait
        give_up_at = clock() + wait
        pause = 0.02
        store, run_id = self.store, self.run_id
        while True:
            now = clock()
            if len(names) == 1:
                found = [
                    await store.reserve(names[0], run_id=run_id, now=now, expires_at=now + ttl)
                ]
            else:
                found = await store.reserve_all(names, run_id=run_id, now=now, expires_at=now + ttl)
            blocker = next((r for r in found if r.run_id != run_id), None)
            if blocker is None:
                if call is not None:
                    self.held.setdefault(call, {}).update(dict.fromkeys(names, ttl))
                self._note_taken(names, ttl=ttl, now=now, call=call)
                return found
            left = min(give_up - time.monotonic(), give_up_at - now)
            if left <= 0:
                raise ReservationBusy(blocker.name, blocker.run_id, blocker.expires_at)
            busy = self._busy.get(call) if call is not None else None
            if busy is not None:  # only time, or another run, ends this wait
                busy.__exit__(None, None, None)
            try:
                await clock.sleep_until(now + min(pause, left))
            finally:
                if busy is not None:
                    busy.__enter__()
            pause = min(pause * 2, 0.5)

    async def release(
        self, names: Sequence[str] | None, *, call: tuple[Phase, str] | None = None
    ) -> int:
        """Free this run's reservations (only ``names`` if given).

        The calls that took them no longer require them for their success.
        """
        freed = await self.store.release_reservations(self.run_id, names)
        for key, held in list(self.held.items()):
            if names is None:
                del self.held[key]
            else:
                for name in names:
                    held.pop(name, None)
        if call is not None:
            # Not None: the call's outcome is recorded with the marks below.
            self.held.setdefault(call, {})
        now = self.clock()
        released = list(self.taken) if names is None else list(dict.fromkeys(names))
        for name in released:
            expires_at = self.taken.pop(name, None)
            if expires_at is not None and expires_at <= now:
                # It ran out while the run still counted on it: another run may
                # have taken it meanwhile (and since let it go).
                self.marks.append(
                    _mark(
                        EventKind.RESERVATION_LAPSED,
                        call,
                        {"name": name, "expired_at": expires_at, "found": "release"},
                    )
                )
        data: JSON = {"names": released, "freed": freed}
        if names is None:
            data["all"] = True
        self.marks.append(_mark(EventKind.RESERVATION_RELEASED, call, data))
        return freed

    def _note_taken(
        self, names: list[str], *, ttl: float, now: float, call: tuple[Phase, str] | None
    ) -> None:
        """Remember ``names`` as taken until ``now + ttl``, and mark what that was."""
        taken = self.taken
        fresh: list[str] = []
        refreshed: list[str] = []
        for name in names:
            expires_at = taken.get(name)
            if expires_at is None:
                fresh.append(name)
            elif expires_at > now:
                refreshed.append(name)
            else:
                # Taken again after it ran out: for a while the run did not hold
                # it, and another run could have acted on it.
                self.marks.append(
                    _mark(
                        EventKind.RESERVATION_LAPSED,
                        call,
                        {"name": name, "expired_at": expires_at, "found": "reserve"},
                    )
                )
                fresh.append(name)
            taken[name] = now + ttl
        for kind, which in (
            (EventKind.RESERVATION_TAKEN, fresh),
            (EventKind.RESERVATION_REFRESHED, refreshed),
        ):
            if which:
                self.marks.append(
                    _mark(kind, call, {"names": which, "ttl": ttl, "expires_at": now + ttl})
                )

    def finished(self) -> list[Mark]:
        """The marks to journal with ``run_finished``: the store frees what the run holds."""
        if not self.taken:
            return []
        names = list(self.taken)
        self.taken.clear()
        return [(EventKind.RESERVATION_RELEASED, None, None, {"names": names, "finished": True})]

    def take_marks(self) -> list[Mark]:
        """The reservation events to journal now (taken off ``marks``)."""
        marks, self.marks = self.marks, []
        return marks


Mark = tuple[EventKind, str | None, int | None, JSON]
"""A reservation event to journal: kind, step, attempt and data (`RunWriter.append`)."""


def _mark(kind: EventKind, call: tuple[Phase, str] | None, data: JSON) -> Mark:
    if call is None:
        return (kind, None, None, data)
    phase, step = call
    if phase is Phase.COMPENSATION:
        data["phase"] = phase.value
    return (kind, step, None, data)


_ABSENT = object()


def _unfit_names(step: str, names: Sequence[str], exc: Exception) -> str:
    """Why the state cannot fill in a step's ``reserve`` names, in one line."""
    shown = ", ".join(map(repr, names))
    if isinstance(exc, KeyError):
        return (
            f"step {step!r} reserves {shown}, but the state has no field {exc.args[0]!r} "
            "to fill in; give the run that field or change the name"
        )
    return f"step {step!r} reserves {shown}, which the state cannot fill in: {exc}"


def resolve(future: asyncio.Future[None] | None) -> None:
    """Complete ``future`` (None, or one already done, is left alone)."""
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
    answer = inspect.iscoroutinefunction(fn)
    if len(_async_known) < _ASYNC_KNOWN:
        _async_known[fn] = answer
    return answer


_ASYNC_KNOWN = 1024
_async_known: dict[Any, bool] = {}
"""`_is_async` of the first functions asked about, read without a call (see `run_unheld`)."""


async def _await_result(pending: Awaitable[Any]) -> Any:
    value = await pending
    if value is None or type(value) is dict:  # the common results, and not awaitable
        return value
    return await _unwrap(value)


async def _unwrap(value: Any) -> Any:
    while inspect.isawaitable(value):  # a sync wrapper that returned a coroutine
        value = await value
    return value

"""Calling a step's function for the driver: an action, a compensation or a handler.

`run_call` hands the function the run's state and a `StepContext`, runs it
(awaited, on a thread, under its timeout, or in a local transaction) and turns
what it returned or raised into an `Outcome`, with the result as JSON and the
part of it the state keeps. Nothing here writes to the journal.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from contextvars import copy_context
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sagakit import core
from sagakit.context import StepContext, idempotency_key, run_logger
from sagakit.control import Next, Pause, Signal
from sagakit.definition import Handler
from sagakit.errors import PermanentError, SagaError, StateError
from sagakit.journal import JSON, ErrorInfo, Phase
from sagakit.jsonutil import to_jsonable
from sagakit.store import LocalTransaction, Store

if TYPE_CHECKING:
    from sagakit.driver.driver import Driver


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


async def ask(
    driver: Driver, handler: Handler, call: core.Invoke, about: Any
) -> Next | Pause | None:
    """Call a failure or signal handler; what it answers, or None (the default)."""
    try:
        state = driver.saga.load_state(driver.progress.state)
        answer = handler(state, context(driver, call), about)
        while inspect.isawaitable(answer):
            answer = await answer
    except Pause as pause:
        return pause
    except Exception:
        driver.log.exception(
            "run %s: the handler of step %r failed; taking the default", driver.run_id, call.step
        )
        return None
    if answer is None or isinstance(answer, Pause):
        return answer
    try:
        return Next(answer)
    except ValueError:
        driver.log.error(
            "run %s: the handler of step %r answered %r, which is not a Next or a Pause; "
            "taking the default",
            driver.run_id,
            call.step,
            answer,
        )
        return None


def context(driver: Driver, call: core.Invoke) -> StepContext:
    # Built in one go: this runs for every call, and dataclasses.replace
    # on a frozen context costs as much as the rest of it.
    progress = driver.progress
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
        signal = driver.saga[call.step].wait_for
        if signal is not None and signal in progress.signals:
            extra["signal"] = Signal(signal, progress.signals[signal])
        extra["previous_step_result"] = _previous_result(driver, call.step)
    return StepContext(
        run_id=driver.record.id,
        saga=driver.saga.name,
        version=driver.saga.version,
        step=call.step,
        phase=call.phase,
        attempt=call.attempt,
        idempotency_key=idempotency_key(driver.record.id, call.step, call.phase),
        started_at=driver.clock(),
        log=run_logger(driver.record.id, driver.saga.name, call.step),
        clock=driver.clock,
        reserver=driver,
        **extra,
    )


def _previous_result(driver: Driver, step: str) -> JSON | None:
    """What the stage before ``step`` returned (a parallel stage's results merged)."""
    before = driver.saga.plan().previous_stage(step)
    if not before:
        return None
    merged: JSON = {}
    for name in before:
        result = driver.progress.attempts(Phase.ACTION, name).result
        if result:
            merged.update(result)
    return merged


async def run_call(driver: Driver, call: core.Invoke) -> Outcome:
    step = driver.saga[call.step]
    if call.phase is Phase.ACTION:
        fn, timeout = step.action, step.timeout
    else:
        assert step.compensation is not None  # the core compensates only such steps
        fn, timeout = step.compensation, step.compensation_timeout
    lingering = driver._lingering.pop(call.step, None)
    if lingering is not None and not lingering.done():
        # A timed-out call of this step is still running on its thread: no
        # retry or compensation may overlap it.
        driver.log.warning(
            "run %s: waiting for a timed-out call of step %r to return before the next",
            driver.run_id,
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
    handed = dict(driver.progress.state)
    try:
        state = driver.saga.load_state(handed)
    except StateError as exc:  # the function never ran: a known, permanent failure
        return Outcome(call, error=caught(exc), permanent=True)
    local = step.local_transaction and call.phase is Phase.ACTION
    transaction: LocalTransaction | None = None
    try:
        if local:
            driver._in_local_transaction = True
            try:
                value, transaction = await driver._in_thread(
                    _run_local, driver, fn, state, context(driver, call)
                )
            finally:
                driver._in_local_transaction = False
        elif not timeout and _is_async(fn):
            # The common case, without the coroutine of `_invoke`.
            value = await fn(state, context(driver, call))
            if value is not None and type(value) is not dict:
                value = await _unwrap(value)
        else:
            value = await _invoke(driver, call, fn, state, context(driver, call), timeout=timeout)
        result, merged = _normalise(driver, call, value, state, handed)
        return Outcome(call, result=result, merged=merged, transaction=transaction)
    except Pause as pause:
        if transaction is not None:
            await driver._in_thread(transaction.close)
        if call.phase is Phase.ACTION:
            return Outcome(call, pause=pause)
        return Outcome(call, error=caught(SagaError(f"a compensation cannot pause: {pause}")))
    except TimeoutError as exc:
        return Outcome(call, error=caught(exc, timed_out=True), unknown=True)
    except StateError as exc:
        if transaction is not None:  # its local writes are rolled back: nothing stands
            await driver._in_thread(transaction.close)
            return Outcome(call, error=caught(exc), permanent=True)
        # The function ran (its effects may stand) but its result cannot be
        # recorded: retrying would not help, and the outcome is unknown.
        return Outcome(call, error=caught(exc), permanent=True, unknown=True)
    except Exception as exc:
        policy = step.retry_policy if call.phase is Phase.ACTION else step.compensation_retry
        return Outcome(call, error=caught(exc), permanent=policy.is_permanent(exc))


def _run_local(
    driver: Driver, fn: Callable[..., Any], state: Any, ctx: StepContext
) -> tuple[Any, LocalTransaction]:
    """Run a local-transaction action on this thread, leaving its transaction open."""
    if type(driver.store).local_transaction is Store.local_transaction:
        # No database to share: no later attempt can do better.
        raise PermanentError(
            f"step {ctx.step!r} needs a local transaction, which the store "
            f"{driver.store.url} cannot run; use a SQLite or PostgreSQL store"
        )
    transaction = driver.store.local_transaction()
    try:
        value = fn(state, replace(ctx, connection=transaction.connection))
    except BaseException:
        transaction.close()  # rolls the step's writes back
        raise
    return value, transaction


async def _invoke(
    driver: Driver,
    call: core.Invoke,
    fn: Callable[..., Any],
    state: Any,
    ctx: StepContext,
    *,
    timeout: float | None,
) -> Any:
    if _is_async(fn):
        # Only with a timeout (`run_call` awaits the others itself). Cancelling
        # a coroutine stops it, so a timed-out one leaves nothing behind.
        return await asyncio.wait_for(_await_result(fn(state, ctx)), timeout)
    # Sync functions run on threads so one slow call does not stall the
    # other runs this engine drives; the context travels with them.
    loop = asyncio.get_running_loop()
    if timeout is None:
        return await _await_result(
            loop.run_in_executor(driver.executor, copy_context().run, fn, state, ctx)
        )
    started: asyncio.Future[None] = loop.create_future()

    def run() -> Any:
        loop.call_soon_threadsafe(resolve, started)
        return fn(state, ctx)

    future = loop.run_in_executor(driver.executor, copy_context().run, run)
    # The clock starts when a thread takes the call, not while it queues.
    await asyncio.wait({started, future}, return_when=asyncio.FIRST_COMPLETED)
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        # A thread cannot be stopped: remember it, so that nothing else of
        # this step starts before it returns.
        future.add_done_callback(_consume)
        driver._lingering[call.step] = future
        raise TimeoutError(f"{call.phase.value} of step {call.step!r} ran past {timeout}s")
    return await _await_result(future)


def _normalise(
    driver: Driver, call: core.Invoke, value: Any, state: Any, handed: JSON
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
            f"{_result_of(driver, call)} must be a dict, a pydantic model or None, "
            f"not {type(value).__name__}"
        )
    # A function may also change the state object it was handed (Ruvon's
    # tutorial appends to ``state.compensations_run``). Those changes are
    # recorded like a returned result, which wins where both name a key, so
    # nothing a step did to the state is lost on the next replay.
    changed = _changes(driver, state, handed, call)
    if value is None and not changed:
        return None, None
    result: JSON = {**changed, **to_jsonable(value or {}, _result_of(driver, call))}
    if driver.saga.state_type is None:
        return result, None
    merged = driver.saga.dump_state({**driver.progress.state, **result})
    # Keep only what the model kept, in the form it stores it, so that
    # replaying the journal yields exactly the state the model validated.
    kept = {key: merged[key] for key in result if key in merged}
    return result, (None if kept == result else kept)


def _result_of(driver: Driver, call: core.Invoke) -> str:
    return f"the result of {call.phase.value} of step {call.step!r} (run {driver.record.id!r})"


def _changes(driver: Driver, state: Any, before: JSON, call: core.Invoke) -> JSON:
    """The top-level keys of ``state`` that the call changed in place."""
    after = state.model_dump(mode="json") if isinstance(state, BaseModel) else state
    if not isinstance(after, dict):
        return {}
    changed = {key: item for key, item in after.items() if before.get(key, _ABSENT) != item}
    if not changed or isinstance(state, BaseModel):  # a JSON-mode dump is JSON already
        return changed
    where = f"the state after {call.phase.value} of step {call.step!r} (run {driver.record.id!r})"
    jsonable: JSON = to_jsonable(changed, where)
    return jsonable


_ABSENT = object()


def resolve(future: asyncio.Future[None] | None) -> None:
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

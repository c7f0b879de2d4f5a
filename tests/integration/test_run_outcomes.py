"""What a start tells its caller, and a run that did not complete as an exception.

Duplicate starts: the same id with the same input is the same run (``created``
False); with another input it is refused (`RunInputConflict`). A run that did
not complete raises `RunFailed` from `Run.raise_for_status`, from the step's
own exception when this process raised it.
"""

from __future__ import annotations

import asyncio
import traceback
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    Engine,
    ErrorInfo,
    PermanentError,
    Redactor,
    RetryPolicy,
    Run,
    RunFailed,
    RunIdConflict,
    RunInputConflict,
    RunStatus,
    Saga,
    SagaError,
    StepContext,
)
from sagakit.driver import Failures

ONCE = RetryPolicy(max_attempts=1)


class Order(BaseModel):
    amount: float
    card: str = "visa"
    txn: str | None = None


class CardDeclined(Exception):
    """The gateway's own error type, which a caller may want to catch as it is."""


def order_saga(
    calls: Counter[str], *, decline: bool = False, refund_fails: bool = False
) -> Saga[Order]:
    saga: Saga[Order] = Saga("order", state=Order)

    @saga.step
    def reserve(state: Order, ctx: StepContext) -> None:
        calls["reserve"] += 1

    @reserve.compensate(retry=ONCE)
    def release(state: Order, ctx: StepContext) -> None:
        calls["release"] += 1
        if refund_fails:
            raise ConnectionError("warehouse unreachable")

    @saga.step(retry=ONCE)
    def charge(state: Order, ctx: StepContext) -> dict[str, Any]:
        calls["charge"] += 1
        if decline:
            raise CardDeclined(f"card {state.card} declined")
        return {"txn": f"t-{ctx.run_id}"}

    return saga


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [str(e.kind) for e in engine.history(run_id)]


# -- duplicate starts (memory, SQLite, PostgreSQL) ---------------------------------------


def test_start_says_whether_it_created_the_run_and_the_same_input_again_returns_it(
    engine: Engine,
) -> None:
    calls: Counter[str] = Counter()
    saga = order_saga(calls)
    first = engine.start(saga, {"amount": 10}, run_id="order-1")
    assert first.created is True
    # The same input as the state model sees it: 10 and 10.0 are one amount,
    # a model instance is its fields, a default left out is the default.
    for same in ({"amount": 10.0}, Order(amount=10), {"amount": 10, "card": "visa"}):
        again = engine.start(saga, same, run_id="order-1")
        assert again.created is False
        assert again == first
    assert kinds(engine, "order-1") == ["run_started"]
    assert engine.get("order-1").created is False  # a run read, not started
    assert not calls


def test_start_with_another_input_is_refused_naming_the_keys_not_the_values(
    engine: Engine,
) -> None:
    saga = order_saga(Counter())
    engine.start(saga, {"amount": 10, "card": "amex-secret-4242"}, run_id="order-2")
    before = engine.history("order-2")
    with pytest.raises(RunInputConflict) as refused:
        engine.start(saga, {"amount": 99, "card": "amex-secret-4242"}, run_id="order-2")
    error = refused.value
    assert isinstance(error, RunIdConflict)  # caught by code written for any id conflict
    assert error.run_id == "order-2"
    assert error.keys == ("amount",)
    message = str(error)
    assert "'order-2'" in message
    assert "'amount'" in message
    assert "another input" in message
    assert "99" not in message
    assert "amex" not in message
    # Nothing was recorded for the refused start.
    assert engine.history("order-2") == before
    assert [r.id for r in engine.runs()] == ["order-2"]
    assert engine.get("order-2").state.amount == 10
    # A key given only on one side differs too.
    with pytest.raises(RunInputConflict, match="'txn'"):
        engine.start(saga, {"amount": 10, "card": "amex-secret-4242", "txn": "x"}, run_id="order-2")


def test_run_compares_with_the_input_the_run_started_with_not_its_state_now(
    engine: Engine,
) -> None:
    calls: Counter[str] = Counter()
    saga = order_saga(calls)
    done = engine.run(saga, {"amount": 10}, run_id="order-3")
    assert done.status == RunStatus.COMPLETED
    assert done.created is True
    assert done.state.txn == "t-order-3"  # the state moved on since the start
    again = engine.run(saga, {"amount": 10}, run_id="order-3")
    assert again.created is False
    assert again == done
    with pytest.raises(RunInputConflict, match=r"'order-3'.*'amount'"):
        engine.run(saga, {"amount": 11}, run_id="order-3")
    assert calls == Counter(reserve=1, charge=1)  # nothing ran twice, nothing ran for the refusal
    # start() of an id run() created, and run() of an id start() created.
    assert engine.start(saga, {"amount": 10}, run_id="order-3").created is False
    engine.start(saga, {"amount": 5}, run_id="order-4")
    with pytest.raises(RunInputConflict):
        engine.run(saga, {"amount": 6}, run_id="order-4")
    assert engine.run(saga, {"amount": 5}, run_id="order-4").created is False
    assert calls == Counter(reserve=1, charge=1)  # left to the workers, not stolen


def test_another_saga_on_a_taken_id_is_still_a_plain_run_id_conflict(engine: Engine) -> None:
    engine.start(order_saga(Counter()), {"amount": 1}, run_id="shared")
    other: Saga[Any] = Saga("other")

    @other.step
    def noop(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    for start in (engine.start, engine.run):
        with pytest.raises(RunIdConflict) as refused:
            start(other, {"amount": 1}, run_id="shared")
        assert not isinstance(refused.value, RunInputConflict)
        assert "belongs to a run of saga 'order'" in str(refused.value)


def test_the_async_engine_tells_the_same(store_url: str) -> None:
    saga = order_saga(Counter())

    async def body() -> tuple[Run, Run, Run]:
        async with AsyncEngine(store_url) as engine:
            made = await engine.start(saga, {"amount": 3}, run_id="a-1")
            found = await engine.start(saga, {"amount": 3}, run_id="a-1")
            ran = await engine.run(saga, {"amount": 3}, run_id="a-2")
            with pytest.raises(RunInputConflict):
                await engine.start(saga, {"amount": 4}, run_id="a-2")
            return made, found, ran

    made, found, ran = asyncio.run(body())
    assert (made.created, found.created, ran.created) == (True, False, True)


# -- raise_for_status ---------------------------------------------------------------------


def test_a_failure_in_this_process_is_raised_from_the_step_exception_itself(
    engine: Engine,
) -> None:
    calls: Counter[str] = Counter()
    run = engine.run(order_saga(calls, decline=True), {"amount": 10}, run_id="declined")
    assert run.status == RunStatus.ROLLED_BACK
    assert isinstance(run.exception, CardDeclined)
    with pytest.raises(RunFailed) as raised:
        run.raise_for_status()
    failed = raised.value
    original = failed.__cause__
    assert isinstance(original, CardDeclined)  # its own type, to catch as it is
    assert original is run.exception
    assert original.__traceback__ is not None  # where the step raised it
    assert "charge" in {frame.name for frame in _frames(original)}
    assert isinstance(failed, SagaError)
    assert failed.run == run
    assert failed.run_id == "declined"
    assert failed.status == RunStatus.ROLLED_BACK
    assert failed.cause == run.error
    assert failed.cause is not None
    assert failed.cause.type.endswith("CardDeclined")
    assert failed.compensation_errors == ()
    assert "'declined'" in str(failed)
    assert "rolled_back" in str(failed)
    assert "card visa declined" in str(failed)
    # The same through get and wait, while this engine remembers it.
    for again in (engine.get("declined"), engine.wait("declined")):
        with pytest.raises(RunFailed) as raised_again:
            again.raise_for_status()
        assert raised_again.value.__cause__ is original


def test_every_compensation_error_comes_with_the_original_error(engine: Engine) -> None:
    calls: Counter[str] = Counter()
    saga = order_saga(calls, decline=True, refund_fails=True)
    run = engine.run(saga, {"amount": 10}, run_id="stuck")
    assert run.status == RunStatus.NEEDS_ATTENTION
    with pytest.raises(RunFailed) as raised:
        run.raise_for_status()
    failed = raised.value
    assert isinstance(failed.__cause__, CardDeclined)
    assert failed.status == RunStatus.NEEDS_ATTENTION
    assert [e.type for e in failed.compensation_errors] == ["ConnectionError"]
    assert failed.compensation_errors == run.compensation_errors
    assert "1 compensation error" in str(failed)
    assert "warehouse unreachable" in str(failed)


def test_a_run_loaded_in_a_fresh_engine_raises_with_the_recorded_error_only(
    store_url: str,
) -> None:
    saga = order_saga(Counter(), decline=True)
    with Engine(store_url) as first:
        first.run(saga, {"amount": 10}, run_id="elsewhere")
    with Engine(store_url) as fresh:  # as after a restart, or in another process
        run = fresh.get("elsewhere")
    assert run.exception is None
    with pytest.raises(RunFailed) as raised:
        run.raise_for_status()
    failed = raised.value
    assert failed.__cause__ is None
    assert isinstance(failed.cause, ErrorInfo)
    assert failed.cause.type.endswith("CardDeclined")
    assert failed.cause.message == "card visa declined"
    assert "CardDeclined" in failed.cause.traceback  # the text of the traceback is kept


def test_a_completed_run_does_not_raise_and_an_unfinished_one_does(engine: Engine) -> None:
    saga = order_saga(Counter())
    done = engine.run(saga, {"amount": 10}, run_id="fine")
    assert done.raise_for_status() is done
    pending = engine.start(saga, {"amount": 10}, run_id="later")
    with pytest.raises(RunFailed, match=r"it is pending.*not finished yet") as raised:
        pending.raise_for_status()
    assert raised.value.cause is None
    assert raised.value.__cause__ is None


def test_a_permanent_error_and_a_timeout_are_raised_from_as_they_were() -> None:
    saga: Saga[Any] = Saga("slow")

    @saga.step(retry=ONCE, timeout=0.05)
    async def wait_long(state: dict[str, Any], ctx: StepContext) -> None:
        if state.get("permanent"):
            raise PermanentError("no")
        await asyncio.sleep(30)

    with Engine("memory://outcomes-timeout") as engine:
        timed_out = engine.run(saga, run_id="t")
        refused = engine.run(saga, {"permanent": True}, run_id="p")
    with pytest.raises(RunFailed) as raised:
        timed_out.raise_for_status()
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert raised.value.cause is not None
    assert raised.value.cause.timed_out
    with pytest.raises(RunFailed) as raised:
        refused.raise_for_status()
    assert isinstance(raised.value.__cause__, PermanentError)


def test_a_redacted_run_carries_no_exception() -> None:
    # An exception's message and traceback are not masked: showing a run never shows it.
    saga: Saga[Any] = Saga("secretive", sensitive=["card"])

    @saga.step(retry=ONCE)
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        raise CardDeclined(f"card {state['card']} declined")

    with Engine("memory://outcomes-redacted") as engine:
        run = engine.run(saga, {"card": "4242-4242"}, run_id="s")
    assert run.exception is not None
    shown = run.redacted(Redactor(frozenset({"card"})).collect(run.data))
    assert shown.exception is None
    assert shown.error is not None
    assert "4242" not in shown.error.message


def test_the_memory_of_exceptions_is_bounded_oldest_forgotten_first() -> None:
    failures = Failures(limit=3)
    errors = [ErrorInfo("E", "m", step="s", phase="action", attempt=n) for n in range(1, 6)]
    raised = [RuntimeError(n) for n in range(1, 6)]
    for error, exc in zip(errors, raised, strict=True):
        failures.remember("r", error, exc)
    assert len(failures) == 3
    assert failures.recall("r", errors[0]) is None
    assert failures.recall("r", errors[1]) is None
    assert [failures.recall("r", e) for e in errors[2:]] == raised[2:]
    assert failures.recall("other-run", errors[4]) is None


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__))


class Counted(BaseModel):
    n: int = 0


def _settled_sagas() -> list[Saga[Any]]:
    """Sagas that settle in one drive: completed (plain and modelled), rolled back, failed."""
    plain: Saga[Any] = Saga("settled-plain")

    @plain.step()
    def add(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"n": state.get("n", 0) + 1}

    modelled: Saga[Counted] = Saga("settled-model", state=Counted)

    @modelled.step()
    def bump(state: Counted, ctx: StepContext) -> dict[str, Any]:
        return {"n": state.n + 1}

    undone: Saga[Any] = Saga("settled-undone")

    @undone.step()
    def first(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @first.compensate()
    def undo_first(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @undone.step(retry=ONCE)
    def second(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("card declined")

    failed: Saga[Any] = Saga("settled-failed")

    @failed.step(retry=ONCE)
    def only(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("nothing to undo")

    return [plain, modelled, undone, failed]


@pytest.mark.parametrize("index", range(4))
def test_the_run_a_drive_settles_is_the_stored_run(index: int) -> None:
    # `run` shows a run its own drive settled from that drive's last commit,
    # not from the store: the run it returns must be the stored one.
    saga = _settled_sagas()[index]

    async def body() -> tuple[Run, Run]:
        async with AsyncEngine("memory://") as engine:
            returned = await engine.run(saga, {"n": 1}, run_id=f"settled-{index}")
            return returned, await engine.get(returned.id)

    returned, stored = asyncio.run(body())
    assert returned.created
    assert returned == stored
    assert type(returned.state) is type(stored.state)
    assert (returned.exception is None) == (stored.exception is None)
    assert returned.status in {
        RunStatus.COMPLETED,
        RunStatus.ROLLED_BACK,
        RunStatus.FAILED,
    }

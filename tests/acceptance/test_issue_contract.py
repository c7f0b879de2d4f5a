"""Acceptance tests for the issue's contract, written black-box against the public API.

Every test uses only names exported from ``sagakit`` and the call shapes the issue,
the README and the docstrings show. Crash scenarios use a real child process that
dies with ``os._exit`` inside a step (or while waiting for a retry), then a second
engine in this process recovers the run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    AttentionReport,
    DefinitionError,
    Engine,
    InvalidRunState,
    PermanentError,
    RetryPolicy,
    RunInputConflict,
    RunNotFound,
    RunStatus,
    Saga,
    SagaError,
    StateError,
    StepKind,
)

_ids = itertools.count()

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'orders.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    with Engine(url) as eng:
        yield eng


class Order(BaseModel):
    amount: float
    txn_id: str | None = None


class Gateway:
    """A fake payment gateway that deduplicates by idempotency key."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.charges: dict[str, float] = {}
        self.refunds: set[str] = set()
        self.refund_down = False

    def charge(self, amount: float, *, idempotency_key: str, attempt: int) -> str:
        self.calls.append(("charge", idempotency_key, attempt))
        self.charges.setdefault(idempotency_key, amount)
        return f"txn-{idempotency_key}"

    def refund(self, txn_id: str | None, *, idempotency_key: str, attempt: int) -> None:
        self.calls.append(("refund", idempotency_key, attempt))
        if self.refund_down:
            raise ConnectionError("refund API is down")
        assert txn_id is not None
        self.refunds.add(txn_id)


def order_saga(gateway: Gateway, *, ship_fails: bool = True) -> Saga[Order]:
    """The issue's example saga, built fresh per test."""
    saga = Saga(f"order-{next(_ids)}", state=Order)

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.1), timeout=5.0)
    def charge_payment(state: Order, ctx: Any) -> dict[str, Any]:
        txn = gateway.charge(state.amount, idempotency_key=ctx.idempotency_key, attempt=ctx.attempt)
        return {"txn_id": txn}

    @charge_payment.compensate(retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    def refund_payment(state: Order, ctx: Any) -> None:
        gateway.refund(state.txn_id, idempotency_key=ctx.idempotency_key, attempt=ctx.attempt)

    @saga.step
    def ship(state: Order, ctx: Any) -> None:
        if ship_fails:
            raise PermanentError("no carrier today")

    return saga


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [str(e.kind) for e in engine.history(run_id)]


# --------------------------------------------------------------------------- the example


def test_issue_example_rolls_back_and_exposes_id_status_state_error(engine: Engine) -> None:
    gateway = Gateway()
    saga = order_saga(gateway)
    run = engine.run(saga, {"amount": 10}, run_id="order-42")

    assert run.id == "order-42"
    assert run.status == "rolled_back"
    assert run.status == RunStatus.ROLLED_BACK
    assert isinstance(run.status, str)
    assert isinstance(run.state, Order)
    assert run.state.amount == 10
    assert run.state.txn_id == "txn-" + gateway.calls[0][1]
    assert run.error is not None
    assert run.error.step == "ship"
    assert "no carrier today" in str(run.error)
    assert "PermanentError" in run.error.type
    # The refund got the transaction id the charge returned (the merged state).
    assert gateway.refunds == {run.state.txn_id}

    again = engine.get("order-42")
    assert again.status == "rolled_back"
    assert again.state == run.state
    assert [r.id for r in engine.runs(status="rolled_back")] == ["order-42"]
    assert engine.runs(status="needs_attention") == []


def test_a_completed_run_merges_and_journals_each_result(engine: Engine) -> None:
    gateway = Gateway()
    saga = order_saga(gateway, ship_fails=False)
    run = engine.run(saga, Order(amount=3.5), run_id="ok-1")
    assert run.status == "completed"
    assert run.error is None
    assert run.state.txn_id is not None
    succeeded = [e for e in engine.history("ok-1") if e.kind == "step_succeeded"]
    assert [e.step for e in succeeded] == ["charge_payment", "ship"]
    assert succeeded[0].data["result"] == {"txn_id": run.state.txn_id}
    assert run.data == {"amount": 3.5, "txn_id": run.state.txn_id}


def test_a_plain_dict_state_when_state_is_none(engine: Engine) -> None:
    saga: Saga[Any] = Saga("dict-state")
    seen: list[Any] = []

    @saga.step
    def first(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        seen.append(dict(state))
        return {"a": 1}

    @saga.step
    def second(state: dict[str, Any], ctx: Any) -> None:
        seen.append(dict(state))

    @saga.step
    def third(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"b": state["a"] + 1, "x": "over"}

    run = engine.run(saga, {"x": "in"})
    assert run.status == "completed"
    assert isinstance(run.state, dict)
    assert run.state == {"x": "over", "a": 1, "b": 2}
    assert seen == [{"x": "in"}, {"x": "in", "a": 1}]


def test_input_that_does_not_fit_the_model_is_a_saga_error(engine: Engine) -> None:
    saga = order_saga(Gateway())
    with pytest.raises(StateError) as info:
        engine.run(saga, {"amount": "lots"}, run_id="bad-input")
    assert isinstance(info.value, SagaError)
    with pytest.raises(RunNotFound):
        engine.get("bad-input")


def test_engine_without_a_context_manager(url: str) -> None:
    eng = Engine(url)
    try:
        run = eng.run(order_saga(Gateway()), {"amount": 1}, run_id="plain")
        assert run.status == "rolled_back"
        assert eng.get("plain").status == "rolled_back"
    finally:
        eng.close()
    eng.close()  # closing twice is harmless


def test_the_default_lease_is_thirty_seconds() -> None:
    assert inspect.signature(AsyncEngine).parameters["lease_seconds"].default == 30


def test_register_and_recover_with_nothing_to_recover(engine: Engine) -> None:
    engine.register(order_saga(Gateway()))
    assert engine.recover() == []


# --------------------------------------------------------------------------- step kinds


def _noop(state: Any, ctx: Any) -> None:
    return None


def test_kinds_are_implied_and_declarable() -> None:
    saga: Saga[Any] = Saga("kinds")
    check = saga.step(name="check")(_noop)
    reserve = saga.step(name="reserve")(_noop)
    reserve.compensate(_noop)
    pay = saga.step(name="pay", kind="pivot")(_noop)
    notify = saga.step(name="notify")(_noop)
    mail = saga.step(name="mail", kind=StepKind.RETRIABLE)(_noop)
    saga.validate()
    assert check.kind == "plain"
    assert reserve.kind == "compensatable"
    assert pay.kind == "pivot"
    assert notify.kind == "retriable"
    assert mail.kind == "retriable"
    with Engine("memory://") as eng:
        eng.register(saga)


def _pivot_with_compensation() -> None:
    saga: Saga[Any] = Saga("bad")
    step = saga.step(name="charge_card", kind="pivot")(_noop)
    step.compensate(_noop)


def _plain_with_compensation() -> None:
    saga: Saga[Any] = Saga("bad")
    step = saga.step(name="charge_card", kind="plain")(_noop)
    step.compensate(_noop)


def _two_pivots() -> None:
    saga: Saga[Any] = Saga("bad")
    saga.step(name="first", kind="pivot")(_noop)
    saga.step(name="charge_card", kind="pivot")(_noop)


def _retriable_before_pivot() -> None:
    saga: Saga[Any] = Saga("bad")
    saga.step(name="charge_card", kind="retriable")(_noop)
    with Engine("memory://") as eng:
        eng.register(saga)


def _compensatable_without_compensation() -> None:
    saga: Saga[Any] = Saga("bad")
    saga.step(name="charge_card", kind="compensatable")(_noop)
    with Engine("memory://") as eng:
        eng.register(saga)


def _compensation_after_pivot() -> None:
    saga: Saga[Any] = Saga("bad")
    saga.step(name="pay", kind="pivot")(_noop)
    step = saga.step(name="charge_card")(_noop)
    step.compensate(_noop)


def _unknown_kind() -> None:
    saga: Saga[Any] = Saga("bad")
    saga.step(name="charge_card", kind="sometimes")(_noop)


def _two_compensations() -> None:
    saga: Saga[Any] = Saga("bad")
    step = saga.step(name="charge_card")(_noop)
    step.compensate(_noop)
    step.compensate(_noop)


def _bad_signature() -> None:
    saga: Saga[Any] = Saga("bad")

    @saga.step
    def charge_card() -> None: ...


@pytest.mark.parametrize(
    "define",
    [
        _pivot_with_compensation,
        _plain_with_compensation,
        _two_pivots,
        _retriable_before_pivot,
        _compensatable_without_compensation,
        _compensation_after_pivot,
        _unknown_kind,
        _two_compensations,
        _bad_signature,
    ],
)
def test_kind_rule_violations_raise_a_saga_error_naming_the_step(define: Any) -> None:
    with pytest.raises(SagaError, match="charge_card") as info:
        define()
    assert isinstance(info.value, DefinitionError)


# --------------------------------------------------------------------------- ctx


def test_ctx_fields_and_stable_idempotency_keys(engine: Engine) -> None:
    saga: Saga[Any] = Saga("ctx")
    seen: list[tuple[str, str, str, int, str]] = []

    @saga.step(retry=FAST)
    def book(state: Any, ctx: Any) -> None:
        seen.append(("book", ctx.run_id, ctx.step, ctx.attempt, ctx.idempotency_key))
        if ctx.attempt < 3:
            raise ConnectionError("flaky")

    @book.compensate(retry=FAST)
    def cancel(state: Any, ctx: Any) -> None:
        assert ctx.is_compensation
        assert ctx.phase == "compensation"
        seen.append(("cancel", ctx.run_id, ctx.step, ctx.attempt, ctx.idempotency_key))
        if ctx.attempt < 2:
            raise ConnectionError("flaky too")

    @saga.step
    def pay(state: Any, ctx: Any) -> None:
        seen.append(("pay", ctx.run_id, ctx.step, ctx.attempt, ctx.idempotency_key))
        raise PermanentError("declined")

    run = engine.run(saga, {}, run_id="ctx-1")
    assert run.status == "rolled_back"
    assert [(w, r, s, a) for w, r, s, a, _ in seen] == [
        ("book", "ctx-1", "book", 1),
        ("book", "ctx-1", "book", 2),
        ("book", "ctx-1", "book", 3),
        ("pay", "ctx-1", "pay", 1),
        ("cancel", "ctx-1", "book", 1),
        ("cancel", "ctx-1", "book", 2),
    ]
    book_keys = {k for w, *_, k in seen if w == "book"}
    cancel_keys = {k for w, *_, k in seen if w == "cancel"}
    pay_keys = {k for w, *_, k in seen if w == "pay"}
    assert len(book_keys) == len(cancel_keys) == len(pay_keys) == 1
    assert len(book_keys | cancel_keys | pay_keys) == 3

    first_keys = book_keys | cancel_keys | pay_keys
    seen.clear()
    engine.run(saga, {}, run_id="ctx-2")
    assert {k for *_, k in seen}.isdisjoint(first_keys)


# --------------------------------------------------------------------------- sync and async


def _async_and_sync_saga(log: list[str]) -> Saga[Any]:
    saga: Saga[Any] = Saga(f"mixed-{next(_ids)}")

    @saga.step
    async def a(state: Any, ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        log.append("a")
        return {"a": 1}

    @a.compensate
    def undo_a(state: Any, ctx: Any) -> None:
        log.append("undo_a")

    @saga.step
    def b(state: Any, ctx: Any) -> dict[str, Any]:
        log.append("b")
        return {"b": state["a"] + 1}

    @b.compensate
    async def undo_b(state: Any, ctx: Any) -> None:
        await asyncio.sleep(0)
        log.append(f"undo_b:{state['b']}")

    @saga.step
    async def c(state: Any, ctx: Any) -> None:
        raise PermanentError("c is full")

    return saga


def test_sync_and_async_steps_and_compensations_on_engine(engine: Engine) -> None:
    log: list[str] = []
    run = engine.run(_async_and_sync_saga(log), {})
    assert run.status == "rolled_back"
    assert log == ["a", "b", "undo_b:2", "undo_a"]


def test_async_engine_offers_the_same_methods_as_coroutines(url: str) -> None:
    async def main() -> None:
        log: list[str] = []
        saga = _async_and_sync_saga(log)
        async with AsyncEngine(url) as eng:
            run = await eng.run(saga, {}, run_id="as-1")
            assert run.status == "rolled_back"
            assert log == ["a", "b", "undo_b:2", "undo_a"]
            assert (await eng.get("as-1")).status == "rolled_back"
            assert [r.id for r in await eng.runs(status="rolled_back")] == ["as-1"]
            history = await eng.history("as-1")
            assert history[0].kind == "run_started"
            assert (await eng.retry("as-1")).status == "rolled_back"
            with pytest.raises(InvalidRunState):
                await eng.resolve("as-1", note="nothing to resolve")
            assert await eng.recover() == []
            with pytest.raises(RunNotFound, match="nope-9"):
                await eng.get("nope-9")
            assert log == ["a", "b", "undo_b:2", "undo_a"]

    asyncio.run(main())


def test_async_engine_without_a_context_manager(url: str) -> None:
    async def main() -> None:
        eng = AsyncEngine(url)
        try:
            run = await eng.run(order_saga(Gateway(), ship_fails=False), {"amount": 2})
            assert run.status == "completed"
        finally:
            await eng.close()

    asyncio.run(main())


def test_async_engine_register_is_awaitable() -> None:
    async def main() -> None:
        async with AsyncEngine("memory://") as eng:
            await eng.register(order_saga(Gateway()))

    asyncio.run(main())


# --------------------------------------------------------------------------- history


def test_history_kinds_and_steps_of_a_rollback(engine: Engine) -> None:
    gateway = Gateway()
    run = engine.run(order_saga(gateway), {"amount": 10}, run_id="h-1")
    history = engine.history("h-1")
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    pairs = [(e.kind, e.step) for e in history if e.step is not None]
    assert ("step_started", "charge_payment") in pairs
    assert ("step_succeeded", "charge_payment") in pairs
    assert ("step_started", "ship") in pairs
    assert ("step_failed", "ship") in pairs
    assert ("compensation_started", "charge_payment") in pairs
    assert ("compensation_succeeded", "charge_payment") in pairs
    assert ("step_started", "ship") not in [(e.kind, e.step) for e in history[:2]]
    failed = next(e for e in history if e.kind == "step_failed")
    assert failed.error is not None
    assert "no carrier today" in failed.error.message
    assert run.status == "rolled_back"


def test_write_ahead_the_attempt_is_journaled_before_the_call(engine: Engine) -> None:
    saga: Saga[Any] = Saga("wal")
    seen: list[tuple[str, str | None, int | None, str]] = []

    @saga.step
    def look(state: Any, ctx: Any) -> None:
        last = engine.history(ctx.run_id)[-1]
        seen.append((str(last.kind), last.step, last.attempt, engine.get(ctx.run_id).status))

    engine.run(saga, {}, run_id="wal-1")
    assert seen == [("step_started", "look", 1, "running")]


# --------------------------------------------------------------------------- errors


def test_an_unknown_run_id_raises_a_saga_error_naming_it(engine: Engine) -> None:
    for call in (
        lambda: engine.get("order-404"),
        lambda: engine.history("order-404"),
        lambda: engine.retry("order-404"),
        lambda: engine.resolve("order-404", note="x"),
    ):
        with pytest.raises(SagaError, match="order-404") as info:
            call()
        assert isinstance(info.value, RunNotFound)


def test_permanent_error_is_a_saga_error() -> None:
    assert issubclass(PermanentError, SagaError)
    assert issubclass(RunNotFound, SagaError)
    assert issubclass(DefinitionError, SagaError)


# --------------------------------------------------------------------------- retries


def test_backoff_is_exponential_and_capped_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=1.0, backoff=2.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(n, 0.5) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_spreads_delays_within_its_fraction() -> None:
    policy = RetryPolicy(initial_delay=1.0, backoff=2.0, max_delay=60.0, jitter=0.1)
    delays = [policy.delay(1, r / 10) for r in range(10)]
    assert len(set(delays)) > 1
    assert all(0.9 <= d <= 1.1 for d in delays)


def test_no_single_delay_exceeds_the_cap() -> None:
    policy = RetryPolicy(initial_delay=1.0, backoff=2.0, max_delay=5.0, jitter=0.1)
    assert max(policy.delay(10, r / 100) for r in range(100)) <= 5.0


def test_retries_back_off_in_the_engine(engine: Engine) -> None:
    saga: Saga[Any] = Saga("backoff")
    starts: list[float] = []

    @saga.step(retry=RetryPolicy(max_attempts=4, initial_delay=0.1, backoff=2.0, jitter=0.0))
    def flaky(state: Any, ctx: Any) -> None:
        starts.append(time.monotonic())
        if ctx.attempt < 4:
            raise ConnectionError("try again")

    run = engine.run(saga, {})
    assert run.status == "completed"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        assert gap >= expected * 0.95
        assert gap < expected + 0.5
    failures = [e for e in engine.history(run.id) if e.kind == "step_failed"]
    assert all(e.data["retry_at"] > e.at for e in failures)


@pytest.mark.parametrize("error", [PermanentError("declined"), KeyError("no such sku")])
def test_permanent_errors_skip_retries(engine: Engine, error: Exception) -> None:
    saga: Saga[Any] = Saga("perm")
    attempts: list[int] = []

    @saga.step(retry=RetryPolicy(max_attempts=5, initial_delay=0.01, permanent=(LookupError,)))
    def pay(state: Any, ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise error

    run = engine.run(saga, {})
    assert attempts == [1]
    assert run.status == "failed"


def test_exhausted_retries_fail_the_step_for_good(engine: Engine) -> None:
    saga: Saga[Any] = Saga("exhaust")
    attempts: list[int] = []

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    def pay(state: Any, ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("down")

    run = engine.run(saga, {})
    assert attempts == [1, 2, 3]
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.attempt == 3


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_a_timed_out_attempt_is_unknown_and_its_own_compensation_runs(
    engine: Engine, flavour: str
) -> None:
    saga: Saga[Any] = Saga(f"timeout-{flavour}")
    log: list[str] = []

    @saga.step
    def reserve(state: Any, ctx: Any) -> None:
        log.append("reserve")

    @reserve.compensate
    def release(state: Any, ctx: Any) -> None:
        log.append("release")

    slow: Callable[[Any, Any], object]
    if flavour == "async":

        async def slow(state: Any, ctx: Any) -> None:
            await asyncio.sleep(2)
    else:

        def slow(state: Any, ctx: Any) -> None:
            time.sleep(0.6)

    # Tried once: the timed-out attempt itself is what is looked at.
    step = saga.add_step(slow, name="book", timeout=0.1, retry=RetryPolicy(max_attempts=1))

    @step.compensate
    def cancel_booking(state: Any, ctx: Any) -> None:
        log.append("cancel_booking")

    run = engine.run(saga, {})
    assert run.status == "rolled_back"
    assert run.error is not None
    assert run.error.timed_out
    assert run.error.step == "book"
    assert log == ["reserve", "cancel_booking", "release"]


# --------------------------------------------------------------------------- compensation order


def _chain(log: list[str], *, fail: str, names: str = "abcde", **saga_options: Any) -> Saga[Any]:
    saga: Saga[Any] = Saga(f"chain-{next(_ids)}", **saga_options)
    for name in names:

        def action(state: Any, ctx: Any, name: str = name) -> dict[str, Any]:
            log.append(name)
            if name == fail:
                raise PermanentError(f"{name} failed")
            return {name: True}

        def undo(state: Any, ctx: Any, name: str = name) -> None:
            log.append(f"undo:{name}")

        saga.add_step(action, name=name, compensation=undo)
    return saga


def test_reverse_order_compensation_of_every_succeeded_step_only(engine: Engine) -> None:
    log: list[str] = []
    run = engine.run(_chain(log, fail="d"), {})
    assert run.status == "rolled_back"
    # d failed cleanly (not compensated), e never started (never compensated)
    assert log == ["a", "b", "c", "d", "undo:c", "undo:b", "undo:a"]


def test_compensate_on_failure_undoes_the_failed_step_too(engine: Engine) -> None:
    saga: Saga[Any] = Saga("partial")
    log: list[str] = []

    @saga.step
    def a(state: Any, ctx: Any) -> None:
        log.append("a")

    @a.compensate
    def undo_a(state: Any, ctx: Any) -> None:
        log.append("undo:a")

    @saga.step(compensate_on_failure=True)
    def b(state: Any, ctx: Any) -> None:
        log.append("b")
        raise PermanentError("half done")

    @b.compensate
    def undo_b(state: Any, ctx: Any) -> None:
        log.append("undo:b")

    assert engine.run(saga, {}).status == "rolled_back"
    assert log == ["a", "b", "undo:b", "undo:a"]


def test_failed_means_nothing_had_to_be_undone(engine: Engine) -> None:
    saga: Saga[Any] = Saga("nothing-to-undo")
    log: list[str] = []

    @saga.step
    def validate(state: Any, ctx: Any) -> None:
        log.append("validate")

    @saga.step
    def charge(state: Any, ctx: Any) -> None:
        raise PermanentError("card declined")

    @charge.compensate
    def refund(state: Any, ctx: Any) -> None:
        log.append("refund")

    run = engine.run(saga, {})
    assert run.status == "failed"
    assert run.error is not None
    assert "card declined" in str(run.error)
    assert log == ["validate"]


# --------------------------------------------------------------------------- needs_attention


def _stuck_refund_saga(log: list[str], down: dict[str, bool]) -> Saga[Any]:
    """a, b, c compensatable; d fails for good; b's compensation may be down."""
    saga: Saga[Any] = Saga(f"stuck-{next(_ids)}")
    for name in "abcd":

        def action(state: Any, ctx: Any, name: str = name) -> dict[str, Any]:
            log.append(name)
            if name == "d":
                raise PermanentError("d is full")
            return {name: True}

        def undo(state: Any, ctx: Any, name: str = name) -> None:
            log.append(f"undo:{name}#{ctx.attempt}")
            if name == "b" and down["b"]:
                raise ConnectionError("refund API is down")

        saga.add_step(
            action,
            name=name,
            compensation=undo,
            compensation_retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0),
        )
    return saga


def test_exhausted_compensation_halts_the_undo_and_alerts(url: str) -> None:
    reports: list[AttentionReport] = []
    log: list[str] = []
    with Engine(url, on_attention=reports.append) as eng:
        run = eng.run(_stuck_refund_saga(log, {"b": True}), {}, run_id="stuck-1")
        # Ruvon defect: a failed compensation must not be reported as rolled back.
        assert run.status == "needs_attention"
        assert run.status != "rolled_back"
        assert log == ["a", "b", "c", "d", "undo:c#1", "undo:b#1", "undo:b#2", "undo:b#3"]
        # The original error is kept beside every compensation error.
        assert run.error is not None
        assert run.error.step == "d"
        assert "d is full" in str(run.error)
        assert len(run.compensation_errors) == 3
        assert all(e.step == "b" and e.phase == "compensation" for e in run.compensation_errors)
        assert [r.id for r in eng.runs(status="needs_attention")] == ["stuck-1"]
        assert [r.id for r in eng.runs(status=RunStatus.NEEDS_ATTENTION)] == ["stuck-1"]
        history = eng.history("stuck-1")
        assert [e.kind for e in history].count("compensation_failed") == 3  # type: ignore[arg-type]
        assert [e.kind for e in history[-2:]] == ["needs_attention", "alert_sent"]
        assert history[-1].data["seq"] == history[-2].seq  # the alert of that halt was sent

    assert len(reports) == 1
    report = reports[0]
    assert report.run.id == "stuck-1"
    assert report.run.status == "needs_attention"
    assert report.step == "b"
    assert report.phase == "compensation"
    assert report.attempts == 3
    assert report.cause is not None
    assert report.cause.step == "d"
    assert {e.step for e in report.errors} == {"b", "d"}
    assert report.state == {"a": True, "b": True, "c": True}


def test_async_alert_hook_and_failing_hook(url: str, caplog: pytest.LogCaptureFixture) -> None:
    reports: list[str] = []

    async def async_hook(report: AttentionReport) -> None:
        reports.append(report.run.id)

    def broken_hook(report: AttentionReport) -> None:
        raise RuntimeError("pager is down")

    with Engine(url, on_attention=async_hook) as eng:
        eng.run(_stuck_refund_saga([], {"b": True}), {}, run_id="hook-1")
    assert reports == ["hook-1"]

    with caplog.at_level(logging.WARNING), Engine(url, on_attention=broken_hook) as eng:
        run = eng.run(_stuck_refund_saga([], {"b": True}), {}, run_id="hook-2")
        assert run.status == "needs_attention"
    assert "pager is down" in caplog.text


def test_retry_resumes_exactly_where_the_undo_stopped(engine: Engine) -> None:
    log: list[str] = []
    down = {"b": True}
    saga = _stuck_refund_saga(log, down)
    engine.run(saga, {}, run_id="r-1")
    log.clear()

    still = engine.retry("r-1", note="is it back?")
    assert still.status == "needs_attention"
    assert log == ["undo:b#4", "undo:b#5", "undo:b#6"]  # a fresh budget, nothing else
    log.clear()

    down["b"] = False
    run = engine.retry("r-1", note="the API is back")
    assert run.status == "rolled_back"
    assert log == ["undo:b#7", "undo:a#1"]  # c's succeeded compensation is not re-run
    assert run.error is not None
    assert run.error.step == "d"
    retried = [e for e in engine.history("r-1") if e.kind == "retried"]
    assert [e.note for e in retried] == ["is it back?", "the API is back"]


def test_resolve_records_the_manual_fix_and_continues(engine: Engine) -> None:
    log: list[str] = []
    engine.run(_stuck_refund_saga(log, {"b": True}), {}, run_id="res-1")
    log.clear()

    run = engine.resolve("res-1", note="refunded by hand")
    assert run.status == "rolled_back"
    assert log == ["undo:a#1"]
    resolved = [e for e in engine.history("res-1") if e.kind == "resolved"]
    assert len(resolved) == 1
    assert resolved[0].step == "b"
    assert resolved[0].note == "refunded by hand"


def test_operator_actions_on_a_stale_view_are_refused(engine: Engine) -> None:
    log: list[str] = []
    engine.run(_stuck_refund_saga(log, {"b": True}), {}, run_id="stale-1")
    log.clear()
    with pytest.raises(InvalidRunState, match="'b'"):
        engine.resolve("stale-1", note="did c", step="c")
    with pytest.raises(InvalidRunState):
        engine.retry("stale-1", step="a")
    assert log == []
    assert engine.get("stale-1").status == "needs_attention"


def test_continue_on_compensation_error_still_needs_attention(engine: Engine) -> None:
    log: list[str] = []
    saga = _stuck_refund_saga(log, {"b": True})
    relaxed: Saga[Any] = Saga("relaxed", continue_on_compensation_error=True)
    for step in saga.steps:
        relaxed.add_step(
            step.action,
            name=step.name,
            compensation=step.compensation,
            compensation_retry=FAST,
        )
    run = engine.run(relaxed, {})
    assert run.status == "needs_attention"
    assert "undo:a#1" in log


def test_a_permanent_error_in_a_compensation_needs_attention_at_once(engine: Engine) -> None:
    saga: Saga[Any] = Saga("perm-undo")
    log: list[str] = []

    @saga.step
    def a(state: Any, ctx: Any) -> None:
        log.append("a")

    @a.compensate(retry=RetryPolicy(max_attempts=5, initial_delay=0.01))
    def undo_a(state: Any, ctx: Any) -> None:
        log.append("undo:a")
        raise PermanentError("cannot refund a closed account")

    @saga.step
    def b(state: Any, ctx: Any) -> None:
        raise PermanentError("b")

    run = engine.run(saga, {})
    assert run.status == "needs_attention"
    assert log == ["a", "undo:a"]


# --------------------------------------------------------------------------- settled runs


@pytest.mark.parametrize("fail", ["a", "c", "none"])
def test_retry_on_a_settled_run_never_reruns_anything(engine: Engine, fail: str) -> None:
    log: list[str] = []
    run = engine.run(_chain(log, fail=fail, names="abc"), {}, run_id=f"settled-{fail}")
    expected = {"a": "failed", "c": "rolled_back", "none": "completed"}[fail]
    assert run.status == expected
    before_log, before_history = list(log), engine.history(run.id)

    again = engine.retry(run.id)
    assert again.status == expected
    assert log == before_log
    assert engine.history(run.id) == before_history
    with pytest.raises(InvalidRunState):
        engine.resolve(run.id, note="nothing to do")
    assert log == before_log


def test_starting_an_existing_run_id_returns_that_run(engine: Engine) -> None:
    gateway = Gateway()
    saga = order_saga(gateway)
    first = engine.run(saga, {"amount": 10}, run_id="order-42")
    calls = list(gateway.calls)
    second = engine.run(saga, {"amount": 10}, run_id="order-42")
    assert second.id == "order-42"
    assert (first.created, second.created) == (True, False)
    assert second.status == first.status == "rolled_back"
    assert second.state.amount == 10
    assert gateway.calls == calls
    # Another input under the same id is another request: refused, nothing run.
    with pytest.raises(RunInputConflict, match="differs in 'amount'"):
        engine.run(saga, {"amount": 99}, run_id="order-42")
    assert gateway.calls == calls
    assert len(engine.runs()) == 1


def test_statuses_are_a_str_enum_with_the_issue_values() -> None:
    assert {s.value for s in RunStatus} == {
        "pending",
        "running",
        "completed",
        "compensating",
        "rolled_back",
        "cancelled",
        "failed",
        "paused",
        "needs_attention",
    }
    assert RunStatus("needs_attention") == "needs_attention"


# --------------------------------------------------------------------------- pivot


def _pivot_saga(log: list[str], *, retriable_down: dict[str, bool], pivot_fails: bool) -> Saga[Any]:
    saga: Saga[Any] = Saga(f"pivot-{next(_ids)}")

    @saga.step
    def reserve(state: Any, ctx: Any) -> None:
        log.append("reserve")

    @reserve.compensate
    def release(state: Any, ctx: Any) -> None:
        log.append("release")

    @saga.step(kind="pivot")
    def charge(state: Any, ctx: Any) -> None:
        log.append("charge")
        if pivot_fails:
            raise PermanentError("declined")

    @saga.step(retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    def notify(state: Any, ctx: Any) -> None:
        log.append(f"notify#{ctx.attempt}")
        if retriable_down["on"]:
            raise ConnectionError("mail down")

    @saga.step(kind="retriable")
    def archive(state: Any, ctx: Any) -> None:
        log.append("archive")

    return saga


def test_a_pivot_that_fails_cleanly_compensates_before_it(engine: Engine) -> None:
    log: list[str] = []
    run = engine.run(_pivot_saga(log, retriable_down={"on": False}, pivot_fails=True), {})
    assert run.status == "rolled_back"
    assert log == ["reserve", "charge", "release"]


def test_after_the_pivot_the_run_never_rolls_back(engine: Engine) -> None:
    log: list[str] = []
    down = {"on": True}
    saga = _pivot_saga(log, retriable_down=down, pivot_fails=False)
    run = engine.run(saga, {}, run_id="pv-1")
    assert run.status == "needs_attention"
    assert log == ["reserve", "charge", "notify#1", "notify#2"]
    log.clear()
    down["on"] = False
    run = engine.retry("pv-1")
    assert run.status == "completed"
    assert log == ["notify#3", "archive"]

    log.clear()
    down["on"] = True
    engine.run(saga, {}, run_id="pv-2")
    log.clear()
    run = engine.resolve("pv-2", note="mailed by hand")
    assert run.status == "completed"
    assert log == ["archive"]


# --------------------------------------------------------------------------- crashes

CRASH_APP = textwrap.dedent(
    '''
    """A saga application that dies (os._exit) where QA_CRASH says."""
    from __future__ import annotations

    import os
    import sys
    import threading

    from sagakit import Engine, PermanentError, RetryPolicy, Saga


    def record(what, ctx):
        with open(os.environ["QA_LEDGER"], "a") as f:
            f.write(f"{what} {ctx.idempotency_key} {ctx.attempt}\\n")


    saga = Saga("qa-crash")


    def make(name, policy):
        def action(state, ctx):
            record(name, ctx)
            crash = os.environ.get("QA_CRASH", "")
            if crash == name:
                os._exit(3)
            if crash == "wait:" + name and ctx.attempt == 1:
                threading.Timer(0.5, os._exit, (3,)).start()
                raise ConnectionError(name + " flaked")
            if os.environ.get("QA_FAIL", "") == name:
                raise PermanentError(name + " failed")
            return {name: ctx.attempt}

        def undo(state, ctx):
            record("undo:" + name, ctx)
            if os.environ.get("QA_CRASH", "") == "undo:" + name:
                os._exit(3)

        saga.add_step(action, name=name, retry=policy, compensation=undo)


    make("a", RetryPolicy(max_attempts=2, initial_delay=3.0, backoff=1.0, jitter=0.0))
    make("b", RetryPolicy(max_attempts=1))
    make("c", RetryPolicy(max_attempts=1))

    if __name__ == "__main__":
        url, run_id = sys.argv[1], sys.argv[2]
        with Engine(url, lease_seconds=float(os.environ.get("QA_LEASE", "1"))) as engine:
            engine.run(saga, {}, run_id=run_id)
        sys.exit(0)
    '''
)


class CrashLab:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.app = tmp_path / "qa_crash_app.py"
        self.app.write_text(CRASH_APP)
        self.ledger = tmp_path / "ledger.txt"
        self.url = f"sqlite:///{tmp_path / 'runs.db'}"
        monkeypatch.setenv("QA_LEDGER", str(self.ledger))
        monkeypatch.delenv("QA_CRASH", raising=False)
        monkeypatch.delenv("QA_FAIL", raising=False)
        spec = importlib.util.spec_from_file_location(f"qa_crash_{tmp_path.name}", self.app)
        assert spec is not None
        assert spec.loader is not None
        self.module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)

    def crash(self, run_id: str, **env: str) -> None:
        proc = subprocess.run(
            [sys.executable, str(self.app), self.url, run_id],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 3, proc.stderr

    def calls(self) -> list[tuple[str, str, int]]:
        lines = self.ledger.read_text().split("\n") if self.ledger.exists() else []
        return [(w, k, int(a)) for w, k, a in (line.split() for line in lines if line)]

    def recover(self, engine: Engine, run_id: str, timeout: float = 20.0) -> float:
        """Call recover until it returns the run; returns when it was claimed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed_at = time.time()
            recovered = engine.recover()
            if recovered:
                assert [r.id for r in recovered] == [run_id]
                return claimed_at
            time.sleep(0.1)
        raise AssertionError("recover() never picked the run up")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CrashLab:
    return CrashLab(tmp_path, monkeypatch)


def test_a_crash_mid_step_resumes_forward(lab: CrashLab) -> None:
    # Proving a process gone needs /proc (Linux); elsewhere the lease is waited out.
    proves_gone = Path("/proc/self/stat").exists()
    lab.crash("crash-fwd", QA_CRASH="b", QA_LEASE="300" if proves_gone else "3")
    with Engine(lab.url, lease_seconds=1) as eng:
        eng.register(lab.module.saga)
        stuck = eng.get("crash-fwd")
        assert stuck.status == "running"
        last = eng.history("crash-fwd")[-1]
        assert (last.kind, last.step, last.attempt) == ("step_started", "b", 1)  # write-ahead

        # The process that died ran on this host and is provably gone: its
        # run is taken back at once, long before a 300 s lease would lapse.
        # (Another host's process is waited for until its lease lapses:
        # tests/integration/test_worker_identity.py.)
        lab.recover(eng, "crash-fwd")
        run = eng.get("crash-fwd")
        # b allows one attempt: the crash was not charged as a failure.
        assert run.status == "completed"
        assert run.state == {"a": 1, "b": 2, "c": 1}
        assert not any(e.kind.startswith("compensation") for e in eng.history("crash-fwd"))
    calls = lab.calls()
    assert [(w, a) for w, _, a in calls] == [("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    assert calls[1][1] == calls[2][1]  # the same idempotency key after the crash


def test_a_crash_during_rollback_resumes_the_rollback(lab: CrashLab) -> None:
    lab.crash("crash-undo", QA_CRASH="undo:a", QA_FAIL="c")
    with Engine(lab.url, lease_seconds=1) as eng:
        eng.register(lab.module.saga)
        assert eng.get("crash-undo").status == "compensating"
        lab.recover(eng, "crash-undo")
        run = eng.get("crash-undo")
        assert run.status == "rolled_back"
        assert run.error is not None
        assert run.error.step == "c"
        before = eng.history("crash-undo")
        # Ruvon defect: retrying a rolled-back run re-runs nothing.
        assert eng.retry("crash-undo").status == "rolled_back"
        assert eng.history("crash-undo") == before
    calls = lab.calls()
    assert [(w, a) for w, _, a in calls] == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("undo:b", 1),
        ("undo:a", 1),
        ("undo:a", 2),
    ]
    assert calls[4][1] == calls[5][1]


def test_a_wait_between_retries_survives_a_restart(lab: CrashLab) -> None:
    lab.crash("crash-wait", QA_CRASH="wait:a")
    with Engine(lab.url, lease_seconds=1) as eng:
        eng.register(lab.module.saga)
        failed = next(e for e in eng.history("crash-wait") if e.kind == "step_failed")
        retry_at = failed.data["retry_at"]
        assert retry_at == pytest.approx(failed.at + 3.0, abs=0.05)

        # recover() takes it only once its timer is due, as a worker would (it
        # neither holds the run while it waits nor runs the retry early).
        claimed_at = lab.recover(eng, "crash-wait")
        assert claimed_at >= retry_at - 0.2
        run = eng.get("crash-wait")
        assert run.status == "completed"
        second = next(
            e for e in eng.history("crash-wait") if e.kind == "step_started" and e.attempt == 2
        )
        assert second.step == "a"
        assert second.at >= retry_at - 0.05  # the wait was not lost
        assert second.at < retry_at + 1.0  # nor restarted from the recovery
    calls = lab.calls()
    assert [(w, a) for w, _, a in calls] == [("a", 1), ("a", 2), ("b", 1), ("c", 1)]

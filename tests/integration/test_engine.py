"""The engine's behaviour, on every store: DESIGN.md execution semantics 1-8."""

from __future__ import annotations

import asyncio
import copy
import gc
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    AttentionReport,
    Engine,
    EventKind,
    InvalidRunState,
    PermanentError,
    RetryPolicy,
    RunIdConflict,
    RunInputConflict,
    RunNotFound,
    RunStatus,
    Saga,
    SagaError,
    StateError,
    StepContext,
    StoreError,
    core,
)

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


class Ledger:
    """A fake external service: remembers effects by idempotency key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.effects: dict[str, str] = {}
        self.log: list[str] = []
        self._lock = threading.Lock()

    def do(self, what: str, key: str) -> None:
        with self._lock:
            self.calls[what] += 1
            self.log.append(what)
            self.effects.setdefault(key, what)


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [f"{e.kind}:{e.step}" if e.step else str(e.kind) for e in engine.history(run_id)]


def travel(
    ledger: Ledger,
    *,
    fail: str | None = None,
    error: type[Exception] = PermanentError,
    broken_undo: set[str] | None = None,
    undo_retry: RetryPolicy = FAST,
    retry: RetryPolicy | None = None,
) -> Saga[Any]:
    """Three compensatable steps; ``fail`` names the one that raises (``retry``: their policy)."""
    saga: Saga[Any] = Saga("travel")
    broken = broken_undo if broken_undo is not None else set()

    def make(name: str) -> None:
        def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            ledger.do(name, ctx.idempotency_key)
            if name == fail:
                raise error(f"{name} is not available")
            return {name: f"ref-{name}"}

        def undo(state: dict[str, Any], ctx: StepContext) -> None:
            if name in broken:
                ledger.do(f"undo-{name}-failed", ctx.idempotency_key + str(ctx.attempt))
                raise RuntimeError(f"cannot cancel {name}")
            ledger.do(f"undo-{name}", ctx.idempotency_key)

        step = saga.add_step(action, name=name, retry=retry)
        step.compensate(undo, retry=undo_retry)

    for name in ("flight", "hotel", "car"):
        make(name)
    return saga


def test_a_run_completes_and_merges_results_into_the_state(engine: Engine) -> None:
    ledger = Ledger()
    run = engine.run(travel(ledger), {"who": "ada"}, run_id="trip-1")
    assert run.status == RunStatus.COMPLETED
    assert run.status == "completed"  # type: ignore[comparison-overlap]
    assert run.state == {
        "who": "ada",
        "flight": "ref-flight",
        "hotel": "ref-hotel",
        "car": "ref-car",
    }
    assert kinds(engine, "trip-1") == [
        "run_started",
        "step_started:flight",
        "step_succeeded:flight",
        "step_started:hotel",
        "step_succeeded:hotel",
        "step_started:car",
        "step_succeeded:car",
        "run_finished",
    ]
    assert engine.get("trip-1") == run


@pytest.mark.parametrize("more", [0, 20], ids=["small", "big"])
def test_a_failed_attempt_that_changed_nested_values_in_place_leaves_no_trace(
    engine: Engine, more: int
) -> None:
    # The state a step gets is its own: lists and dicts are copies (strings
    # and numbers, which cannot change in place, are shared), so what a
    # failed attempt did to them is dropped with it; a success records it.
    # With more than 16 keys, the driver first looks for the keys that hold
    # a list or a dict and copies those alone.
    seen: list[Any] = []
    saga: Saga[Any] = Saga("nested")

    @saga.step(retry=FAST)
    def pack(state: dict[str, Any], ctx: StepContext) -> None:
        seen.append((list(state["items"]), dict(state["box"]), state["label"]))
        state["items"].append(f"attempt {ctx.attempt}")
        state["box"]["opened"] = True
        if ctx.attempt < 3:
            raise RuntimeError("dropped the box")

    padding = {f"pad{i:02d}": i for i in range(more)}
    start = {**padding, "items": ["a"], "box": {"opened": False}, "label": "x"}
    run = engine.run(saga, start, run_id="n")
    assert run.status == RunStatus.COMPLETED
    assert seen == [(["a"], {"opened": False}, "x")] * 3
    expected = {**padding, "items": ["a", "attempt 3"], "box": {"opened": True}, "label": "x"}
    assert run.state == expected


class Loose(BaseModel):
    """A state model whose fields pydantic validates without copying their lists."""

    anything: Any = None
    notes: dict[str, Any] = {}


def test_a_state_model_s_untyped_values_are_the_step_s_own_to_change_in_place(
    engine: Engine,
) -> None:
    # pydantic hands an `Any` value over as it is (and a `dict[str, Any]`'s
    # values): the step's model must not hold the lists of the run's
    # recorded state, or a failed attempt's changes reach it, and a
    # success's in-place change is compared against itself and never journaled.
    saga: Saga[Any] = Saga("loose", state=Loose)

    @saga.step
    def add(state: Loose, ctx: StepContext) -> dict[str, Any]:
        return {"anything": ["a"], "notes": {"seen": ["a"]}}

    @saga.step(retry=FAST)
    def grow(state: Loose, ctx: StepContext) -> None:
        state.anything.append(f"attempt {ctx.attempt}")
        state.notes["seen"].append(f"attempt {ctx.attempt}")
        if ctx.attempt < 2:
            raise RuntimeError("again")

    run = engine.run(saga, {}, run_id="loose")
    expected = {"anything": ["a", "attempt 2"], "notes": {"seen": ["a", "attempt 2"]}}
    assert run.status == RunStatus.COMPLETED
    assert run.state.model_dump() == expected
    assert engine.get("loose").state.model_dump() == expected
    replayed = core.replay(saga.plan(), engine.history("loose"))
    assert replayed.state == expected


def test_a_failed_attempt_that_changes_the_previous_step_s_result_in_place_leaves_no_trace(
    engine: Engine,
) -> None:
    saga: Saga[Any] = Saga("previous")

    @saga.step
    def add(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"items": ["a"]}

    @saga.step(retry=FAST)
    def look(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        assert ctx.previous_step_result is not None
        ctx.previous_step_result["items"].append(f"attempt {ctx.attempt}")
        if ctx.attempt < 2:
            raise RuntimeError("again")
        return {"looked": True}

    run = engine.run(saga, {}, run_id="previous")
    assert run.status == RunStatus.COMPLETED
    assert run.state == {"items": ["a"], "looked": True}
    assert engine.get("previous").state == run.state


def test_what_a_step_is_told_of_results_and_signals_is_its_own_to_change_in_place(
    engine: Engine,
) -> None:
    # A compensation's ctx.step_result and a step's ctx.signal.payload share
    # their values with the run's state: each attempt gets copies, so what a
    # failed one changed in place reaches neither the state nor the journal.
    saga: Saga[Any] = Saga("told")
    seen: list[Any] = []

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"rooms": ["101"], "meta": {"n": 1}}

    @book.compensate(retry=FAST)
    def cancel(state: dict[str, Any], ctx: StepContext) -> None:
        assert ctx.step_result is not None
        seen.append(copy.deepcopy(ctx.step_result))
        ctx.step_result["rooms"].append(f"attempt {ctx.attempt}")
        ctx.step_result["meta"] = "replaced"
        if ctx.attempt < 2:
            raise RuntimeError("again")

    @saga.step(wait_for="approved", retry=FAST)
    def publish(state: dict[str, Any], ctx: StepContext) -> None:
        assert ctx.signal is not None
        seen.append(copy.deepcopy(ctx.signal.payload))
        ctx.signal.payload["by"].append(f"attempt {ctx.attempt}")
        if ctx.attempt < 2:
            raise RuntimeError("again")
        raise PermanentError("not published")

    assert engine.run(saga, {}, run_id="told").status is RunStatus.PAUSED
    run = engine.signal("told", "approved", {"by": ["alice"]})
    assert run.status is RunStatus.ROLLED_BACK
    assert seen == [
        {"by": ["alice"]},
        {"by": ["alice"]},
        {"rooms": ["101"], "meta": {"n": 1}},
        {"rooms": ["101"], "meta": {"n": 1}},
    ]
    assert run.state == {"rooms": ["101"], "meta": {"n": 1}, "by": ["alice"]}
    assert engine.get("told").state == run.state
    replayed = core.replay(saga.plan(), engine.history("told"))
    assert replayed.state == run.state


def test_a_big_state_records_what_steps_set_returned_in_place_and_in_parallel(
    engine: Engine,
) -> None:
    # A state of many keys: from its first step on, the driver notes the keys
    # each step sets, and those that may hold a list or a dict, so that a
    # step's copy and the store look at those alone. Nothing set is missed,
    # and no list or dict a step changes in place reaches the journal behind it.
    saga: Saga[Any] = Saga("many-keys")
    seen: list[dict[str, Any]] = []

    @saga.step
    def add(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"items": ["a"], "k01": "one"}

    @saga.step
    def grow(state: dict[str, Any], ctx: StepContext) -> None:
        state["items"].append("b")  # a list a step before returned
        state["k02"] = "two"
        state["box"] = {"n": 1}

    @saga.step
    def left(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        state["box"]["n"] = 2  # a dict set in place by the step before
        return {"k03": "three"}

    @saga.step
    def right(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"k04": "four", "deep": {"list": [1]}}

    saga.parallel(left, right)

    @saga.step(retry=FAST)
    def look(state: dict[str, Any], ctx: StepContext) -> None:
        seen.append(copy.deepcopy(state))
        state["items"].append("dropped")
        state["deep"]["list"].append("dropped")
        if ctx.attempt < 2:
            raise RuntimeError("look again")

    # Some 20 KB: big enough for a store to keep or write it by its keys.
    start = {f"k{i:02d}": f"v{i}" + "x" * 500 for i in range(40)}
    run = engine.run(saga, start, run_id="many")
    expected = {
        **start,
        "items": ["a", "b", "dropped"],
        "k01": "one",
        "k02": "two",
        "box": {"n": 2},
        "k03": "three",
        "k04": "four",
        "deep": {"list": [1, "dropped"]},
    }
    assert run.status == RunStatus.COMPLETED
    assert run.state == expected
    # The failed attempt's in-place changes were its own copy's.
    assert seen[0] == seen[1] == {**expected, "items": ["a", "b"], "deep": {"list": [1]}}
    stored = engine.get("many")
    assert stored.state == expected
    results = {
        e.step: e.data["result"]
        for e in engine.history("many")
        if e.kind == EventKind.STEP_SUCCEEDED and e.step in ("add", "right")
    }
    assert results == {
        "add": {"items": ["a"], "k01": "one"},
        "right": {"k04": "four", "deep": {"list": [1]}},
    }


def test_every_attempt_is_journaled_before_the_action_runs(engine: Engine) -> None:
    seen: list[tuple[str, int | None]] = []
    saga: Saga[Any] = Saga("wal")

    @saga.step(retry=FAST)
    def look(state: dict[str, Any], ctx: StepContext) -> None:
        last = engine.history(ctx.run_id)[-1]
        seen.append((str(last.kind), last.attempt))
        if ctx.attempt < 2:
            raise RuntimeError("flaky")

    engine.run(saga, run_id="w")
    assert seen == [("step_started", 1), ("step_started", 2)]


def test_idempotency_keys_are_stable_across_attempts_and_distinct_for_undo(engine: Engine) -> None:
    keys: list[tuple[str, int, str]] = []
    saga: Saga[Any] = Saga("keys")

    @saga.step(retry=FAST)
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        keys.append(("charge", ctx.attempt, ctx.idempotency_key))
        if ctx.attempt < 3:
            raise RuntimeError("gateway timeout")

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        keys.append(("refund", ctx.attempt, ctx.idempotency_key))

    @saga.step
    def ship(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("no carrier")

    run = engine.run(saga, run_id="k-1")
    assert run.status == RunStatus.ROLLED_BACK
    assert [attempt for _, attempt, _ in keys] == [1, 2, 3, 1]
    charge_keys = {key for name, _, key in keys if name == "charge"}
    refund_keys = {key for name, _, key in keys if name == "refund"}
    assert len(charge_keys) == 1
    assert len(refund_keys) == 1
    assert charge_keys != refund_keys
    assert "k-1" in next(iter(charge_keys))


def test_retries_back_off_and_record_when_the_next_attempt_is_due(engine: Engine) -> None:
    saga: Saga[Any] = Saga("backoff")
    policy = RetryPolicy(max_attempts=4, initial_delay=0.05, backoff=2.0, jitter=0.0)

    @saga.step(retry=policy)
    def flaky(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if ctx.attempt < 4:
            raise ConnectionError(f"try {ctx.attempt}")
        return {"ok": True}

    run = engine.run(saga, run_id="b")
    assert run.status == RunStatus.COMPLETED
    events = engine.history("b")
    failed = [e for e in events if e.kind is EventKind.STEP_FAILED]
    started = [e for e in events if e.kind is EventKind.STEP_STARTED]
    assert [e.attempt for e in started] == [1, 2, 3, 4]
    waits = [f.data["retry_at"] - f.at for f in failed]
    assert waits == pytest.approx([0.05, 0.1, 0.2], abs=0.01)
    for fail, nxt in zip(failed, started[1:], strict=True):
        assert nxt.at >= fail.data["retry_at"]


@pytest.mark.parametrize("error", [PermanentError, ValueError])
def test_permanent_errors_skip_retries(engine: Engine, error: type[Exception]) -> None:
    ledger = Ledger()
    saga: Saga[Any] = Saga("perm")

    @saga.step(retry=RetryPolicy(max_attempts=5, initial_delay=0.01, permanent=(ValueError,)))
    def declined(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("declined", ctx.idempotency_key)
        raise error("card declined")

    run = engine.run(saga, run_id="p")
    assert ledger.calls["declined"] == 1
    assert run.status == RunStatus.FAILED  # nothing took effect, nothing to compensate
    assert run.error is not None
    assert "card declined" in str(run.error)
    assert run.error.step == "declined"


def test_a_step_failing_for_good_compensates_in_reverse_order(engine: Engine) -> None:
    ledger = Ledger()
    # A plain error, tried once: the step fails for good at its first attempt.
    once = RetryPolicy(max_attempts=1)
    run = engine.run(travel(ledger, fail="car", error=RuntimeError, retry=once), run_id="r")
    assert run.status == RunStatus.ROLLED_BACK
    assert ledger.log == ["flight", "hotel", "car", "undo-hotel", "undo-flight"]
    assert run.error is not None
    assert run.error.step == "car"
    assert "car is not available" in run.error.message
    assert kinds(engine, "r")[-6:] == [
        "rollback_started:car",
        "compensation_started:hotel",
        "compensation_succeeded:hotel",
        "compensation_started:flight",
        "compensation_succeeded:flight",
        "run_finished",
    ]


def test_compensations_see_why_and_what_their_step_returned(engine: Engine) -> None:
    seen: dict[str, Any] = {}
    saga: Saga[Any] = Saga("ctx")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"seat": "F1"}

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        seen.update(
            reason=ctx.reason,
            result=ctx.step_result,
            error=ctx.error,
            since=ctx.since_step_finished,
            seat=state["seat"],
            compensation=ctx.is_compensation,
        )

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("insufficient funds")

    engine.run(saga, run_id="c")
    assert seen["reason"] == "failure"
    assert seen["result"] == {"seat": "F1"}
    assert seen["seat"] == "F1"
    assert seen["compensation"] is True
    assert seen["error"].message == "insufficient funds"
    assert 0 <= seen["since"] < 5


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_a_timed_out_attempt_is_an_unknown_outcome_and_its_own_compensation_runs(
    engine: Engine, flavour: str
) -> None:
    ledger = Ledger()
    saga: Saga[Any] = Saga("timeout")

    @saga.step
    def reserve(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("reserve", ctx.idempotency_key)

    @reserve.compensate
    def release(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("release", ctx.idempotency_key)

    if flavour == "async":

        async def slow(state: dict[str, Any], ctx: StepContext) -> None:
            ledger.do("charge", ctx.idempotency_key)
            await asyncio.sleep(5)

    else:

        def slow(state: dict[str, Any], ctx: StepContext) -> None:  # type: ignore[misc]
            ledger.do("charge", ctx.idempotency_key)
            time.sleep(0.5)

    # Tried once: the timed-out attempt itself is what is looked at.
    charge = saga.add_step(slow, name="charge", timeout=0.1, retry=RetryPolicy(max_attempts=1))

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("refund", ctx.idempotency_key)

    run = engine.run(saga, run_id="t")
    assert run.status == RunStatus.ROLLED_BACK
    assert ledger.log[:2] == ["reserve", "charge"]
    assert ledger.log[-2:] == ["refund", "release"]  # the timed-out step is undone first
    failed = next(e for e in engine.history("t") if e.kind is EventKind.STEP_FAILED)
    assert failed.data["unknown"] is True
    assert failed.error is not None
    assert failed.error.timed_out


def test_a_step_never_started_is_never_compensated(engine: Engine) -> None:
    ledger = Ledger()
    engine.run(travel(ledger, fail="flight"), run_id="n")
    assert ledger.log == ["flight"]
    assert engine.get("n").status == RunStatus.FAILED


def test_a_failed_compensation_halts_the_undo_and_needs_attention(store_url: str) -> None:
    ledger = Ledger()
    reports: list[AttentionReport] = []
    saga = travel(ledger, fail="car", broken_undo={"hotel"})
    with Engine(store_url, on_attention=reports.append) as engine:
        run = engine.run(saga, run_id="a")
        # Not reported as rolled back: the hotel still stands.
        assert run.status == RunStatus.NEEDS_ATTENTION
        # The undo stopped at the hotel: the flight was not cancelled before it.
        assert ledger.calls["undo-flight"] == 0
        assert ledger.calls["undo-hotel-failed"] == 3
        assert run.error is not None
        assert run.error.step == "car"  # the original error is kept...
        assert [str(e.message) for e in run.compensation_errors] == ["cannot cancel hotel"] * 3
        (report,) = reports
        assert report.step == "hotel"
        assert report.phase == "compensation"
        assert report.attempts == 3
        assert report.run.id == "a"
        assert [e.step for e in report.errors] == ["car", "hotel", "hotel", "hotel"]
        assert report.state["hotel"] == "ref-hotel"
        assert engine.runs(status="needs_attention") == [run]


def test_retry_resumes_exactly_where_the_undo_stopped(store_url: str) -> None:
    ledger = Ledger()
    broken = {"hotel"}
    saga = travel(ledger, fail="car", broken_undo=broken)
    with Engine(store_url) as engine:
        assert engine.run(saga, run_id="x").status == RunStatus.NEEDS_ATTENTION
        broken.clear()  # the hotel's API is back
        run = engine.retry("x")
        assert run.status == RunStatus.ROLLED_BACK
        assert ledger.calls["undo-hotel"] == 1
        assert ledger.calls["undo-flight"] == 1
        assert ledger.calls["flight"] == ledger.calls["hotel"] == ledger.calls["car"] == 1
        assert "retried:hotel" in kinds(engine, "x")


def test_resolve_records_the_manual_fix_and_the_rest_of_the_undo_continues(store_url: str) -> None:
    ledger = Ledger()
    saga = travel(ledger, fail="car", broken_undo={"hotel"})
    with Engine(store_url) as engine:
        engine.run(saga, run_id="y")
        run = engine.resolve("y", note="cancelled the hotel by phone")
        assert run.status == RunStatus.ROLLED_BACK
        assert ledger.calls["undo-hotel"] == 0
        assert ledger.calls["undo-flight"] == 1
        resolved = next(e for e in engine.history("y") if e.kind is EventKind.RESOLVED)
        assert resolved.step == "hotel"
        assert resolved.note == "cancelled the hotel by phone"
        with pytest.raises(InvalidRunState, match="'y' is rolled_back"):
            engine.resolve("y", note="again")


def test_retrying_a_settled_run_reruns_nothing(engine: Engine) -> None:
    ledger = Ledger()
    saga = travel(ledger, fail="car")
    engine.run(saga, run_id="done")
    before = (list(ledger.log), engine.history("done"))
    run = engine.retry("done")
    assert run.status == RunStatus.ROLLED_BACK
    assert (ledger.log, engine.history("done")) == before


def test_starting_an_existing_run_id_returns_that_run(engine: Engine) -> None:
    ledger = Ledger()
    saga = travel(ledger)
    first = engine.run(saga, {"n": 1}, run_id="order-42")
    again = engine.run(saga, {"n": 1}, run_id="order-42")
    assert again == first
    assert (first.created, again.created) == (True, False)
    assert again.state["n"] == 1
    assert ledger.calls["flight"] == 1
    # Another input under the same id is another request: refused, nothing run.
    with pytest.raises(RunInputConflict, match=r"'order-42'.*differs in 'n'"):
        engine.run(saga, {"n": 2}, run_id="order-42")
    assert ledger.calls["flight"] == 1


def test_an_unknown_run_id_is_a_clear_error(engine: Engine) -> None:
    for action in (
        lambda: engine.get("nope-7"),
        lambda: engine.history("nope-7"),
        lambda: engine.retry("nope-7"),
        lambda: engine.resolve("nope-7", note="x"),
    ):
        with pytest.raises(RunNotFound, match="nope-7"):
            action()


def test_an_unserialisable_input_is_refused_before_anything_is_recorded(engine: Engine) -> None:
    saga = travel(Ledger())
    with pytest.raises(StateError, match="not JSON-serialisable"):
        engine.run(saga, {"when": object()}, run_id="bad")
    with pytest.raises(RunNotFound):
        engine.get("bad")


def test_an_input_nested_too_deep_to_read_back_is_refused_with_what_is_wrong(
    engine: Engine,
) -> None:
    # pydantic-core writes 205 nested lists but reads back 200 at most: the
    # input was refused, but as "NaN or Infinity", which it does not hold.
    deep: list[Any] = []
    for _ in range(205):
        deep = [deep]
    with pytest.raises(StateError, match="nests lists and dicts more than 200 levels deep"):
        engine.run(travel(Ledger()), {"deep": deep}, run_id="deep")
    with pytest.raises(RunNotFound):
        engine.get("deep")


def test_a_result_nested_too_deep_fails_the_step_with_what_is_wrong(engine: Engine) -> None:
    saga: Saga[Any] = Saga("deep-result")

    @saga.step
    def build(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        deep: list[Any] = []
        for _ in range(205):
            deep = [deep]
        return {"deep": deep}

    run = engine.run(saga, run_id="deep-result")
    assert run.status == RunStatus.FAILED  # nothing to undo: it has no compensation
    assert run.error is not None
    assert "more than 200 levels deep" in run.error.message
    assert "NaN" not in run.error.message
    assert engine.get("deep-result").state == {}


def test_an_unserialisable_result_fails_the_step_and_compensates_it(engine: Engine) -> None:
    ledger = Ledger()
    saga: Saga[Any] = Saga("result")

    @saga.step
    def open_socket(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        ledger.do("open", ctx.idempotency_key)
        return {"socket": object()}

    @open_socket.compensate
    def close_socket(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("close", ctx.idempotency_key)

    run = engine.run(saga, run_id="res")
    assert run.status == RunStatus.ROLLED_BACK  # it ran, so its effect may stand: undone
    assert ledger.log == ["open", "close"]
    assert run.error is not None
    assert "not JSON-serialisable" in run.error.message
    assert "open_socket" in run.error.message


class Order(BaseModel):
    amount: float
    txn_id: str | None = None
    refunded: bool = False


def test_a_pydantic_state_is_validated_and_handed_to_steps_as_a_model(engine: Engine) -> None:
    saga = Saga("order", state=Order)

    @saga.step
    async def charge(state: Order, ctx: StepContext) -> dict[str, Any]:
        assert isinstance(state, Order)
        return {"txn_id": f"txn-{state.amount:.0f}"}

    @charge.compensate
    async def refund(state: Order, ctx: StepContext) -> Order:
        return state.model_copy(update={"refunded": True})

    @saga.step
    def ship(state: Order, ctx: StepContext) -> None:
        raise PermanentError("no carrier")

    run = engine.run(saga, {"amount": 10}, run_id="o")
    assert run.status == RunStatus.ROLLED_BACK
    assert isinstance(run.state, Order)
    assert run.state == Order(amount=10, txn_id="txn-10", refunded=True)
    with pytest.raises(StateError, match="Order"):
        engine.run(saga, {"amount": "ten"}, run_id="o2")


def test_a_step_after_the_pivot_that_exhausts_its_retries_needs_attention(engine: Engine) -> None:
    ledger = Ledger()
    saga: Saga[Any] = Saga("pivoted")

    @saga.step
    def reserve(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("reserve", ctx.idempotency_key)

    @reserve.compensate
    def release(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("release", ctx.idempotency_key)

    @saga.step(kind="pivot")
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("charge", ctx.idempotency_key)

    @saga.step(retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    def notify(state: dict[str, Any], ctx: StepContext) -> None:
        ledger.do("notify", ctx.idempotency_key)
        if ledger.calls["notify"] < 3:
            raise ConnectionError("mail server down")

    run = engine.run(saga, run_id="pv")
    assert run.status == RunStatus.NEEDS_ATTENTION
    assert ledger.calls["release"] == 0  # past the pivot: never rolled back
    run = engine.retry("pv")
    assert run.status == RunStatus.COMPLETED
    assert ledger.calls["notify"] == 3


def test_sync_and_async_steps_mix(engine: Engine) -> None:
    saga: Saga[Any] = Saga("mixed")

    @saga.step
    async def first(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"a": 1}

    @saga.step
    def second(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"b": state["a"] + 1}

    assert engine.run(saga, run_id="m").state == {"a": 1, "b": 2}


def test_operator_actions_need_the_saga_registered(store_url: str) -> None:
    saga = travel(Ledger(), fail="car", broken_undo={"hotel"})
    with Engine(store_url) as first:
        first.run(saga, run_id="reg")
    if store_url.startswith("memory"):
        return  # a private memory store does not outlive its engine
    with Engine(store_url) as second:
        with pytest.raises(SagaError, match="register"):
            second.retry("reg")
        assert second.get("reg").status == RunStatus.NEEDS_ATTENTION
        second.register(saga)
        assert second.resolve("reg", note="done by hand").status == RunStatus.ROLLED_BACK


def test_a_step_that_exits_the_process_loop_fails_loudly_instead_of_hanging(
    store_url: str,
) -> None:
    saga: Saga[Any] = Saga("exits")

    @saga.step
    async def leave(state: dict[str, Any], ctx: StepContext) -> None:
        raise SystemExit(3)

    engine = Engine(store_url)
    try:
        with pytest.raises(SagaError, match="event loop stopped"):
            engine.run(saga, run_id="bye")
        with pytest.raises(SagaError, match="event loop stopped"):
            engine.get("bye")
    finally:
        engine.close()
    # The stopped loop and its task, which holds the SystemExit, are garbage
    # once the engine is: collected here, not by whatever later allocation
    # runs the collector. Finalized in the middle of CPython 3.11's
    # ast.parse, such a task made it raise a spurious SystemError ("AST
    # constructor recursion depth mismatch", python/cpython#106905) in a
    # later test that parses source files (tests/unit/test_layering.py).
    del engine
    gc.collect()


def test_a_database_that_goes_away_mid_run_is_a_clear_error_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Another process locks the file while a step runs: the outcome cannot be
    recorded. The caller gets a StoreError naming the file; the journal keeps
    everything written before; once the lock is gone the run recovers forward."""
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}?busy_timeout=0.2"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    calls: Counter[str] = Counter()
    saga: Saga[Any] = Saga("locked-out")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls[f"book:{ctx.idempotency_key}"] += 1
        if calls.total() == 1:
            blocker.execute("BEGIN EXCLUSIVE")  # the database is gone for the engine
        return {"booked": True}

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        calls["pay"] += 1

    try:
        with Engine(url, lease_seconds=0.3) as engine:
            with pytest.raises(StoreError, match=r"runs\.db") as caught:
                engine.run(saga, run_id="lk")
            assert "locked" in str(caught.value)
            assert "'lk' stopped" in str(caught.value)
            blocker.execute("ROLLBACK")
            assert [e.kind for e in engine.history("lk")] == [
                EventKind.RUN_STARTED,
                EventKind.STEP_STARTED,  # written ahead, before the lock
            ]
            time.sleep(0.4)  # the lease of the interrupted drive lapses
            (run,) = engine.recover()
        assert run.status == RunStatus.COMPLETED
        assert calls == Counter({"book:lk/book": 2, "pay": 1})  # same key: one booking
    finally:
        blocker.close()


def test_a_timed_out_sync_call_never_overlaps_its_compensation_or_retry(engine: Engine) -> None:
    """A thread cannot be stopped: the undo waits for it to return."""
    timeline: list[str] = []
    saga: Saga[Any] = Saga("lingering")

    @saga.step(timeout=0.1, retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append(f"charge {ctx.attempt} starts")
        time.sleep(0.4)
        timeline.append(f"charge {ctx.attempt} takes effect")

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("refund")

    run = engine.run(saga, run_id="lin")
    assert run.status == RunStatus.ROLLED_BACK
    assert timeline == [
        "charge 1 starts",
        "charge 1 takes effect",
        "charge 2 starts",
        "charge 2 takes effect",
        "refund",
    ]


def test_time_spent_waiting_for_a_thread_does_not_count_against_the_timeout(
    store_url: str,
) -> None:
    saga: Saga[Any] = Saga("queued")

    @saga.step(timeout=0.3)
    def quick(state: dict[str, Any], ctx: StepContext) -> None:
        time.sleep(0.1)

    async def body() -> list[RunStatus]:
        # One thread for four runs: the last waits ~0.3 s before it starts.
        async with AsyncEngine(store_url, max_threads=1) as eng:
            runs = await asyncio.gather(*(eng.run(saga, run_id=f"q{i}") for i in range(4)))
        return [r.status for r in runs]

    assert asyncio.run(body()) == [RunStatus.COMPLETED] * 4


def test_a_run_id_of_another_saga_is_refused(engine: Engine) -> None:
    engine.run(travel(Ledger()), run_id="shared-id")
    other: Saga[Any] = Saga("other")

    @other.step
    def noop(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    with pytest.raises(
        RunIdConflict, match="'shared-id' already belongs to a run of saga 'travel'"
    ):
        engine.run(other, run_id="shared-id")


def test_an_unknown_status_filter_is_a_saga_error(engine: Engine) -> None:
    with pytest.raises(SagaError, match="unknown run status 'bogus'; use one of pending"):
        engine.runs(status="bogus")


def test_run_returns_the_run_as_stored(store_url: str) -> None:
    """run() builds its answer from its own last commit; it must match the row."""
    saga: Saga[Any] = Saga("as-stored")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"booked": ctx.attempt}

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"booked": None}

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        if state["fail"]:
            raise PermanentError("declined")

    with Engine(store_url) as engine:
        for run_id, fail in (("ok", False), ("undone", True)):
            run = engine.run(saga, {"fail": fail}, run_id=run_id)
            assert run == engine.get(run_id)
        assert engine.get("ok").status is RunStatus.COMPLETED
        undone = engine.get("undone")
        assert undone.status is RunStatus.ROLLED_BACK
        assert undone.error is not None
        assert undone.error.message == "declined"


def test_a_closed_engine_says_so(store_url: str) -> None:
    engine = Engine(store_url)
    engine.close()
    with pytest.raises(SagaError, match="this Engine is closed"):
        engine.get("x")


def test_a_step_may_be_an_unhashable_callable_object(engine: Engine) -> None:
    class Charge:
        __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq=True has

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            self.calls += 1
            return {"charged": True}

    charge = Charge()
    saga: Saga[Any] = Saga("callable-object")
    saga.add_step(charge, name="charge")
    run = engine.run(saga, run_id="obj")
    assert run.status == RunStatus.COMPLETED
    assert run.state == {"charged": True}
    assert charge.calls == 1


def test_async_steps_may_return_a_model_or_another_awaitable(engine: Engine) -> None:
    class Booking(BaseModel):
        booking: str

    async def later() -> dict[str, Any]:
        return {"paid": 12}

    saga: Saga[Any] = Saga("async-results")

    @saga.step
    async def book(state: dict[str, Any], ctx: StepContext) -> Booking:
        return Booking(booking=f"b-{ctx.attempt}")

    @saga.step
    async def pay(state: dict[str, Any], ctx: StepContext) -> Any:
        return later()  # a coroutine the step hands back rather than awaits

    @saga.step(timeout=5.0)  # the timed path, which wraps the call
    async def mail(state: dict[str, Any], ctx: StepContext) -> Any:
        return later()

    run = engine.run(saga, run_id="async-results")
    assert run.status == RunStatus.COMPLETED
    assert run.state == {"booking": "b-1", "paid": 12}
    results = [
        e.data["result"] for e in engine.history("async-results") if e.kind == "step_succeeded"
    ]
    assert results == [{"booking": "b-1"}, {"paid": 12}, {"paid": 12}]

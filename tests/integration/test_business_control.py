"""Business control on every store: parallel stages, compensation order, cancel,
pause and signals, deadlines and failure handlers.

Reservations and local transactions have files of their own
(``test_reservations.py``, ``test_local_transactions.py``).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from sagakit import (
    Engine,
    InvalidRunState,
    Next,
    Pause,
    PermanentError,
    RetryPolicy,
    RunStatus,
    RunTimeout,
    Saga,
    Signal,
    StepContext,
)
from sagakit.errors import DefinitionError

from .helpers import serving, wait_for_event, wait_for_status

State = dict[str, Any]
DAY = 24 * 3600.0


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [f"{e.kind}:{e.step}" if e.step else str(e.kind) for e in engine.history(run_id)]


class FakeClock:
    """A clock the test moves by hand (the engine's ``clock=``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- parallel stages ----------------------------------------------------------------


def test_a_parallel_member_failing_compensates_every_member_that_succeeded(
    engine: Engine,
) -> None:
    together = threading.Barrier(3, timeout=10)  # only passes if all three run at once
    undone: list[str] = []
    saga: Saga[Any] = Saga("par-fail")

    @saga.step
    def reserve(state: State, ctx: StepContext) -> State:
        return {"reserved": True}

    @reserve.compensate
    def unreserve(state: State, ctx: StepContext) -> None:
        undone.append("reserve")

    def member(name: str, fail: bool) -> None:
        def act(state: State, ctx: StepContext) -> State:
            together.wait()
            if fail:
                raise PermanentError(f"{name} is sold out")
            return {name: "booked"}

        def undo(state: State, ctx: StepContext) -> None:
            undone.append(name)

        saga.add_step(act, name=name, compensation=undo)

    member("flight_a", fail=False)
    member("flight_b", fail=True)
    member("flight_c", fail=False)
    group = saga.parallel("flight_a", "flight_b", "flight_c")
    assert [s.name for s in group] == ["flight_a", "flight_b", "flight_c"]

    run = engine.run(saga, {}, run_id="par-1")

    assert run.status is RunStatus.ROLLED_BACK
    assert run.error is not None
    assert "sold out" in run.error.message
    # Both successful members are undone (in reverse completion order), then
    # the step before the group; the failed member took no effect.
    assert sorted(undone[:2]) == ["flight_a", "flight_c"]
    assert undone[2:] == ["reserve"]


def test_a_parallel_stage_finishes_before_the_next_step(engine: Engine) -> None:
    saga: Saga[Any] = Saga("par-ok")
    both = threading.Barrier(2, timeout=10)

    @saga.step
    def left(state: State, ctx: StepContext) -> State:
        both.wait()
        return {"left": 1}

    @saga.step
    def right(state: State, ctx: StepContext) -> State:
        both.wait()
        return {"right": 2}

    @saga.step
    def after(state: State, ctx: StepContext) -> State:
        return {"sum": state["left"] + state["right"]}

    saga.parallel(left, right)
    run = engine.run(saga, {}, run_id="par-2")
    assert run.status is RunStatus.COMPLETED
    assert run.state["sum"] == 3


def test_parallel_rejects_what_cannot_run_together() -> None:
    saga: Saga[Any] = Saga("bad-par")

    @saga.step
    def a(state: State, ctx: StepContext) -> None: ...

    @saga.step
    def b(state: State, ctx: StepContext) -> None: ...

    @saga.step
    def c(state: State, ctx: StepContext) -> None: ...

    with pytest.raises(DefinitionError, match="two or more"):
        saga.parallel(a)
    with pytest.raises(DefinitionError, match="one after another"):
        saga.parallel(a, c)
    with pytest.raises(DefinitionError, match="no step named 'zz'"):
        saga.parallel(a, "zz")
    saga.parallel(a, b)
    with pytest.raises(DefinitionError, match="already in a parallel group"):
        saga.parallel(b, c)

    pivoted: Saga[Any] = Saga("bad-par-pivot")
    pivoted.add_step(lambda s, c: None, name="x")
    pivoted.add_step(lambda s, c: None, name="y", kind="pivot")
    with pytest.raises(DefinitionError, match="pivot 'y' cannot run in parallel"):
        pivoted.parallel("x", "y")


# -- compensation order ---------------------------------------------------------------


def ordered_saga(name: str, log: list[str], barrier: threading.Barrier) -> Saga[Any]:
    """ship → bill → notify → reserve (fails). Undo: bill and notify together, then ship."""
    saga: Saga[Any] = Saga(name)
    for step in ("ship", "bill", "notify"):

        def act(state: State, ctx: StepContext) -> None:
            return None

        def undo(state: State, ctx: StepContext, _step: str = step) -> None:
            if _step in ("bill", "notify"):
                barrier.wait()  # both in flight at once, or this times out
            log.append(_step)

        saga.add_step(act, name=step, compensation=undo)

    @saga.step
    def reserve(state: State, ctx: StepContext) -> None:
        raise PermanentError("out of stock")

    saga.compensation_order(["bill", "notify"], "ship")
    return saga


def test_compensations_run_in_the_declared_order_and_groups_run_in_parallel(
    engine: Engine,
) -> None:
    log: list[str] = []
    saga = ordered_saga("custom-order", log, threading.Barrier(2, timeout=10))
    run = engine.run(saga, {}, run_id="order-1")
    assert run.status is RunStatus.ROLLED_BACK
    assert sorted(log[:2]) == ["bill", "notify"]
    assert log[2] == "ship"  # reverse completion would have undone ship last too, but
    # only after both group members: the group really ran as one stage.
    started = [e.step for e in engine.history("order-1") if e.kind == "compensation_started"]
    assert set(started[:2]) == {"bill", "notify"}
    assert started[2] == "ship"


def test_a_compensation_order_must_name_every_compensatable_step(engine: Engine) -> None:
    saga: Saga[Any] = Saga("order-missing")
    saga.add_step(lambda s, c: None, name="a", compensation=lambda s, c: None)
    saga.add_step(lambda s, c: None, name="b", compensation=lambda s, c: None)
    saga.compensation_order("a")
    with pytest.raises(DefinitionError, match="leaves out the compensatable step"):
        engine.register(saga)
    saga.compensation_order("a", "b", "c")
    with pytest.raises(DefinitionError, match="'c', which is not a step"):
        engine.register(saga)
    with pytest.raises(DefinitionError, match="appears twice"):
        saga.compensation_order("a", ["a", "b"])


def test_continue_on_compensation_error_undoes_the_rest_and_reports_every_error(
    engine: Engine,
) -> None:
    undone: list[str] = []
    saga: Saga[Any] = Saga("keep-going", continue_on_compensation_error=True)
    for name, broken in (("first", False), ("second", True), ("third", False)):

        def undo(state: State, ctx: StepContext, _n: str = name, _b: bool = broken) -> None:
            if _b:
                raise RuntimeError(f"cannot undo {_n}")
            undone.append(_n)

        saga.add_step(
            lambda s, c: None,
            name=name,
            compensation=undo,
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
        )

    @saga.step
    def fails(state: State, ctx: StepContext) -> None:
        raise PermanentError("card declined")

    run = engine.run(saga, {}, run_id="keep-1")
    assert run.status is RunStatus.NEEDS_ATTENTION
    assert undone == ["third", "first"]  # past the broken one
    assert run.error is not None
    assert run.error.message == "card declined"
    assert [e.message for e in run.compensation_errors] == ["cannot undo second"] * 2


def test_compensate_on_failure_undoes_a_step_that_failed_with_partial_effects(
    engine: Engine,
) -> None:
    effects: list[str] = []
    saga: Saga[Any] = Saga("partial")

    @saga.step(compensate_on_failure=True)
    def bulk_import(state: State, ctx: StepContext) -> None:
        effects.append("row 1")
        raise PermanentError("row 2 is malformed")

    @bulk_import.compensate
    def delete_imported(state: State, ctx: StepContext) -> None:
        assert ctx.step_result is None  # it never returned
        effects.clear()

    run = engine.run(saga, {}, run_id="partial-1")
    assert run.status is RunStatus.ROLLED_BACK
    assert effects == []
    assert "compensation_succeeded:bulk_import" in kinds(engine, "partial-1")


# -- cancel -------------------------------------------------------------------------


def booking_saga(name: str, *, gate: threading.Event | None = None) -> Saga[Any]:
    """flight → hotel → (pivot) ticket → email (retriable). Refunds depend on time."""
    saga: Saga[Any] = Saga(name)

    @saga.step
    def flight(state: State, ctx: StepContext) -> State:
        return {"flight": "F1", "paid": 100}

    @flight.compensate
    def refund_flight(state: State, ctx: StepContext) -> State:
        assert ctx.step_finished_at is not None
        assert ctx.since_step_finished is not None
        # The business rule: a full refund within 24 hours, a 25 % fee after.
        full = ctx.reason == "cancel" and ctx.since_step_finished <= DAY
        return {"refunded": 100 if full else 75, "why": ctx.reason, "note": ctx.cancel_reason}

    @saga.step
    def hotel(state: State, ctx: StepContext) -> State:
        if gate is not None:
            assert gate.wait(10)
        return {"hotel": "H1"}

    @hotel.compensate
    def cancel_hotel(state: State, ctx: StepContext) -> State:
        return {"hotel": None}

    @saga.step(kind="pivot")
    def ticket(state: State, ctx: StepContext) -> State:
        return {"ticketed": True}

    @saga.step
    def email(state: State, ctx: StepContext) -> None:
        return None

    return saga


def test_cancel_of_a_completed_run_refunds_in_full_within_a_day_and_with_a_fee_after(
    store_url: str,
) -> None:
    clock = FakeClock()
    saga = booking_saga("trip-cancel")
    # Without the pivot this saga can be cancelled after completion.
    saga2: Saga[Any] = Saga("refund-window")
    saga2.add_step(saga["flight"].action, name="flight", compensation=saga["flight"].compensation)
    with Engine(store_url, clock=clock) as engine:
        early = engine.run(saga2, {}, run_id="early")
        late = engine.run(saga2, {}, run_id="late")
        assert early.status is RunStatus.COMPLETED

        clock.now += 3 * 3600  # three hours later
        early = engine.cancel("early", reason="customer changed plans")
        clock.now += 2 * DAY  # two days later
        late = engine.cancel("late")

        assert early.status is RunStatus.CANCELLED
        assert early.state["refunded"] == 100
        assert early.state["why"] == "cancel"
        assert early.state["note"] == "customer changed plans"
        assert late.status is RunStatus.CANCELLED
        assert late.state["refunded"] == 75
        history = [str(e.kind) for e in engine.history("early")]
        assert history[-5:] == [
            "cancel_requested",
            "rollback_started",
            "compensation_started",
            "compensation_succeeded",
            "run_finished",
        ]
        with pytest.raises(InvalidRunState, match="already finished as cancelled"):
            engine.cancel("early")


def test_cancel_of_a_running_run_stops_after_the_current_step(store_url: str) -> None:
    gate = threading.Event()
    saga = booking_saga("trip-running", gate=gate)
    with Engine(store_url) as engine:
        done: dict[str, Any] = {}
        runner = threading.Thread(
            target=lambda: done.setdefault("run", engine.run(saga, {}, run_id="r1"))
        )
        runner.start()
        wait_for_event(engine, "r1", "step_started", "hotel")
        cancelled = engine.cancel("r1", reason="changed my mind")
        assert cancelled.status in (RunStatus.RUNNING, RunStatus.CANCELLED)
        gate.set()  # the hotel step finishes; nothing after it starts
        runner.join(10)
        run = engine.get("r1")
        assert run.status is RunStatus.CANCELLED
        steps = kinds(engine, "r1")
        assert "step_started:ticket" not in steps
        assert steps.index("step_succeeded:hotel") < steps.index("cancel_requested")
        assert steps[-5:] == [
            "compensation_started:hotel",
            "compensation_succeeded:hotel",
            "compensation_started:flight",
            "compensation_succeeded:flight",
            "run_finished",
        ]


def test_cancel_after_the_pivot_is_refused_unless_forced(engine: Engine) -> None:
    saga = booking_saga("trip-pivot")
    run = engine.run(saga, {}, run_id="p1")
    assert run.status is RunStatus.COMPLETED
    with pytest.raises(InvalidRunState, match="passed its pivot step 'ticket'"):
        engine.cancel("p1")
    assert engine.get("p1").status is RunStatus.COMPLETED

    forced = engine.cancel("p1", reason="airline strike", force=True)
    assert forced.status is RunStatus.CANCELLED
    steps = kinds(engine, "p1")
    # The steps before the pivot are undone; the pivot and later ones cannot be.
    assert "compensation_succeeded:hotel" in steps
    assert "compensation_succeeded:flight" in steps
    assert not any(s.endswith((":ticket", ":email")) and "compensation" in s for s in steps)


def test_cancel_of_a_pending_run_ends_it_without_running_anything(store_url: str) -> None:
    saga = booking_saga("trip-pending")
    with Engine(store_url) as engine:
        engine.start(saga, {}, run_id="pend")
        run = engine.cancel("pend", reason="duplicate order")
        assert run.status is RunStatus.CANCELLED
        assert not any(k.startswith("step_started") for k in kinds(engine, "pend"))


def test_cancel_reaches_a_run_that_a_worker_in_another_engine_drives(store_url: str) -> None:
    gate = threading.Event()
    saga = booking_saga("trip-worker", gate=gate)
    with Engine(store_url, lease_seconds=5) as front, serving(store_url, saga):
        front.start(saga, {}, run_id="w1")
        wait_for_event(front, "w1", "step_started", "hotel")
        # The front engine knows the saga but the run is held by the worker:
        # the request is left as mail and the worker acts on it.
        assert front.cancel("w1", reason="too slow").status is RunStatus.RUNNING
        gate.set()
        run = front.wait("w1", timeout=15)
        assert run.status is RunStatus.CANCELLED
        assert run.state["refunded"] == 100


# -- pause and signals -----------------------------------------------------------------


def trip_with_hotel_choice(name: str, *, handler: bool = False) -> Saga[Any]:
    """flight → London hotel (may be full: pause and ask) → Paris hotel."""
    saga: Saga[Any] = Saga(name)

    @saga.step
    def flight(state: State, ctx: StepContext) -> State:
        return {"flight": "LHR"}

    @flight.compensate
    def cancel_flight(state: State, ctx: StepContext) -> State:
        return {"flight": None}

    @saga.step
    def london_hotel(state: State, ctx: StepContext) -> State:
        if state["london"] == "Ritz":
            if handler:
                raise PermanentError("the Ritz is full")
            raise Pause("the Ritz is full: choose another hotel or cancel", options=["choose"])
        return {"london_booking": state["london"]}

    @london_hotel.compensate
    def cancel_london(state: State, ctx: StepContext) -> None:
        return None

    if handler:

        @london_hotel.on_failure
        def full(state: State, ctx: StepContext, error: Any) -> Pause | Next:
            if "full" in error.message:
                return Pause("London is full", options=["choose", "give_up"])
            return Next.COMPENSATE

        @london_hotel.on_signal
        def answered(state: State, ctx: StepContext, signal: Signal) -> Next:
            return Next.RETRY if signal.name == "choose" else Next.COMPENSATE

    @saga.step
    def paris_hotel(state: State, ctx: StepContext) -> State:
        return {"paris_booking": "Lutetia"}

    return saga


def test_a_pause_answered_by_a_signal_retries_the_step_with_the_new_choice(
    store_url: str,
) -> None:
    saga = trip_with_hotel_choice("pause-retry")
    with Engine(store_url) as engine:
        run = engine.run(saga, {"london": "Ritz"}, run_id="t1")
        assert run.status is RunStatus.PAUSED
        paused = [e for e in engine.history("t1") if e.kind == "paused"][-1]
        assert paused.step == "london_hotel"
        assert paused.data["question"].startswith("the Ritz is full")
        assert paused.data["options"] == ["choose"]

        with pytest.raises(InvalidRunState, match="answered by the signals 'choose'"):
            engine.signal("t1", "whatever", {"london": "Savoy"})

        run = engine.signal("t1", "choose", {"london": "Savoy"})
        assert run.status is RunStatus.COMPLETED
        assert run.state["london_booking"] == "Savoy"
        assert run.state["paris_booking"] == "Lutetia"
        assert kinds(engine, "t1").count("step_started:london_hotel") == 2


def test_a_pause_answered_by_cancel_compensates_the_flights(store_url: str) -> None:
    saga = trip_with_hotel_choice("pause-cancel")
    with Engine(store_url) as engine:
        assert engine.run(saga, {"london": "Ritz"}, run_id="t2").status is RunStatus.PAUSED
        run = engine.cancel("t2", reason="customer declined")
        assert run.status is RunStatus.CANCELLED
        assert run.state["flight"] is None
        assert "compensation_started:london_hotel" not in kinds(engine, "t2")


def test_a_failure_handler_pauses_and_the_signal_handler_decides(store_url: str) -> None:
    saga = trip_with_hotel_choice("handled", handler=True)
    with Engine(store_url) as engine:
        assert engine.run(saga, {"london": "Ritz"}, run_id="h1").status is RunStatus.PAUSED
        run = engine.signal("h1", "choose", {"london": "Savoy"})
        assert run.status is RunStatus.COMPLETED
        assert run.state["london_booking"] == "Savoy"

        assert engine.run(saga, {"london": "Ritz"}, run_id="h2").status is RunStatus.PAUSED
        run = engine.signal("h2", "give_up")
        assert run.status is RunStatus.ROLLED_BACK
        assert run.state["flight"] is None
        assert run.error is not None
        assert "full" in run.error.message


def test_a_failure_handler_may_retry_or_go_on_without_the_step(engine: Engine) -> None:
    tries: list[int] = []
    saga: Saga[Any] = Saga("handler-retry")

    @saga.step
    def flaky(state: State, ctx: StepContext) -> State:
        tries.append(ctx.attempt)
        if len(tries) < 3:
            raise PermanentError("busy")
        return {"flaky": "ok"}

    @flaky.on_failure
    def again(state: State, ctx: StepContext, error: Any) -> Next:
        return Next.RETRY

    @saga.step
    def optional(state: State, ctx: StepContext) -> None:
        raise PermanentError("newsletter service down")

    @optional.on_failure
    def skip(state: State, ctx: StepContext, error: Any) -> str:
        return "continue"

    @saga.step
    def last(state: State, ctx: StepContext) -> State:
        return {"last": True}

    run = engine.run(saga, {}, run_id="hr1")
    assert run.status is RunStatus.COMPLETED
    assert tries == [1, 2, 3]
    assert run.state == {"flaky": "ok", "last": True}


def test_a_step_waits_for_a_signal_and_a_signal_sent_early_is_kept(store_url: str) -> None:
    saga: Saga[Any] = Saga("approval")

    @saga.step
    def draft(state: State, ctx: StepContext) -> State:
        return {"draft": True}

    @saga.step(wait_for="approved")
    def publish(state: State, ctx: StepContext) -> State:
        assert ctx.signal is not None
        assert ctx.signal.name == "approved"
        return {"published_by": ctx.signal.payload["by"]}

    with Engine(store_url) as engine:
        run = engine.run(saga, {}, run_id="a1")
        assert run.status is RunStatus.PAUSED
        run = engine.signal("a1", "approved", {"by": "alice"})
        assert run.status is RunStatus.COMPLETED
        assert run.state["published_by"] == "alice"
        assert run.state["by"] == "alice"

        engine.start(saga, {}, run_id="a2")
        # Sent before the run reaches the step; the run is free, so it is driven here.
        run = engine.signal("a2", "approved", {"by": "bob"})
        assert run.status is RunStatus.COMPLETED
        assert run.state["published_by"] == "bob"
        assert "paused:publish" not in kinds(engine, "a2")
        with pytest.raises(InvalidRunState, match="has finished"):
            engine.signal("a2", "approved", {"by": "carol"})


def test_a_signal_payload_that_does_not_fit_the_state_is_refused(engine: Engine) -> None:
    from pydantic import BaseModel

    from sagakit import StateError

    class Trip(BaseModel):
        london: str = "Ritz"

    saga: Saga[Any] = Saga("typed-signal", state=Trip)
    saga.wait_for("go")
    assert engine.run(saga, {}, run_id="ts").status is RunStatus.PAUSED
    with pytest.raises(StateError):
        engine.signal("ts", "go", {"london": ["not", "a", "string"]})
    with pytest.raises(StateError):
        engine.signal("ts", "go", {"when": object()})
    assert engine.get("ts").status is RunStatus.PAUSED


# -- deadlines ------------------------------------------------------------------------


def test_a_deadline_before_the_pivot_compensates(engine: Engine) -> None:
    saga: Saga[Any] = Saga("slow-supplier", deadline=timedelta(seconds=0.5))

    @saga.step
    def order(state: State, ctx: StepContext) -> State:
        return {"ordered": True}

    @order.compensate
    def unorder(state: State, ctx: StepContext) -> State:
        return {"ordered": False, "undo_reason": ctx.reason}

    @saga.step(retry=RetryPolicy(max_attempts=None, initial_delay=0.1, max_delay=0.1))
    def confirm(state: State, ctx: StepContext) -> None:
        raise RuntimeError("supplier not answering")

    started = time.monotonic()
    run = engine.run(saga, {}, run_id="d1")
    assert time.monotonic() - started < 5
    assert run.status is RunStatus.ROLLED_BACK
    assert run.state == {"ordered": False, "undo_reason": "deadline"}
    assert run.error is not None
    assert run.error.type == "sagakit.DeadlinePassed"
    assert "deadline_passed" in kinds(engine, "d1")


def test_a_deadline_after_the_pivot_needs_attention(engine: Engine) -> None:
    saga: Saga[Any] = Saga("late-email")
    saga.add_step(lambda s, c: None, name="charge", kind="pivot")

    def send(state: State, ctx: StepContext) -> None:
        raise RuntimeError("smtp down")

    saga.add_step(send, name="email", retry=RetryPolicy(max_attempts=None, initial_delay=0.05))
    run = engine.run(saga, {}, run_id="d2", deadline=timedelta(seconds=0.4))
    assert run.status is RunStatus.NEEDS_ATTENTION
    halted = [e for e in engine.history("d2") if e.kind == "needs_attention"][-1]
    assert halted.step == "email"
    assert "deadline" in halted.data["reason"]


def test_a_deadline_passing_while_no_worker_runs_compensates_when_one_starts(
    store_url: str,
) -> None:
    saga = trip_with_hotel_choice("deadline-down")
    with Engine(store_url, lease_seconds=5) as engine:
        run = engine.run(saga, {"london": "Ritz"}, run_id="dd", deadline=timedelta(seconds=0.5))
        assert run.status is RunStatus.PAUSED  # released: nothing drives it now
        time.sleep(0.8)
        assert engine.get("dd").status is RunStatus.PAUSED
    # A worker started after the deadline finds the run due and compensates it.
    with Engine(store_url, lease_seconds=5) as later, serving(store_url, saga):
        later.register(saga)
        run = wait_for_status(later, "dd", RunStatus.ROLLED_BACK)
        assert run.state["flight"] is None
        assert "deadline_passed" in kinds(later, "dd")


# -- helpers ------------------------------------------------------------------------------


def test_wait_after_a_cancel_of_a_completed_run_waits_for_the_undo(store_url: str) -> None:
    saga: Saga[Any] = Saga("undo-elsewhere")
    undone = threading.Event()

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"booked": True}

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        undone.set()
        return {"booked": False}

    with Engine(store_url) as engine:
        assert engine.run(saga, {}, run_id="trip").status is RunStatus.COMPLETED
    # An engine that does not know the saga: the cancel is posted for a worker.
    with Engine(store_url) as engine:
        assert engine.cancel("trip", reason="plans changed").status is RunStatus.COMPLETED
        with pytest.raises(RunTimeout):
            engine.wait("trip", timeout=0.2)  # still completed, but not settled
        with serving(store_url, saga):
            run = engine.wait("trip", timeout=15)
    assert undone.is_set()
    assert (run.status, run.data) == (RunStatus.CANCELLED, {"booked": False})


def test_requests_not_yet_acted_on_are_pending_on_every_store(store_url: str) -> None:
    saga: Saga[dict[str, Any]] = Saga("pending-order")

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"charged": True}

    with Engine(store_url, lease_seconds=5) as front:
        front.start(saga, {}, run_id="p-1")
        front.start(saga, {}, run_id="p-2")
        # No worker: the requests wait as mail, the statuses stay as they were.
        with Engine(store_url) as operator:
            operator.cancel("p-1", reason="changed mind")
            operator.signal("p-1", "note", {"x": 1})
        assert front.get("p-1").status is RunStatus.PENDING
        assert front.get("p-1").pending == 2
        assert [run.pending for run in front.runs()] == [0, 2]  # newest first
        cancel, signal = front.pending("p-1")
        assert (cancel.kind, cancel.data) == ("cancel", {"reason": "changed mind", "force": False})
        assert (signal.kind, signal.data) == ("signal", {"name": "note", "payload": {"x": 1}})
        assert front.pending("p-2") == []
        with serving(store_url, saga):
            wait_for_status(front, "p-1", RunStatus.CANCELLED)
        assert front.get("p-1").pending == 0
        assert front.pending("p-1") == []

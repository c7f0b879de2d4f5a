"""Table tests of the pure core: a journal in, the next decision and the status out.

Each case is a journal written with the small helpers of ``helpers.py`` and
below (run id ``"r"``, ``seq`` numbered automatically, ``at`` equal to ``seq``),
the calls in flight, and what `decide` must answer, spelled as a short string
(see `describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sagakit.core import (
    Decision,
    Invoke,
    Plan,
    Progress,
    StepPlan,
    apply,
    decide,
    is_final_failure,
    replay,
    undo_stages,
)
from sagakit.journal import Event, EventKind, Phase, RunStatus

from .helpers import (
    A,
    C,
    Spec,
    begin,
    broke,
    c_failed,
    c_started,
    comp,
    error,
    events,
    failed,
    plain,
    ran,
    sequential,
    started,
    succeeded,
    undone,
)

# -- plans ----------------------------------------------------------------------

# check (plain) -> reserve (3 attempts) -> charge (2 attempts) -> ship (1 attempt)
SHOP = sequential(
    plain("check"),
    comp("reserve", attempts=3),
    comp("charge", attempts=2),
    comp("ship"),
)
SHOP_CONTINUE = sequential(*SHOP.steps, continue_on_compensation_error=True)
# charge may leave partial effects when it fails, so it is compensated even then.
PARTIAL = sequential(
    comp("reserve"),
    comp("charge", compensate_on_failure=True),
    comp("ship"),
)
# reserve -> commit (the pivot) -> notify, email (retriable, 2 attempts each)
PIVOTED = sequential(
    comp("reserve"),
    StepPlan("commit", "pivot", False, 2, None),
    StepPlan("notify", "retriable", False, 2, None),
    StepPlan("email", "retriable", False, 2, None),
)
# A pivot with nothing compensatable before it.
LONE_PIVOT = sequential(plain("check"), StepPlan("commit", "pivot", False, 1, None))
# book (plain) -> {flight, hotel, car} in parallel -> pay
TRIP = Plan(
    steps=(
        plain("book"),
        comp("flight", attempts=2),
        comp("hotel", attempts=2),
        plain("car", attempts=2),
        comp("pay"),
    ),
    stages=(("book",), ("flight", "hotel", "car"), ("pay",)),
)

# -- journals ---------------------------------------------------------------------


def undo_broke(step: str, attempt: int = 1, **kw: Any) -> list[Spec]:
    """A compensation that was started and failed."""
    return [c_started(step, attempt), c_failed(step, attempt, **kw)]


def rollback(step: str) -> Spec:
    return (EventKind.ROLLBACK_STARTED, step, None, {"reason": "failure", "error": error(step)})


def attention(phase: Phase, step: str) -> Spec:
    return (EventKind.NEEDS_ATTENTION, step, None, {"phase": phase.value, "reason": "stuck"})


def retried() -> Spec:
    return (EventKind.RETRIED, None, None, {"note": "try again"})


def resolved() -> Spec:
    return (EventKind.RESOLVED, None, None, {"note": "fixed by hand"})


def finished(status: RunStatus) -> Spec:
    return (EventKind.RUN_FINISHED, None, None, {"status": status.value})


# -- decisions, spelled out ---------------------------------------------------------


def describe(decision: Decision) -> str:
    """``"do a#1"``, ``"undo b#2 at 9"``, ``"rollback after c"``, ``"finish failed"``,
    ``"attention compensation b"`` or ``"idle"``."""
    t = decision.transition
    if t is not None:
        assert not decision.invoke, "a decision is a transition or invokes, never both"
        if t.kind is EventKind.RUN_FINISHED:
            return f"finish {t.data['status']}"
        if t.kind is EventKind.NEEDS_ATTENTION:
            return f"attention {t.data['phase']} {t.step}"
        if t.kind is EventKind.ROLLBACK_STARTED:
            return f"rollback after {t.step}"
        raise AssertionError(f"unexpected transition {t}")
    if not decision.invoke:
        return "idle"
    return ", ".join(
        f"{'do' if call.phase is A else 'undo'} {call.step}#{call.attempt}"
        + ("" if call.not_before is None else f" at {call.not_before:g}")
        for call in decision.invoke
    )


@dataclass(frozen=True)
class Case:
    description: str
    plan: Plan
    journal: list[Event]
    expected: str
    status: RunStatus
    running: tuple[tuple[Phase, str], ...] = ()


# Journal prefixes shared by many cases.
THROUGH_CHARGE = [begin(), *ran("check"), *ran("reserve"), *ran("charge")]
SHIP_FAILED = [*THROUGH_CHARGE, *broke("ship", permanent=True), rollback("ship")]
CHARGE_STUCK = [
    *SHIP_FAILED,
    *undo_broke("charge", 1, retry_at=30.0),
    *undo_broke("charge", 2),
    attention(C, "charge"),
]
PAST_PIVOT = [begin(), *ran("reserve"), *ran("commit")]
TRIP_STARTED = [begin(), *ran("book"), started("flight"), started("hotel"), started("car")]

CASES = [
    # -- forward -------------------------------------------------------------
    Case("an empty journal starts the first step", SHOP, events(), "do check#1", RunStatus.PENDING),
    Case(
        "run_started alone starts the first step",
        SHOP,
        events(begin()),
        "do check#1",
        RunStatus.PENDING,
    ),
    Case(
        "steps run in definition order",
        SHOP,
        events(begin(), *ran("check"), *ran("reserve")),
        "do charge#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a step in flight is awaited, not invoked again",
        SHOP,
        events(begin(), *ran("check"), started("reserve")),
        "idle",
        RunStatus.RUNNING,
        running=((A, "reserve"),),
    ),
    Case(
        "every step succeeded: the run completes",
        SHOP,
        events(THROUGH_CHARGE, *ran("ship")),
        "finish completed",
        RunStatus.RUNNING,
    ),
    Case(
        "a completed run is settled",
        SHOP,
        events(THROUGH_CHARGE, *ran("ship"), finished(RunStatus.COMPLETED)),
        "idle",
        RunStatus.COMPLETED,
    ),
    # -- retries -------------------------------------------------------------------
    Case(
        "a failure with budget left is retried at retry_at as the next attempt",
        SHOP,
        events(begin(), *ran("check"), *broke("reserve", retry_at=12.5)),
        "do reserve#2 at 12.5",
        RunStatus.RUNNING,
    ),
    Case(
        "a second failure is retried as attempt 3",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *broke("reserve", 1, retry_at=10.0),
            *broke("reserve", 2, retry_at=20.0),
        ),
        "do reserve#3 at 20",
        RunStatus.RUNNING,
    ),
    Case(
        "a retry that succeeds moves on",
        SHOP,
        events(begin(), *ran("check"), *broke("reserve", retry_at=10.0), *ran("reserve", 2)),
        "do charge#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a timed-out attempt with budget left is retried",
        SHOP,
        events(begin(), *ran("check"), *broke("reserve", unknown=True, retry_at=10.0)),
        "do reserve#2 at 10",
        RunStatus.RUNNING,
    ),
    # -- failing for good ----------------------------------------------------------------
    Case(
        "a permanent error skips the retries and rolls back what took effect",
        SHOP,
        events(begin(), *ran("check"), *ran("reserve"), *broke("charge", permanent=True)),
        "rollback after charge",
        RunStatus.RUNNING,
    ),
    Case(
        "exhausted retries roll back what took effect",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", 1, retry_at=10.0),
            *broke("charge", 2),
        ),
        "rollback after charge",
        RunStatus.RUNNING,
    ),
    Case(
        "exhausted retries with nothing compensatable done: the run fails",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *broke("reserve", 1, retry_at=5.0),
            *broke("reserve", 2, retry_at=9.0),
            *broke("reserve", 3),
        ),
        "finish failed",
        RunStatus.RUNNING,
    ),
    Case(
        "the first step failing for good fails the run",
        SHOP,
        events(begin(), *broke("check")),
        "finish failed",
        RunStatus.RUNNING,
    ),
    Case(
        "a failed run is settled",
        SHOP,
        events(begin(), *broke("check"), finished(RunStatus.FAILED)),
        "idle",
        RunStatus.FAILED,
    ),
    Case(
        "a step timing out for good is itself compensated",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *broke("reserve", 1, retry_at=3.0),
            *broke("reserve", 2, retry_at=6.0),
            *broke("reserve", 3, unknown=True),
        ),
        "rollback after reserve",
        RunStatus.RUNNING,
    ),
    Case(
        "an earlier timeout keeps the outcome unknown even if the last failure is clean",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", 1, unknown=True, retry_at=10.0),
            *broke("charge", 2),
            rollback("charge"),
        ),
        "undo charge#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a failure of a step without compensate_on_failure leaves nothing to undo",
        PARTIAL,
        events(begin(), *broke("reserve", permanent=True)),
        "finish failed",
        RunStatus.RUNNING,
    ),
    Case(
        "compensate_on_failure: the failed step is undone first",
        PARTIAL,
        events(begin(), *ran("reserve"), *broke("charge", permanent=True), rollback("charge")),
        "undo charge#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "compensate_on_failure alone is enough to roll back",
        sequential(plain("check"), comp("charge", compensate_on_failure=True)),
        events(begin(), *ran("check"), *broke("charge", permanent=True)),
        "rollback after charge",
        RunStatus.RUNNING,
    ),
    Case(
        "a step that failed cleanly is not compensated",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", permanent=True),
            rollback("charge"),
        ),
        "undo reserve#1",
        RunStatus.COMPENSATING,
    ),
    # -- undo ---------------------------------------------------------------------------
    Case(
        "compensations start with the last step that took effect",
        SHOP,
        events(SHIP_FAILED),
        "undo charge#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "compensations run in reverse order of completion",
        SHOP,
        events(SHIP_FAILED, *undone("charge")),
        "undo reserve#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a plain step is never compensated: the undo ends after the compensatable ones",
        SHOP,
        events(SHIP_FAILED, *undone("charge"), *undone("reserve")),
        "finish rolled_back",
        RunStatus.COMPENSATING,
    ),
    Case(
        "steps never started are never compensated",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", permanent=True),
            rollback("charge"),
            *undone("reserve"),
        ),
        "finish rolled_back",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a compensation in flight is awaited",
        SHOP,
        events(SHIP_FAILED, c_started("charge")),
        "idle",
        RunStatus.COMPENSATING,
        running=((C, "charge"),),
    ),
    Case(
        "a failed compensation is retried at its retry_at",
        SHOP,
        events(SHIP_FAILED, *undo_broke("charge", retry_at=40.0)),
        "undo charge#2 at 40",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a compensation out of attempts halts the undo there, needing attention",
        SHOP,
        events(SHIP_FAILED, *undo_broke("charge", 1, retry_at=30.0), *undo_broke("charge", 2)),
        "attention compensation charge",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a run needing attention is settled: nothing more runs",
        SHOP,
        events(CHARGE_STUCK),
        "idle",
        RunStatus.NEEDS_ATTENTION,
    ),
    Case(
        "a rolled-back run is settled",
        SHOP,
        events(SHIP_FAILED, *undone("charge"), *undone("reserve"), finished(RunStatus.ROLLED_BACK)),
        "idle",
        RunStatus.ROLLED_BACK,
    ),
    # -- operator actions -----------------------------------------------------------------
    Case(
        "retried resumes exactly at the compensation that was stuck",
        SHOP,
        events(CHARGE_STUCK, retried()),
        "undo charge#3",
        RunStatus.COMPENSATING,
    ),
    Case(
        "after retried, the compensation has a fresh budget",
        SHOP,
        events(CHARGE_STUCK, retried(), *undo_broke("charge", 3, retry_at=70.0)),
        "undo charge#4 at 70",
        RunStatus.COMPENSATING,
    ),
    Case(
        "after retried, the undo goes on once the stuck compensation succeeds",
        SHOP,
        events(CHARGE_STUCK, retried(), *undone("charge", 3)),
        "undo reserve#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "resolved counts the stuck compensation as done and the undo goes on",
        SHOP,
        events(CHARGE_STUCK, resolved()),
        "undo reserve#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "resolved, then the rest undone: the run is rolled back",
        SHOP,
        events(CHARGE_STUCK, resolved(), *undone("reserve")),
        "finish rolled_back",
        RunStatus.COMPENSATING,
    ),
    Case(
        "continue_on_compensation_error skips a stuck compensation",
        SHOP_CONTINUE,
        events(SHIP_FAILED, *undo_broke("charge", 1, retry_at=30.0), *undo_broke("charge", 2)),
        "undo reserve#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "continue_on_compensation_error ends needing attention on the skipped step",
        SHOP_CONTINUE,
        events(
            SHIP_FAILED,
            *undo_broke("charge", 1, retry_at=30.0),
            *undo_broke("charge", 2),
            *undone("reserve"),
        ),
        "attention compensation charge",
        RunStatus.COMPENSATING,
    ),
    Case(
        "continue_on_compensation_error: resolving the skipped step finishes the undo",
        SHOP_CONTINUE,
        events(
            SHIP_FAILED,
            *undo_broke("charge", 1, retry_at=30.0),
            *undo_broke("charge", 2),
            *undone("reserve"),
            attention(C, "charge"),
            resolved(),
        ),
        "finish rolled_back",
        RunStatus.COMPENSATING,
    ),
    # -- crashes -------------------------------------------------------------------------
    Case(
        "an open step not in flight was cut by a crash: it runs again as the next attempt",
        SHOP,
        events(begin(), *ran("check"), started("reserve")),
        "do reserve#2",
        RunStatus.RUNNING,
    ),
    Case(
        "a crash does not count as a failure: the last attempt of the budget is re-run",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", retry_at=10.0),
            started("charge", 2),
        ),
        "do charge#3",
        RunStatus.RUNNING,
    ),
    Case(
        "a crashed re-run that fails still has the budget the crash did not use",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            *broke("charge", retry_at=10.0),
            started("charge", 2),
            *broke("charge", 3),
        ),
        "rollback after charge",
        RunStatus.RUNNING,
    ),
    Case(
        "an attempt cut by a crash leaves the whole budget to the next ones",
        SHOP,
        events(
            begin(),
            *ran("check"),
            *ran("reserve"),
            started("charge", 1),
            *broke("charge", 2, retry_at=10.0),
        ),
        "do charge#3 at 10",
        RunStatus.RUNNING,
    ),
    Case(
        "a compensation cut by a crash leaves the whole budget to the next ones",
        SHOP,
        events(SHIP_FAILED, c_started("charge", 1), *undo_broke("charge", 2, retry_at=10.0)),
        "undo charge#3 at 10",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a crash during a retry wait keeps the durable timer",
        SHOP,
        events(begin(), *ran("check"), *broke("reserve", retry_at=50.0)),
        "do reserve#2 at 50",
        RunStatus.RUNNING,
    ),
    Case(
        "an open compensation after a crash is re-run at once",
        SHOP,
        events(SHIP_FAILED, *undo_broke("charge", retry_at=30.0), c_started("charge", 2)),
        "undo charge#3",
        RunStatus.COMPENSATING,
    ),
    Case(
        "after a crash a succeeded compensation is not run again",
        SHOP,
        events(SHIP_FAILED, *undone("charge"), c_started("reserve")),
        "undo reserve#2",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a crash right after rollback_started resumes the undo, not the steps",
        SHOP,
        events(SHIP_FAILED),
        "undo charge#1",
        RunStatus.COMPENSATING,
    ),
    # -- pivot -------------------------------------------------------------------------------
    Case(
        "the pivot runs like any step",
        PIVOTED,
        events(begin(), *ran("reserve")),
        "do commit#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a pivot failing cleanly rolls back the steps before it",
        PIVOTED,
        events(begin(), *ran("reserve"), *broke("commit", 1, retry_at=4.0), *broke("commit", 2)),
        "rollback after commit",
        RunStatus.RUNNING,
    ),
    Case(
        "a pivot failing cleanly with nothing to compensate fails the run",
        LONE_PIVOT,
        events(begin(), *ran("check"), *broke("commit")),
        "finish failed",
        RunStatus.RUNNING,
    ),
    Case(
        "a pivot whose outcome is unknown needs attention, never a rollback",
        PIVOTED,
        events(
            begin(),
            *ran("reserve"),
            *broke("commit", 1, retry_at=4.0),
            *broke("commit", 2, unknown=True),
        ),
        "attention action commit",
        RunStatus.RUNNING,
    ),
    Case(
        "a pivot that timed out earlier and then failed cleanly still needs attention",
        PIVOTED,
        events(
            begin(),
            *ran("reserve"),
            *broke("commit", 1, unknown=True, retry_at=4.0),
            *broke("commit", 2),
        ),
        "attention action commit",
        RunStatus.RUNNING,
    ),
    Case(
        "resolving an unknown pivot counts it as passed: the run goes forward",
        PIVOTED,
        events(
            begin(),
            *ran("reserve"),
            *broke("commit", 1, retry_at=4.0),
            *broke("commit", 2, unknown=True),
            attention(A, "commit"),
            resolved(),
        ),
        "do notify#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a retriable step is retried after the pivot",
        PIVOTED,
        events(PAST_PIVOT, *broke("notify", retry_at=8.0)),
        "do notify#2 at 8",
        RunStatus.RUNNING,
    ),
    Case(
        "a retriable step exhausting after the pivot needs attention, not a rollback",
        PIVOTED,
        events(PAST_PIVOT, *broke("notify", 1, retry_at=8.0), *broke("notify", 2)),
        "attention action notify",
        RunStatus.RUNNING,
    ),
    Case(
        "after the pivot even a permanent error needs attention",
        PIVOTED,
        events(PAST_PIVOT, *broke("notify", permanent=True)),
        "attention action notify",
        RunStatus.RUNNING,
    ),
    Case(
        "retried after a stuck retriable step runs it again",
        PIVOTED,
        events(PAST_PIVOT, *broke("notify", permanent=True), attention(A, "notify"), retried()),
        "do notify#2",
        RunStatus.RUNNING,
    ),
    Case(
        "resolved after a stuck retriable step goes on with the next",
        PIVOTED,
        events(PAST_PIVOT, *broke("notify", permanent=True), attention(A, "notify"), resolved()),
        "do email#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a saga past its pivot completes",
        PIVOTED,
        events(PAST_PIVOT, *ran("notify"), *ran("email")),
        "finish completed",
        RunStatus.RUNNING,
    ),
    # -- parallel stages -----------------------------------------------------------------
    Case(
        "every member of a stage is invoked at once",
        TRIP,
        events(begin(), *ran("book")),
        "do flight#1, do hotel#1, do car#1",
        RunStatus.RUNNING,
    ),
    Case(
        "members in flight are not invoked again",
        TRIP,
        events(TRIP_STARTED),
        "idle",
        RunStatus.RUNNING,
        running=((A, "flight"), (A, "hotel"), (A, "car")),
    ),
    Case(
        "a member that landed waits for the others",
        TRIP,
        events(TRIP_STARTED, succeeded("hotel")),
        "idle",
        RunStatus.RUNNING,
        running=((A, "flight"), (A, "car")),
    ),
    Case(
        "a member with budget left is retried while the others run",
        TRIP,
        events(TRIP_STARTED, failed("car", retry_at=9.0)),
        "do car#2 at 9",
        RunStatus.RUNNING,
        running=((A, "flight"), (A, "hotel")),
    ),
    Case(
        "the next stage starts once every member succeeded",
        TRIP,
        events(TRIP_STARTED, succeeded("hotel"), succeeded("car"), succeeded("flight")),
        "do pay#1",
        RunStatus.RUNNING,
    ),
    Case(
        "a member failing for good: nothing new starts, the running ones are awaited",
        TRIP,
        events(
            begin(),
            *ran("book"),
            started("flight"),
            started("hotel"),
            failed("flight", permanent=True),
        ),
        "idle",
        RunStatus.RUNNING,
        running=((A, "hotel"),),
    ),
    Case(
        "a member failing for good: a pending retry of another is not started",
        TRIP,
        events(TRIP_STARTED, failed("car", retry_at=9.0), failed("flight", permanent=True)),
        "idle",
        RunStatus.RUNNING,
        running=((A, "hotel"),),
    ),
    Case(
        "a member failing for good: the members cut by a crash are run again",
        TRIP,
        events(TRIP_STARTED, failed("flight", permanent=True)),
        "do hotel#2, do car#2",
        RunStatus.RUNNING,
    ),
    Case(
        "once the running members landed the stage rolls back",
        TRIP,
        events(
            TRIP_STARTED, failed("flight", permanent=True), succeeded("hotel"), succeeded("car")
        ),
        "rollback after flight",
        RunStatus.RUNNING,
    ),
    Case(
        "the members that succeeded are compensated, the plain one is not",
        TRIP,
        events(
            TRIP_STARTED,
            failed("flight", permanent=True),
            succeeded("hotel"),
            succeeded("car"),
            rollback("flight"),
        ),
        "undo hotel#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "only members that took effect are compensated, latest first",
        TRIP,
        events(
            begin(),
            *ran("book"),
            started("flight"),
            started("hotel"),
            started("car"),
            succeeded("hotel"),
            succeeded("flight"),
            failed("car", 1, retry_at=9.0),
            *broke("car", 2),
            rollback("car"),
            *undone("flight"),
        ),
        "undo hotel#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a member whose only failure was clean and that never ran again is not compensated",
        TRIP,
        events(
            TRIP_STARTED,
            failed("flight", retry_at=9.0),
            failed("car", permanent=True),
            succeeded("hotel"),
            rollback("car"),
            *undone("hotel"),
        ),
        "finish rolled_back",
        RunStatus.COMPENSATING,
    ),
    Case(
        "a member that timed out and was then abandoned is compensated",
        TRIP,
        events(
            TRIP_STARTED,
            failed("flight", unknown=True, retry_at=9.0),
            failed("car", permanent=True),
            failed("hotel", permanent=True),
        ),
        "rollback after hotel",
        RunStatus.RUNNING,
    ),
    Case(
        "the abandoned timed-out member's compensation runs",
        TRIP,
        events(
            TRIP_STARTED,
            failed("flight", unknown=True, retry_at=9.0),
            failed("car", permanent=True),
            failed("hotel", permanent=True),
            rollback("hotel"),
        ),
        "undo flight#1",
        RunStatus.COMPENSATING,
    ),
    Case(
        "forward calls still in flight are awaited before undoing",
        TRIP,
        events(
            TRIP_STARTED, failed("flight", permanent=True), succeeded("hotel"), rollback("flight")
        ),
        "idle",
        RunStatus.COMPENSATING,
        running=((A, "car"),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_decide(case: Case) -> None:
    progress = replay(case.plan, case.journal)
    assert progress.status == case.status
    assert describe(decide(case.plan, progress, case.running)) == case.expected


def test_case_descriptions_are_unique() -> None:
    assert len({c.description for c in CASES}) == len(CASES)


# -- progress details --------------------------------------------------------------------


def test_success_merges_results_into_state() -> None:
    progress = replay(
        SHOP,
        events(begin(order=1), *ran("check"), *ran("reserve", item="x", qty=2), *ran("charge")),
    )
    assert progress.state == {"order": 1, "item": "x", "qty": 2}
    assert progress.actions["reserve"].result == {"item": "x", "qty": 2}
    assert progress.actions["charge"].result is None
    assert progress.completion == ["check", "reserve", "charge"]


def test_later_results_overwrite_earlier_state() -> None:
    progress = replay(SHOP, events(begin(n=0), *ran("check", n=1), *ran("reserve", n=2)))
    assert progress.state == {"n": 2}


def test_replay_does_not_alias_the_journal_state() -> None:
    journal = events(begin(order=1), *ran("check", extra=True))
    replay(SHOP, journal)
    assert journal[0].data["state"] == {"order": 1}


def test_failure_records_attempts_and_retry_time() -> None:
    progress = replay(SHOP, events(begin(), *ran("check"), *broke("reserve", retry_at=7.0)))
    record = progress.actions["reserve"]
    assert (record.started, record.failures, record.open, record.done) == (1, 1, False, False)
    assert record.retry_at == 7.0
    assert record.error == error("reserve")
    assert not record.exhausted


def test_step_started_without_attempt_number_counts_up() -> None:
    journal = events(begin(), (EventKind.STEP_STARTED, "check", None, {}))
    progress = replay(SHOP, journal)
    assert progress.actions["check"].started == 1
    assert progress.actions["check"].open


def test_rollback_keeps_the_original_error() -> None:
    progress = replay(SHOP, events(SHIP_FAILED))
    assert progress.reason == "failure"
    assert progress.error == error("ship")


def test_rollback_transition_carries_the_failing_step_and_its_error() -> None:
    progress = replay(SHOP, events(THROUGH_CHARGE, *broke("ship", permanent=True)))
    transition = decide(SHOP, progress).transition
    assert transition is not None
    assert transition.kind is EventKind.ROLLBACK_STARTED
    assert transition.step == "ship"
    assert transition.data == {"reason": "failure", "error": error("ship")}


def test_failed_transition_carries_the_error() -> None:
    progress = replay(SHOP, events(begin(), *broke("check")))
    transition = decide(SHOP, progress).transition
    assert transition is not None
    assert transition.data == {"status": "failed", "error": error("check")}
    apply(SHOP, progress, next_event(progress, transition.kind, data=transition.data))
    assert progress.status is RunStatus.FAILED
    assert progress.error == error("check")


def test_compensation_errors_accumulate_and_the_original_error_is_kept() -> None:
    progress = replay(SHOP, events(CHARGE_STUCK))
    assert progress.compensation_errors == [error("undo charge", 1), error("undo charge", 2)]
    assert progress.error == error("ship")
    assert progress.attention == (C, "charge")
    progress = replay(SHOP, events(CHARGE_STUCK, retried(), *undo_broke("charge", 3)))
    assert len(progress.compensation_errors) == 3
    assert progress.error == error("ship")


def test_attention_transition_names_phase_step_and_last_error() -> None:
    journal = events(SHIP_FAILED, *undo_broke("charge", 1, retry_at=3.0), *undo_broke("charge", 2))
    transition = decide(SHOP, replay(SHOP, journal)).transition
    assert transition is not None
    assert transition.kind is EventKind.NEEDS_ATTENTION
    assert transition.step == "charge"
    assert transition.data["phase"] == "compensation"
    assert transition.data["error"] == error("undo charge", 2)
    assert transition.data["reason"]


def test_attention_going_forward_records_the_error() -> None:
    journal = events(PAST_PIVOT, *broke("notify", permanent=True))
    progress = replay(PIVOTED, journal)
    transition = decide(PIVOTED, progress).transition
    assert transition is not None
    apply(
        PIVOTED, progress, next_event(progress, transition.kind, transition.step, transition.data)
    )
    assert progress.status is RunStatus.NEEDS_ATTENTION
    assert progress.attention == (A, "notify")
    assert progress.error == error("notify")


def test_retried_clears_attention_and_resets_the_budget() -> None:
    progress = replay(SHOP, events(CHARGE_STUCK, retried()))
    record = progress.compensations["charge"]
    assert progress.attention is None
    assert progress.status is RunStatus.COMPENSATING
    assert (record.exhausted, record.failures, record.started) == (False, 0, 2)
    assert not is_final_failure(SHOP, progress, C, "charge", permanent=False)


def test_resolved_marks_the_stuck_call_done() -> None:
    progress = replay(SHOP, events(CHARGE_STUCK, resolved()))
    assert progress.compensations["charge"].done
    assert progress.attention is None
    assert progress.status is RunStatus.COMPENSATING


def test_pivot_passed_only_once_the_pivot_succeeded() -> None:
    assert not replay(PIVOTED, events(begin(), *ran("reserve"), started("commit"))).pivot_passed
    assert replay(PIVOTED, events(PAST_PIVOT)).pivot_passed


def test_a_timed_out_step_counts_as_done_from_its_first_timeout() -> None:
    # The effect may date from the timed-out attempt, so the step takes its
    # place in the undo order then, even if a later attempt succeeds.
    progress = replay(
        TRIP,
        events(
            TRIP_STARTED,
            failed("flight", unknown=True, retry_at=9.0),
            succeeded("hotel"),
            succeeded("car"),
            *ran("flight", 2),
        ),
    )
    assert progress.completion == ["book", "flight", "hotel", "car"]
    assert [g[0] for g in undo_stages(TRIP, progress)] == ["hotel", "flight"]


def test_undo_order_is_reverse_completion_of_compensatable_steps() -> None:
    progress = replay(SHOP, events(SHIP_FAILED))
    assert [g[0] for g in undo_stages(SHOP, progress)] == ["charge", "reserve"]
    progress = replay(
        TRIP,
        events(TRIP_STARTED, succeeded("hotel"), succeeded("car"), succeeded("flight")),
    )
    assert progress.completion == ["book", "hotel", "car", "flight"]
    assert [g[0] for g in undo_stages(TRIP, progress)] == ["flight", "hotel"]


@pytest.mark.parametrize(
    ("failures", "budget", "permanent", "final"),
    [
        (0, 1, False, True),
        (0, 3, False, False),
        (1, 3, False, False),
        (2, 3, False, True),
        (0, 3, True, True),
        (5, None, False, False),
        (0, None, True, True),
    ],
)
def test_is_final_failure(failures: int, budget: int | None, permanent: bool, final: bool) -> None:
    plan = sequential(comp("s", attempts=budget, undo=budget))
    progress = Progress()
    progress.attempts(A, "s").failures = failures
    progress.attempts(C, "s").failures = failures
    assert is_final_failure(plan, progress, A, "s", permanent=permanent) is final
    assert is_final_failure(plan, progress, C, "s", permanent=permanent) is final


def test_apply_rejects_a_gap_in_seq() -> None:
    progress = replay(SHOP, events(begin()))
    gap = Event("r", 3, EventKind.STEP_STARTED, 3.0, "check", 1)
    with pytest.raises(ValueError, match="skips from seq 1 to 3"):
        apply(SHOP, progress, gap)


def test_apply_rejects_a_repeated_seq() -> None:
    progress = replay(SHOP, events(begin(), started("check")))
    with pytest.raises(ValueError, match="run 'r'"):
        apply(SHOP, progress, Event("r", 2, EventKind.STEP_STARTED, 3.0, "check", 2))


def test_apply_rejects_a_step_event_without_step() -> None:
    progress = Progress()
    with pytest.raises(ValueError, match="names no step"):
        apply(SHOP, progress, Event("r", 1, EventKind.STEP_STARTED, 1.0))


@pytest.mark.parametrize("status", ["finished", ["completed"], {"status": "completed"}, None])
def test_apply_rejects_a_run_finished_event_without_a_status(status: Any) -> None:
    # A ValueError, whatever the value: the engine and `sagakit check` hold a
    # journal that does not fold back by it (see `SagaRegistry.replay`).
    finished = (EventKind.RUN_FINISHED, None, None, {"status": status})
    with pytest.raises(ValueError, match="is not a valid RunStatus"):
        replay(SHOP, events(begin(), finished))


def test_decide_does_not_change_progress() -> None:
    progress = replay(SHOP, events(SHIP_FAILED, *undo_broke("charge", retry_at=9.0)))
    before = repr(progress)
    decide(SHOP, progress)
    decide(SHOP, progress, [(C, "charge")])
    assert repr(progress) == before


def test_decide_accepts_any_collection_for_running() -> None:
    progress = replay(SHOP, events(begin(), started("check")))
    for running in ([(A, "check")], {(A, "check")}, {(A, "check"): object()}.keys()):
        assert describe(decide(SHOP, progress, running)) == "idle"


def next_event(
    progress: Progress, kind: EventKind, step: str | None = None, data: dict[str, Any] | None = None
) -> Event:
    return Event(
        "r", progress.last_seq + 1, kind, float(progress.last_seq + 1), step, None, data or {}
    )


def test_a_driver_loop_over_the_core_reaches_rolled_back() -> None:
    """The whole loop for the payment example: ship fails, the rest is undone in reverse."""
    progress = Progress()
    log: list[str] = []
    for _ in range(100):
        decision = decide(SHOP, progress)
        if decision.transition is not None:
            t = decision.transition
            apply(SHOP, progress, next_event(progress, t.kind, t.step, t.data))
            continue
        if not decision.invoke:
            break
        for call in decision.invoke:
            log.append(describe(Decision(invoke=(call,))))
            begin_kind = (
                EventKind.STEP_STARTED if call.phase is A else EventKind.COMPENSATION_STARTED
            )
            apply(SHOP, progress, attempt_event(progress, begin_kind, call))
            apply(SHOP, progress, outcome_event(progress, call, ok=call.step != "ship"))
    assert progress.status is RunStatus.ROLLED_BACK
    assert log == [
        "do check#1",
        "do reserve#1",
        "do charge#1",
        "do ship#1",
        "undo charge#1",
        "undo reserve#1",
    ]


def attempt_event(progress: Progress, kind: EventKind, call: Invoke) -> Event:
    seq = progress.last_seq + 1
    return Event("r", seq, kind, float(seq), call.step, call.attempt, {})


def outcome_event(progress: Progress, call: Invoke, *, ok: bool) -> Event:
    seq = progress.last_seq + 1
    if ok:
        kind = EventKind.STEP_SUCCEEDED if call.phase is A else EventKind.COMPENSATION_SUCCEEDED
        return Event("r", seq, kind, float(seq), call.step, call.attempt, {"result": None})
    kind = EventKind.STEP_FAILED if call.phase is A else EventKind.COMPENSATION_FAILED
    data = {"error": error(call.step), "permanent": True, "unknown": False, "retry_at": None}
    return Event("r", seq, kind, float(seq), call.step, call.attempt, data)


def test_reservation_events_change_neither_state_nor_status() -> None:
    reserved = (EventKind.RESERVATION_TAKEN, "reserve", None, {"names": ["x"], "ttl": 5})
    lapsed = (EventKind.RESERVATION_LAPSED, "reserve", None, {"name": "x", "found": "commit"})
    released = (EventKind.RESERVATION_RELEASED, None, None, {"names": ["x"], "finished": True})
    bare = replay(SHOP, events(begin(order=1), *ran("check"), started("reserve")))
    told = replay(
        SHOP, events(begin(order=1), *ran("check"), started("reserve"), reserved, lapsed, released)
    )
    assert told.last_seq == bare.last_seq + 3
    assert (told.status, told.state, told.actions) == (bare.status, bare.state, bare.actions)
    assert decide(SHOP, told, set()) == decide(SHOP, bare, set())


# -- deciding step by step, as the driver does -------------------------------------------


def _decided_as_replayed(plan: Plan, journal: list[Event]) -> list[str]:
    """Fold ``journal`` one event at a time, deciding after each, as the driver does.

    Each decision is checked against the one a fresh replay of the same
    journal gives: what the progress remembers between decisions (the stages
    done, the undo order) must never change an answer.
    """
    progress = Progress()
    answers = []
    for event in journal:
        apply(plan, progress, event)
        answer = describe(decide(plan, progress))
        assert answer == describe(decide(plan, replay(plan, journal[: event.seq]))), event
        answers.append(answer)
    return answers


def test_a_long_rollback_decided_step_by_step_undoes_every_step_latest_first() -> None:
    names = [f"s{i}" for i in range(40)]
    plan = sequential(*(comp(name) for name in names))
    journal = events(
        begin(),
        *(ran(name) for name in names[:-1]),
        broke(names[-1]),
        rollback(names[-1]),
        *(undone(name) for name in reversed(names[:-1])),
    )
    answers = _decided_as_replayed(plan, journal)
    undos = [a for a in answers if a.startswith("undo")]
    # Asked again after each started and each succeeded compensation.
    assert [a.split("#")[0] for a in undos][::2] == [f"undo {n}" for n in reversed(names[:-1])]
    assert answers[-1] == "finish rolled_back"


def test_a_step_that_takes_effect_during_the_undo_is_undone_first() -> None:
    # The undo order is remembered between decisions, and how much of it is
    # done; a member landing late (its success journaled once the undo began
    # and `a` was undone) goes to the front of it.
    plan = Plan(
        steps=(comp("a"), comp("b"), comp("c")),
        stages=(("a",), ("b", "c")),
    )
    journal = events(
        begin(),
        *ran("a"),
        started("b"),
        started("c"),
        failed("b", permanent=True),
        rollback("b"),
        *undone("a"),
        succeeded("c"),
    )
    answers = _decided_as_replayed(plan, journal)
    # (After its start alone, `a` shows cut by a crash: it would run again.)
    assert answers[-3:] == ["undo a#2", "finish rolled_back", "undo c#1"]


def test_a_first_attempt_is_one_decision_shared_by_every_run_of_a_plan() -> None:
    # Made once per plan and step, not at each step of each run: with many
    # runs in flight, each such object lives until the run's commit lands and
    # is one more for the garbage collector to walk.
    one = decide(SHOP, replay(SHOP, events(begin(order=1))))
    other = decide(SHOP, replay(SHOP, events(begin(order=2))))
    assert one == Decision((Invoke(Phase.ACTION, "check", 1),))
    assert other is one
    later = decide(SHOP, replay(SHOP, events(begin(), *ran("check"))))
    assert later == Decision((Invoke(Phase.ACTION, "reserve", 1),))
    assert decide(SHOP, replay(SHOP, events(begin(), *ran("check")))) is later
    # A retry, or an attempt cut short by a crash, is its own decision.
    retry = decide(SHOP, replay(SHOP, events(begin(), *ran("check"), *broke("reserve"))))
    assert retry == Decision((Invoke(Phase.ACTION, "reserve", 2, None),))
    crashed = replay(SHOP, events(begin(), *ran("check"), started("reserve")))
    assert decide(SHOP, crashed) == Decision((Invoke(Phase.ACTION, "reserve", 2),))
    assert decide(SHOP, crashed) is not decide(SHOP, crashed)

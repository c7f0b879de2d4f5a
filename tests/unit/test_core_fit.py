"""`sagakit.core.fit`: what a journal records that a changed plan would never have done."""

from __future__ import annotations

import pytest

from sagakit.core import Plan, StepPlan, replay
from sagakit.core.fit import changes, unknown_steps
from sagakit.journal import EventKind

from .helpers import begin, broke, c_failed, c_started, comp, events, plain, ran, sequential

ROLLBACK = (EventKind.ROLLBACK_STARTED, None, None, {"reason": "failure"})


def pivot(name: str) -> StepPlan:
    return StepPlan(name, "pivot", False, 1, None)


def test_a_journal_of_the_same_plan_fits() -> None:
    plan = sequential(comp("reserve"), comp("charge"), plain("notify"))
    journal = events(begin(), ran("reserve"), ran("charge"), broke("notify", permanent=True))
    assert changes(plan, journal) == []
    assert unknown_steps(plan, journal) == []


def test_a_renamed_step_is_unknown_and_replay_refuses_it() -> None:
    plan = sequential(comp("reserve"), comp("take_payment"))
    journal = events(begin(), ran("reserve"), ran("charge"), ran("refund_fee"), ran("charge", 2))
    assert unknown_steps(plan, journal) == ["charge", "refund_fee"]
    with pytest.raises(ValueError, match="no step named 'charge'"):
        replay(plan, journal)


def test_a_step_inserted_before_steps_done_is_a_change() -> None:
    plan = sequential(comp("reserve"), plain("validate"), comp("charge"))
    journal = events(begin(), ran("reserve"), ran("charge"))
    assert changes(plan, journal) == [
        "step 'charge' ran before step 'validate' had finished, but the definition now "
        "runs 'validate' first (a step added, moved or regrouped)"
    ]


def test_a_step_inserted_after_the_steps_done_is_no_change() -> None:
    plan = sequential(comp("reserve"), comp("charge"), plain("validate"))
    assert changes(plan, events(begin(), ran("reserve"), ran("charge"))) == []


def test_members_of_a_parallel_stage_split_into_two_stages_is_a_change() -> None:
    was_parallel = events(begin(), ran("flight")[0], ran("hotel")[0], *ran("flight")[1:])
    split = sequential(comp("flight"), comp("hotel"))
    assert changes(split, was_parallel) == [
        "step 'hotel' ran before step 'flight' had finished, but the definition now "
        "runs 'flight' first (a step added, moved or regrouped)"
    ]
    together = Plan(steps=(comp("flight"), comp("hotel")), stages=(("flight", "hotel"),))
    assert changes(together, was_parallel) == []


def test_a_later_attempt_is_not_held_against_the_order_again() -> None:
    plan = sequential(comp("reserve"), plain("validate"), comp("charge", attempts=3))
    journal = events(begin(), ran("reserve"), broke("charge"), broke("charge", 2))
    assert len(changes(plan, journal)) == 1  # one sentence, not one per attempt


def test_a_compensation_recorded_for_a_step_that_has_none_now_is_a_change() -> None:
    plan = sequential(plain("reserve"), comp("charge"))
    journal = events(
        begin(),
        ran("reserve"),
        broke("charge", permanent=True),
        ROLLBACK,
        c_started("reserve"),
        c_failed("reserve"),
    )
    assert changes(plan, journal) == [
        "step 'reserve' has no compensation now, yet its journal records one (its kind "
        "changed from compensatable): it would be left undone"
    ]


def test_an_undo_begun_after_a_step_that_is_now_the_pivot_is_a_change() -> None:
    plan = sequential(comp("reserve"), pivot("ship"), plain("notify"))
    journal = events(
        begin(), ran("reserve"), ran("ship"), broke("notify", permanent=True), ROLLBACK
    )
    assert changes(plan, journal) == [
        "step 'ship' is now the pivot (the point of no return), yet the run began "
        "undoing after it had succeeded (a step's kind changed)"
    ]


def test_a_forced_cancel_past_the_pivot_is_no_change() -> None:
    plan = sequential(comp("reserve"), pivot("ship"))
    cancel = (EventKind.CANCEL_REQUESTED, None, None, {"reason": "fraud", "force": True})
    undo = (EventKind.ROLLBACK_STARTED, None, None, {"reason": "cancel"})
    journal = events(begin(), ran("reserve"), ran("ship"), cancel, undo, c_started("reserve"))
    assert changes(plan, journal) == []

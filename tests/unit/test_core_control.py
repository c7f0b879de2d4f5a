"""Tests of the core's business controls: signals and pauses, failure handlers,
cancel, deadlines, withdrawn steps and the declared compensation order.

Each test writes a journal with the small helpers below (run id ``"r"``,
``seq`` numbered automatically, ``at`` equal to ``seq``), folds it with
`replay` and checks what `decide` answers, spelled as a short string (see
`describe`). `settle` carries decisions out the way the driver does, with
every call succeeding unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagakit.core import (
    Attempts,
    Decision,
    Invoke,
    Plan,
    Progress,
    StepPlan,
    apply,
    cancel_refusal,
    decide,
    is_final_failure,
    replay,
    undo_stages,
)
from sagakit.journal import FAILED, STARTED, SUCCEEDED, Event, EventKind, Phase, RunStatus

from .helpers import (
    A,
    C,
    Spec,
    begin,
    broke,
    c_failed,
    c_started,
    c_succeeded,
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

# -- plans --------------------------------------------------------------------------


def pivot(name: str, attempts: int | None = 2) -> StepPlan:
    return StepPlan(name, "pivot", False, attempts, None)


def retriable(name: str, attempts: int | None = 2) -> StepPlan:
    return StepPlan(name, "retriable", False, attempts, None)


# check (plain) -> reserve -> charge (2 attempts) -> ship
SHOP = sequential(plain("check"), comp("reserve"), comp("charge", attempts=2), comp("ship"))
# reserve -> approve (waits for the signal "approved") -> ship
APPROVAL = sequential(comp("reserve"), comp("approve", wait_for="approved"), comp("ship"))
# Nothing compensatable before the step that waits.
GATE = sequential(plain("check"), plain("publish", wait_for="go"))
# reserve -> commit (the pivot) -> notify (retriable)
PIVOTED = sequential(comp("reserve"), pivot("commit"), retriable("notify"))
# book -> {flight, hotel, car} in parallel -> pay; hotels and cars are undone together.
TRIP_STEPS = (
    comp("book"),
    comp("flight"),
    comp("hotel", undo=1),
    comp("car", undo=2),
    plain("pay"),
)
TRIP_STAGES = (("book",), ("flight", "hotel", "car"), ("pay",))
TRIP_ORDER = (("hotel", "car"), ("flight",), ("book",))
TRIP = Plan(TRIP_STEPS, TRIP_STAGES, compensation_order=TRIP_ORDER)
TRIP_CONTINUE = Plan(
    TRIP_STEPS, TRIP_STAGES, continue_on_compensation_error=True, compensation_order=TRIP_ORDER
)
TRIP_DEFAULT = Plan(TRIP_STEPS, TRIP_STAGES)

# -- journals -----------------------------------------------------------------------


def fold(plan: Plan, *specs: Spec | Sequence[Spec]) -> Progress:
    return replay(plan, events(*specs))


def withdrawn(step: str, attempt: int = 1) -> Spec:
    return (EventKind.STEP_WITHDRAWN, step, attempt, {})


def rollback(step: str | None = None, reason: str = "failure", **extra: Any) -> Spec:
    error_ = error(step) if step is not None else None
    return (EventKind.ROLLBACK_STARTED, step, None, {"reason": reason, "error": error_, **extra})


def paused(step: str | None, attempt: int | None = None, **data: Any) -> Spec:
    return (EventKind.PAUSED, step, attempt, data)


def waiting(step: str, signal: str) -> Spec:
    """The PAUSED event the core asks for when a step waits for ``signal``."""
    question = f"waiting for the signal {signal!r}"
    return paused(step, question=question, options=[signal], waiting_for=signal)


def question(step: str, attempt: int | None = 1) -> Spec:
    """A step (or its failure handler) asked a person a question."""
    return paused(step, attempt, question="which hotel?", options=["choose", "give_up"])


def signal(name: str, payload: Any = None, **data: Any) -> Spec:
    return (EventKind.SIGNAL_RECEIVED, None, None, {"name": name, "payload": payload, **data})


def cancel(reason: str | None = "customer changed plans", *, force: bool = False) -> Spec:
    return (EventKind.CANCEL_REQUESTED, None, None, {"reason": reason, "force": force})


def withdraw_cancel() -> Spec:
    return (EventKind.CANCEL_REFUSED, None, None, {"withdrawn": True, "why": "pivot"})


def deadline_passed(at: float = 100.0) -> Spec:
    return (EventKind.DEADLINE_PASSED, None, None, {"deadline": at})


def attention(phase: Phase, step: str) -> Spec:
    return (EventKind.NEEDS_ATTENTION, step, None, {"phase": phase.value, "reason": "stuck"})


def retried() -> Spec:
    return (EventKind.RETRIED, None, None, {"note": "try again"})


def finished(status: RunStatus) -> Spec:
    return (EventKind.RUN_FINISHED, None, None, {"status": status.value})


# -- decisions, spelled out and carried out -------------------------------------------


def describe(decision: Decision) -> str:
    """``"do a#1"``, ``"undo b#2 at 9"``, ``"rollback cancel"``, ``"finish cancelled"``,
    ``"attention action c"``, ``"pause d for go"``, ``"withdraw cancel"`` or ``"idle"``."""
    t = decision.transition
    if t is not None:
        assert not decision.invoke, "a decision is a transition or invokes, never both"
        if t.kind is EventKind.RUN_FINISHED:
            return f"finish {t.data['status']}"
        if t.kind is EventKind.NEEDS_ATTENTION:
            return f"attention {t.data['phase']} {t.step}"
        if t.kind is EventKind.ROLLBACK_STARTED:
            return f"rollback {t.data['reason']}"
        if t.kind is EventKind.PAUSED:
            return f"pause {t.step} for {t.data['waiting_for']}"
        if t.kind is EventKind.CANCEL_REFUSED and t.data.get("withdrawn"):
            return "withdraw cancel"
        raise AssertionError(f"unexpected transition {t}")
    if not decision.invoke:
        return "idle"
    return ", ".join(
        f"{'do' if call.phase is A else 'undo'} {call.step}#{call.attempt}"
        + ("" if call.not_before is None else f" at {call.not_before:g}")
        for call in decision.invoke
    )


def next_of(plan: Plan, progress: Progress, running: Collection[tuple[Phase, str]] = ()) -> str:
    """What `decide` answers, checking that deciding leaves the progress alone."""
    before = snapshot(progress)
    decision = describe(decide(plan, progress, running))
    assert snapshot(progress) == before, "decide changed the progress"
    return decision


def snapshot(progress: Progress) -> str:
    """The progress as text, without the blank records `Progress.attempts` adds on lookup."""
    copy = replace(progress)
    blank = Attempts()
    copy.actions = {k: v for k, v in progress.actions.items() if v != blank}
    copy.compensations = {k: v for k, v in progress.compensations.items() if v != blank}
    return repr(copy)


def more(plan: Plan, progress: Progress, *specs: Spec | Sequence[Spec]) -> None:
    """Fold more events (written with the helpers above) into ``progress``."""
    for spec in specs:
        flat: list[Spec] = list(spec) if isinstance(spec, list) else [spec]  # type: ignore[list-item]
        for kind, step, attempt, data in flat:
            seq = progress.last_seq + 1
            apply(plan, progress, Event("r", seq, kind, float(seq), step, attempt, data))


def status(progress: Progress) -> RunStatus:
    """The run's status, read anew (so that type checkers do not narrow it across events)."""
    return progress.status


def take(plan: Plan, progress: Progress) -> Decision:
    """Journal the transition `decide` asks for; return the decision."""
    decision = decide(plan, progress)
    t = decision.transition
    assert t is not None, f"expected a transition, got {describe(decision)}"
    more(plan, progress, (t.kind, t.step, None, t.data))
    return decision


def settle(plan: Plan, progress: Progress, fail: Collection[tuple[Phase, str]] = ()) -> list[str]:
    """Carry decisions out one by one until nothing is left: calls succeed,
    except those in ``fail``, which fail for good. Returns the decisions."""
    log: list[str] = []
    for _ in range(100):
        decision = decide(plan, progress)
        t = decision.transition
        if t is None and not decision.invoke:
            return log
        log.append(describe(decision))
        if t is not None:
            more(plan, progress, (t.kind, t.step, None, t.data))
            continue
        for call in decision.invoke:
            more(plan, progress, (STARTED[call.phase], call.step, call.attempt, {}))
            if (call.phase, call.step) in fail:
                data = {"error": error(call.step), "permanent": True, "retry_at": None}
                more(plan, progress, (FAILED[call.phase], call.step, call.attempt, data))
            else:
                more(plan, progress, (SUCCEEDED[call.phase], call.step, call.attempt, {}))
    raise AssertionError(f"the run did not settle: {log}")


# -- waiting for a signal ---------------------------------------------------------------


def test_a_step_waiting_for_a_signal_pauses_the_run_naming_the_signal() -> None:
    progress = fold(APPROVAL, begin(), *ran("reserve"))
    decision = decide(APPROVAL, progress)
    assert describe(decision) == "pause approve for approved"
    assert decision.transition is not None
    assert decision.transition.data == {
        "question": "waiting for the signal 'approved'",
        "options": ["approved"],
        "waiting_for": "approved",
    }
    take(APPROVAL, progress)
    assert progress.status == RunStatus.PAUSED
    assert progress.paused == {"step": "approve", **decision.transition.data}
    assert progress.actions["approve"].started == 0  # waiting is not an attempt
    assert next_of(APPROVAL, progress) == "idle"


def test_a_step_waiting_for_a_signal_is_not_invoked_beside_a_call_in_flight() -> None:
    plan = Plan(
        (comp("reserve"), plain("audit"), comp("approve", wait_for="approved")),
        (("reserve",), ("audit", "approve")),
    )
    progress = fold(plan, begin(), *ran("reserve"))
    assert next_of(plan, progress) == "do audit#1"
    progress = fold(plan, begin(), *ran("reserve"), started("audit"))
    assert next_of(plan, progress, [(A, "audit")]) == "idle"
    progress = fold(plan, begin(), *ran("reserve"), *ran("audit"))
    assert next_of(plan, progress) == "pause approve for approved"


def test_a_signal_received_before_the_step_lets_it_run_without_pausing() -> None:
    progress = fold(APPROVAL, begin(), signal("approved", {"by": "ann"}), *ran("reserve"))
    assert progress.signals == {"approved": {"by": "ann"}}
    assert progress.paused is None
    assert next_of(APPROVAL, progress) == "do approve#1"


def test_the_awaited_signal_reopens_the_paused_run() -> None:
    progress = fold(APPROVAL, begin(), *ran("reserve"), waiting("approve", "approved"))
    more(APPROVAL, progress, signal("approved", {"by": "ann"}))
    assert progress.status == RunStatus.RUNNING
    assert progress.paused is None
    assert progress.state == {"by": "ann"}
    assert next_of(APPROVAL, progress) == "do approve#1"


def test_another_signal_merges_its_payload_but_leaves_a_waiting_run_paused() -> None:
    progress = fold(
        APPROVAL,
        begin(order=1),
        *ran("reserve"),
        waiting("approve", "approved"),
        signal("note", {"comment": "soon"}),
    )
    assert progress.status == RunStatus.PAUSED
    assert progress.paused is not None
    assert progress.paused["waiting_for"] == "approved"
    assert progress.state == {"order": 1, "comment": "soon"}
    assert progress.signals == {"note": {"comment": "soon"}}
    assert next_of(APPROVAL, progress) == "idle"


def test_a_signal_merges_a_dict_payload_into_the_state() -> None:
    progress = fold(SHOP, begin(order=1, hotel="Ritz"), signal("choose", {"hotel": "Savoy"}))
    assert progress.state == {"order": 1, "hotel": "Savoy"}
    assert progress.signals == {"choose": {"hotel": "Savoy"}}


@pytest.mark.parametrize("payload", [None, ["Savoy"], "Savoy"])
def test_a_signal_without_a_dict_payload_leaves_the_state_alone(payload: Any) -> None:
    progress = fold(SHOP, begin(order=1), signal("choose", payload))
    assert progress.state == {"order": 1}
    assert progress.signals == {"choose": {}}


def test_the_latest_payload_of_a_signal_is_kept() -> None:
    progress = fold(SHOP, begin(), signal("choose", {"n": 1}), signal("choose", {"n": 2}))
    assert progress.signals == {"choose": {"n": 2}}
    assert progress.state == {"n": 2}


def test_an_ignored_signal_changes_nothing() -> None:
    journal = [begin(order=1), *ran("reserve"), waiting("approve", "approved")]
    before = fold(APPROVAL, *journal)
    after = fold(
        APPROVAL, *journal, signal("approved", {"order": 2}, ignored="does not fit the state")
    )
    assert after.last_seq == before.last_seq + 1
    after.last_seq, after.updated_at = before.last_seq, before.updated_at
    assert after == before
    assert after.status is RunStatus.PAUSED
    assert "approved" not in after.signals


# -- answering a paused step -------------------------------------------------------------

# reserve succeeded; charge asked a question and the run paused on it.
CHARGE_ASKED = [begin(), *ran("check"), *ran("reserve"), started("charge"), question("charge")]


def test_a_step_that_pauses_ends_its_attempt_without_a_failure() -> None:
    progress = fold(SHOP, *CHARGE_ASKED)
    record = progress.actions["charge"]
    assert (record.started, record.failures, record.open) == (1, 0, False)
    assert not record.exhausted
    assert progress.status == RunStatus.PAUSED
    assert progress.paused == {
        "step": "charge",
        "question": "which hotel?",
        "options": ["choose", "give_up"],
    }
    assert next_of(SHOP, progress) == "idle"


def test_answer_retry_runs_the_paused_step_again() -> None:
    progress = fold(SHOP, *CHARGE_ASKED, signal("choose", {"hotel": "Savoy"}, decision="retry"))
    record = progress.actions["charge"]
    assert (record.started, record.failures, record.open) == (1, 0, False)
    assert not record.exhausted
    assert not record.done
    assert record.retry_at is None
    assert (progress.status, progress.paused) == (RunStatus.RUNNING, None)
    assert progress.state == {"hotel": "Savoy"}
    assert next_of(SHOP, progress) == "do charge#2"


def test_answer_compensate_gives_the_step_up_and_rolls_back() -> None:
    declined = {"type": "sagakit.Declined", "message": "give up", "step": "charge"}
    progress = fold(SHOP, *CHARGE_ASKED, signal("give_up", decision="compensate", error=declined))
    record = progress.actions["charge"]
    assert record.exhausted
    assert not record.done
    assert record.error == declined
    assert progress.status == RunStatus.RUNNING
    decision = decide(SHOP, progress)
    assert describe(decision) == "rollback failure"
    assert decision.transition is not None
    assert decision.transition.step == "charge"
    assert decision.transition.data["error"] == declined
    assert settle(SHOP, progress) == ["rollback failure", "undo reserve#1", "finish rolled_back"]
    assert progress.error == declined


def test_answer_compensate_with_nothing_to_undo_fails_the_run() -> None:
    journal = [begin(), *ran("check"), started("publish"), question("publish")]
    progress = fold(GATE, *journal, signal("give_up", decision="compensate"))
    assert next_of(GATE, progress) == "finish failed"


def test_answer_continue_counts_the_step_done_and_merges_its_result() -> None:
    progress = fold(
        SHOP, *CHARGE_ASKED, signal("skip", {"a": 1}, decision="continue", result={"b": 2})
    )
    record = progress.actions["charge"]
    assert record.done
    assert record.result == {"b": 2}
    assert progress.state == {"a": 1, "b": 2}
    assert progress.status == RunStatus.RUNNING
    assert next_of(SHOP, progress) == "do ship#1"
    # The step went on without its action taking effect: nothing of it to undo.
    assert "charge" not in progress.completion


def test_a_signal_that_is_no_answer_leaves_the_step_paused() -> None:
    # The signal handler failed or paused again: no decision is journaled.
    progress = fold(SHOP, *CHARGE_ASKED, signal("choose", {"hotel": "Savoy"}), question("charge"))
    assert progress.status == RunStatus.PAUSED
    assert progress.state == {"hotel": "Savoy"}
    assert not progress.actions["charge"].exhausted
    assert next_of(SHOP, progress) == "idle"
    progress = fold(SHOP, *CHARGE_ASKED, signal("choose", decision="maybe"))
    assert progress.status == RunStatus.PAUSED


# -- failure handlers (STEP_FAILED ``handled``) ----------------------------------------------

CHARGE_FAILED_ONCE = [begin(), *ran("check"), *ran("reserve"), *broke("charge", retry_at=5.0)]


def test_a_handler_pause_after_the_final_failure_then_retry_resets_the_failures() -> None:
    progress = fold(
        SHOP,
        *CHARGE_FAILED_ONCE,
        *broke("charge", 2, handled="pause"),
        question("charge", None),
    )
    record = progress.actions["charge"]
    assert (record.failures, record.exhausted, record.open) == (2, True, False)
    assert progress.status == RunStatus.PAUSED
    assert next_of(SHOP, progress) == "idle"

    more(SHOP, progress, signal("choose", {"hotel": "Savoy"}, decision="retry"))
    assert (record.failures, record.exhausted, record.retry_at) == (0, False, None)
    assert not is_final_failure(SHOP, progress, A, "charge", permanent=False)
    assert status(progress) == RunStatus.RUNNING
    assert next_of(SHOP, progress) == "do charge#3"


def test_handled_retry_gives_the_step_a_fresh_budget() -> None:
    exhausted = fold(SHOP, *CHARGE_FAILED_ONCE, *broke("charge", 2))
    assert next_of(SHOP, exhausted) == "rollback failure"

    progress = fold(SHOP, *CHARGE_FAILED_ONCE, *broke("charge", 2, handled="retry", retry_at=50))
    record = progress.actions["charge"]
    assert (record.failures, record.exhausted, record.retry_at) == (0, False, 50)
    assert next_of(SHOP, progress) == "do charge#3 at 50"
    # The fresh budget is the step's whole budget again.
    more(SHOP, progress, started("charge", 3))
    assert not is_final_failure(SHOP, progress, A, "charge", permanent=False)


def test_handled_retry_overrides_a_permanent_error() -> None:
    progress = fold(
        SHOP, *CHARGE_FAILED_ONCE[:-2], *broke("charge", permanent=True, handled="retry")
    )
    assert next_of(SHOP, progress) == "do charge#2"


def test_handled_continue_counts_the_step_done_and_merges_its_result() -> None:
    progress = fold(
        SHOP,
        *CHARGE_FAILED_ONCE,
        *broke("charge", 2, handled="continue", result={"charged": False}),
    )
    record = progress.actions["charge"]
    assert record.done
    assert not record.exhausted
    assert record.failures == 2
    assert progress.state == {"charged": False}
    assert "charge" not in progress.completion
    assert next_of(SHOP, progress) == "do ship#1"
    # A later rollback does not undo the step that went on without effect.
    more(SHOP, progress, broke("ship", permanent=True))
    assert settle(SHOP, progress) == ["rollback failure", "undo reserve#1", "finish rolled_back"]


def test_handled_continue_of_a_step_that_compensates_on_failure_is_undone() -> None:
    plan = sequential(comp("reserve"), comp("charge", compensate_on_failure=True), comp("ship"))
    progress = fold(
        plan, begin(), *ran("reserve"), *broke("charge", handled="continue"), *broke("ship")
    )
    assert progress.completion == ["reserve", "charge"]
    assert settle(plan, progress)[:3] == ["rollback failure", "undo charge#1", "undo reserve#1"]


# -- cancel ------------------------------------------------------------------------------


def test_a_cancel_of_a_pending_run_finishes_it_cancelled() -> None:
    progress = fold(SHOP, begin(), cancel())
    assert progress.status == RunStatus.RUNNING
    assert progress.cancel == {"reason": "customer changed plans", "force": False}
    decision = decide(SHOP, progress)
    assert describe(decision) == "finish cancelled"
    assert decision.transition is not None
    assert decision.transition.data == {"status": "cancelled", "error": None}
    assert settle(SHOP, progress) == ["finish cancelled"]
    assert status(progress) == RunStatus.CANCELLED
    assert progress.actions == {}


def test_a_cancel_waits_for_the_action_in_flight() -> None:
    progress = fold(SHOP, begin(), *ran("check"), *ran("reserve"), started("charge"), cancel())
    assert next_of(SHOP, progress, [(A, "charge")]) == "idle"
    # The call lands; only then does the undo start, and it includes it.
    more(SHOP, progress, succeeded("charge"))
    assert next_of(SHOP, progress) == "rollback cancel"
    assert settle(SHOP, progress) == [
        "rollback cancel",
        "undo charge#1",
        "undo reserve#1",
        "finish cancelled",
    ]


def test_a_cancel_reinvokes_an_action_cut_short_by_a_crash_first() -> None:
    progress = fold(SHOP, begin(), *ran("check"), *ran("reserve"), started("charge"), cancel())
    assert next_of(SHOP, progress) == "do charge#2"


def test_a_cancel_with_nothing_in_flight_rolls_back_with_its_reason_as_note() -> None:
    progress = fold(SHOP, begin(), *ran("check"), *ran("reserve"), cancel("too slow"))
    decision = decide(SHOP, progress)
    assert describe(decision) == "rollback cancel"
    assert decision.transition is not None
    assert decision.transition.step is None
    assert decision.transition.data == {"reason": "cancel", "error": None, "note": "too slow"}
    take(SHOP, progress)
    assert progress.status == RunStatus.COMPENSATING
    assert (progress.reason, progress.cancel_reason, progress.cancel) == (
        "cancel",
        "too slow",
        None,
    )
    assert progress.error is None
    assert settle(SHOP, progress) == ["undo reserve#1", "finish cancelled"]
    assert status(progress) == RunStatus.CANCELLED


def test_a_cancel_without_a_reason_has_no_note() -> None:
    progress = fold(SHOP, begin(), *ran("check"), *ran("reserve"), cancel(None))
    transition = decide(SHOP, progress).transition
    assert transition is not None
    assert transition.data == {"reason": "cancel", "error": None}


def test_a_cancel_abandons_a_pending_retry() -> None:
    progress = fold(SHOP, *CHARGE_FAILED_ONCE, cancel())
    assert next_of(SHOP, progress) == "rollback cancel"


def test_a_cancel_of_a_paused_run_reopens_it_and_rolls_back() -> None:
    progress = fold(APPROVAL, begin(), *ran("reserve"), waiting("approve", "approved"), cancel())
    assert (progress.status, progress.paused) == (RunStatus.RUNNING, None)
    assert settle(APPROVAL, progress) == ["rollback cancel", "undo reserve#1", "finish cancelled"]


def test_a_cancel_after_the_run_completed_undoes_it() -> None:
    journal = [begin(), *ran("check"), *ran("reserve"), *ran("charge"), *ran("ship")]
    progress = fold(SHOP, *journal, finished(RunStatus.COMPLETED), cancel("next day"))
    assert progress.status == RunStatus.RUNNING
    assert settle(SHOP, progress) == [
        "rollback cancel",
        "undo ship#1",
        "undo charge#1",
        "undo reserve#1",
        "finish cancelled",
    ]
    assert status(progress) == RunStatus.CANCELLED
    assert progress.cancel_reason == "next day"


def test_a_cancel_of_a_completed_run_with_nothing_to_undo_finishes_cancelled() -> None:
    progress = fold(GATE, begin(), signal("go"), *ran("check"), *ran("publish"))
    more(GATE, progress, finished(RunStatus.COMPLETED))
    more(GATE, progress, cancel())
    assert settle(GATE, progress) == ["finish cancelled"]


def test_a_cancel_the_pivot_overtook_is_withdrawn_and_the_run_goes_on() -> None:
    journal = [begin(), *ran("reserve"), started("commit"), cancel()]
    progress = fold(PIVOTED, *journal)
    assert next_of(PIVOTED, progress, [(A, "commit")]) == "idle"
    more(PIVOTED, progress, succeeded("commit"))
    decision = decide(PIVOTED, progress)
    assert describe(decision) == "withdraw cancel"
    assert decision.transition is not None
    assert decision.transition.data["why"]
    take(PIVOTED, progress)
    assert progress.cancel is None
    assert progress.status == RunStatus.RUNNING
    assert settle(PIVOTED, progress) == ["do notify#1", "finish completed"]


def test_a_forced_cancel_after_the_pivot_undoes_the_steps_before_it() -> None:
    journal = [begin(), *ran("reserve"), *ran("commit"), started("notify"), cancel(force=True)]
    progress = fold(PIVOTED, *journal)
    assert next_of(PIVOTED, progress, [(A, "notify")]) == "idle"
    more(PIVOTED, progress, succeeded("notify"))
    assert settle(PIVOTED, progress) == ["rollback cancel", "undo reserve#1", "finish cancelled"]


def test_a_refused_cancel_changes_nothing() -> None:
    journal = [begin(), *ran("reserve"), *ran("commit")]
    refused = (EventKind.CANCEL_REFUSED, None, None, {"reason": "x", "why": "passed its pivot"})
    before, after = fold(PIVOTED, *journal), fold(PIVOTED, *journal, refused)
    after.last_seq, after.updated_at = before.last_seq, before.updated_at
    assert after == before


@pytest.mark.parametrize(
    ("plan", "journal", "force", "refusal"),
    [
        (SHOP, [begin()], False, None),
        (SHOP, [begin(), *ran("check"), started("reserve")], False, None),
        (APPROVAL, [begin(), *ran("reserve"), waiting("approve", "approved")], False, None),
        (GATE, [begin(), signal("go"), *ran("check"), *ran("publish")], False, None),
        (
            GATE,
            [begin(), signal("go"), *ran("check"), *ran("publish"), finished(RunStatus.COMPLETED)],
            False,
            None,
        ),
        (
            SHOP,
            [begin(), *broke("check"), finished(RunStatus.FAILED)],
            True,
            "the run has already finished as failed",
        ),
        (
            SHOP,
            [begin(), *ran("check"), *ran("reserve"), *broke("charge", permanent=True),
             rollback("charge"), *undone("reserve"), finished(RunStatus.ROLLED_BACK)],
            False,
            "the run has already finished as rolled_back",
        ),
        (
            SHOP,
            [begin(), cancel(), finished(RunStatus.CANCELLED)],
            True,
            "the run has already finished as cancelled",
        ),
        (
            SHOP,
            [begin(), *ran("check"), *ran("reserve"), *broke("charge", permanent=True),
             rollback("charge")],
            True,
            "the run is already compensating (after a failure)",
        ),
        (
            SHOP,
            [begin(), *ran("check"), *ran("reserve"), cancel(), rollback(reason="cancel")],
            True,
            "the run is already compensating (after a cancel)",
        ),
        (
            SHOP,
            [begin(100), *ran("check"), *ran("reserve"), deadline_passed(),
             rollback(reason="deadline")],
            False,
            "the run is already compensating (after its deadline passed)",
        ),
        (
            SHOP,
            [begin(), *ran("check"), started("reserve"), cancel()],
            True,
            "a cancel of this run is already under way",
        ),
        (PIVOTED, [begin(), *ran("reserve"), *ran("commit")], True, None),
        (
            PIVOTED,
            [begin(), *ran("reserve"), *ran("commit"), *ran("notify"),
             finished(RunStatus.COMPLETED)],
            True,
            None,
        ),
    ],
)  # fmt: skip
def test_cancel_refusal(plan: Plan, journal: list[Spec], force: bool, refusal: str | None) -> None:
    assert cancel_refusal(plan, fold(plan, *journal), force=force) == refusal


@pytest.mark.parametrize(
    "journal",
    [
        [begin(), *ran("reserve"), *ran("commit")],
        [begin(), *ran("reserve"), *ran("commit"), *broke("notify", permanent=True),
         attention(A, "notify")],
        [begin(), *ran("reserve"), *ran("commit"), *ran("notify"), finished(RunStatus.COMPLETED)],
    ],
)  # fmt: skip
def test_cancel_refusal_past_the_pivot_without_force(journal: list[Spec]) -> None:
    progress = fold(PIVOTED, *journal)
    refusal = cancel_refusal(PIVOTED, progress, force=False)
    assert refusal is not None
    assert "passed its pivot step 'commit'" in refusal
    assert "force=True" in refusal
    assert cancel_refusal(PIVOTED, progress, force=True) is None


# A pivot whose first attempt timed out: it may have taken effect.
PIVOT_UNKNOWN = [begin(100), *ran("reserve"), *broke("commit", unknown=True, retry_at=9.0)]
PIVOT_STUCK = [*PIVOT_UNKNOWN, *broke("commit", 2), attention(A, "commit")]


def test_a_pivot_whose_outcome_is_unknown_halts_a_failure_rather_than_roll_back() -> None:
    assert next_of(PIVOTED, fold(PIVOTED, *PIVOT_UNKNOWN, *broke("commit", 2))) == (
        "attention action commit"
    )


def test_cancel_refusal_when_the_pivot_may_have_taken_effect() -> None:
    for journal in (PIVOT_UNKNOWN, PIVOT_STUCK):
        progress = fold(PIVOTED, *journal)
        refusal = cancel_refusal(PIVOTED, progress, force=False)
        assert refusal is not None
        assert "pivot step 'commit'" in refusal
        assert "force=True" in refusal
        assert cancel_refusal(PIVOTED, progress, force=True) is None


def test_a_cancel_is_withdrawn_once_the_pivot_may_have_taken_effect() -> None:
    # Accepted while the pivot ran; the pivot timed out: it may have taken effect.
    journal = [begin(), *ran("reserve"), started("commit"), cancel()]
    journal += [failed("commit", unknown=True, retry_at=9.0)]
    progress = fold(PIVOTED, *journal)
    assert next_of(PIVOTED, progress) == "withdraw cancel"
    take(PIVOTED, progress)
    assert next_of(PIVOTED, progress) == "do commit#2 at 9"


def test_a_forced_cancel_rolls_back_though_the_pivot_may_have_taken_effect() -> None:
    progress = fold(PIVOTED, *PIVOT_STUCK, cancel(force=True))
    assert progress.status == RunStatus.RUNNING
    assert settle(PIVOTED, progress) == ["rollback cancel", "undo reserve#1", "finish cancelled"]


def test_a_passed_deadline_does_not_roll_back_a_pivot_that_may_have_taken_effect() -> None:
    progress = fold(PIVOTED, *PIVOT_UNKNOWN, deadline_passed())
    assert next_of(PIVOTED, progress) == "attention action commit"


# -- deadlines -------------------------------------------------------------------------------


def test_the_deadline_is_read_from_run_started() -> None:
    assert fold(SHOP, begin(100)).deadline == 100.0
    assert fold(SHOP, begin()).deadline is None


def test_a_passed_deadline_before_the_pivot_rolls_back_with_deadline_passed() -> None:
    progress = fold(SHOP, begin(100), *ran("check"), *ran("reserve"), deadline_passed())
    assert progress.deadline_passed
    decision = decide(SHOP, progress)
    assert describe(decision) == "rollback deadline"
    assert decision.transition is not None
    assert decision.transition.step is None
    deadline_error = decision.transition.data["error"]
    assert deadline_error["type"] == "sagakit.DeadlinePassed"
    assert "100" in deadline_error["message"]
    assert "note" not in decision.transition.data
    take(SHOP, progress)
    assert (progress.reason, progress.error) == ("deadline", deadline_error)
    assert settle(SHOP, progress) == ["undo reserve#1", "finish rolled_back"]
    assert progress.status == RunStatus.ROLLED_BACK
    assert progress.error == deadline_error


def test_a_passed_deadline_with_nothing_to_undo_fails_the_run() -> None:
    progress = fold(SHOP, begin(100), *ran("check"), deadline_passed())
    decision = decide(SHOP, progress)
    assert describe(decision) == "finish failed"
    assert decision.transition is not None
    assert decision.transition.data["error"]["type"] == "sagakit.DeadlinePassed"
    take(SHOP, progress)
    assert progress.status == RunStatus.FAILED
    assert progress.error is not None
    assert progress.error["type"] == "sagakit.DeadlinePassed"


def test_a_passed_deadline_lets_the_call_in_flight_land_and_reruns_a_cut_one() -> None:
    progress = fold(SHOP, begin(100), *ran("check"), started("reserve"), deadline_passed())
    assert next_of(SHOP, progress, [(A, "reserve")]) == "idle"
    assert next_of(SHOP, progress) == "do reserve#2"
    more(SHOP, progress, succeeded("reserve", 2))
    assert next_of(SHOP, progress) == "rollback deadline"


def test_a_passed_deadline_after_the_pivot_needs_attention() -> None:
    progress = fold(PIVOTED, begin(100), *ran("reserve"), *ran("commit"), deadline_passed())
    decision = decide(PIVOTED, progress)
    assert describe(decision) == "attention action notify"
    assert decision.transition is not None
    assert decision.transition.data["error"]["type"] == "sagakit.DeadlinePassed"
    assert "deadline" in decision.transition.data["reason"]
    take(PIVOTED, progress)
    assert progress.status == RunStatus.NEEDS_ATTENTION
    assert progress.attention == (A, "notify")
    assert progress.error is not None
    assert progress.error["type"] == "sagakit.DeadlinePassed"


def test_retried_after_a_deadline_lifts_the_deadline() -> None:
    journal = [begin(100), *ran("reserve"), *ran("commit"), deadline_passed()]
    progress = fold(PIVOTED, *journal, attention(A, "notify"), retried())
    assert (progress.deadline, progress.deadline_passed) == (None, False)
    assert progress.status == RunStatus.RUNNING
    assert progress.attention is None
    assert settle(PIVOTED, progress) == ["do notify#1", "finish completed"]


def test_retried_without_a_passed_deadline_keeps_the_deadline() -> None:
    journal = [begin(100), *ran("reserve"), *ran("commit"), *broke("notify", permanent=True)]
    progress = fold(PIVOTED, *journal, attention(A, "notify"), retried())
    assert progress.deadline == 100.0


def test_a_passed_deadline_reopens_a_paused_run() -> None:
    journal = [begin(100), *ran("reserve"), waiting("approve", "approved"), deadline_passed()]
    progress = fold(APPROVAL, *journal)
    assert (progress.status, progress.paused) == (RunStatus.RUNNING, None)
    assert settle(APPROVAL, progress) == [
        "rollback deadline",
        "undo reserve#1",
        "finish rolled_back",
    ]


def test_a_passed_deadline_does_not_reopen_a_run_that_needs_attention() -> None:
    journal = [begin(100), *ran("reserve"), *ran("commit"), *broke("notify", permanent=True)]
    progress = fold(PIVOTED, *journal, attention(A, "notify"), deadline_passed())
    assert progress.status == RunStatus.NEEDS_ATTENTION
    assert next_of(PIVOTED, progress) == "idle"


def test_a_cancel_and_a_passed_deadline_together_roll_back_as_a_cancel() -> None:
    progress = fold(SHOP, begin(100), *ran("check"), *ran("reserve"), deadline_passed(), cancel())
    transition = decide(SHOP, progress).transition
    assert transition is not None
    assert transition.data == {
        "reason": "cancel",
        "error": None,
        "note": "customer changed plans",
    }


# -- withdrawn steps ------------------------------------------------------------------------


def test_a_withdrawn_step_closes_its_attempt_and_is_not_compensated() -> None:
    progress = fold(
        SHOP,
        begin(),
        *ran("check"),
        *ran("reserve"),
        cancel(),
        started("charge"),
        withdrawn("charge"),
    )
    record = progress.actions["charge"]
    assert (record.started, record.failures, record.open) == (1, 0, False)
    assert not record.done
    assert not record.exhausted
    assert not record.unknown
    assert progress.completion == ["check", "reserve"]
    assert undo_stages(SHOP, progress) == [("reserve",)]
    assert settle(SHOP, progress) == ["rollback cancel", "undo reserve#1", "finish cancelled"]
    assert "charge" not in progress.compensations


def test_a_withdrawn_step_costs_nothing_from_its_budget() -> None:
    journal = [begin(), *ran("reserve"), cancel(), started("commit"), withdrawn("commit")]
    progress = fold(PIVOTED, *journal)
    assert progress.actions["commit"].failures == 0
    assert not is_final_failure(PIVOTED, progress, A, "commit", permanent=False)
    assert not progress.pivot_passed
    assert settle(PIVOTED, progress) == ["rollback cancel", "undo reserve#1", "finish cancelled"]


# -- compensation order -----------------------------------------------------------------------

# Every step of the trip took effect; pay failed for good.
TRIP_FAILED = [
    begin(),
    *ran("book"),
    started("flight"),
    started("hotel"),
    started("car"),
    succeeded("car"),
    succeeded("flight"),
    succeeded("hotel"),
    *broke("pay", permanent=True),
    rollback("pay"),
]


def test_a_compensation_group_is_invoked_together() -> None:
    progress = fold(TRIP, *TRIP_FAILED)
    assert undo_stages(TRIP, progress) == [("hotel", "car"), ("flight",), ("book",)]
    assert next_of(TRIP, progress) == "undo hotel#1, undo car#1"
    more(TRIP, progress, c_started("hotel"))
    more(TRIP, progress, c_started("car"))
    assert next_of(TRIP, progress, [(C, "hotel"), (C, "car")]) == "idle"
    more(TRIP, progress, c_succeeded("car"))
    # The next group waits until every member of this one is done.
    assert next_of(TRIP, progress, [(C, "hotel")]) == "idle"
    assert next_of(TRIP, progress) == "undo hotel#2"  # cut short by a crash: run again
    more(TRIP, progress, undone("hotel", 2))
    assert settle(TRIP, progress) == ["undo flight#1", "undo book#1", "finish rolled_back"]


def test_a_group_member_exhausted_lets_the_others_finish_then_needs_attention() -> None:
    # hotel has one compensation attempt, car two.
    progress = fold(TRIP, *TRIP_FAILED, c_started("hotel"), c_started("car"), c_failed("hotel"))
    assert progress.compensations["hotel"].exhausted
    assert next_of(TRIP, progress, [(C, "car")]) == "idle"
    more(TRIP, progress, c_failed("car", retry_at=40.0))
    assert next_of(TRIP, progress) == "undo car#2 at 40"
    more(TRIP, progress, undone("car", 2))
    decision = decide(TRIP, progress)
    assert describe(decision) == "attention compensation hotel"
    assert decision.transition is not None
    assert decision.transition.data["error"] == error("undo hotel")
    take(TRIP, progress)
    assert "flight" not in progress.compensations  # the undo halted at the group


def test_continue_on_compensation_error_goes_on_with_the_next_groups() -> None:
    progress = fold(
        TRIP_CONTINUE, *TRIP_FAILED, c_started("hotel"), c_started("car"), c_failed("hotel")
    )
    assert next_of(TRIP_CONTINUE, progress, [(C, "car")]) == "idle"
    more(TRIP_CONTINUE, progress, c_succeeded("car"))
    assert settle(TRIP_CONTINUE, progress, fail={(C, "book")}) == [
        "undo flight#1",
        "undo book#1",
        "attention compensation hotel",
    ]
    assert progress.compensations["flight"].done
    assert progress.compensations["book"].exhausted
    assert progress.attention == (C, "hotel")  # the first that failed for good
    assert progress.compensation_errors == [error("undo hotel"), error("book")]


def test_only_steps_that_took_effect_are_in_the_undo_groups() -> None:
    # car failed cleanly and flight was never started: neither is undone.
    journal = [
        begin(),
        *ran("book"),
        started("hotel"),
        started("car"),
        succeeded("hotel"),
        failed("car", permanent=True),
    ]
    progress = fold(TRIP, *journal)
    assert undo_stages(TRIP, progress) == [("hotel",), ("book",)]
    assert settle(TRIP, progress) == [
        "rollback failure",
        "undo hotel#1",
        "undo book#1",
        "finish rolled_back",
    ]
    assert set(progress.compensations) == {"hotel", "book"}


def test_a_step_whose_outcome_is_unknown_is_in_its_group() -> None:
    journal = [begin(), *ran("book"), started("car"), failed("car", unknown=True, retry_at=9)]
    assert undo_stages(TRIP, fold(TRIP, *journal)) == [("car",), ("book",)]


def test_the_default_undo_order_is_reverse_completion_one_at_a_time() -> None:
    progress = fold(TRIP_DEFAULT, *TRIP_FAILED)
    assert progress.completion == ["book", "car", "flight", "hotel"]
    assert undo_stages(TRIP_DEFAULT, progress) == [("hotel",), ("flight",), ("car",), ("book",)]
    assert settle(TRIP_DEFAULT, progress) == [
        "undo hotel#1",
        "undo flight#1",
        "undo car#1",
        "undo book#1",
        "finish rolled_back",
    ]


def test_a_cancel_undoes_in_the_declared_order() -> None:
    journal = [begin(), *ran("book"), started("hotel"), started("car"), cancel()]
    progress = fold(TRIP, *journal)
    assert next_of(TRIP, progress, [(A, "hotel"), (A, "car")]) == "idle"
    assert next_of(TRIP, progress, [(A, "hotel")]) == "do car#2"
    more(TRIP, progress, succeeded("hotel"))
    more(TRIP, progress, succeeded("car"))
    assert settle(TRIP, progress) == [
        "rollback cancel",
        "undo hotel#1, undo car#1",
        "undo book#1",
        "finish cancelled",
    ]


# -- property: cancel at any moment of a linear saga ------------------------------------------


@dataclass(frozen=True)
class CancelScenario:
    plan: Plan
    timeouts: dict[str, int]
    """How many first attempts of each action time out (may have taken effect) before one
    succeeds; every step has unlimited attempts, every compensation succeeds."""
    cancel_at: int | None
    """When the cancel arrives, in half ticks: an even one before a decision, an odd one
    between journaling a call and making it (the call is then withdrawn); None: never."""
    force: bool
    crashes: frozenset[int]
    """Ticks at which the process dies: the call in flight is lost, the journal is kept."""


@st.composite
def cancel_scenarios(draw: st.DrawFn) -> CancelScenario:
    steps = [
        StepPlan(f"s{i}", "compensatable", True, None, 1)
        if draw(st.booleans())
        else StepPlan(f"s{i}", "plain", False, None, None)
        for i in range(draw(st.integers(1, 4)))
    ]
    if draw(st.integers(0, 2)):  # two runs in three have a pivot
        steps.append(pivot("pivot", None))
        steps.extend(retriable(f"t{j}", None) for j in range(draw(st.integers(0, 2))))
    timeouts = {
        s.name: draw(st.sampled_from([1, 2, 0] if s.kind == "pivot" else [0, 0, 1, 2]))
        for s in steps
    }
    # About two ticks per attempt and per compensation: the cancel and the crashes
    # fall anywhere in the run, or after it settled.
    ticks = 2 * sum(1 + n for n in timeouts.values()) + 2 * len(steps) + 4
    return CancelScenario(
        plan=sequential(*steps),
        timeouts=timeouts,
        cancel_at=draw(st.none() | st.integers(0, 2 * ticks)),
        force=draw(st.booleans()),
        crashes=frozenset(draw(st.lists(st.integers(1, ticks), max_size=2))),
    )


def drive_with_a_cancel(scenario: CancelScenario) -> tuple[list[Event], Progress]:
    """A sequential driver over the core that takes the cancel when the scenario says."""
    plan = scenario.plan
    journal: list[Event] = []
    progress = Progress()
    delivered = False
    running: Invoke | None = None

    def add(
        kind: EventKind, step: str | None = None, attempt: int | None = None, **data: Any
    ) -> None:
        event = Event("r", len(journal) + 1, kind, float(len(journal) + 1), step, attempt, data)
        apply(plan, progress, event)
        journal.append(event)

    def deliver() -> None:
        nonlocal delivered
        delivered = True
        refusal = cancel_refusal(plan, progress, force=scenario.force)
        if refusal is None:
            add(EventKind.CANCEL_REQUESTED, reason="stop", force=scenario.force)
        else:
            add(EventKind.CANCEL_REFUSED, reason="stop", why=refusal)

    def land(call: Invoke) -> None:
        if call.phase is A and call.attempt <= scenario.timeouts[call.step]:
            add(
                EventKind.STEP_FAILED,
                call.step,
                call.attempt,
                error=error(call.step, call.attempt),
                permanent=False,
                unknown=True,
                retry_at=len(journal) + 0.5,
            )
        else:
            result = {call.step: call.attempt} if call.phase is A else None
            add(SUCCEEDED[call.phase], call.step, call.attempt, result=result)

    add(EventKind.RUN_STARTED, state={})
    for tick in range(1, 500):
        cancel_due = scenario.cancel_at is not None and not delivered
        if cancel_due and 2 * tick >= scenario.cancel_at:  # type: ignore[operator]
            deliver()
        if tick in scenario.crashes:
            running = None
            progress = replay(plan, journal)
        decision = decide(plan, progress, [(running.phase, running.step)] if running else [])
        if decision.transition is not None:
            t = decision.transition
            add(t.kind, t.step, None, **t.data)
            continue
        if decision.invoke:
            (call,) = decision.invoke  # one call at a time in a linear saga
            assert running is None, f"{call} invoked beside {running}"
            add(STARTED[call.phase], call.step, call.attempt)
            cancel_due = scenario.cancel_at is not None and not delivered
            if cancel_due and 2 * tick + 1 >= scenario.cancel_at:  # type: ignore[operator]
                deliver()
                if call.phase is A and progress.cancel is not None:
                    add(EventKind.STEP_WITHDRAWN, call.step, call.attempt)
                    continue
            running = call
        elif running is not None:
            land(running)
            running = None
        elif scenario.cancel_at is not None and not delivered:
            deliver()  # the run settled before the cancel came
        else:
            return journal, progress
    raise AssertionError("the run did not settle")


@settings(max_examples=400, deadline=None)
@given(cancel_scenarios())
def test_a_cancel_at_any_moment_ends_cancelled_or_completed_undoing_what_took_effect(
    scenario: CancelScenario,
) -> None:
    plan = scenario.plan
    journal, progress = drive_with_a_cancel(scenario)
    status = progress.status
    assert status in (RunStatus.COMPLETED, RunStatus.CANCELLED)
    assert replay(plan, journal).status is status

    # Walk the journal: what took effect, what was open, and what the cancel did.
    took_effect: list[str] = []
    open_calls: set[tuple[Phase, str]] = set()
    cancelling = cancelled_past_pivot = False
    compensated: list[str] = []
    for e in journal:
        call = (A if e.kind.value.startswith("step") else C, e.step or "")
        if e.kind is EventKind.CANCEL_REQUESTED:
            cancelling = True
        elif e.kind is EventKind.CANCEL_REFUSED and e.data.get("withdrawn"):
            assert cancelling
            cancelling = False
        elif e.kind is EventKind.ROLLBACK_STARTED:
            assert e.data["reason"] == "cancel"
            cancelled_past_pivot = "pivot" in took_effect
        elif e.kind is EventKind.STEP_STARTED:
            # Once a cancel holds, the only call made is one a crash cut short.
            assert not cancelling or call in open_calls, f"{e.step} started under a cancel"
            open_calls.add(call)
        elif e.kind is EventKind.COMPENSATION_STARTED:
            assert e.step in took_effect, f"{e.step} compensated but never took effect"
            if not compensated or compensated[-1] != e.step:
                compensated.append(e.step or "")
            open_calls.add(call)
        elif e.kind in (*SUCCEEDED.values(), *FAILED.values(), EventKind.STEP_WITHDRAWN):
            open_calls.discard(call)
            effect = e.kind is EventKind.STEP_SUCCEEDED or e.data.get("unknown")
            if effect and e.step not in took_effect:
                took_effect.append(e.step or "")
    assert not open_calls, f"calls left without an outcome: {open_calls}"

    requested = [e for e in journal if e.kind is EventKind.CANCEL_REQUESTED]
    withdrawn_ = [
        e for e in journal if e.kind is EventKind.CANCEL_REFUSED and e.data.get("withdrawn")
    ]
    assert (status is RunStatus.CANCELLED) == (len(requested) > len(withdrawn_))
    if status is RunStatus.COMPLETED:
        assert not compensated
        assert set(took_effect) == {s.name for s in plan.steps}
    else:
        # Exactly what took effect is undone, latest first.
        due = [n for n in reversed(took_effect) if plan.step(n).compensable]
        assert compensated == due
        # Past the pivot (or with its outcome unknown) only a forced cancel undoes.
        assert scenario.force or not cancelled_past_pivot
    if scenario.cancel_at is None:
        assert status is RunStatus.COMPLETED

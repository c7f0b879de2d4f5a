"""The structured timeline, built from hand-written journals (no engine, no store)."""

from __future__ import annotations

import io
import itertools
from datetime import datetime
from typing import Any

import pytest
from rich.console import Console

from sagakit import ErrorInfo, Event, EventKind, Phase, Run, RunStatus
from sagakit.timeline import (
    AlertStatus,
    Mark,
    Outcome,
    build_timeline,
    event_details,
    format_duration,
    render_history,
    render_timeline,
    short_error,
)

T0 = 1_700_000_000.0
RUN = "trip-1"


def error(message: str, step: str, phase: Phase = Phase.ACTION, **extra: Any) -> dict[str, Any]:
    return ErrorInfo("app.BookingError", message, step=step, phase=phase, **extra).to_json()


class Journal:
    """Builds a run's events with consecutive seqs; ``at`` is seconds after T0."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._seq = itertools.count(1)

    def add(
        self,
        kind: EventKind,
        at: float,
        step: str | None = None,
        attempt: int | None = None,
        **data: Any,
    ) -> Journal:
        self.events.append(Event(RUN, next(self._seq), kind, T0 + at, step, attempt, data))
        return self

    def ok(self, step: str, start: float, end: float, attempt: int = 1, **result: Any) -> Journal:
        self.add(EventKind.STEP_STARTED, start, step, attempt)
        return self.add(EventKind.STEP_SUCCEEDED, end, step, attempt, result=result or None)

    def undone(self, step: str, start: float, end: float, attempt: int = 1) -> Journal:
        self.add(EventKind.COMPENSATION_STARTED, start, step, attempt)
        return self.add(EventKind.COMPENSATION_SUCCEEDED, end, step, attempt, result=None)

    def failed(
        self,
        step: str,
        start: float,
        end: float,
        attempt: int = 1,
        *,
        phase: Phase = Phase.ACTION,
        retry_at: float | None = None,
        permanent: bool = False,
        unknown: bool = False,
        message: str = "boom",
    ) -> Journal:
        compensating = phase is Phase.COMPENSATION
        started = EventKind.COMPENSATION_STARTED if compensating else EventKind.STEP_STARTED
        failed = EventKind.COMPENSATION_FAILED if compensating else EventKind.STEP_FAILED
        self.add(started, start, step, attempt)
        return self.add(
            failed,
            end,
            step,
            attempt,
            error=error(message, step, phase, attempt=attempt, timed_out=unknown),
            permanent=permanent,
            unknown=unknown,
            retry_at=T0 + retry_at if retry_at is not None else None,
        )


def started() -> Journal:
    return Journal().add(EventKind.RUN_STARTED, 0.0, state={"amount": 10})


def halted_undo() -> Journal:
    """Flight booked, hotel refused; cancelling the flight fails for good."""
    return (
        started()
        .ok("flight", 0.1, 0.2, ref="F1")
        .failed("hotel", 0.3, 0.4, permanent=True, message="no rooms")
        .add(EventKind.ROLLBACK_STARTED, 0.4, "hotel", reason="failure", error=error("x", "hotel"))
        .failed("flight", 0.5, 0.6, 1, phase=Phase.COMPENSATION, retry_at=1.6, message="down")
        .failed("flight", 1.6, 1.7, 2, phase=Phase.COMPENSATION, message="still down")
        .add(
            EventKind.NEEDS_ATTENTION,
            1.7,
            "flight",
            phase="compensation",
            reason="the compensation exhausted its retries",
            error=error("still down", "flight", Phase.COMPENSATION),
        )
    )


def test_completed_run_with_a_retried_step() -> None:
    journal = (
        started()
        .ok("flight", 0.1, 0.2, ref="F1")
        .failed("hotel", 0.3, 0.35, 1, retry_at=0.45, message="gateway timeout")
        .ok("hotel", 0.5, 0.6, 2, ref="H1")
        .add(EventKind.RUN_FINISHED, 0.6, status="completed")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.COMPLETED
    assert timeline.run_id == RUN
    assert timeline.duration == pytest.approx(0.6)
    assert [(r.step, r.phase, r.outcome) for r in timeline.rows] == [
        ("flight", Phase.ACTION, Outcome.SUCCEEDED),
        ("hotel", Phase.ACTION, Outcome.SUCCEEDED),
    ]
    hotel = timeline.row("hotel")
    assert hotel is not None
    assert [a.number for a in hotel.attempts] == [1, 2]
    assert not hotel.attempts[0].succeeded
    assert hotel.attempts[1].succeeded
    assert hotel.retry_waits == pytest.approx((0.15,))
    assert hotel.started_at == pytest.approx(T0 + 0.3)
    assert hotel.duration == pytest.approx(0.3)
    assert hotel.result == {"ref": "H1"}
    assert hotel.error is not None
    assert hotel.error.message == "gateway timeout"  # the error it recovered from
    assert timeline.marks == ()
    assert timeline.error is None


def test_rollback_compensates_in_reverse_and_marks_the_actions_compensated() -> None:
    journal = (
        started()
        .ok("flight", 0.1, 0.2)
        .ok("hotel_london", 0.2, 0.3)
        .failed("hotel_paris", 0.3, 0.4, permanent=True, message="no rooms")
        .add(
            EventKind.ROLLBACK_STARTED,
            0.4,
            "hotel_paris",
            reason="failure",
            error=error("no rooms", "hotel_paris"),
        )
        .undone("hotel_london", 0.5, 0.6)
        .failed("flight", 0.6, 0.7, 1, phase=Phase.COMPENSATION, retry_at=0.8)
        .undone("flight", 0.8, 0.9, attempt=2)
        .add(EventKind.RUN_FINISHED, 0.9, status="rolled_back")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.ROLLED_BACK
    assert [(r.step, r.phase.value, r.outcome.value) for r in timeline.rows] == [
        ("flight", "action", "compensated"),
        ("hotel_london", "action", "compensated"),
        ("hotel_paris", "action", "failed"),
        ("hotel_london", "compensation", "compensated"),
        ("flight", "compensation", "compensated"),
    ]
    undo = timeline.row("flight", Phase.COMPENSATION)
    assert undo is not None
    assert undo.is_compensation
    assert len(undo.attempts) == 2
    assert undo.retry_waits == pytest.approx((0.1,))
    paris = timeline.row("hotel_paris")
    assert paris is not None
    assert paris.attempts[0].permanent
    assert paris.error is not None
    assert paris.error.message == "no rooms"
    assert [m.kind for m in timeline.marks] == [EventKind.ROLLBACK_STARTED]
    assert timeline.marks[0].text == "failure"
    assert timeline.error is not None
    assert timeline.error.step == "hotel_paris"
    # Rows and marks interleave in journal order: the rollback comes after the failure.
    entries = timeline.entries
    assert [type(e).__name__ for e in entries] == ["Row"] * 3 + ["Mark"] + ["Row"] * 2
    assert isinstance(entries[3], Mark)


def test_needs_attention_on_a_compensation() -> None:
    timeline = build_timeline(halted_undo().events)

    assert timeline.status is RunStatus.NEEDS_ATTENTION
    undo = timeline.row("flight", "compensation")
    assert undo is not None
    assert undo.outcome is Outcome.NEEDS_ATTENTION
    assert len(undo.attempts) == 2
    assert undo.error is not None
    assert undo.error.message == "still down"
    # The flight is still booked: its action is not shown as undone.
    flight = timeline.row("flight")
    assert flight is not None
    assert flight.outcome is Outcome.SUCCEEDED
    halt = timeline.marks[-1]
    assert halt.kind is EventKind.NEEDS_ATTENTION
    assert (halt.step, halt.phase) == ("flight", Phase.COMPENSATION)
    assert halt.text == "the compensation exhausted its retries"
    assert timeline.operator_actions == ()
    assert timeline.finished_at is None
    assert timeline.duration == pytest.approx(1.7)


def test_needs_attention_then_resolved_by_hand() -> None:
    journal = (
        halted_undo()
        .add(EventKind.RESOLVED, 5.0, "flight", phase="compensation", note="refunded by phone")
        .add(EventKind.RUN_FINISHED, 5.0, status="rolled_back")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.ROLLED_BACK
    undo = timeline.row("flight", Phase.COMPENSATION)
    assert undo is not None
    assert undo.outcome is Outcome.RESOLVED
    assert undo.note == "refunded by phone"
    assert undo.finished_at == pytest.approx(T0 + 5.0)
    flight = timeline.row("flight")
    assert flight is not None
    assert flight.outcome is Outcome.COMPENSATED
    (action,) = timeline.operator_actions
    assert action.kind is EventKind.RESOLVED
    assert action.text == "refunded by phone"
    assert (action.step, action.phase) == ("flight", Phase.COMPENSATION)


def test_needs_attention_then_retried_continues_the_attempts() -> None:
    journal = (
        halted_undo()
        .add(EventKind.RETRIED, 5.0, "flight", phase="compensation", note="service is back")
        .undone("flight", 5.1, 5.2, attempt=3)
        .add(EventKind.RUN_FINISHED, 5.2, status="rolled_back")
    )
    timeline = build_timeline(journal.events)

    undo = timeline.row("flight", Phase.COMPENSATION)
    assert undo is not None
    assert undo.outcome is Outcome.COMPENSATED
    assert [a.number for a in undo.attempts] == [1, 2, 3]
    assert undo.duration == pytest.approx(5.2 - 0.5)
    (retried,) = timeline.operator_actions
    assert retried.kind is EventKind.RETRIED
    assert retried.text == "service is back"
    assert timeline.status is RunStatus.ROLLED_BACK


def test_a_run_in_flight_derives_its_status_from_the_journal() -> None:
    retrying = started().failed("flight", 0.1, 0.2, retry_at=2.0)
    timeline = build_timeline(retrying.events)
    assert timeline.status is RunStatus.RUNNING
    row = timeline.row("flight")
    assert row is not None
    assert row.outcome is Outcome.RETRYING
    assert row.attempts[0].retry_at == pytest.approx(T0 + 2.0)

    running = started().add(EventKind.STEP_STARTED, 0.1, "flight", 1)
    row = build_timeline(running.events).row("flight")
    assert row is not None
    assert row.outcome is Outcome.RUNNING
    assert row.duration is None

    compensating = halted_undo().events[:-2]  # before the second compensation attempt
    assert build_timeline(compensating).status is RunStatus.COMPENSATING


def test_an_attempt_cut_short_by_a_crash_stays_open() -> None:
    journal = (
        started()
        .add(EventKind.STEP_STARTED, 0.1, "flight", 1)
        .ok("flight", 3.0, 3.1, attempt=2)
        .add(EventKind.RUN_FINISHED, 3.1, status="completed")
    )
    row = build_timeline(journal.events).row("flight")
    assert row is not None
    assert row.outcome is Outcome.SUCCEEDED
    first, second = row.attempts
    assert first.finished_at is None
    assert first.duration is None
    assert second.succeeded
    assert row.retry_waits == ()  # a crash is not a failure: no retry wait


def test_timed_out_attempt_is_unknown() -> None:
    journal = (
        started()
        .failed("charge", 0.1, 5.1, permanent=True, unknown=True)
        .add(EventKind.ROLLBACK_STARTED, 5.1, "charge", reason="failure")
    )
    row = build_timeline(journal.events).row("charge")
    assert row is not None
    assert row.attempts[0].unknown
    assert short_error(row.error) == "timed out (outcome unknown)"


def test_the_run_supplies_saga_status_and_error() -> None:
    cause = ErrorInfo("X", "bad", step="hotel")
    run = Run(
        id=RUN,
        saga="travel",
        version="1",
        status=RunStatus.FAILED,
        state={},
        data={},
        error=cause,
        compensation_errors=(),
        created_at=T0,
        updated_at=T0 + 1,
    )
    timeline = build_timeline(started().events, run)
    assert (timeline.saga, timeline.status, timeline.error) == ("travel", RunStatus.FAILED, cause)


def test_events_out_of_order_are_sorted_and_an_empty_journal_is_empty() -> None:
    events = started().ok("flight", 0.1, 0.2).events
    assert build_timeline(reversed(events)) == build_timeline(events)
    empty = build_timeline([])
    assert (empty.rows, empty.status, empty.duration) == ((), RunStatus.PENDING, None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0004, "400us"),
        (0.012, "12ms"),
        (1.254, "1.25s"),
        (187, "3m 07s"),
        (7500, "2h 05m"),
        (3 * 86400 + 3600, "3d 01h"),
        (-1, "0us"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_short_error_keeps_the_class_name_and_first_line() -> None:
    info = ErrorInfo("sagakit.errors.PermanentError", "no rooms\nmore detail")
    assert short_error(info) == "PermanentError: no rooms"
    assert short_error(ErrorInfo("a.B", "x" * 300), limit=20) == "B: " + "x" * 14 + "..."
    assert short_error(None) == ""


def test_event_details() -> None:
    events = halted_undo().events
    failed = next(e for e in events if e.kind is EventKind.COMPENSATION_FAILED)
    assert event_details(failed) == "BookingError: down; retry in 1.00s"
    assert event_details(events[-1]) == "compensation: the compensation exhausted its retries"
    resolved = Event(RUN, 99, EventKind.RESOLVED, T0, "flight", None, {"note": "done"})
    assert event_details(resolved) == "note 'done'"


def render(renderable: Any, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_render_timeline_lists_steps_undo_marks_and_status() -> None:
    journal = halted_undo().add(EventKind.RESOLVED, 5.0, "flight", phase="compensation", note="ok")
    text = render(render_timeline(build_timeline(journal.events)))
    assert "run trip-1" in text
    assert "undo flight" in text
    assert "no rooms" in text
    assert "rollback started" in text
    assert "needs attention" in text
    assert "resolved by operator" in text
    assert "compensation of flight: ok" in text
    assert "status compensating" in text
    assert "(2 steps run, 1 undone, 1 by hand)" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_render_history_has_one_line_per_event() -> None:
    events = halted_undo().events
    text = render(render_history(events))
    lines = text.splitlines()
    assert "journal of run trip-1" in lines[0]
    for event in events:
        assert any(line.lstrip().startswith(f"{event.seq} ") for line in lines), event
    assert "needs_attention" in text
    assert "still down" in text
    assert render(render_history([])).strip() == "the journal is empty"


# -- pauses, signals, cancels and deadlines -------------------------------------------

QUESTION = "the Ritz is full: choose another London hotel"


def paused_trip() -> Journal:
    """Flight booked; the London hotel step paused on a question (as the driver writes it)."""
    return (
        started()
        .ok("flight", 0.1, 0.2, flight="LHR-1")
        .add(EventKind.STEP_STARTED, 0.3, "london_hotel", 1)
        .add(EventKind.PAUSED, 0.4, "london_hotel", 1, question=QUESTION, options=["choose"])
    )


def test_a_paused_step_not_yet_answered_is_paused() -> None:
    timeline = build_timeline(paused_trip().events)

    assert timeline.status is RunStatus.PAUSED
    hotel = timeline.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is Outcome.PAUSED
    (attempt,) = hotel.attempts
    # The attempt ended by pausing: it is over, and neither a success nor a failure.
    assert attempt.finished_at == pytest.approx(T0 + 0.4)
    assert (attempt.succeeded, attempt.error) == (False, None)
    assert hotel.error is None
    (pause,) = timeline.marks
    assert (pause.kind, pause.step, pause.phase) == (EventKind.PAUSED, "london_hotel", Phase.ACTION)
    assert pause.text == f"{QUESTION} [answer: choose]"
    text = render(render_timeline(timeline), width=120)
    assert f"london_hotel: {QUESTION} [answer: choose]" in text
    assert "status paused" in text


def test_a_pause_answered_by_a_signal_then_a_second_attempt() -> None:
    answered = paused_trip().add(
        EventKind.SIGNAL_RECEIVED,
        5.0,
        name="choose",
        payload={"london": "Savoy"},
        decision="retry",
    )
    between = build_timeline(answered.events)
    assert between.status is RunStatus.RUNNING
    hotel = between.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is not Outcome.PAUSED

    journal = (
        answered.ok("london_hotel", 5.1, 5.2, attempt=2, london_booking="Savoy")
        .ok("paris_hotel", 5.3, 5.4)
        .add(EventKind.RUN_FINISHED, 5.4, status="completed")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.COMPLETED
    assert [(r.step, r.outcome) for r in timeline.rows] == [
        ("flight", Outcome.SUCCEEDED),
        ("london_hotel", Outcome.SUCCEEDED),
        ("paris_hotel", Outcome.SUCCEEDED),
    ]
    hotel = timeline.row("london_hotel")
    assert hotel is not None
    assert [a.number for a in hotel.attempts] == [1, 2]
    assert not hotel.attempts[0].succeeded
    assert hotel.attempts[1].succeeded
    assert hotel.error is None  # a pause is not an error
    assert hotel.retry_waits == ()  # nor a failure to wait after
    assert hotel.result == {"london_booking": "Savoy"}
    assert hotel.duration == pytest.approx(5.2 - 0.3)
    assert [(m.kind, m.text) for m in timeline.marks] == [
        (EventKind.PAUSED, f"{QUESTION} [answer: choose]"),
        (EventKind.SIGNAL_RECEIVED, "choose: retry the step"),
    ]
    assert [type(e).__name__ for e in timeline.entries] == [
        "Row",  # flight
        "Row",  # london_hotel, from its first attempt
        "Mark",  # paused
        "Mark",  # signal received
        "Row",  # paris_hotel
    ]
    text = render(render_timeline(timeline))
    assert "signal received" in text
    assert "choose: retry the step" in text


def test_a_pause_and_its_answer_from_a_real_run_on_the_memory_engine() -> None:
    from sagakit import Engine, Pause, Saga, StepContext

    saga: Saga[Any] = Saga("hotel-choice")

    @saga.step
    def flight(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @saga.step
    def london_hotel(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if state["london"] == "Ritz":
            raise Pause(QUESTION, options=["choose"])
        return {"booked": state["london"]}

    with Engine("memory://timeline-pause") as engine:
        run = engine.run(saga, {"london": "Ritz"}, run_id="real-1")
        paused = build_timeline(engine.history(run.id), run)
        run = engine.signal(run.id, "choose", {"london": "Savoy"})
        done = build_timeline(engine.history(run.id), run)

    assert paused.status is RunStatus.PAUSED
    hotel = paused.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is Outcome.PAUSED
    assert done.status is RunStatus.COMPLETED
    hotel = done.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is Outcome.SUCCEEDED
    assert [a.number for a in hotel.attempts] == [1, 2]
    assert [m.kind for m in done.marks] == [EventKind.PAUSED, EventKind.SIGNAL_RECEIVED]
    assert done.marks[-1].text == "choose: retry the step"


def test_a_signal_that_does_not_answer_the_question_leaves_the_run_paused() -> None:
    signals: tuple[dict[str, Any], ...] = (
        {"name": "other"},  # not one of the answers: kept in the state
        {"name": "choose", "ignored": "its payload does not fit the state: bad"},
    )
    for signal in signals:
        journal = paused_trip().add(EventKind.SIGNAL_RECEIVED, 5.0, **signal)
        timeline = build_timeline(journal.events)
        assert timeline.status is RunStatus.PAUSED, signal
        hotel = timeline.row("london_hotel")
        assert hotel is not None
        assert hotel.outcome is Outcome.PAUSED, signal
    ignored = build_timeline(journal.events).marks[-1]
    assert ignored.text == "choose, ignored: its payload does not fit the state: bad"

    # A signal handler that asks again: the run pauses on the new question.
    again = (
        paused_trip()
        .add(EventKind.SIGNAL_RECEIVED, 5.0, name="choose", payload={})
        .add(EventKind.PAUSED, 5.0, "london_hotel", question="which one?", options=[])
    )
    timeline = build_timeline(again.events)
    assert timeline.status is RunStatus.PAUSED
    assert timeline.marks[-1].text == "which one?"


def test_a_step_waiting_for_a_signal_is_paused_until_it_comes() -> None:
    waiting = (
        started()
        .ok("draft", 0.1, 0.2)
        .add(
            EventKind.PAUSED,
            0.3,
            "publish",
            question="waiting for the signal 'approved'",
            options=["approved"],
            waiting_for="approved",
        )
    )
    timeline = build_timeline(waiting.events)
    assert timeline.status is RunStatus.PAUSED
    publish = timeline.row("publish")
    assert publish is not None
    assert (publish.outcome, publish.attempts) == (Outcome.PAUSED, ())

    waiting.add(EventKind.SIGNAL_RECEIVED, 1.0, name="approved", payload={"by": "alice"})
    assert build_timeline(waiting.events).status is RunStatus.RUNNING
    waiting.ok("publish", 1.1, 1.2).add(EventKind.RUN_FINISHED, 1.2, status="completed")
    publish = build_timeline(waiting.events).row("publish")
    assert publish is not None
    assert publish.outcome is Outcome.SUCCEEDED
    assert build_timeline(waiting.events).marks[-1].text == "approved"


def test_a_cancel_of_a_paused_run_keeps_the_step_paused_and_undoes_the_rest() -> None:
    journal = paused_trip().add(EventKind.CANCEL_REQUESTED, 9.0, reason="bye", force=False)
    assert build_timeline(journal.events).status is RunStatus.RUNNING
    journal = (
        journal.add(EventKind.ROLLBACK_STARTED, 9.0, reason="cancel", note="bye")
        .undone("flight", 9.1, 9.2)
        .add(EventKind.RUN_FINISHED, 9.2, status="cancelled")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.CANCELLED
    assert [(r.step, r.phase.value, r.outcome) for r in timeline.rows] == [
        ("flight", "action", Outcome.COMPENSATED),
        ("london_hotel", "action", Outcome.PAUSED),  # never answered, never failed
        ("flight", "compensation", Outcome.COMPENSATED),
    ]
    assert [(m.kind, m.text) for m in timeline.marks] == [
        (EventKind.PAUSED, f"{QUESTION} [answer: choose]"),
        (EventKind.CANCEL_REQUESTED, "bye"),
        (EventKind.ROLLBACK_STARTED, "cancel"),
    ]
    text = render(render_timeline(timeline), width=100)
    assert "cancel requested" in text
    assert "cancelled; undoing what took effect" in text
    assert "status cancelled" in text


def test_a_withdrawn_attempt_is_no_attempt() -> None:
    # A cancel read after the hotel's attempt was journaled, before it was called.
    journal = (
        started()
        .ok("flight", 0.1, 0.2)
        .add(EventKind.STEP_STARTED, 0.3, "hotel", 1)
        .add(EventKind.CANCEL_REQUESTED, 0.3, reason=None, force=False)
        .add(EventKind.STEP_WITHDRAWN, 0.3, "hotel", 1)
        .add(EventKind.ROLLBACK_STARTED, 0.3, reason="cancel")
        .undone("flight", 0.4, 0.5)
        .add(EventKind.RUN_FINISHED, 0.5, status="cancelled")
    )
    timeline = build_timeline(journal.events)
    assert timeline.row("hotel") is None  # its only attempt was withdrawn: no row at all
    assert [(r.step, r.phase.value) for r in timeline.rows] == [
        ("flight", "action"),
        ("flight", "compensation"),
    ]
    assert timeline.marks[0].text == "no reason given"
    assert "(1 steps run, 1 undone)" in render(render_timeline(timeline))

    # Its second attempt withdrawn: the failed first one stays, and is not retried.
    journal = (
        started()
        .ok("flight", 0.1, 0.2)
        .failed("hotel", 0.3, 0.4, 1, retry_at=1.0, message="gateway timeout")
        .add(EventKind.STEP_STARTED, 1.0, "hotel", 2)
        .add(EventKind.CANCEL_REQUESTED, 1.0, reason="too slow", force=False)
        .add(EventKind.STEP_WITHDRAWN, 1.0, "hotel", 2)
        .add(EventKind.ROLLBACK_STARTED, 1.0, reason="cancel", note="too slow")
        .undone("flight", 1.1, 1.2)
        .add(EventKind.RUN_FINISHED, 1.2, status="cancelled")
    )
    hotel = build_timeline(journal.events).row("hotel")
    assert hotel is not None
    assert [a.number for a in hotel.attempts] == [1]
    assert hotel.outcome is Outcome.FAILED
    assert hotel.error is not None
    assert hotel.error.message == "gateway timeout"
    assert hotel.finished_at == pytest.approx(T0 + 0.4)


def test_cancel_marks_say_why_and_a_refusal_changes_nothing() -> None:
    journal = (
        started()
        .ok("flight", 0.1, 0.2)
        .ok("ticket", 0.3, 0.4)
        .add(EventKind.RUN_FINISHED, 0.4, status="completed")
        .add(
            EventKind.CANCEL_REFUSED,
            50.0,
            reason="changed plans",
            why="the run passed its pivot step 'ticket', the point of no return",
        )
    )
    refused = build_timeline(journal.events)
    assert refused.status is RunStatus.COMPLETED
    assert refused.marks[-1].kind is EventKind.CANCEL_REFUSED
    assert (
        refused.marks[-1].text == "the run passed its pivot step 'ticket', the point of no return"
    )
    assert refused.marks[-1].step is None
    assert refused.marks[-1].phase is None

    journal.add(EventKind.CANCEL_REQUESTED, 60.0, reason="airline strike", force=True)
    assert build_timeline(journal.events).status is RunStatus.RUNNING
    journal = (
        journal.add(EventKind.ROLLBACK_STARTED, 60.0, reason="cancel", note="airline strike")
        .undone("flight", 60.1, 60.2)
        .add(EventKind.RUN_FINISHED, 60.2, status="cancelled")
    )
    timeline = build_timeline(journal.events)
    assert timeline.status is RunStatus.CANCELLED
    assert timeline.finished_at == pytest.approx(T0 + 60.2)
    assert [(m.kind, m.text) for m in timeline.marks] == [
        (
            EventKind.CANCEL_REFUSED,
            "the run passed its pivot step 'ticket', the point of no return",
        ),
        (EventKind.CANCEL_REQUESTED, "airline strike (forced)"),
        (EventKind.ROLLBACK_STARTED, "cancel"),
    ]
    assert not any(m.is_operator_action for m in timeline.marks)
    text = render(render_timeline(timeline), width=100)
    assert "cancel refused" in text
    assert "cancel requested" in text
    assert "airline strike (forced)" in text

    # A cancel that the pivot overtook is withdrawn with a refusal of its own.
    overtaken = Event(
        RUN,
        1,
        EventKind.CANCEL_REFUSED,
        T0,
        data={"withdrawn": True, "why": "the pivot step succeeded before the cancel took effect"},
    )
    (mark,) = build_timeline([overtaken]).marks
    assert mark.text == "the pivot step succeeded before the cancel took effect"


def test_a_deadline_passing_while_a_step_waits_to_retry_rolls_back() -> None:
    journal = (
        started()
        .ok("order", 0.1, 0.2)
        .failed("confirm", 0.3, 0.4, 1, retry_at=0.5, message="supplier not answering")
        .failed("confirm", 0.5, 0.6, 2, retry_at=0.7, message="supplier not answering")
        .add(EventKind.DEADLINE_PASSED, 0.65, deadline=T0 + 0.65)
        .add(
            EventKind.ROLLBACK_STARTED,
            0.65,
            reason="deadline",
            error=ErrorInfo("sagakit.DeadlinePassed", "the run's deadline passed").to_json(),
        )
        .undone("order", 0.7, 0.8)
        .add(EventKind.RUN_FINISHED, 0.8, status="rolled_back")
    )
    timeline = build_timeline(journal.events)

    assert timeline.status is RunStatus.ROLLED_BACK
    assert [(r.step, r.phase.value, r.outcome) for r in timeline.rows] == [
        ("order", "action", Outcome.COMPENSATED),
        ("confirm", "action", Outcome.FAILED),  # no third attempt is coming
        ("order", "compensation", Outcome.COMPENSATED),
    ]
    assert [(m.kind, m.text) for m in timeline.marks] == [
        (EventKind.DEADLINE_PASSED, "the run's deadline passed"),
        (EventKind.ROLLBACK_STARTED, "deadline"),
    ]
    assert timeline.error is not None
    assert timeline.error.type == "sagakit.DeadlinePassed"
    text = render(render_timeline(timeline), width=100)
    assert "deadline passed" in text
    assert "the deadline passed; undoing what took effect" in text
    assert "next attempt" not in text

    # A deadline passing while the run is paused moves it on.
    late = paused_trip().add(EventKind.DEADLINE_PASSED, 9.0, deadline=T0 + 9.0)
    timeline = build_timeline(late.events)
    assert timeline.status is RunStatus.RUNNING
    hotel = timeline.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is Outcome.PAUSED


def test_a_failure_handler_that_pauses_keeps_the_error() -> None:
    journal = (
        started()
        .failed("london_hotel", 0.1, 0.2, permanent=True, message="the Ritz is full")
        .add(EventKind.PAUSED, 0.2, "london_hotel", question="London is full", options=["a", "b"])
    )
    timeline = build_timeline(journal.events)
    hotel = timeline.row("london_hotel")
    assert hotel is not None
    assert hotel.outcome is Outcome.PAUSED
    assert hotel.error is not None
    assert hotel.error.message == "the Ritz is full"
    assert timeline.marks[-1].text == "London is full [answer: a, b]"
    text = render(render_timeline(timeline), width=100)
    assert "BookingError: the Ritz is full" in text


# -- alerts -----------------------------------------------------------------------------


def test_an_owed_alert_is_told_until_it_is_sent() -> None:
    journal = halted_undo()
    halt = journal.events[-1]
    assert halt.kind is EventKind.NEEDS_ATTENTION
    owed = build_timeline(journal.events)
    assert owed.alert is not None
    assert (owed.alert.status, owed.alert.seq, owed.alert.attempts) == (
        AlertStatus.OWED,
        halt.seq,
        0,
    )
    assert "alert: owed since +1.70s, not sent yet" in render(render_timeline(owed), width=160)

    journal.add(
        EventKind.ALERT_FAILED,
        2.0,
        None,
        1,
        seq=halt.seq,
        sink="webhook https://hooks.example/...",
        error=ErrorInfo("sagakit.alerts.webhook.WebhookError", "answered 503").to_json(),
        retry_at=T0 + 7.0,
    )
    failed = build_timeline(journal.events)
    assert failed.alert is not None
    assert failed.alert.status is AlertStatus.FAILED
    assert failed.alert.retry_at == T0 + 7.0
    text = render(render_timeline(failed), width=160)
    assert "alert failed" in text
    assert "alert: failed 1 time(s), last to webhook https://hooks.example/...: " in text
    assert "WebhookError: answered 503; retrying at +7.00s" in text
    assert event_details(journal.events[-1]) == (
        f"alert of seq {halt.seq} to webhook https://hooks.example/...: "
        "WebhookError: answered 503; retry in 5.00s"
    )

    journal.add(EventKind.ALERT_SENT, 7.5, None, 2, seq=halt.seq, sink="webhook x")
    done = build_timeline(journal.events)
    assert done.alert is not None
    assert (done.alert.status, done.alert.attempts, done.alert.sink) == (
        AlertStatus.SENT,
        2,
        "webhook x",
    )
    assert [m.kind for m in done.marks][-2:] == [EventKind.ALERT_FAILED, EventKind.ALERT_SENT]
    text = render(render_timeline(done), width=160)
    assert "alert: sent to webhook x at +7.50s (attempt 2)" in text


def test_an_alert_not_sent_before_an_operator_acted_is_moot() -> None:
    journal = halted_undo()
    journal.add(EventKind.RETRIED, 3.0, "flight", phase="compensation")
    timeline = build_timeline(journal.events)
    assert timeline.alert is not None
    assert timeline.alert.status is AlertStatus.MOOT
    assert "alert: not sent: the run was acted on first" in render(render_timeline(timeline))


# -- reservations ------------------------------------------------------------------


def clock_time(at: float) -> str:
    return datetime.fromtimestamp(T0 + at).strftime("%H:%M:%S")


def reserving() -> Journal:
    """A step that reserves, refreshes, lets one name go, then lapses; the run rolls back."""
    journal = Journal().add(EventKind.RUN_STARTED, 0.0, state={})
    journal.add(EventKind.STEP_STARTED, 0.1, "book", 1)
    journal.add(
        EventKind.RESERVATION_TAKEN,
        0.2,
        "book",
        names=["seat:1", "seat:2"],
        ttl=5,
        expires_at=T0 + 5.2,
    )
    journal.add(
        EventKind.RESERVATION_REFRESHED, 3.0, "book", names=["seat:1"], ttl=5, expires_at=T0 + 8
    )
    journal.add(EventKind.RESERVATION_RELEASED, 3.1, "book", names=["seat:2"], freed=1)
    journal.add(
        EventKind.RESERVATION_LAPSED,
        9.0,
        "book",
        name="seat:1",
        holder="run-x",
        ttl=5,
        found="commit",
    )
    journal.add(
        EventKind.STEP_FAILED,
        9.0,
        "book",
        1,
        error=error("lapsed", "book"),
        permanent=True,
        unknown=True,
    )
    journal.add(EventKind.ROLLBACK_STARTED, 9.0, reason="failure", error=error("lapsed", "book"))
    journal.add(EventKind.COMPENSATION_STARTED, 9.1, "book", 1)
    journal.add(
        EventKind.RESERVATION_RELEASED,
        9.2,
        "book",
        names=[],
        freed=0,
        all=True,
        phase="compensation",
    )
    journal.add(EventKind.COMPENSATION_SUCCEEDED, 9.3, "book", 1, result=None)
    return journal


def test_reservation_events_become_marks_after_their_step() -> None:
    timeline = build_timeline(reserving().events)
    kinds = [
        (e.kind, e.step, e.phase) if isinstance(e, Mark) else ("row", e.step, e.phase)
        for e in timeline.entries
    ]
    assert kinds == [
        ("row", "book", Phase.ACTION),
        (EventKind.RESERVATION_TAKEN, "book", Phase.ACTION),
        (EventKind.RESERVATION_REFRESHED, "book", Phase.ACTION),
        (EventKind.RESERVATION_RELEASED, "book", Phase.ACTION),
        (EventKind.RESERVATION_LAPSED, "book", Phase.ACTION),
        (EventKind.ROLLBACK_STARTED, None, None),
        ("row", "book", Phase.COMPENSATION),
        (EventKind.RESERVATION_RELEASED, "book", Phase.COMPENSATION),
    ]
    texts = [m.text for m in timeline.marks if m.kind is not EventKind.ROLLBACK_STARTED]
    assert texts == [
        f"seat:1, seat:2 until {clock_time(5.2)}",
        f"seat:1 until {clock_time(8)}",
        "seat:2",
        "seat:1 lapsed: held by run run-x; the step's outcome is unknown",
        "none held",
    ]
    # Reservations never change how a step or the run stands.
    assert timeline.row("book") is not None
    assert timeline.row("book").outcome is Outcome.COMPENSATED  # type: ignore[union-attr]
    assert timeline.status is RunStatus.COMPENSATING


def test_reservation_marks_say_what_expired_and_when() -> None:
    journal = Journal().add(EventKind.RUN_STARTED, 0.0, state={})
    journal.add(EventKind.STEP_STARTED, 0.1, "hold", 1)
    journal.add(
        EventKind.RESERVATION_LAPSED, 70, "hold", name="a", expired_at=T0 + 60, found="reserve"
    )
    journal.add(
        EventKind.RESERVATION_LAPSED, 80, "hold", name="b", expired_at=T0 + 61, found="release"
    )
    journal.add(EventKind.RESERVATION_LAPSED, 90, "hold", name="c", holder=None, found="commit")
    journal.add(EventKind.RESERVATION_RELEASED, 95, "hold", names=["z"], freed=0)
    journal.add(EventKind.RESERVATION_RELEASED, 99, names=["a"], finished=True)
    texts = [m.text for m in build_timeline(journal.events).marks]
    assert texts == [
        f"a expired at {clock_time(60)}, before the run reserved it again",
        f"b expired at {clock_time(61)}, before the run released it",
        "c lapsed: expired and free; the step's outcome is unknown",
        "z (none was held)",
        "a (the run finished)",
    ]


def test_render_timeline_and_history_show_reservations() -> None:
    events = reserving().events
    text = render(render_timeline(build_timeline(events)), width=120)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["reserved"])
    assert f"book: seat:1, seat:2 until {clock_time(5.2)}" in lines[at + 1]
    assert "refreshed" in text
    assert "book: seat:2" in text
    assert "lapsed" in text
    assert "book: seat:1 lapsed: held by run run-x; the step's outcome is unknown" in text
    assert "undo book: none held" in text
    history = render(render_history(events), width=120)
    assert "reservation_taken" in history
    assert "reservation_lapsed" in history
    assert f"seat:1 until {clock_time(8)}" in history
    lapsed = next(e for e in events if e.kind is EventKind.RESERVATION_LAPSED)
    assert (
        event_details(lapsed) == "seat:1 lapsed: held by run run-x; the step's outcome is unknown"
    )

"""The structured timeline, built from hand-written journals (no engine, no store)."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from rich.console import Console

from sagakit import ErrorInfo, Event, EventKind, Phase, Run, RunStatus
from sagakit.render import (
    event_details,
    format_duration,
    render_history,
    render_timeline,
    short_error,
)
from sagakit.timeline import (
    Mark,
    Outcome,
    build_timeline,
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

"""Timelines: what happened to a run, step by step, read from its journal.

`build_timeline` folds a journal into plain dataclasses (one `Row` per step
action and per compensation, one `Mark` per rollback, halt or operator
action) and knows nothing of terminals, so it is tested with hand-written
event lists. `sagakit.timeline.render` draws them for the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sagakit.control import Next
from sagakit.journal import (
    JSON,
    RESERVATION_KINDS,
    ErrorInfo,
    Event,
    EventKind,
    Phase,
    RunStatus,
)
from sagakit.run import Run

__all__ = [
    "Alert",
    "AlertStatus",
    "Attempt",
    "Mark",
    "Outcome",
    "Row",
    "Timeline",
    "build_timeline",
]


class Outcome(StrEnum):
    """How a step's action or compensation ended, as far as the journal tells."""

    SUCCEEDED = "succeeded"
    COMPENSATED = "compensated"
    """An action that was undone, or a compensation that succeeded."""
    FAILED = "failed"
    RETRYING = "retrying"
    """Failed, and a later attempt is scheduled."""
    RUNNING = "running"
    """Started, with no recorded outcome yet (in flight, or cut short by a crash)."""
    NEEDS_ATTENTION = "needs_attention"
    RESOLVED = "resolved"
    """Done by hand, as an operator recorded."""
    PAUSED = "paused"
    """The step paused the run to wait for a signal."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call of a step's action or compensation.

    Attributes:
        number: The attempt number, from 1.
        started_at: When it was journaled as started.
        finished_at: When its outcome was journaled; ``None`` while in flight
            or when a crash cut it short.
        succeeded: True when it returned normally.
        error: What it raised, if it failed.
        permanent: The failure skipped the remaining retries.
        unknown: It timed out, so it may have taken effect.
        retry_at: When the next attempt was scheduled, if one was.
    """

    number: int
    started_at: float
    finished_at: float | None = None
    succeeded: bool = False
    error: ErrorInfo | None = None
    permanent: bool = False
    unknown: bool = False
    retry_at: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to outcome, if it has one."""
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class Row:
    """A step's action, or its compensation, over all its attempts.

    Attributes:
        step: The step's name.
        phase: ``action`` or ``compensation``.
        seq: The journal seq of its first event; rows and marks sort on it.
        started_at: When its first attempt started (``None`` if none did).
        finished_at: When its last outcome, or the operator's resolve, was journaled.
        attempts: Every attempt, in order.
        outcome: How it stands now.
        error: The last error any attempt raised, even if a later one succeeded.
        retry_waits: Seconds between each failed attempt and the next one's start.
        result: What the successful attempt returned.
        note: The operator's note, when it was resolved by hand.
    """

    step: str
    phase: Phase
    seq: int
    started_at: float | None
    finished_at: float | None
    attempts: tuple[Attempt, ...]
    outcome: Outcome
    error: ErrorInfo | None = None
    retry_waits: tuple[float, ...] = ()
    result: JSON | None = None
    note: str | None = None

    @property
    def is_compensation(self) -> bool:
        """True for a compensation's row."""
        return self.phase is Phase.COMPENSATION

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the last outcome, retry waits included."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment in the run that is not a call.

    A rollback, a halt, an operator action, a cancel, pause or signal, an
    alert, or what a reservation went through.

    Attributes:
        seq: The event's journal seq.
        at: When it happened.
        kind: ``rollback_started``, ``needs_attention``, ``retried``,
            ``resolved``, ``cancel_requested``, ``cancel_refused``, ``paused``,
            ``signal_received``, ``deadline_passed``, ``alert_sent``,
            ``alert_failed``, or one of the reservations' kinds
            (``reservation_taken``, ``_refreshed``, ``_released``, ``_lapsed``),
            or ``orphan_removed`` (reconciliation removed what the step left).
        step: The step it concerns, if any.
        phase: The phase it concerns (halts and operator actions).
        text: The reason (rollback, halt, cancel refusal), the operator's
            note, the cancel's reason, the pause's question, the signal, or
            what happened to which reservations (`reservation_text`).
        error: The error involved, if any.
        by: Who retried, resolved, cancelled or signalled, when named:
            ``"sagakit"`` for a run resumed by itself (a hung call
            returned), ``"dashboard:..."`` for the dashboard's user; None
            for an operator not named (the command line).
    """

    seq: int
    at: float
    kind: EventKind
    step: str | None = None
    phase: Phase | None = None
    text: str | None = None
    error: ErrorInfo | None = None
    by: str | None = None

    @property
    def is_operator_action(self) -> bool:
        """True for ``retried`` and ``resolved``."""
        return self.kind in (EventKind.RETRIED, EventKind.RESOLVED)


class AlertStatus(StrEnum):
    """Where the alert of a run's latest halt stands."""

    OWED = "owed"
    """Owed since the halt, not tried yet."""
    FAILED = "failed"
    """Tried and failed; tried again at ``retry_at``."""
    SENT = "sent"
    """Delivered and journaled."""
    MOOT = "moot"
    """Never sent: the run moved on (a person acted) before it was."""


@dataclass(frozen=True, slots=True)
class Alert:
    """The alert owed by the run's latest ``needs_attention``, as the journal tells.

    Attributes:
        status: Where it stands.
        seq: The seq of the ``needs_attention`` event it is about.
        owed_since: When the run halted.
        attempts: Tries made (failed ones, and the one that sent it).
        sink: The sink of the last try, if any.
        at: When the last try was journaled.
        retry_at: When it is tried again, after a failure.
        error: The last try's error, after a failure.
    """

    status: AlertStatus
    seq: int
    owed_since: float
    attempts: int = 0
    sink: str | None = None
    at: float | None = None
    retry_at: float | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """A run as a sequence of rows and marks.

    Attributes:
        run_id: The run.
        saga: The saga's name, when a `Run` was given.
        status: The run's status (from the `Run` if given, else from the journal).
        started_at: When the run started.
        finished_at: When it finished (``run_finished``), if it did.
        last_at: When its last event happened.
        rows: One per step action and per compensation, in order of first start.
        marks: Rollbacks, halts and operator actions, in journal order.
        error: The error that made it roll back, fail or halt, if any.
        alert: The alert of its latest halt, if it ever needed attention.
    """

    run_id: str
    saga: str | None
    status: RunStatus
    started_at: float | None
    finished_at: float | None
    last_at: float | None
    rows: tuple[Row, ...]
    marks: tuple[Mark, ...] = ()
    error: ErrorInfo | None = None
    alert: Alert | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, or to the last event if unfinished."""
        end = self.finished_at if self.finished_at is not None else self.last_at
        if self.started_at is None or end is None:
            return None
        return end - self.started_at

    @property
    def entries(self) -> list[Row | Mark]:
        """Rows and marks merged in journal order."""
        return sorted([*self.rows, *self.marks], key=lambda entry: entry.seq)

    @property
    def operator_actions(self) -> tuple[Mark, ...]:
        """The ``retried`` and ``resolved`` marks."""
        return tuple(m for m in self.marks if m.is_operator_action)

    def row(self, step: str, phase: Phase | str = Phase.ACTION) -> Row | None:
        """The row of one step's action (default) or compensation, if it has one."""
        wanted = Phase(phase)
        return next((r for r in self.rows if r.step == step and r.phase is wanted), None)


# -- building ---------------------------------------------------------------------


@dataclass(slots=True)
class _RowDraft:
    step: str
    phase: Phase
    seq: int
    attempts: list[Attempt] = field(default_factory=list)
    result: JSON | None = None
    halted: bool = False
    note: str | None = None
    resolved_at: float | None = None
    paused: bool = False
    given_up: bool = False  # the run rolled back: no further attempt will come

    def settle(self, number: int | None, **outcome: Any) -> None:
        # Match the outcome to its attempt by number: after a crash an open
        # attempt is followed by a new one, and the outcome belongs to the latter.
        for index in range(len(self.attempts) - 1, -1, -1):
            attempt = self.attempts[index]
            if number is None or attempt.number == number:
                self.attempts[index] = Attempt(
                    number=attempt.number, started_at=attempt.started_at, **outcome
                )
                return


_PHASE_OF: dict[EventKind, Phase] = {
    EventKind.STEP_STARTED: Phase.ACTION,
    EventKind.STEP_SUCCEEDED: Phase.ACTION,
    EventKind.STEP_FAILED: Phase.ACTION,
    EventKind.COMPENSATION_STARTED: Phase.COMPENSATION,
    EventKind.COMPENSATION_SUCCEEDED: Phase.COMPENSATION,
    EventKind.COMPENSATION_FAILED: Phase.COMPENSATION,
}
_STARTED = (EventKind.STEP_STARTED, EventKind.COMPENSATION_STARTED)
_SUCCEEDED = (EventKind.STEP_SUCCEEDED, EventKind.COMPENSATION_SUCCEEDED)
_MARKED = (
    EventKind.ROLLBACK_STARTED,
    EventKind.NEEDS_ATTENTION,
    EventKind.RETRIED,
    EventKind.RESOLVED,
)
_ALERTS = (EventKind.ALERT_SENT, EventKind.ALERT_FAILED)
# Moments that move a run on without a call, and what each mark says.
_CONTROL = (
    EventKind.CANCEL_REQUESTED,
    EventKind.CANCEL_REFUSED,
    EventKind.PAUSED,
    EventKind.SIGNAL_RECEIVED,
    EventKind.DEADLINE_PASSED,
)


def control_text(event: Event) -> str:
    """What a cancel, pause, signal or deadline event says, in a few words."""
    data = event.data
    if event.kind is EventKind.CANCEL_REQUESTED:
        return str(data.get("reason") or "no reason given") + (
            " (forced)" if data.get("force") else ""
        )
    if event.kind is EventKind.CANCEL_REFUSED:
        return str(data.get("why") or "refused")
    if event.kind is EventKind.PAUSED:
        options = data.get("options") or []
        answers = f" [answer: {', '.join(map(str, options))}]" if options else ""
        return f"{data.get('question') or 'paused'}{answers}"
    if event.kind is EventKind.SIGNAL_RECEIVED:
        text = str(data.get("name"))
        if data.get("ignored"):
            return f"{text}, ignored: {data['ignored']}"
        if data.get("decision"):
            return f"{text}: {data['decision']} the step"
        return text
    return "the run's deadline passed"


def _clock_time(at: object) -> str:
    seconds = _float(at)
    return "?" if seconds is None else datetime.fromtimestamp(seconds).strftime("%H:%M:%S")


def reservation_text(event: Event) -> str:
    """What a reservation event says, in a few words (times are local)."""
    data = event.data
    names = ", ".join(str(name) for name in data.get("names") or [])
    kind = event.kind
    if kind is EventKind.RESERVATION_TAKEN or kind is EventKind.RESERVATION_REFRESHED:
        return f"{names} until {_clock_time(data.get('expires_at'))}"
    if kind is EventKind.RESERVATION_RELEASED:
        if data.get("finished"):
            return f"{names} (the run finished)"
        if not names:
            return "none held"
        return names if data.get("freed") != 0 else f"{names} (none was held)"
    name = data.get("name")
    found = data.get("found")
    if found == "commit":
        holder = data.get("holder")
        held = f"held by run {holder}" if holder else "expired and free"
        return f"{name} lapsed: {held}; the step's outcome is unknown"
    expired = _clock_time(data.get("expired_at"))
    then = "released it" if found == "release" else "reserved it again"
    return f"{name} expired at {expired}, before the run {then}"


# The statuses a cancel moves on from (as `sagakit.core` reopens a run).
_REOPENED = (
    RunStatus.PENDING,
    RunStatus.COMPLETED,
    RunStatus.PAUSED,
    RunStatus.NEEDS_ATTENTION,
)
_DECISIONS = tuple(answer.value for answer in Next)


def _answers(event: Event, pause: JSON) -> bool:
    """Whether a ``signal_received`` answers the pause (else the run stays paused)."""
    data = event.data
    if data.get("ignored"):
        return False
    waiting_for = pause.get("waiting_for")
    if waiting_for is not None:
        return bool(data.get("name") == waiting_for)
    return data.get("decision") in _DECISIONS


def orphan_text(event: Event) -> str:
    """What an ``orphan_removed`` event says: which resource, left by what."""
    data = event.data
    return f"{data.get('kind')} {data.get('resource')} removed ({data.get('reason')})"


def _phase(raw: object, default: Phase = Phase.ACTION) -> Phase:
    try:
        return Phase(str(raw))
    except ValueError:
        return default


def _float(raw: object) -> float | None:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None


def build_timeline(events: Iterable[Event], run: Run | None = None) -> Timeline:
    """Fold a run's journal into a `Timeline`.

    Args:
        events: The run's journal (any order; it is sorted by seq).
        run: The run, if known: it supplies the saga's name and the
            authoritative status and error.

    Returns:
        The timeline. An empty journal gives a timeline with no rows.
    """
    journal = sorted(events, key=lambda e: e.seq)
    drafts: dict[tuple[Phase, str], _RowDraft] = {}
    marks: list[Mark] = []
    status = RunStatus.PENDING
    undoing = False
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    pause: JSON | None = None  # the question the run waits on, while it does
    alert: Alert | None = None  # of the latest halt

    def draft(phase: Phase, step: str, seq: int) -> _RowDraft:
        key = (phase, step)
        if key not in drafts:
            drafts[key] = _RowDraft(step=step, phase=phase, seq=seq)
        return drafts[key]

    for event in journal:
        kind, data = event.kind, event.data
        if kind is EventKind.RUN_STARTED:
            started_at = event.at
        elif kind in _PHASE_OF and event.step is not None:
            row = draft(_PHASE_OF[kind], event.step, event.seq)
            if kind in _STARTED:
                number = event.attempt or len(row.attempts) + 1
                row.attempts.append(Attempt(number=number, started_at=event.at))
                row.paused = False
                if not undoing:
                    status = RunStatus.RUNNING
            elif kind in _SUCCEEDED:
                row.settle(event.attempt, finished_at=event.at, succeeded=True)
                result = data.get("result")
                row.result = result if isinstance(result, dict) else None
            else:
                row.settle(
                    event.attempt,
                    finished_at=event.at,
                    error=event.error,
                    permanent=bool(data.get("permanent")),
                    unknown=bool(data.get("unknown")),
                    retry_at=_float(data.get("retry_at")),
                )
        elif kind is EventKind.STEP_WITHDRAWN and event.step is not None:
            # Journaled but never called (a cancel came first): not an attempt.
            row = draft(Phase.ACTION, event.step, event.seq)
            row.attempts = [a for a in row.attempts if a.number != event.attempt]
            if not row.attempts:
                del drafts[(Phase.ACTION, event.step)]
        elif kind in _CONTROL:
            marks.append(
                Mark(
                    seq=event.seq,
                    at=event.at,
                    kind=kind,
                    step=event.step,
                    phase=Phase.ACTION if event.step else None,
                    text=control_text(event),
                    by=str(data["by"]) if data.get("by") else None,
                )
            )
            if kind is EventKind.PAUSED:
                status = RunStatus.PAUSED
                pause = data
                if event.step is not None:
                    paused = draft(Phase.ACTION, event.step, event.seq)
                    paused.paused = True
                    if paused.attempts and paused.attempts[-1].finished_at is None:
                        paused.settle(event.attempt, finished_at=event.at)
            elif kind is EventKind.SIGNAL_RECEIVED:
                if pause is not None and _answers(event, pause):
                    # The question is answered: the step goes on as decided.
                    pause = None
                    status = RunStatus.RUNNING
                    for waiting in drafts.values():
                        waiting.paused = False
            elif (kind is EventKind.CANCEL_REQUESTED and status in _REOPENED) or (
                kind is EventKind.DEADLINE_PASSED and status is RunStatus.PAUSED
            ):
                # They move the run on without answering its question, if it
                # had one: the step that paused stays shown as paused.
                pause = None
                status = RunStatus.RUNNING
        elif kind in _MARKED:
            phase = _phase(data.get("phase")) if kind is not EventKind.ROLLBACK_STARTED else None
            operator = kind in (EventKind.RETRIED, EventKind.RESOLVED)
            text = event.note if operator else data.get("reason")
            marks.append(
                Mark(
                    seq=event.seq,
                    at=event.at,
                    kind=kind,
                    step=event.step,
                    phase=phase,
                    text=str(text) if text is not None else None,
                    error=event.error,
                    by=str(data["by"]) if operator and data.get("by") else None,
                )
            )
            if kind is EventKind.ROLLBACK_STARTED:
                undoing = True
                status = RunStatus.COMPENSATING
                error = event.error
                # A step waiting for its next attempt (a cancel or the deadline
                # came first) is not retried any more.
                for waiting in drafts.values():
                    waiting.given_up = waiting.phase is Phase.ACTION
            elif kind is EventKind.NEEDS_ATTENTION:
                status = RunStatus.NEEDS_ATTENTION
                error = error or event.error
                alert = Alert(status=AlertStatus.OWED, seq=event.seq, owed_since=event.at)
                if event.step is not None:
                    draft(phase or Phase.ACTION, event.step, event.seq).halted = True
            else:
                status = RunStatus.COMPENSATING if undoing else RunStatus.RUNNING
                if event.step is not None:
                    halted = draft(phase or Phase.ACTION, event.step, event.seq)
                    halted.halted = False
                    if kind is EventKind.RESOLVED:
                        halted.note = event.note
                        halted.resolved_at = event.at
        elif kind in RESERVATION_KINDS:
            step = event.step
            marks.append(
                Mark(
                    seq=event.seq,
                    at=event.at,
                    kind=kind,
                    step=step,
                    phase=_phase(data.get("phase")) if step is not None else None,
                    text=reservation_text(event),
                )
            )
        elif kind in _ALERTS:
            sink = data.get("sink")
            sent = kind is EventKind.ALERT_SENT
            text = str(sink) if sink is not None else None
            marks.append(Mark(seq=event.seq, at=event.at, kind=kind, text=text, error=event.error))
            if alert is not None and data.get("seq") == alert.seq:
                alert = Alert(
                    status=AlertStatus.SENT if sent else AlertStatus.FAILED,
                    seq=alert.seq,
                    owed_since=alert.owed_since,
                    attempts=event.attempt or alert.attempts + 1,
                    sink=text,
                    at=event.at,
                    retry_at=None if sent else _float(data.get("retry_at")),
                    error=None if sent else event.error,
                )
        elif kind is EventKind.ORPHAN_REMOVED:
            marks.append(
                Mark(
                    seq=event.seq,
                    at=event.at,
                    kind=kind,
                    step=event.step,
                    text=orphan_text(event),
                )
            )
        elif kind is EventKind.RUN_FINISHED:
            finished_at = event.at
            # A status this version does not know keeps the one derived so far.
            with contextlib.suppress(ValueError):
                status = RunStatus(str(data.get("status")))
            error = event.error or error

    rows = [_finish(d, drafts) for d in sorted(drafts.values(), key=lambda d: d.seq)]
    final = run.status if run is not None else status
    if (
        alert is not None
        and alert.status is not AlertStatus.SENT
        and final is not RunStatus.NEEDS_ATTENTION
    ):
        alert = dataclasses.replace(alert, status=AlertStatus.MOOT, retry_at=None)
    return Timeline(
        run_id=run.id if run is not None else (journal[0].run_id if journal else ""),
        saga=run.saga if run is not None else None,
        status=run.status if run is not None else status,
        started_at=started_at if started_at is not None else (run.created_at if run else None),
        finished_at=finished_at,
        last_at=journal[-1].at if journal else None,
        rows=tuple(rows),
        marks=tuple(marks),
        error=(run.error or error) if run is not None else error,
        alert=alert,
    )


def _finish(row: _RowDraft, drafts: dict[tuple[Phase, str], _RowDraft]) -> Row:
    attempts = tuple(row.attempts)
    last = attempts[-1] if attempts else None
    undo = drafts.get((Phase.COMPENSATION, row.step))
    undone = (
        row.phase is Phase.ACTION
        and undo is not None
        and not undo.halted
        and (undo.note is not None or bool(undo.attempts and undo.attempts[-1].succeeded))
    )
    if row.halted:
        outcome = Outcome.NEEDS_ATTENTION
    elif row.paused:
        outcome = Outcome.PAUSED
    elif undone:
        outcome = Outcome.COMPENSATED
    elif row.note is not None:
        outcome = Outcome.RESOLVED
    elif last is None:
        outcome = Outcome.RUNNING
    elif last.succeeded:
        outcome = Outcome.COMPENSATED if row.phase is Phase.COMPENSATION else Outcome.SUCCEEDED
    elif last.finished_at is None:
        outcome = Outcome.RUNNING
    elif last.retry_at is not None and not last.permanent and not row.given_up:
        outcome = Outcome.RETRYING
    else:
        outcome = Outcome.FAILED
    waits = tuple(
        later.started_at - earlier.finished_at
        for earlier, later in itertools.pairwise(attempts)
        if earlier.error is not None and earlier.finished_at is not None
    )
    ends = [a.finished_at for a in attempts if a.finished_at is not None]
    if row.resolved_at is not None:
        ends.append(row.resolved_at)
    return Row(
        step=row.step,
        phase=row.phase,
        seq=row.seq,
        started_at=attempts[0].started_at if attempts else None,
        finished_at=max(ends) if ends else None,
        attempts=attempts,
        outcome=outcome,
        error=next((a.error for a in reversed(attempts) if a.error is not None), None),
        retry_waits=waits,
        result=row.result,
        note=row.note,
    )


# -- formatting -------------------------------------------------------------------

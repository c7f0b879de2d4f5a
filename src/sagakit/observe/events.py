"""What an observer is told: `ObservedEvent`, made from committed journal events.

`observed` turns the events of one commit into observed events, each with
the run's saga and version, its phase, the outcome of an attempt and when
the attempt started (so its duration is known), and texts with the run's
sensitive values masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sagakit.journal import (
    JSON,
    ErrorInfo,
    Event,
    EventKind,
    Phase,
    RunStatus,
    idempotency_key,
)
from sagakit.redaction import Redactor

__all__ = ["ATTEMPT_ENDS", "AttemptOutcome", "ObservedEvent", "Starts", "observed"]


class AttemptOutcome(StrEnum):
    """How an attempt at an action or a compensation ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """It raised (see `ObservedEvent.retry_at` for whether it is tried again)."""
    TIMED_OUT = "timed_out"
    """It ran past its timeout: it failed, and may have taken effect."""
    PAUSED = "paused"
    """The action paused the run to wait for a signal."""
    WITHDRAWN = "withdrawn"
    """Journaled as started, but a cancel came first: it was never called."""


ATTEMPT_ENDS = frozenset(
    {
        EventKind.STEP_SUCCEEDED,
        EventKind.STEP_FAILED,
        EventKind.STEP_WITHDRAWN,
        EventKind.COMPENSATION_SUCCEEDED,
        EventKind.COMPENSATION_FAILED,
    }
)
"""The kinds that end an attempt (a ``paused`` event naming a step ends one too)."""


# Not frozen: a frozen dataclass sets each of its 16 fields through
# object.__setattr__, which made building one cost six times as much, and
# two or three are built per step for every engine with an observer. Hashed
# as before (by value).
@dataclass(slots=True, unsafe_hash=True)
class ObservedEvent:
    """A journal event as observers are told of it, once it is committed.

    One instance is handed to every observer in turn: read it, do not change it.

    Attributes:
        run_id: The run.
        saga: The run's saga.
        version: The run's saga version.
        seq: The event's position in the run's journal.
        kind: What happened.
        at: When (seconds since the epoch, the engine's clock).
        step: The step it concerns, if any.
        phase: ``action`` or ``compensation`` for an attempt, and for the
            ``needs_attention``, ``retried`` and ``resolved`` of a step; else None.
        attempt: The attempt number, for attempt events.
        outcome: How the attempt ended, for the events that end one; else None.
        started_at: For the end of an attempt, when it started (None if its
            ``*_started`` event was committed by another process); for
            ``run_finished``, when the run started.
        error: The error recorded, with the run's sensitive values masked.
        retry_at: For a failed attempt, when the next one may start (None:
            it failed for good).
        status: For ``run_finished``, the run's final status.
        reason: Why: a rollback's ``failure``, ``cancel`` or ``deadline``; a
            cancel request's or a halt's reason (masked).
        trace: The trace context stored with the run when it started (for
            instance ``traceparent``), if an observer gave one then.
    """

    run_id: str
    saga: str
    version: str
    seq: int
    kind: EventKind
    at: float
    step: str | None = None
    phase: Phase | None = None
    attempt: int | None = None
    outcome: AttemptOutcome | None = None
    started_at: float | None = None
    error: ErrorInfo | None = None
    retry_at: float | None = None
    status: RunStatus | None = None
    reason: str | None = None
    trace: Mapping[str, str] | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from `started_at` to `at`: an attempt's, or a finished run's."""
        return None if self.started_at is None else max(0.0, self.at - self.started_at)

    @property
    def idempotency_key(self) -> str | None:
        """The key the step's action or compensation was given (`StepContext.idempotency_key`)."""
        if self.step is None or self.phase is None:
            return None
        return idempotency_key(self.run_id, self.step, self.phase)


Starts = dict[str, dict[tuple[Phase, str], tuple[int, float]]]
"""When the attempts in flight started, by run, then by phase and step: (attempt, at)."""

_STARTED = {
    EventKind.STEP_STARTED: Phase.ACTION,
    EventKind.COMPENSATION_STARTED: Phase.COMPENSATION,
}
_ENDED = {
    EventKind.STEP_SUCCEEDED: Phase.ACTION,
    EventKind.STEP_FAILED: Phase.ACTION,
    EventKind.STEP_WITHDRAWN: Phase.ACTION,
    EventKind.COMPENSATION_SUCCEEDED: Phase.COMPENSATION,
    EventKind.COMPENSATION_FAILED: Phase.COMPENSATION,
}
# Events whose data names the phase of the step they concern.
_PHASED = frozenset({EventKind.NEEDS_ATTENTION, EventKind.RETRIED, EventKind.RESOLVED})
# Keep no more runs' attempts in flight than this: the oldest are forgotten
# (a run lost to another process never tells its attempts' ends here).
_MAX_RUNS_STARTED = 100_000


def observed(
    saga: str,
    version: str,
    events: Sequence[Event],
    *,
    starts: Starts,
    trace: Mapping[str, str] | None = None,
    run_started_at: float | None = None,
    redactor: Redactor | None = None,
) -> list[ObservedEvent]:
    """The observed events of one commit of a run of ``saga`` ``version``.

    Args:
        saga: The run's saga.
        version: Its version.
        events: The events committed, in order.
        starts: When the attempts in flight started (updated: a start is
            kept until its attempt ends, a run's until it finishes).
        trace: The trace context stored with the run.
        run_started_at: When the run started.
        redactor: Masks the run's sensitive values in errors and reasons.
    """
    out: list[ObservedEvent] = []
    for event in events:
        kind = event.kind
        data = event.data
        phase: Phase | None = None
        outcome: AttemptOutcome | None = None
        started_at: float | None = None
        retry_at: float | None = None
        status: RunStatus | None = None
        reason: str | None = None
        if kind in _STARTED:
            phase = _STARTED[kind]
            if event.step is not None:
                if event.run_id not in starts and len(starts) >= _MAX_RUNS_STARTED:
                    del starts[next(iter(starts))]
                run_starts = starts.get(event.run_id)
                if run_starts is None:
                    run_starts = starts[event.run_id] = {}
                run_starts[(phase, event.step)] = (event.attempt or 0, event.at)
        elif kind in _ENDED or (kind is EventKind.PAUSED and event.step is not None):
            phase = _ENDED.get(kind, Phase.ACTION)
            outcome = _outcome(kind, data)
            started_at = _started(starts, event, phase)
            retry_at = _float(data.get("retry_at"))
        elif kind in _PHASED:
            phase = Phase(str(data.get("phase", Phase.ACTION)))
            reason = _text(data.get("reason"), redactor)
        elif kind is EventKind.RUN_FINISHED:
            status = RunStatus(str(data["status"]))
            started_at = run_started_at
            starts.pop(event.run_id, None)
        elif kind is EventKind.ROLLBACK_STARTED:
            reason = _text(data.get("reason"), None)
        elif kind is EventKind.CANCEL_REQUESTED:
            reason = _text(data.get("reason"), redactor)
        # `Event.error`, without a property call for the many events with none.
        raw = data.get("error")
        error = ErrorInfo.from_json(raw) if raw else None
        if error is not None and redactor:
            error = redactor.error(error)
        out.append(
            ObservedEvent(
                event.run_id,
                saga,
                version,
                event.seq,
                kind,
                event.at,
                event.step,
                phase,
                event.attempt,
                outcome,
                started_at,
                error,
                retry_at,
                status,
                reason,
                trace,
            )
        )
    return out


def _outcome(kind: EventKind, data: JSON) -> AttemptOutcome:
    if kind is EventKind.STEP_SUCCEEDED or kind is EventKind.COMPENSATION_SUCCEEDED:
        return AttemptOutcome.SUCCEEDED
    if kind is EventKind.STEP_WITHDRAWN:
        return AttemptOutcome.WITHDRAWN
    if kind is EventKind.PAUSED:
        return AttemptOutcome.PAUSED
    error = data.get("error")
    if isinstance(error, dict) and error.get("timed_out"):
        return AttemptOutcome.TIMED_OUT
    return AttemptOutcome.FAILED


def _started(starts: Starts, event: Event, phase: Phase) -> float | None:
    """When the attempt ``event`` ends started, if its start was observed here."""
    assert event.step is not None  # an attempt's end names its step
    runs = starts.get(event.run_id)
    if runs is None:
        return None
    began = runs.pop((phase, event.step), None)
    if not runs:
        del starts[event.run_id]
    if began is None or (event.attempt is not None and began[0] != event.attempt):
        return None
    return began[1]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _text(value: Any, redactor: Redactor | None) -> str | None:
    if not isinstance(value, str):
        return None
    return redactor.text(value) if redactor else value

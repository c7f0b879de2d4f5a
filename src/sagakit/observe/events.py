"""What an observer is told: `ObservedEvent`, made from committed journal events.

`observed` turns the events of one commit into observed events, each with
the run's saga and version, its phase, the outcome of an attempt and when
the attempt started (so its duration is known), and texts with the run's
sensitive values masked.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sagakit.journal import (
    ErrorInfo,
    Event,
    EventKind,
    Phase,
    RunStatus,
    idempotency_key,
)
from sagakit.redaction import Redactor

__all__ = [
    "ATTEMPT_ENDS",
    "AttemptOutcome",
    "ObservedEvent",
    "Starts",
    "observed",
    "observed_events",
]


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

# Bound once: reading a member through its enum class costs about a thousand
# instructions on Python 3.11 (the metaclass's __getattr__ hook).
_ACTION = Phase.ACTION
_COMPENSATION = Phase.COMPENSATION
_ACTION_TEXT = str(Phase.ACTION)

# How `observed` reads each kind of event, looked up once per event: a
# branch, the phase and the outcome the kind implies.
_PLAIN, _START, _END, _FAIL, _PAUSE, _PHASED, _FINISHED, _ROLLBACK, _CANCEL = range(9)
_How = tuple[int, Phase | None, AttemptOutcome | None]
_HOW: dict[EventKind, _How] = dict.fromkeys(EventKind, (_PLAIN, None, None))
_HOW.update(
    {
        EventKind.STEP_STARTED: (_START, _ACTION, None),
        EventKind.COMPENSATION_STARTED: (_START, _COMPENSATION, None),
        EventKind.STEP_SUCCEEDED: (_END, _ACTION, AttemptOutcome.SUCCEEDED),
        EventKind.STEP_WITHDRAWN: (_END, _ACTION, AttemptOutcome.WITHDRAWN),
        EventKind.COMPENSATION_SUCCEEDED: (_END, _COMPENSATION, AttemptOutcome.SUCCEEDED),
        # Failed or timed out: read from the error.
        EventKind.STEP_FAILED: (_FAIL, _ACTION, AttemptOutcome.FAILED),
        EventKind.COMPENSATION_FAILED: (_FAIL, _COMPENSATION, AttemptOutcome.FAILED),
        # The end of an attempt only when it names a step.
        EventKind.PAUSED: (_PAUSE, _ACTION, AttemptOutcome.PAUSED),
        EventKind.NEEDS_ATTENTION: (_PHASED, None, None),
        EventKind.RETRIED: (_PHASED, None, None),
        EventKind.RESOLVED: (_PHASED, None, None),
        EventKind.RUN_FINISHED: (_FINISHED, None, None),
        EventKind.ROLLBACK_STARTED: (_ROLLBACK, None, None),
        EventKind.CANCEL_REQUESTED: (_CANCEL, None, None),
    }
)
_ENDS = frozenset({_END, _FAIL})
_TIMED_OUT = AttemptOutcome.TIMED_OUT
# Enum members by value: calling the enum class to look one up runs its
# metaclass's __call__ in Python, several thousand instructions.
_STATUSES: dict[str, RunStatus] = {str(status): status for status in RunStatus}
_PHASES: dict[str, Phase] = {str(phase): phase for phase in Phase}
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
    return observed_events(saga, version, events, starts, trace, run_started_at, redactor)


def observed_events(  # noqa: PLR0917  # positional: a keyword call costs more, every commit
    saga: str,
    version: str,
    events: Sequence[Event],
    starts: Starts,
    trace: Mapping[str, str] | None,
    run_started_at: float | None,
    redactor: Redactor | None,
) -> list[ObservedEvent]:
    """`observed`, its arguments positional: what `Observers` calls for every commit."""
    # Told for every commit of every run, two or three events a step: one
    # table lookup per event picks its branch, and the common ones (an
    # attempt's start and end) call no function but the event's constructor.
    out: list[ObservedEvent] = []
    how = _HOW
    new = object.__new__
    for event in events:
        kind = event.kind
        what, phase, outcome = how[kind]
        run_id = event.run_id
        step = event.step
        attempt = event.attempt
        at = event.at
        data = event.data
        started_at: float | None = None
        retry_at: float | None = None
        status: RunStatus | None = None
        reason: str | None = None
        if what == _START:
            if step is not None:
                assert phase is not None  # every start's kind has its phase
                run_starts = starts.get(run_id)
                if run_starts is None:
                    if len(starts) >= _MAX_RUNS_STARTED:
                        _make_room(starts)
                    run_starts = starts[run_id] = {}
                run_starts[(phase, step)] = (attempt or 0, at)
        elif what in _ENDS or (what == _PAUSE and step is not None):
            if what == _FAIL and "error" in data:
                raw = data["error"]
                if isinstance(raw, dict) and raw.get("timed_out"):
                    outcome = _TIMED_OUT
            # When the attempt started, if its start was committed here.
            run_starts = starts.get(run_id)
            if run_starts is not None:
                assert phase is not None  # an end's kind has its phase
                assert step is not None  # and the end names its step
                # The run's (now perhaps empty) dict stays until the run
                # finishes: its next step's start reuses it (making one per
                # step cost about a thousand instructions a step). When room
                # is needed, the empty ones go first (`_make_room`).
                began = run_starts.pop((phase, step), None)
                if began is not None and (attempt is None or began[0] == attempt):
                    started_at = began[1]
            if "retry_at" in data:
                value = data["retry_at"]
                if isinstance(value, (int, float)):
                    retry_at = float(value)
        elif what != _PLAIN:
            if what == _PHASED:
                text = str(data.get("phase", _ACTION_TEXT))
                phase = _PHASES.get(text) or Phase(text)
                reason = _text(data.get("reason"), redactor)
            elif what == _FINISHED:
                text = str(data["status"])
                status = _STATUSES.get(text) or RunStatus(text)
                started_at = run_started_at
                starts.pop(run_id, None)
            elif what == _ROLLBACK:
                reason = _text(data.get("reason"), None)
            elif what == _CANCEL:
                reason = _text(data.get("reason"), redactor)
            else:  # a pause that names no step ends no attempt
                phase = outcome = None
        # `Event.error`, without a property call for the many events with none.
        error: ErrorInfo | None = None
        if "error" in data:
            raw = data["error"]
            if raw:
                error = ErrorInfo.from_json(raw)
                if redactor:
                    error = redactor.error(error)
        # Made without calling __init__ (its frame and 17 arguments cost more
        # than the stores): every field is set here, in the order declared.
        told = new(ObservedEvent)
        told.run_id = run_id
        told.saga = saga
        told.version = version
        told.seq = event.seq
        told.kind = kind
        told.at = at
        told.step = step
        told.phase = phase
        told.attempt = attempt
        told.outcome = outcome
        told.started_at = started_at
        told.error = error
        told.retry_at = retry_at
        told.status = status
        told.reason = reason
        told.trace = trace
        out.append(told)
    return out


def _make_room(starts: Starts) -> None:
    """Forget the runs with no attempt in flight; if there are none, the oldest runs.

    Runs waiting between steps, or lost to another process, keep a dict
    here until they finish, which they may never do here: they go first,
    so that they never crowd out an attempt in flight. Where every run
    held has one in flight, the oldest hundredth of them go at once, so that
    the next runs find room without another look at them all.
    """
    idle = [run for run, started in starts.items() if not started]
    for run in idle:
        del starts[run]
    if not idle:
        for run in list(itertools.islice(starts, max(1, len(starts) // 100))):
            del starts[run]


def _text(value: Any, redactor: Redactor | None) -> str | None:
    if not isinstance(value, str):
        return None
    return redactor.text(value) if redactor else value

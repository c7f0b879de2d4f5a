"""The journal: what can happen to a run, as plain JSON-ready records.

A run's journal is append-only and is the source of truth. Its status and
state are derived from it (see `sagakit.core`) and stored beside it in the
same transaction, so a reader never sees one without the other.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sagakit.frozen import fast_init

JSON = dict[str, Any]


class RunStatus(StrEnum):
    """Where a run stands. Compare freely with plain strings."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    FAILED = "failed"
    PAUSED = "paused"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def settled(self) -> bool:
        """True when nothing will happen to the run without an operator."""
        return self in SETTLED

    @property
    def terminal(self) -> bool:
        """True when the run is finished for good (completed or undone)."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED}
)
SETTLED = _TERMINAL | {RunStatus.NEEDS_ATTENTION, RunStatus.PAUSED}
"""The statuses of `RunStatus.settled`, to test without a call."""


class EventKind(StrEnum):
    """The kinds of journal events."""

    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_WITHDRAWN = "step_withdrawn"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    COMPENSATION_FAILED = "compensation_failed"
    ROLLBACK_STARTED = "rollback_started"
    NEEDS_ATTENTION = "needs_attention"
    RETRIED = "retried"
    RESOLVED = "resolved"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_REFUSED = "cancel_refused"
    PAUSED = "paused"
    SIGNAL_RECEIVED = "signal_received"
    DEADLINE_PASSED = "deadline_passed"
    RUN_FINISHED = "run_finished"
    ALERT_SENT = "alert_sent"
    ALERT_FAILED = "alert_failed"
    RESERVATION_TAKEN = "reservation_taken"
    RESERVATION_REFRESHED = "reservation_refreshed"
    RESERVATION_RELEASED = "reservation_released"
    RESERVATION_LAPSED = "reservation_lapsed"
    ORPHAN_REMOVED = "orphan_removed"


RESERVATION_KINDS = frozenset(
    {
        EventKind.RESERVATION_TAKEN,
        EventKind.RESERVATION_REFRESHED,
        EventKind.RESERVATION_RELEASED,
        EventKind.RESERVATION_LAPSED,
    }
)
"""What a run's reservations went through: told, never folded into its state or status."""


class Phase(StrEnum):
    """Whether a function call is a step's action or its compensation."""

    ACTION = "action"
    COMPENSATION = "compensation"


STARTED = {Phase.ACTION: EventKind.STEP_STARTED, Phase.COMPENSATION: EventKind.COMPENSATION_STARTED}
SUCCEEDED = {
    Phase.ACTION: EventKind.STEP_SUCCEEDED,
    Phase.COMPENSATION: EventKind.COMPENSATION_SUCCEEDED,
}
FAILED = {Phase.ACTION: EventKind.STEP_FAILED, Phase.COMPENSATION: EventKind.COMPENSATION_FAILED}

# Bound once: reading a member through its enum class costs about a thousand
# instructions on Python 3.11 (the metaclass's __getattr__ hook).
_ACTION = Phase.ACTION


def idempotency_key(run_id: str, step: str, phase: Phase) -> str:
    """The stable key of a step's action or compensation within a run.

    The same for every attempt and after a crash, so an external service that
    deduplicates on it sees one operation, however often sagakit calls it.
    """
    base = f"{run_id}/{step}"
    return base if phase is _ACTION else f"{base}/compensate"


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """One journal entry.

    Attributes:
        run_id: The run it belongs to.
        seq: Its position in the run's journal, from 1, without gaps.
        kind: What happened.
        at: When, in seconds since the epoch (the engine's clock).
        step: The step it concerns, if any.
        attempt: The attempt number (1-based) for started/succeeded/failed events.
        data: Details as JSON: ``result``, ``error``, ``retry_at``, ``note``...
    """

    run_id: str
    seq: int
    kind: EventKind
    at: float
    step: str | None = None
    attempt: int | None = None
    data: JSON = field(default_factory=dict)

    @property
    def error(self) -> ErrorInfo | None:
        """The error recorded by a failure event, if any."""
        raw = self.data.get("error")
        return ErrorInfo.from_json(raw) if raw else None

    @property
    def note(self) -> str | None:
        """The operator's note of a ``resolved`` or ``retried`` event."""
        note = self.data.get("note")
        return note if isinstance(note, str) else None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as recorded in the journal: never the exception object itself.

    Attributes:
        type: The exception's qualified class name.
        message: ``str(exception)``.
        step: The step whose action or compensation raised it.
        phase: ``"action"`` or ``"compensation"``.
        attempt: The attempt that raised it.
        timed_out: True when the attempt hit its timeout (its outcome is unknown).
        traceback: The formatted traceback, trimmed.
    """

    type: str
    message: str
    step: str | None = None
    phase: str = Phase.ACTION
    attempt: int | None = None
    timed_out: bool = False
    traceback: str = ""

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        step: str | None,
        phase: Phase,
        attempt: int | None,
        timed_out: bool = False,
    ) -> ErrorInfo:
        """Capture an exception for the journal."""
        tb = "".join(traceback.format_exception(exc))
        return cls(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            message=str(exc),
            step=step,
            phase=phase,
            attempt=attempt,
            timed_out=timed_out,
            traceback=tb[-_TRACEBACK_LIMIT:],
        )

    def to_json(self) -> JSON:
        """The error as a JSON object."""
        return {
            "type": self.type,
            "message": self.message,
            "step": self.step,
            "phase": str(self.phase),
            "attempt": self.attempt,
            "timed_out": self.timed_out,
            "traceback": self.traceback,
        }

    @classmethod
    def from_json(cls, raw: JSON) -> ErrorInfo:
        """Read an error written by `to_json`."""
        return cls(
            type=str(raw.get("type", "")),
            message=str(raw.get("message", "")),
            step=raw.get("step"),
            phase=str(raw.get("phase", Phase.ACTION)),
            attempt=raw.get("attempt"),
            timed_out=bool(raw.get("timed_out", False)),
            traceback=str(raw.get("traceback", "")),
        )

    def __str__(self) -> str:
        where = f"{self.phase} of step {self.step!r}" if self.step else "run"
        what = "timed out" if self.timed_out else f"{self.type}: {self.message}"
        attempt = f" (attempt {self.attempt})" if self.attempt else ""
        return f"{where}{attempt}: {what}"


# Tracebacks can be long (deep library stacks); the tail holds the useful part.
_TRACEBACK_LIMIT = 4000

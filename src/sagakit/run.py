"""`Run`: what the engine tells a caller about one execution of a saga, and the run id rule."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from sagakit.errors import InvalidRunId
from sagakit.journal import JSON, ErrorInfo, Phase, RunStatus
from sagakit.redaction import Redactor

MAX_RUN_ID: Final = 200
"""The most characters a run id may have."""


def check_run_id(run_id: object) -> str:
    """``run_id`` if it may name a new run; raises `InvalidRunId` if not.

    A run id is 1 to `MAX_RUN_ID` printable characters (no control character,
    line break or other character a terminal acts on), not only spaces, and
    without ``/``. The ``/`` is kept out because a step's idempotency key is
    ``run_id/step`` (``/compensate`` after it for the compensation): with no
    ``/`` in a run id, the keys of two runs can never be the same.
    """
    if not isinstance(run_id, str):
        raise InvalidRunId(repr(run_id), f"is a {type(run_id).__name__}, not a string")
    if not run_id.strip():
        raise InvalidRunId(run_id, "is empty" if not run_id else "is only spaces")
    if len(run_id) > MAX_RUN_ID:
        raise InvalidRunId(run_id, f"is {len(run_id)} characters long")
    if "/" in run_id:
        raise InvalidRunId(run_id, "holds a '/'")
    if not run_id.isprintable():
        raise InvalidRunId(run_id, "holds a control or other unprintable character")
    return run_id


@dataclass(frozen=True, slots=True)
class Run:
    """A snapshot of one run.

    Attributes:
        id: The run id.
        saga: The saga's name.
        version: The saga's version.
        status: Where the run stands (a `RunStatus`, equal to its string value).
        state: The state: an instance of the saga's state model when the engine
            knows the saga and it has one, else a dict.
        data: The state as stored (JSON), whatever the saga.
        error: The error that made the run roll back, fail or halt, if any.
        compensation_errors: The errors compensations raised, in order (the
            latest 50, without tracebacks; `history` has every one whole).
        created_at: When the run was created (seconds since the epoch).
        updated_at: When it last changed.
        owner: The process driving it now, if any.
    """

    id: str
    saga: str
    version: str
    status: RunStatus
    state: Any
    data: JSON
    error: ErrorInfo | None
    compensation_errors: tuple[ErrorInfo, ...]
    created_at: float
    updated_at: float
    owner: str | None = None

    @property
    def settled(self) -> bool:
        """True when nothing more happens to the run without an operator."""
        return self.status.settled

    def redacted(self, redactor: Redactor) -> Run:
        """This run with its sensitive fields masked, for showing (`sagakit.redaction`).

        Its ``state`` becomes the masked JSON (a dict), whatever the saga.
        """
        if not redactor:
            return self
        data = redactor.json(self.data)
        return replace(
            self,
            state=data,
            data=data,
            error=redactor.error(self.error),
            compensation_errors=tuple(map(redactor.error, self.compensation_errors)),
        )


@dataclass(frozen=True, slots=True)
class AttentionReport:
    """Everything an operator needs about a run that cannot go on by itself.

    Handed to the engine's ``on_attention`` hook.

    Attributes:
        run: The run, as it stands.
        step: The step whose action or compensation gave up.
        phase: ``"action"`` or ``"compensation"``.
        reason: Why the run halted, in words.
        attempts: Attempts made at that call.
        cause: The error that made the run roll back (or halt), if any.
        errors: Every error any attempt of the run raised, oldest first
            (retried ones included).
        state: The run's state (JSON).
        sensitive: The names of the run's sensitive fields: `redacted` masks
            them, for a report that leaves the process (a pager, a chat).
        seq: The journal seq of the ``needs_attention`` event reported: a
            run halted twice (retried in between) owes two alerts.
    """

    run: Run
    cause: ErrorInfo | None
    step: str
    phase: Phase
    reason: str
    attempts: int
    errors: tuple[ErrorInfo, ...]
    state: JSON
    sensitive: frozenset[str] = frozenset()
    seq: int = 0

    @property
    def idempotency_key(self) -> str:
        """``run_id/attention/seq``: the same for every delivery of this alert, unique to it.

        Alerts are delivered at least once; a receiver that keeps the keys it
        has seen drops the repeats. (A run id holds no ``/``, so the keys of
        two runs never meet.)
        """
        return f"{self.run.id}/attention/{self.seq}"

    def redacted(self) -> AttentionReport:
        """This report with every sensitive field, and each value quoted in an error, masked."""
        redactor = Redactor(self.sensitive).collect(self.state, self.run.data)
        if not redactor:
            return self
        return replace(
            self,
            run=self.run.redacted(redactor),
            cause=redactor.error(self.cause),
            reason=redactor.text(self.reason),
            errors=tuple(map(redactor.error, self.errors)),
            state=redactor.json(self.state),
        )

"""`Run`: what the engine tells a caller about one execution of a saga, and the run id rule.

`RunFailed`, what `Run.raise_for_status` raises, lives here beside the `Run`
it carries (it is a `SagaError` like every other; see `sagakit.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Final

from sagakit.errors import InvalidRunId, SagaError
from sagakit.frozen import fast_init
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


@fast_init  # made for every run: see `sagakit.frozen`
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
        pending: How many requests (cancels, signals) are recorded for the
            run and not yet acted on: its driver reads them at its next step,
            or a worker when the run is next due. Until then ``status`` is
            what it was; `Engine.pending` lists them.
        created: True on the run that `start` or `run` returned when that
            very call created it; False when the call found the run already
            there (the same id and the same input: starts are idempotent),
            and on a run read any other way (`get`, `wait`, `runs`, ...).
        exception: The exception object that ``error`` records, when it was
            raised in this process and the engine still remembers it (it
            keeps the latest 128 in memory); None otherwise: after a
            restart, in another process, or once forgotten, only the
            recorded ``error`` is left. `raise_for_status` raises from it.
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
    pending: int = 0
    created: bool = field(default=False, compare=False)
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def settled(self) -> bool:
        """True when nothing more happens to the run without an operator."""
        return self.status.settled

    def raise_for_status(self) -> Run:
        """Return this run if it completed; raise `RunFailed` if it did not.

        So ``engine.run(saga, order).raise_for_status()`` either gives the
        completed run or raises, as the failing step itself would have. The
        error carries the run, the error that made it roll back, fail or
        halt, and every compensation error. Its ``__cause__`` is the
        original exception (`exception`) when it was raised in this process
        and is still remembered, so its traceback shows where the step
        failed; otherwise (after a restart, or from another process) only
        the recorded `ErrorInfo`, traceback text included, is left.

        Any status but ``completed`` raises: a rolled-back, failed,
        cancelled or compensating run, one that needs attention, and one
        that has not finished yet (pending, running, paused: `wait` for it
        first).

        Raises:
            RunFailed: the run did not complete.
        """
        if self.status is RunStatus.COMPLETED:
            return self
        if self.exception is not None:
            raise RunFailed(self) from self.exception
        raise RunFailed(self)

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
            exception=None,  # its message and traceback are not masked
        )


class RunFailed(SagaError):
    """A run did not complete: raised by `Run.raise_for_status`.

    Its ``__cause__`` is the exception that failed the step, when this
    process raised it and still remembers it (`Run.exception`).

    Attributes:
        run: The run, as it stood.
        run_id: Its id.
        status: Its status (anything but ``completed``).
        cause: The error that made it roll back, fail or halt (`Run.error`), if any.
        compensation_errors: Every compensation error recorded
            (`Run.compensation_errors`), oldest first.
    """

    def __init__(self, run: Run) -> None:
        status = run.status
        message = f"run {run.id!r} of saga {run.saga!r} did not complete: it is {status}"
        if run.error is not None:
            message += f"; {run.error}"
        if run.compensation_errors:
            count = len(run.compensation_errors)
            message += (
                f"; {count} compensation error{'s' if count > 1 else ''}, "
                f"the last: {run.compensation_errors[-1]}"
            )
        if not status.settled:
            if status is not RunStatus.COMPENSATING:
                message += "; it has not finished yet: wait for it first (engine.wait)"
        elif status is RunStatus.PAUSED:
            message += "; it waits for a signal or a person"
        super().__init__(message)
        self.run = run
        self.run_id = run.id
        self.status = status
        self.cause = run.error
        self.compensation_errors = run.compensation_errors


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

"""What a step or a handler can tell the engine besides success or failure.

A step's action may raise `Pause` to wait for a person or another system. A
step's failure handler (``@step.on_failure``) and signal handler
(``@step.on_signal``) answer with a `Next` (retry the step, compensate, or go
on without it) or with a `Pause`. Every such decision is journaled, so a
replay after a crash reaches the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sagakit.journal import JSON


class Next(StrEnum):
    """What a handler wants done with the step it was called for."""

    RETRY = "retry"
    """Run the step again, with a fresh retry budget (and the state as it is now)."""
    COMPENSATE = "compensate"
    """Give the step up: the saga rolls back (or needs attention after the pivot)."""
    CONTINUE = "continue"
    """Count the step as done without its effect, and go on with the next one."""


class Pause(Exception):
    """Pause the run until a signal answers ``question``.

    Raise it from a step's action, or return it from a failure handler. The
    run's status becomes ``paused`` and the question and options are stored
    in the journal for whoever answers. `Engine.signal` delivers the answer:
    its payload is merged into the state, and the step's ``on_signal``
    handler decides what happens next (by default the step is retried).
    `Engine.cancel` is the other way out.

    Args:
        question: What the run waits for, in words.
        options: The signal names that answer it; empty: any signal does.
    """

    def __init__(self, question: str, *, options: Sequence[str] = ()) -> None:
        super().__init__(question)
        self.question = question
        self.options = tuple(str(o) for o in options)

    def to_json(self) -> JSON:
        """The pause as journaled."""
        return {"question": self.question, "options": list(self.options)}


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal delivered to a run.

    Attributes:
        name: The signal's name (``"choose_hotel"``, ``"approval"``).
        payload: What came with it; already merged into the state.
        at: When the run received it.
    """

    name: str
    payload: JSON = field(default_factory=dict)
    at: float = 0.0

"""The pure saga state machine: a plan and a journal in, what to do next out.

Nothing here performs I/O, reads a clock or touches asyncio. `replay` folds a
journal into a `Progress` (`progress`); `decide` says what the driver must do
next (`decide`): invoke some actions or compensations (possibly not before a
time), or journal one transition event (roll back, halt for a person,
finish). The driver carries these decisions out and journals their outcomes,
then asks again. Every rule of the saga semantics lives in this package.
"""

from __future__ import annotations

from sagakit.core.decide import IDLE, Decision, Invoke, Transition, decide, undo_stages
from sagakit.core.plan import PIVOT, RETRIABLE, Plan, StepPlan
from sagakit.core.progress import (
    ANSWERS,
    CANCEL,
    COMPENSATE,
    CONTINUE,
    DEADLINE,
    FAILURE,
    IMMUTABLE,
    PAUSE,
    RETRY,
    Attempts,
    Progress,
    apply,
    cancel_refusal,
    is_final_failure,
    pivot_reached,
    replay,
    track,
)

__all__ = [
    "ANSWERS",
    "CANCEL",
    "COMPENSATE",
    "CONTINUE",
    "DEADLINE",
    "FAILURE",
    "IDLE",
    "IMMUTABLE",
    "PAUSE",
    "PIVOT",
    "RETRIABLE",
    "RETRY",
    "Attempts",
    "Decision",
    "Invoke",
    "Plan",
    "Progress",
    "StepPlan",
    "Transition",
    "apply",
    "cancel_refusal",
    "decide",
    "is_final_failure",
    "pivot_reached",
    "replay",
    "track",
    "undo_stages",
]

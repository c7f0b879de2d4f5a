"""Journal and plan builders shared by the core's table tests (test_core, test_core_control).

A journal is written as specs (run id ``"r"``, ``seq`` numbered automatically by
`events`, ``at`` equal to ``seq``); plans are built from single steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sagakit.core import Plan, StepPlan
from sagakit.journal import Event, EventKind, Phase

A, C = Phase.ACTION, Phase.COMPENSATION

# -- plans ----------------------------------------------------------------------


def comp(name: str, attempts: int | None = 1, undo: int | None = 2, **kw: Any) -> StepPlan:
    """A compensatable step: ``attempts`` for its action, ``undo`` for its compensation."""
    return StepPlan(name, "compensatable", True, attempts, undo, **kw)


def plain(name: str, attempts: int | None = 1, **kw: Any) -> StepPlan:
    return StepPlan(name, "plain", False, attempts, None, **kw)


def sequential(*steps: StepPlan, **kw: Any) -> Plan:
    """Steps one after another; ``kw`` as for `Plan`."""
    return Plan(steps=steps, stages=tuple((s.name,) for s in steps), **kw)


# -- journals ---------------------------------------------------------------------

Spec = tuple[EventKind, str | None, int | None, dict[str, Any]]


def events(*specs: Spec | Sequence[Spec]) -> list[Event]:
    """Number the specs (flattening lists of them) into events of run ``"r"``."""
    flat: list[Spec] = []
    for spec in specs:
        if isinstance(spec, list):
            flat.extend(spec)
        else:
            flat.append(spec)  # type: ignore[arg-type]
    return [
        Event("r", seq, kind, float(seq), step, attempt, data)
        for seq, (kind, step, attempt, data) in enumerate(flat, 1)
    ]


def error(step: str, attempt: int = 1) -> dict[str, Any]:
    return {"type": "RuntimeError", "message": f"{step} broke", "step": step, "attempt": attempt}


def begin(deadline: float | None = None, **state: Any) -> Spec:
    data: dict[str, Any] = {"state": state}
    if deadline is not None:
        data["deadline"] = deadline
    return (EventKind.RUN_STARTED, None, None, data)


def started(step: str, attempt: int = 1) -> Spec:
    return (EventKind.STEP_STARTED, step, attempt, {})


def succeeded(step: str, attempt: int = 1, **result: Any) -> Spec:
    return (EventKind.STEP_SUCCEEDED, step, attempt, {"result": result or None})


def failed(
    step: str,
    attempt: int = 1,
    *,
    permanent: bool = False,
    unknown: bool = False,
    retry_at: float | None = None,
    **extra: Any,
) -> Spec:
    data = {
        "error": error(step, attempt),
        "permanent": permanent,
        "unknown": unknown,
        "retry_at": retry_at,
        **extra,
    }
    return (EventKind.STEP_FAILED, step, attempt, data)


def ran(step: str, attempt: int = 1, **result: Any) -> list[Spec]:
    """An action that was started and succeeded."""
    return [started(step, attempt), succeeded(step, attempt, **result)]


def broke(step: str, attempt: int = 1, **kw: Any) -> list[Spec]:
    """An action that was started and failed."""
    return [started(step, attempt), failed(step, attempt, **kw)]


def c_started(step: str, attempt: int = 1) -> Spec:
    return (EventKind.COMPENSATION_STARTED, step, attempt, {})


def c_succeeded(step: str, attempt: int = 1) -> Spec:
    return (EventKind.COMPENSATION_SUCCEEDED, step, attempt, {"result": None})


def c_failed(step: str, attempt: int = 1, *, retry_at: float | None = None) -> Spec:
    data = {
        "error": error(f"undo {step}", attempt),
        "permanent": False,
        "unknown": False,
        "retry_at": retry_at,
    }
    return (EventKind.COMPENSATION_FAILED, step, attempt, data)


def undone(step: str, attempt: int = 1) -> list[Spec]:
    """A compensation that was started and succeeded."""
    return [c_started(step, attempt), c_succeeded(step, attempt)]

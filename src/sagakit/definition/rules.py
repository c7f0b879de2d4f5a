"""The rules between step kinds.

A saga has at most one pivot, its point of no return; every step after it is
retriable, and only the steps before it may have compensations. These rules
are checked as the saga is written (each decorator checks what it can see)
and once more, over the whole definition, when it is registered.
"""

from __future__ import annotations

from collections.abc import Mapping

from sagakit.definition.kinds import StepKind
from sagakit.definition.step import Step
from sagakit.errors import DefinitionError


def check_kind_position(saga: str, step: Step, pivot: Step | None) -> None:
    """Check that ``step``'s kind may come where it does, ``pivot`` being the one before it."""
    where = f"step {step.name!r} of saga {saga!r}"
    if step.kind is StepKind.PIVOT and pivot is not None:
        raise DefinitionError(
            f"{where} is a second pivot; a saga has at most one (the first is {pivot.name!r})"
        )
    if step.kind is StepKind.RETRIABLE and pivot is None:
        raise DefinitionError(
            f"{where} is retriable but no pivot step comes before it; retriable steps "
            "follow the pivot (declare one with kind='pivot') or make it compensatable"
        )
    if pivot is not None and step.kind is not StepKind.RETRIABLE:
        raise DefinitionError(
            f"{where} is {step.kind.value!r} but comes after the pivot {pivot.name!r}; "
            "every step after the pivot must be retriable"
        )


def check_compensatable_position(
    saga: str, position: Mapping[str, int], pivot: Step | None, step: Step
) -> None:
    """Check that ``step`` (added or not yet) does not come after ``pivot``.

    ``position`` maps each added step's name to its index, so the check takes
    constant time however many steps the saga has.
    """
    if pivot is None or step.name not in position:
        return
    if position[step.name] > position[pivot.name]:
        raise DefinitionError(
            f"step {step.name!r} of saga {saga!r} comes after the pivot "
            f"{pivot.name!r}, so it is retriable and cannot have a compensation"
        )


def check_steps(
    saga: str, steps: Mapping[str, Step], compensation_order: tuple[tuple[str, ...], ...] | None
) -> None:
    """Check the rules between the steps of a whole definition (see `Saga.validate`)."""
    if not steps:
        raise DefinitionError(f"saga {saga!r} has no steps")
    pivot: Step | None = None
    for step in steps.values():
        check_kind_position(saga, step, pivot)
        if step.kind is StepKind.PIVOT:
            pivot = step
        if step.compensation is not None and step.kind is not StepKind.COMPENSATABLE:
            raise DefinitionError(
                f"step {step.name!r} of saga {saga!r} is {step.kind.value!r} "
                "and so cannot have a compensation"
            )
        if step.kind is StepKind.COMPENSATABLE and step.compensation is None:
            raise DefinitionError(
                f"step {step.name!r} of saga {saga!r} is compensatable but has no "
                f"compensation; add one with @{step.name}.compensate"
            )
        if step.compensate_on_failure and step.compensation is None:
            raise DefinitionError(
                f"step {step.name!r} of saga {saga!r} sets compensate_on_failure "
                "but has no compensation"
            )
    _check_compensation_order(saga, steps, compensation_order)


def _check_compensation_order(
    saga: str, steps: Mapping[str, Step], compensation_order: tuple[tuple[str, ...], ...] | None
) -> None:
    if compensation_order is None:
        return
    named = [n for group in compensation_order for n in group]
    for name in named:
        step = steps.get(name)
        if step is None:
            raise DefinitionError(
                f"saga {saga!r}: compensation_order names {name!r}, which is not a step"
            )
        if step.compensation is None:
            raise DefinitionError(
                f"saga {saga!r}: compensation_order names step {name!r}, which has no compensation"
            )
    missing = [s.name for s in steps.values() if s.compensation and s.name not in named]
    if missing:
        raise DefinitionError(
            f"saga {saga!r}: compensation_order leaves out the compensatable "
            f"step(s) {', '.join(map(repr, missing))}; name every one"
        )

"""Whether a run's journal fits a definition: what `replay` refuses, and what it lets by.

A run is only ever driven by the definition registered under its own saga
name and version, but nothing stops a deploy from changing a definition
without changing its version. Two kinds of change then meet the runs in
flight:

- the journal names a step the definition no longer has (renamed or
  removed): `replay` raises, and an engine holds the run back instead of
  driving it (`unknown_steps` says which steps);
- the journal folds without error, but records what the changed definition
  would never have done (`changes`): a step that ran before a step the
  definition now runs first (a step added, moved or regrouped into another
  stage), the compensation of a step that has none now, an undo begun after
  a step that is now the point of no return. An engine would drive such a
  run on the changed definition, with results nobody designed.

Pure: a plan and events in, sentences out. The journal does not record step
kinds, so a changed kind shows only through what the run has done so far.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sagakit.core.plan import PIVOT, Plan
from sagakit.core.progress import Progress, apply
from sagakit.journal import Event, EventKind

__all__ = ["changes", "unknown_steps"]

_COMPENSATION_KINDS = (
    EventKind.COMPENSATION_STARTED,
    EventKind.COMPENSATION_SUCCEEDED,
    EventKind.COMPENSATION_FAILED,
)


def unknown_steps(plan: Plan, events: Iterable[Event]) -> list[str]:
    """The steps the journal names that ``plan`` does not have, in journal order.

    Any one of them makes `replay` raise: a run whose journal names one is
    never driven by this plan.
    """
    known = {step.name for step in plan.steps}
    found: dict[str, None] = {}
    for event in events:
        if event.step is not None and event.step not in known:
            found[event.step] = None
    return list(found)


def changes(plan: Plan, events: Sequence[Event]) -> list[str]:
    """What the journal records that ``plan`` would never have done, one sentence each.

    The journal must fold under ``plan`` (no `unknown_steps`): it is folded
    event by event, as `replay` does, and each event is held against the
    run's progress just before it.

    Returns:
        Sentences naming the steps concerned, without repeats; empty when
        the journal fits the plan.

    Raises:
        ValueError: the journal does not fold under ``plan`` (as `replay`).
    """
    found: dict[str, None] = {}
    progress = Progress()
    for event in events:
        for sentence in _contradictions(plan, progress, event):
            found[sentence] = None
        apply(plan, progress, event)
    return list(found)


def _contradictions(plan: Plan, progress: Progress, event: Event) -> list[str]:
    """What ``event``, coming after ``progress``, says that ``plan`` forbids."""
    kind, name = event.kind, event.step
    if kind is EventKind.STEP_STARTED and name is not None:
        record = progress.actions.get(name)
        if record is not None and record.started:
            return []  # a later attempt: its first one was checked
        # The engine starts a stage only once every step of the one before is
        # done (succeeded, resolved, or let go by a failure handler).
        return [
            f"step {name!r} ran before step {before!r} had finished, but the definition "
            f"now runs {before!r} first (a step added, moved or regrouped)"
            for before in plan.previous_stage(name)
            if not ((done := progress.actions.get(before)) is not None and done.done)
        ]
    if kind in _COMPENSATION_KINDS and name is not None and not plan.step(name).compensable:
        return [
            f"step {name!r} has no compensation now, yet its journal records one "
            "(its kind changed from compensatable): it would be left undone"
        ]
    if kind is EventKind.ROLLBACK_STARTED and progress.pivot_passed:
        forced = progress.cancel is not None and bool(progress.cancel.get("force"))
        if not forced:  # only a forced cancel undoes anything past the pivot
            pivot = next(
                (s for s in progress.completion if plan.step(s).kind == PIVOT), "the pivot"
            )
            return [
                f"step {pivot!r} is now the pivot (the point of no return), yet the run "
                "began undoing after it had succeeded (a step's kind changed)"
            ]
    return []

"""Matching one external resource against the journal: orphan, live or not ours.

Pure: no I/O and no clock (the time is an argument), so every rule is
tested with plain tables of journals. `sagakit.reconcile.reconciling`
lists the resources, reads the runs and carries the verdicts out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sagakit.journal import Event, EventKind, Phase, RunStatus

__all__ = [
    "COMPENSATION_SUFFIX",
    "Reason",
    "StepFate",
    "Verdict",
    "classify",
    "parse_key",
    "step_fate",
]

COMPENSATION_SUFFIX: Final = "/compensate"


class Verdict(StrEnum):
    """What reconciliation makes of a resource."""

    ORPHAN = "orphan"
    """No run owns it: removed with ``apply``."""
    LIVE = "live"
    """A run owns it, or may still: never touched."""
    IGNORED = "ignored"
    """Not created by a step of this saga (its key says so): never touched."""


class Reason(StrEnum):
    """Why a resource got its verdict."""

    # orphans
    STEP_COMPENSATED = "step_compensated"
    """Its step was undone (the compensation succeeded, or a person resolved it), yet it stands."""
    RUN_ENDED_WITHOUT_STEP = "run_ended_without_step"
    """Its run finished and its step never succeeded (it failed after creating it)."""
    UNKNOWN_RUN = "unknown_run"
    """No run of that id is stored: never started here, or purged since."""
    # live
    IN_GRACE = "in_grace"
    """Younger than the grace period: its step may still be in flight."""
    OWNED = "owned"
    """Its step succeeded and was not undone."""
    IN_FLIGHT = "in_flight"
    """Its run is still going (or waits for a person) and its step has not settled."""
    RUN_NOT_SETTLED = "run_not_settled"
    """An orphan-to-be: its step is undone, but its run is still driven; next time."""
    AGE_UNKNOWN = "age_unknown"
    """No run of that id is stored and its system does not say when it was made:
    nothing proves it is past the grace period, so it is left alone."""
    # ignored
    FOREIGN_KEY = "foreign_key"
    """Its key is not ``run_id/step`` of a step of this saga (or of the reconciler's step)."""
    OTHER_SAGA = "other_saga"
    """Its key names a run of another saga."""


def parse_key(
    key: str | None, steps: Collection[str], *, only: str | None = None
) -> tuple[str, str] | None:
    """The ``(run_id, step)`` an action's idempotency key names, or None if not one of ours.

    A key is ``run_id/step`` (`sagakit.journal.idempotency_key`); a run id
    never holds a ``/``, so the first ``/`` ends it. The step must be one of
    ``steps`` (and ``only``, if given). A compensation's key
    (``.../compensate``) is not an action's: None.
    """
    if not key:
        return None
    run_id, slash, step = key.partition("/")
    if not slash or not run_id or step not in steps:
        return None
    if only is not None and step != only:
        return None
    return run_id, step


@dataclass(frozen=True, slots=True)
class StepFate:
    """What a run's journal says about one step, as reconciliation needs it.

    Attributes:
        started: Its action was ever started.
        succeeded: Its action succeeded (or a person resolved it, or a
            failure handler let the saga go on without it).
        compensated: Its compensation succeeded, or a person resolved it.
        last_at: When the journal last spoke of the step (or of the run,
            if never of the step): the age of a resource that tells none.
    """

    started: bool = False
    succeeded: bool = False
    compensated: bool = False
    last_at: float | None = None


def step_fate(events: Sequence[Event], step: str) -> StepFate:
    """Fold a run's journal into the fate of one step.

    Read from the events alone, not through the saga's plan, so that runs of
    versions this process does not load are read alike.
    """
    started = succeeded = compensated = False
    last_at: float | None = events[-1].at if events else None
    for event in events:
        if event.step != step:
            continue
        last_at = event.at
        kind = event.kind
        if kind is EventKind.STEP_STARTED:
            started = True
        elif kind is EventKind.STEP_SUCCEEDED or (
            # a failure handler let the saga go on without the step: as good as done
            kind is EventKind.STEP_FAILED and event.data.get("handled") == "continue"
        ):
            succeeded = True
        elif kind is EventKind.COMPENSATION_SUCCEEDED:
            compensated = True
        elif kind is EventKind.RESOLVED:
            if event.data.get("phase", Phase.ACTION) == Phase.COMPENSATION:
                compensated = True
            else:
                succeeded = True
    return StepFate(started, succeeded, compensated, last_at)


# A run in one of these statuses may take an ``orphan_removed`` event: nobody
# drives it (a run that needs attention waits for a person, who is told).
_JOURNALED: Final = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.ROLLED_BACK,
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.NEEDS_ATTENTION,
    }
)


def classify(
    *,
    status: RunStatus | None,
    fate: StepFate | None,
    created_at: float | None,
    now: float,
    grace: float,
) -> tuple[Verdict, Reason]:
    """The verdict on one resource whose key names a run of this saga and one of its steps.

    Args:
        status: The run's status, or None if no such run is stored.
        fate: The step's fate in that run's journal (None with no run).
        created_at: When the resource was created, if its system says.
        now: The time of the reconciliation.
        grace: Seconds a resource is left alone after it was created (or,
            if its system does not say when, after its step or run last
            changed): a step in flight is never touched.
    """
    age_from = created_at if created_at is not None else (fate.last_at if fate else None)
    if age_from is not None and now - age_from < grace:
        return Verdict.LIVE, Reason.IN_GRACE
    if status is None or fate is None:
        if age_from is None and grace > 0:
            # Nothing to age it by: it may belong to a run stored elsewhere
            # (another --db) or made a moment ago. Removing it would be a guess.
            return Verdict.LIVE, Reason.AGE_UNKNOWN
        # A step calls out only once its run is stored: a key with no run is
        # one whose run was purged, or that was made outside any run.
        return Verdict.ORPHAN, Reason.UNKNOWN_RUN
    if fate.compensated:
        if status in _JOURNALED:
            return Verdict.ORPHAN, Reason.STEP_COMPENSATED
        return Verdict.LIVE, Reason.RUN_NOT_SETTLED
    if fate.succeeded:
        return Verdict.LIVE, Reason.OWNED
    if status.terminal:
        return Verdict.ORPHAN, Reason.RUN_ENDED_WITHOUT_STEP
    return Verdict.LIVE, Reason.IN_FLIGHT

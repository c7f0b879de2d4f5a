"""Checking the runs in flight against the definitions loaded now, before a deploy.

`check_runs` reads every run that is not settled (pending, running,
compensating, paused, needs attention), page by page, and holds each journal
against the saga registered for its name and version, with the very function
an engine calls on a run it claims (`SagaRegistry.replay`). A run that does
not fit is a `Misfit`:

- ``no_definition``: its saga and version are not registered, so a worker
  with these definitions leaves it untouched;
- ``refused``: its journal names a step the definition no longer has
  (renamed or removed), so a worker holds it back;
- ``changed``: its journal folds, but records what the definition would never
  have done (`sagakit.core.fit.changes`), so a worker would drive it on a
  definition that does not match its past.

Nothing is written: the runs are read as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sagakit.core import fit
from sagakit.engine.registry import SagaRegistry
from sagakit.errors import JournalMismatch
from sagakit.journal import Event, RunStatus
from sagakit.store import ACTIVE_STATUSES, RunRecord, Store

__all__ = ["CHECKED_STATUSES", "CheckReport", "Misfit", "MisfitKind", "check_run", "check_runs"]

CHECKED_STATUSES: tuple[RunStatus, ...] = (
    *ACTIVE_STATUSES,
    RunStatus.PAUSED,
    RunStatus.NEEDS_ATTENTION,
)
"""The statuses of the runs a check reads: every run that may still move."""

PAGE = 500
"""Runs read (with their journals) per query: a million runs are never held at once."""


class MisfitKind(StrEnum):
    """How a run does not fit the definitions loaded, and what a worker would do with it."""

    NO_DEFINITION = "no_definition"
    """Its saga and version are not registered: a worker leaves it untouched."""
    REFUSED = "refused"
    """Its journal names steps the definition lacks: a worker holds it back."""
    CHANGED = "changed"
    """Its journal records what the definition would not do: a worker drives it anyway."""


@dataclass(frozen=True, slots=True)
class Misfit:
    """A run that the definitions loaded now do not fit.

    Attributes:
        run_id: The run.
        saga: Its saga's name.
        version: The saga version it was started with.
        status: Its status now.
        kind: How it does not fit.
        reasons: One sentence per problem found, naming the steps.
    """

    run_id: str
    saga: str
    version: str
    status: RunStatus
    kind: MisfitKind
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        """The reasons in one line."""
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `AsyncEngine.check` found.

    Attributes:
        checked: How many runs were read.
        misfits: The runs that do not fit, in the order they were read.
        saga: The saga the check was limited to, if any.
    """

    checked: int
    misfits: list[Misfit] = field(default_factory=list)
    saga: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every run checked fits."""
        return not self.misfits


def check_run(registry: SagaRegistry, record: RunRecord, events: Sequence[Event]) -> Misfit | None:
    """Hold one run's journal against the saga registered for it; None when it fits."""

    def misfit(kind: MisfitKind, reasons: Sequence[str]) -> Misfit:
        return Misfit(
            record.id, record.saga, record.version, RunStatus(record.status), kind, tuple(reasons)
        )

    if registry.find(record.saga, record.version) is None:
        loaded = ", ".join(registry.versions(record.saga)) or "none"
        return misfit(
            MisfitKind.NO_DEFINITION,
            [
                f"no definition for saga {record.saga!r} version {record.version!r} "
                f"(versions loaded: {loaded}): a worker would leave it untouched"
            ],
        )
    try:
        saga, _ = registry.replay(record, events)  # exactly what a claiming engine does
    except JournalMismatch as exc:
        plan = registry.saga_for(record).plan()
        unknown = fit.unknown_steps(plan, events)
        if unknown:
            names = ", ".join(repr(s) for s in unknown)
            step = "step" if len(unknown) == 1 else "steps"
            why = f"{step} {names} in its journal not in the definition (renamed or removed)"
        else:  # not about steps (a journal with a gap): say what the fold said
            why = f"its journal does not fold: {exc.__cause__}"
        return misfit(MisfitKind.REFUSED, [f"{why}: a worker would hold it back"])
    changed = fit.changes(saga.plan(), events)
    return misfit(MisfitKind.CHANGED, changed) if changed else None


async def check_runs(
    store: Store,
    registry: SagaRegistry,
    *,
    saga: str | None = None,
    page: int = PAGE,
) -> AsyncIterator[tuple[RunRecord, Misfit | None]]:
    """Every run not settled, with its misfit (None if it fits), a page at a time.

    Runs are read status by status, newest first; a run that changes status
    while the check reads may be read twice or not at all (the check takes
    no lock and writes nothing).

    Args:
        store: Where the runs are kept (open; may be read-only).
        registry: The definitions to check against.
        saga: Only the runs of this saga.
        page: Runs (and their journals) read per query.
    """
    for status in CHECKED_STATUSES:
        offset = 0
        while True:
            records = await store.list_runs(status=status, saga=saga, limit=page, offset=offset)
            offset += len(records)
            journals = await store.journals([r.id for r in records])
            for record in records:
                yield record, check_run(registry, record, journals.get(record.id, []))
            if len(records) < page:
                break

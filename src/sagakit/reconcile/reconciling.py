"""One reconciliation pass: list each kind of resource, judge it, remove orphans if told.

The work of `AsyncEngine.reconcile` (and so of ``sagakit reconcile`` and
``sagakit worker --reconcile-every``). The verdicts come from the pure
`sagakit.reconcile.match`; this module performs the I/O around them.

A removal from a run that is stored is done under the run's lease: the run
is claimed, its journal read again and the resource judged again (an
operator may have acted meanwhile), then the resource is removed and an
``orphan_removed`` event journaled in one commit that hands the lease back,
status and state unchanged. A resource whose run no store row knows (never
started, or purged) has no journal to go to: its removal is logged (a
warning on the ``sagakit`` logger) and reported, nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sagakit import runlog
from sagakit.definition import Reconciler, Resource, Saga
from sagakit.journal import ErrorInfo, Event, EventKind, Phase, RunStatus
from sagakit.observe import Observers
from sagakit.reconcile.match import Reason, StepFate, Verdict, classify, parse_key, step_fate
from sagakit.redaction import Redactor
from sagakit.store import Commit, Lease, RunRecord, Store

__all__ = ["Finding", "ListingFailure", "Outcome", "ReconcileReport", "reconcile"]

logger = logging.getLogger("sagakit")


class Outcome(StrEnum):
    """What a reconciliation pass did with a resource."""

    KEPT = "kept"
    """Live or not ours: left alone."""
    FOUND = "found"
    """An orphan, reported only (a dry run)."""
    REMOVED = "removed"
    """An orphan, removed."""
    FAILED = "failed"
    """An orphan whose removal raised (``error`` says what)."""
    SKIPPED = "skipped"
    """An orphan left for the next pass: its run was busy, or moved on meanwhile."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One resource, its verdict and what was done with it.

    Attributes:
        saga: The saga whose reconciler listed it.
        kind: The reconciler's kind.
        resource: The resource as listed.
        verdict: Orphan, live or ignored.
        reason: Why (`sagakit.reconcile.Reason`).
        run_id: The run its key names, if it names one.
        step: The step its key names, if any.
        run_status: That run's status, if it is stored.
        outcome: What was done.
        error: Why the removal failed (sensitive values masked), or why it
            was skipped.
        journaled: Whether the removal was journaled on its run.
    """

    saga: str
    kind: str
    resource: Resource
    verdict: Verdict
    reason: Reason
    run_id: str | None = None
    step: str | None = None
    run_status: RunStatus | None = None
    outcome: Outcome = Outcome.KEPT
    error: ErrorInfo | None = None
    journaled: bool = False


@dataclass(frozen=True, slots=True)
class ListingFailure:
    """A reconciler whose ``list`` failed (raised, or returned no list): its kind went unchecked."""

    saga: str
    kind: str
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciliation pass found and did.

    Attributes:
        at: When it ran (the engine's clock).
        grace: The grace period, in seconds.
        applied: Whether orphans were removed (False: a dry run).
        findings: Every resource listed, in the order listed.
        listing_failures: The reconcilers whose ``list`` failed.
    """

    at: float
    grace: float
    applied: bool
    findings: tuple[Finding, ...]
    listing_failures: tuple[ListingFailure, ...] = ()

    @property
    def orphans(self) -> tuple[Finding, ...]:
        """The orphans found (removed or not)."""
        return tuple(f for f in self.findings if f.verdict is Verdict.ORPHAN)

    @property
    def removed(self) -> tuple[Finding, ...]:
        """The orphans removed."""
        return tuple(f for f in self.findings if f.outcome is Outcome.REMOVED)

    @property
    def failed(self) -> tuple[Finding, ...]:
        """The orphans whose removal failed."""
        return tuple(f for f in self.findings if f.outcome is Outcome.FAILED)

    @property
    def ok(self) -> bool:
        """True when every listing worked and no removal failed."""
        return not self.failed and not self.listing_failures


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a user's function: a coroutine function awaited, a plain one on a thread."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    outcome = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _error(exc: BaseException, redactor: Redactor) -> ErrorInfo:
    info = ErrorInfo.from_exception(exc, step=None, phase=Phase.COMPENSATION, attempt=None)
    return redactor.error(info)


class _Pass:
    """One pass over the reconcilers of the sagas given; `run` does it."""

    def __init__(
        self,
        store: Store,
        *,
        owner: str,
        clock: Callable[[], float],
        lease_seconds: float,
        grace: float,
        apply: bool,
        observers: Observers | None = None,
    ) -> None:
        self.store = store
        self.observers = observers
        self.owner = owner
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.grace = grace
        self.apply = apply
        self.at = clock()
        self.findings: list[Finding] = []
        self.failures: list[ListingFailure] = []
        self._runs: dict[str, RunRecord | None] = {}
        self._journals: dict[str, list[Event]] = {}

    async def run(self, sagas: Sequence[tuple[Saga[Any], frozenset[str]]]) -> ReconcileReport:
        for saga, steps in sagas:
            for reconciler in saga.reconcilers:
                listed = await self._list(saga, reconciler)
                if listed is None:
                    continue
                judged = await self._judge(saga, reconciler, steps, listed)
                for finding in judged:
                    done = finding
                    if self.apply and finding.verdict is Verdict.ORPHAN:
                        done = await self._remove(saga, reconciler, finding)
                    self.findings.append(done)
        return ReconcileReport(
            at=self.at,
            grace=self.grace,
            applied=self.apply,
            findings=tuple(self.findings),
            listing_failures=tuple(self.failures),
        )

    async def _list(self, saga: Saga[Any], reconciler: Reconciler) -> list[Resource] | None:
        try:
            raw = await _call(reconciler.list)
            if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
                raise TypeError(f"list returned a {type(raw).__name__}, not a list of resources")
            return [Resource.of(item, kind=reconciler.kind) for item in raw]
        except Exception as exc:
            error = _error(exc, Redactor(saga.sensitive))
            logger.error(
                "saga %s: listing the %ss to reconcile failed: %s: %s",
                saga.name,
                reconciler.kind,
                error.type,
                error.message,
            )
            self.failures.append(ListingFailure(saga.name, reconciler.kind, error))
            return None

    async def _read(self, run_ids: Iterable[str]) -> None:
        """Read the runs (and journals) not read yet in this pass."""
        fresh = [run_id for run_id in dict.fromkeys(run_ids) if run_id not in self._runs]
        for run_id in fresh:
            self._runs[run_id] = await self.store.get_run(run_id)
        known = [run_id for run_id in fresh if self._runs[run_id] is not None]
        if known:
            self._journals.update(await self.store.journals(known))

    def _verdict(
        self, saga: Saga[Any], resource: Resource, record: RunRecord | None, fate: StepFate | None
    ) -> tuple[Verdict, Reason]:
        if record is not None and record.saga != saga.name:
            return Verdict.IGNORED, Reason.OTHER_SAGA
        return classify(
            status=None if record is None else RunStatus(record.status),
            fate=fate,
            created_at=resource.created_at,
            now=self.at,
            grace=self.grace,
        )

    async def _judge(
        self,
        saga: Saga[Any],
        reconciler: Reconciler,
        steps: frozenset[str],
        listed: list[Resource],
    ) -> list[Finding]:
        keys = [parse_key(r.idempotency_key, steps, only=reconciler.step) for r in listed]
        await self._read(key[0] for key in keys if key is not None)
        judged: list[Finding] = []
        for resource, key in zip(listed, keys, strict=True):
            if key is None:
                judged.append(
                    Finding(
                        saga.name, reconciler.kind, resource, Verdict.IGNORED, Reason.FOREIGN_KEY
                    )
                )
                continue
            run_id, step = key
            record = self._runs.get(run_id)
            fate = None if record is None else step_fate(self._journals.get(run_id, []), step)
            verdict, reason = self._verdict(saga, resource, record, fate)
            judged.append(
                Finding(
                    saga.name,
                    reconciler.kind,
                    resource,
                    verdict,
                    reason,
                    run_id=run_id,
                    step=step,
                    run_status=None if record is None else RunStatus(record.status),
                    outcome=Outcome.FOUND if verdict is Verdict.ORPHAN else Outcome.KEPT,
                )
            )
        return judged

    def _skipped(self, finding: Finding, why: str) -> Finding:
        logger.info(
            "orphaned %s %s of run %s left for the next pass: %s",
            finding.kind,
            finding.resource.id,
            finding.run_id,
            why,
            extra=_about(finding),
        )
        error = ErrorInfo(type="Skipped", message=why, phase=Phase.COMPENSATION)
        return _replace(finding, outcome=Outcome.SKIPPED, error=error)

    async def _remove(self, saga: Saga[Any], reconciler: Reconciler, finding: Finding) -> Finding:
        # Only a finding whose key named a run and a step is ever an orphan.
        assert finding.run_id is not None
        assert finding.step is not None
        run_id = finding.run_id
        now = self.clock()
        if finding.reason is Reason.UNKNOWN_RUN:
            if await self.store.get_run(run_id) is not None:  # a run of that id came since
                return self._skipped(finding, "a run of that id is stored now")
            return await self._removal(saga, reconciler, finding)
        taken = await self.store.claim(
            run_id, owner=self.owner, now=now, lease_until=now + self.lease_seconds
        )
        if taken is None:
            return self._skipped(finding, "another process holds the run")
        lease = Lease(self.owner, taken.lease_epoch)
        try:
            events = await self.store.journal(run_id)
            fate = step_fate(events, finding.step)
            verdict, reason = self._verdict(saga, finding.resource, taken, fate)
            if verdict is not Verdict.ORPHAN:
                await self.store.release(run_id, lease)
                return self._skipped(finding, f"the run moved on meanwhile ({reason})")
            finding = _replace(finding, reason=reason, run_status=RunStatus(taken.status))
            return await self._removal(saga, reconciler, finding, held=(taken, lease, events))
        except BaseException:
            await self.store.release(run_id, lease)
            raise

    async def _removal(
        self,
        saga: Saga[Any],
        reconciler: Reconciler,
        finding: Finding,
        *,
        held: tuple[RunRecord, Lease, Sequence[Event]] | None = None,
    ) -> Finding:
        """Remove the orphan; journal it on its run if ``held`` (the run, its lease, journal)."""
        record, lease, events = held if held is not None else (None, None, ())
        redactor = Redactor(saga.sensitive).collect(record.state if record else {})
        resource = finding.resource
        try:
            await _call(reconciler.remove, resource)
        except Exception as exc:
            error = _error(exc, redactor)
            logger.error(
                "removing orphaned %s %s (%s, run %s) failed: %s: %s",
                finding.kind,
                resource.id,
                finding.reason,
                finding.run_id,
                error.type,
                error.message,
                extra=_about(finding),
            )
            if record is not None and lease is not None:
                await self.store.release(record.id, lease)
            return _replace(finding, outcome=Outcome.FAILED, error=error)
        logger.warning(
            "removed orphaned %s %s (key %s): %s%s",
            finding.kind,
            resource.id,
            resource.idempotency_key,
            finding.reason,
            "" if record is not None else "; no run to journal it on",
            extra=_about(finding),
        )
        if record is None or lease is None:
            return _replace(finding, outcome=Outcome.REMOVED)
        last = events[-1].seq if events else record.last_seq
        event = Event(
            record.id,
            last + 1,
            EventKind.ORPHAN_REMOVED,
            self.clock(),
            finding.step,
            None,
            {
                "kind": finding.kind,
                "resource": resource.id,
                "key": resource.idempotency_key,
                "reason": str(finding.reason),
                "by": self.owner,
            },
        )
        commit = Commit(
            record.id,
            lease,
            (event,),
            RunStatus(record.status),
            dict(record.state),
            record.error,
            event.at,
            wake_at=record.wake_at,  # a claim keeps the timer of an alert owed
            release=True,
            keeps_status=True,
        )
        try:
            await self.store.commit(commit)
        except Exception as exc:
            # Removed, but not journaled: the report and the log say so.
            logger.error(
                "run %s: journaling the removal of %s failed: %s",
                record.id,
                resource.id,
                exc,
                extra=runlog.extra(record.id, record.saga, record.version),
            )
            await self.store.release(record.id, lease)
            return _replace(finding, outcome=Outcome.REMOVED, error=_error(exc, redactor))
        if self.observers is not None:
            first = events[0] if events else None
            trace = first.data.get("trace") if first is not None else None
            self.observers.committed(
                record.saga,
                record.version,
                (event,),
                state=commit.state,
                sensitive=saga.sensitive,
                trace=trace if isinstance(trace, dict) else None,
            )
        return _replace(finding, outcome=Outcome.REMOVED, journaled=True)


def _about(finding: Finding) -> dict[str, Any]:
    """A record's run fields for ``finding`` (none when no run owns its resource)."""
    if finding.run_id is None:
        return {"saga": finding.saga}
    return runlog.extra(finding.run_id, finding.saga, step=finding.step)


def _replace(finding: Finding, **changes: Any) -> Finding:
    return replace(finding, **changes)


async def reconcile(
    store: Store,
    sagas: Sequence[tuple[Saga[Any], frozenset[str]]],
    *,
    owner: str,
    clock: Callable[[], float],
    lease_seconds: float,
    grace: float,
    apply: bool,
    observers: Observers | None = None,
) -> ReconcileReport:
    """Run one reconciliation pass over the reconcilers of ``sagas``.

    Args:
        store: Where the runs are (open).
        sagas: Each saga whose reconcilers run, with the names of the steps
            a key may name (those of every version loaded).
        owner: The name leases are taken in, and the ``by`` of each
            ``orphan_removed`` event.
        clock: Seconds since the epoch.
        lease_seconds: How long a run is held while its orphan is removed.
        grace: Seconds a resource is left alone after it was created.
        apply: Remove the orphans (False: only report them).
        observers: Told of each ``orphan_removed`` journaled.

    Returns:
        What was found and done. A ``list`` or ``remove`` that raises is
        reported there, never raised; the others go on.
    """
    work = _Pass(
        store,
        owner=owner,
        clock=clock,
        lease_seconds=lease_seconds,
        grace=grace,
        apply=apply,
        observers=observers,
    )
    return await work.run(sagas)

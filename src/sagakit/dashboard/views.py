"""What each page shows, read from an `Engine` and masked: no HTML, no I/O of its own.

Every function here is synchronous (the `Engine`'s calls block), so the
application runs them on a worker thread, never on its event loop. What
they return is masked exactly as ``sagakit show`` masks it: fields a saga
marks sensitive, and any text quoting their values, read as ``***``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sagakit.engine import Engine
from sagakit.errors import RunNotFound, SagaError
from sagakit.journal import ErrorInfo, EventKind, Phase, RunStatus
from sagakit.redaction import Redactor
from sagakit.run import Run
from sagakit.timeline import build_timeline, format_duration, mark_details, mark_label
from sagakit.timeline.build import Mark, Outcome, Row, Timeline

PAGE_SIZE = 50
"""Runs per page of the runs list and the inbox."""

MAX_PAGE = 20_000
"""The last page number taken (a million runs at `PAGE_SIZE`): beyond, a request is refused."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a run's timeline, as the page draws it.

    Attributes:
        at: Seconds since the run started, as ``sagakit show`` prints them.
        label: The step (``undo step`` for a compensation) or the mark's label.
        details: The mark's details, or a row's note.
        outcome: A row's outcome; ``mark`` for a mark.
        attempts: A row's attempts.
        took: A row's duration.
        errors: Every error of the row's attempts, oldest first, or the mark's.
        result: What the step returned (the state it changed), masked.
        by: Who acted, for a mark that names it.
    """

    at: str
    label: str
    details: str = ""
    outcome: str = "mark"
    attempts: int = 0
    took: str = ""
    errors: tuple[ErrorInfo, ...] = ()
    result: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """A cancel or signal recorded for a run and not acted on yet (its payload not shown)."""

    kind: str
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class ShownRun:
    """A run as its page and the inbox show it, every sensitive field masked.

    Attributes:
        run: The run, masked.
        timeline: Its timeline, built from the masked journal.
        entries: The timeline's lines in journal order.
        state: The state now, as indented JSON (masked).
        pending: Requests not acted on yet.
        question: The question a paused run waits on, if it does.
        options: The answers (signal names) the question takes; empty for any.
        halted: The row the run halted on, when it needs attention.
        left_to_undo: Steps done and not yet undone, in the order they would be undone.
        errors: The run's error, then every compensation's, each once.
        loaded: Whether the run's saga version is registered here (retry,
            resolve and answers are then driven here).
    """

    run: Run
    timeline: Timeline
    entries: tuple[Entry, ...]
    state: str
    pending: tuple[Pending, ...]
    question: str | None = None
    options: tuple[str, ...] = ()
    halted: Row | None = None
    left_to_undo: tuple[str, ...] = ()
    errors: tuple[ErrorInfo, ...] = ()
    loaded: bool = False


@dataclass(frozen=True, slots=True)
class Overview:
    """Runs by status per saga, and how many need attention: every run counted."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    attention: int = 0
    due: int = 0
    """Runs due for work that no worker holds: the backlog, across every process."""
    oldest_wait: float | None = None
    """Seconds the longest-waiting of them has waited (see `Backlog.oldest_due`)."""

    @property
    def statuses(self) -> list[str]:
        """Every status, in the order the page shows them."""
        return [status.value for status in RunStatus]


def sensitive_names(engine: Engine, saga: str) -> frozenset[str]:
    """The fields every registered version of ``saga`` marks sensitive."""
    return frozenset().union(*(s.sensitive for s in engine.sagas if s.name == saga))


def overview(engine: Engine) -> Overview:
    """Runs by status per saga: every run counted, in one query on SQL stores."""
    counts: dict[str, dict[str, int]] = {}
    attention = 0
    for saga, per in sorted(engine.count_runs().items()):
        counts[saga] = {status.value: count for status, count in per.items()}
        attention += per.get(RunStatus.NEEDS_ATTENTION, 0)
    backlog = engine.backlog()
    oldest = backlog.oldest_due
    wait = None if oldest is None else max(0.0, engine.clock() - oldest)
    return Overview(counts, attention, backlog.due, wait)


def runs_page(
    engine: Engine, *, status: RunStatus | None, saga: str | None, page: int
) -> tuple[list[Run], bool]:
    """One page of runs, newest first, and whether another page follows.

    Only errors are shown of a run in the list: they are masked with the
    run's journal, as ``sagakit list`` masks them.
    """
    found = engine.runs(status=status, saga=saga, limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE)
    shown = [masked_errors(engine, run) for run in found[:PAGE_SIZE]]
    return shown, len(found) > PAGE_SIZE


def find_run(engine: Engine, run_id: str) -> list[Run]:
    """The run of this id, in a list of one, or an empty list."""
    try:
        return [masked_errors(engine, engine.get(run_id))]
    except RunNotFound:
        return []


def inbox(engine: Engine, *, page: int) -> tuple[list[ShownRun], bool]:
    """The runs that need attention, newest first, each as its page shows it."""
    found = engine.runs(
        status=RunStatus.NEEDS_ATTENTION, limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE
    )
    shown = []
    for run in found[:PAGE_SIZE]:
        try:
            shown.append(shown_run(engine, run.id))
        except RunNotFound:  # purged since it was listed
            continue
    return shown, len(found) > PAGE_SIZE


def masked_errors(engine: Engine, run: Run) -> Run:
    """The run with its errors masked with its journal, as ``sagakit list`` masks them."""
    if not (run.error or run.compensation_errors):
        return run
    events = engine.history(run.id)
    return run.redacted(Redactor.for_run(events, sensitive_names(engine, run.saga), run.data))


def shown_run(engine: Engine, run_id: str) -> ShownRun:
    """A run, its timeline and what an operator may do with it, masked.

    Raises:
        RunNotFound: no such run.
    """
    run = engine.get(run_id)
    events = engine.history(run_id)
    redactor = Redactor.for_run(events, sensitive_names(engine, run.saga), run.data)
    run = run.redacted(redactor)
    events = redactor.events(events)
    timeline = build_timeline(events, run)
    question: str | None = None
    options: tuple[str, ...] = ()
    if run.status is RunStatus.PAUSED:
        paused = next((e for e in reversed(events) if e.kind is EventKind.PAUSED), None)
        if paused is not None:
            question = str(paused.data.get("question") or "paused")
            options = tuple(str(o) for o in paused.data.get("options") or ())
    halted = next((r for r in timeline.rows if r.outcome is Outcome.NEEDS_ATTENTION), None)
    errors: list[ErrorInfo] = []
    for error in (run.error, *run.compensation_errors):
        if error is not None and error not in errors:
            errors.append(error)
    return ShownRun(
        run=run,
        timeline=timeline,
        entries=tuple(_entries(timeline)),
        state=json.dumps(run.data, indent=2, sort_keys=True, ensure_ascii=False, default=str),
        pending=tuple(_pending(engine, run, redactor)),
        question=question,
        options=options,
        halted=halted,
        left_to_undo=_left_to_undo(engine, run, timeline),
        errors=tuple(errors),
        loaded=_loaded(engine, run),
    )


def _loaded(engine: Engine, run: Run) -> bool:
    try:
        engine.saga(run.saga, run.version)
    except SagaError:
        return False
    return True


def _left_to_undo(engine: Engine, run: Run, timeline: Timeline) -> tuple[str, ...]:
    """Steps that took effect and are not undone yet, last done first (the undo order).

    With the saga registered, only steps that have a compensation are named;
    without it, every step done is (the journal does not say which have one).
    """
    if run.status not in (RunStatus.NEEDS_ATTENTION, RunStatus.COMPENSATING):
        return ()
    try:
        saga = engine.saga(run.saga, run.version)
    except SagaError:
        saga = None
    left = [
        row.step
        for row in timeline.rows
        if row.phase is Phase.ACTION
        and row.outcome is Outcome.SUCCEEDED
        and (saga is None or _compensable(saga, row.step))
    ]
    # A compensation halted on is left to undo too: it has not succeeded.
    halted = [
        row.step
        for row in timeline.rows
        if row.phase is Phase.COMPENSATION and row.outcome is Outcome.NEEDS_ATTENTION
    ]
    return (*halted, *reversed([s for s in left if s not in halted]))


def _compensable(saga: Any, step: str) -> bool:
    try:
        return saga[step].compensation is not None
    except (KeyError, SagaError):
        return True  # a step this version does not know: name it rather than hide it


def _offset(at: float | None, origin: float | None) -> str:
    if at is None or origin is None:
        return ""
    return f"+{format_duration(at - origin)}"


def _entries(timeline: Timeline) -> list[Entry]:
    origin = timeline.started_at
    entries: list[Entry] = []
    for entry in timeline.entries:
        if isinstance(entry, Mark):
            entries.append(
                Entry(
                    at=_offset(entry.at, origin),
                    label=mark_label(entry),
                    details=mark_details(entry),
                    errors=(entry.error,) if entry.error is not None else (),
                    by=entry.by,
                )
            )
            continue
        errors = tuple(a.error for a in entry.attempts if a.error is not None)
        entries.append(
            Entry(
                at=_offset(entry.started_at, origin),
                label=f"undo {entry.step}" if entry.is_compensation else entry.step,
                details=f"done by hand: {entry.note}" if entry.note is not None else "",
                outcome=entry.outcome.value,
                attempts=len(entry.attempts),
                took=format_duration(entry.duration),
                errors=errors,
                result=json.dumps(entry.result, sort_keys=True, ensure_ascii=False, default=str)
                if entry.result
                else None,
            )
        )
    return entries


def _pending(engine: Engine, run: Run, redactor: Redactor) -> list[Pending]:
    if not run.pending:
        return []
    shown = []
    for mail in engine.pending(run.id):
        data = mail.data if isinstance(mail.data, dict) else {}
        if mail.kind == "cancel":
            text = f"cancel ({data.get('reason') or 'no reason given'})"
            if data.get("force"):
                text += ", forced"
        else:
            # Not its payload: it may hold fields the saga marks sensitive.
            text = f"signal {data.get('name')}"
        if data.get("by"):
            text += f", by {data['by']}"
        shown.append(Pending(kind=mail.kind, at=mail.at, text=redactor.text(text)))
    return shown


def statuses() -> Sequence[str]:
    """The run statuses, as the filters offer them."""
    return [status.value for status in RunStatus]

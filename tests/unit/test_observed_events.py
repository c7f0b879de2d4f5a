"""`observed`, the fast path every commit takes, pinned to the plain one it replaced.

`reference_observed` below is the implementation `observed` had before it
was rewritten for speed (a table per kind, events made without __init__).
Journals of every kind of event, with errors, timeouts, retries, pauses,
sensitive values and starts committed elsewhere, must give equal observed
events, field by field, and leave equal attempts in flight.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from sagakit.journal import JSON, ErrorInfo, Event, EventKind, Phase, RunStatus
from sagakit.observe.events import AttemptOutcome, ObservedEvent, Starts, observed
from sagakit.redaction import Redactor

_MAX_RUNS_STARTED = 100_000

_STARTED = {
    EventKind.STEP_STARTED: Phase.ACTION,
    EventKind.COMPENSATION_STARTED: Phase.COMPENSATION,
}
_ENDED = {
    EventKind.STEP_SUCCEEDED: Phase.ACTION,
    EventKind.STEP_FAILED: Phase.ACTION,
    EventKind.STEP_WITHDRAWN: Phase.ACTION,
    EventKind.COMPENSATION_SUCCEEDED: Phase.COMPENSATION,
    EventKind.COMPENSATION_FAILED: Phase.COMPENSATION,
}
# Events whose data names the phase of the step they concern.
_PHASED = frozenset({EventKind.NEEDS_ATTENTION, EventKind.RETRIED, EventKind.RESOLVED})
# Keep no more runs' attempts in flight than this: the oldest are forgotten
# (a run lost to another process never tells its attempts' ends here).
_MAX_RUNS_STARTED = 100_000


def reference_observed(
    saga: str,
    version: str,
    events: Sequence[Event],
    *,
    starts: Starts,
    trace: Mapping[str, str] | None = None,
    run_started_at: float | None = None,
    redactor: Redactor | None = None,
) -> list[ObservedEvent]:
    """`observed` as it was written before its fast path: branch by branch.

    Args:
        saga: The run's saga.
        version: Its version.
        events: The events committed, in order.
        starts: When the attempts in flight started (updated: a start is
            kept until its attempt ends, a run's until it finishes).
        trace: The trace context stored with the run.
        run_started_at: When the run started.
        redactor: Masks the run's sensitive values in errors and reasons.
    """
    out: list[ObservedEvent] = []
    for event in events:
        kind = event.kind
        data = event.data
        phase: Phase | None = None
        outcome: AttemptOutcome | None = None
        started_at: float | None = None
        retry_at: float | None = None
        status: RunStatus | None = None
        reason: str | None = None
        if kind in _STARTED:
            phase = _STARTED[kind]
            if event.step is not None:
                if event.run_id not in starts and len(starts) >= _MAX_RUNS_STARTED:
                    del starts[next(iter(starts))]
                run_starts = starts.get(event.run_id)
                if run_starts is None:
                    run_starts = starts[event.run_id] = {}
                run_starts[(phase, event.step)] = (event.attempt or 0, event.at)
        elif kind in _ENDED or (kind is EventKind.PAUSED and event.step is not None):
            phase = _ENDED.get(kind, Phase.ACTION)
            outcome = _outcome(kind, data)
            started_at = _started(starts, event, phase)
            retry_at = _float(data.get("retry_at"))
        elif kind in _PHASED:
            phase = Phase(str(data.get("phase", Phase.ACTION)))
            reason = _text(data.get("reason"), redactor)
        elif kind is EventKind.RUN_FINISHED:
            status = RunStatus(str(data["status"]))
            started_at = run_started_at
            starts.pop(event.run_id, None)
        elif kind is EventKind.ROLLBACK_STARTED:
            reason = _text(data.get("reason"), None)
        elif kind is EventKind.CANCEL_REQUESTED:
            reason = _text(data.get("reason"), redactor)
        # `Event.error`, without a property call for the many events with none.
        raw = data.get("error")
        error = ErrorInfo.from_json(raw) if raw else None
        if error is not None and redactor:
            error = redactor.error(error)
        out.append(
            ObservedEvent(
                event.run_id,
                saga,
                version,
                event.seq,
                kind,
                event.at,
                event.step,
                phase,
                event.attempt,
                outcome,
                started_at,
                error,
                retry_at,
                status,
                reason,
                trace,
            )
        )
    return out


def _outcome(kind: EventKind, data: JSON) -> AttemptOutcome:
    if kind is EventKind.STEP_SUCCEEDED or kind is EventKind.COMPENSATION_SUCCEEDED:
        return AttemptOutcome.SUCCEEDED
    if kind is EventKind.STEP_WITHDRAWN:
        return AttemptOutcome.WITHDRAWN
    if kind is EventKind.PAUSED:
        return AttemptOutcome.PAUSED
    error = data.get("error")
    if isinstance(error, dict) and error.get("timed_out"):
        return AttemptOutcome.TIMED_OUT
    return AttemptOutcome.FAILED


def _started(starts: Starts, event: Event, phase: Phase) -> float | None:
    """When the attempt ``event`` ends started, if its start was observed here."""
    assert event.step is not None  # an attempt's end names its step
    runs = starts.get(event.run_id)
    if runs is None:
        return None
    began = runs.pop((phase, event.step), None)
    if not runs:
        del starts[event.run_id]
    if began is None or (event.attempt is not None and began[0] != event.attempt):
        return None
    return began[1]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _text(value: Any, redactor: Redactor | None) -> str | None:
    if not isinstance(value, str):
        return None
    return redactor.text(value) if redactor else value


KINDS = list(EventKind)
STEPS = ["reserve", "charge", "ship"]


def _error(rng: random.Random, step: str | None) -> JSON:
    return ErrorInfo(
        "RuntimeError",
        "card 4111111111111111 declined",
        step=step,
        timed_out=rng.random() < 0.3,
        traceback="Traceback: 4111111111111111",
    ).to_json()


def _event(rng: random.Random, run_id: str, seq: int, at: float) -> Event:
    kind = rng.choice(KINDS)
    if rng.random() < 0.5:  # most of a journal: attempts starting and ending
        kind = rng.choice(
            [
                EventKind.STEP_STARTED,
                EventKind.STEP_SUCCEEDED,
                EventKind.STEP_FAILED,
                EventKind.COMPENSATION_STARTED,
                EventKind.COMPENSATION_SUCCEEDED,
                EventKind.COMPENSATION_FAILED,
                EventKind.PAUSED,
            ]
        )
    step = rng.choice([*STEPS, None]) if rng.random() < 0.9 else None
    if kind in (EventKind.STEP_STARTED, EventKind.COMPENSATION_STARTED) or rng.random() < 0.5:
        step = step or rng.choice(STEPS)
    attempt = rng.choice([1, 2, 3, None])
    data: dict[str, Any] = {}
    if rng.random() < 0.4:
        data["error"] = _error(rng, step)
    if rng.random() < 0.2:
        data["error"] = rng.choice([None, {}, ""])
    if rng.random() < 0.3:
        data["retry_at"] = rng.choice([at + 1, int(at) + 2, "soon", None, True])
    if rng.random() < 0.5:
        data["reason"] = rng.choice(["failure", "cancel", "card 4111111111111111", 7])
    phased = (EventKind.NEEDS_ATTENTION, EventKind.RETRIED, EventKind.RESOLVED)
    if kind in phased and rng.random() < 0.7:
        data["phase"] = rng.choice(["action", "compensation"])
    if kind is EventKind.RUN_FINISHED:
        data["status"] = rng.choice([str(s) for s in RunStatus])
    if kind in (
        EventKind.STEP_SUCCEEDED,
        EventKind.STEP_FAILED,
        EventKind.STEP_WITHDRAWN,
        EventKind.COMPENSATION_SUCCEEDED,
        EventKind.COMPENSATION_FAILED,
    ):
        step = step or rng.choice(STEPS)  # an attempt's end always names its step
    return Event(run_id, seq, kind, at, step, attempt, data)


def _fields(events: Sequence[ObservedEvent]) -> list[tuple[Any, ...]]:
    return [
        tuple((f.name, getattr(e, f.name)) for f in dataclasses.fields(ObservedEvent))
        for e in events
    ]


@pytest.mark.parametrize("seed", range(40))
def test_observed_tells_what_the_reference_tells(seed: int) -> None:
    rng = random.Random(seed)
    starts_fast: Starts = {}
    starts_slow: Starts = {}
    runs = [f"run-{seed}-{i}" for i in range(4)]
    seqs = dict.fromkeys(runs, 0)
    trace: Mapping[str, str] | None = rng.choice([None, {"traceparent": "00-ab-cd-01"}])
    state = {"card": "4111111111111111"}
    told = 0
    for commit in range(150):
        run_id = rng.choice(runs)
        events = []
        for _ in range(rng.randint(1, 4)):
            seqs[run_id] += 1
            events.append(_event(rng, run_id, seqs[run_id], 1_000.0 + commit + rng.random()))
        redactor = Redactor.for_run(events, {"card"}, state) if rng.random() < 0.5 else None
        started_at = rng.choice([None, 999.5])
        fast = observed(
            "shop",
            "2",
            events,
            starts=starts_fast,
            trace=trace,
            run_started_at=started_at,
            redactor=redactor,
        )
        slow = reference_observed(
            "shop",
            "2",
            events,
            starts=starts_slow,
            trace=trace,
            run_started_at=started_at,
            redactor=redactor,
        )
        assert _fields(fast) == _fields(slow)
        assert fast == slow
        assert [type(e) for e in fast] == [ObservedEvent] * len(events)
        # Kept alike, but for the runs with no attempt in flight, which the
        # fast path keeps (empty) until they finish and the reference dropped.
        assert {run: s for run, s in starts_fast.items() if s} == starts_slow
        told += len(fast)
    assert told > 300


def test_every_kind_and_outcome_is_reached() -> None:
    """The journals above go through every branch: every kind, every outcome, starts matched."""
    kinds: set[EventKind] = set()
    outcomes: set[AttemptOutcome | None] = set()
    durations = 0
    for seed in range(40):
        rng = random.Random(seed)
        starts: Starts = {}
        for commit in range(150):
            run_id = f"run-{rng.randint(0, 3)}"
            events = [_event(rng, run_id, commit, 1_000.0 + commit) for _ in range(3)]
            for e in observed("shop", "2", events, starts=starts):
                kinds.add(e.kind)
                outcomes.add(e.outcome)
                durations += e.started_at is not None and e.outcome is not None
    assert kinds == set(EventKind)
    assert outcomes == {None, *AttemptOutcome}
    assert durations > 50

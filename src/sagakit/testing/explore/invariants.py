"""sagakit's own promises, checked on a scenario's run after it settled.

From the run's journal and the log of the calls its functions got:

- the run settles: completed, rolled back, cancelled, failed (nothing to
  undo), or needs attention only where an injected fault explains it (a
  compensation that fails for good, a pivot or retriable step that does);
- a crash is not a failure: a run whose faults are only crashes and repeated
  deliveries ends as the run without faults did;
- each step that took effect is undone exactly when it should be: once, if
  the run rolled back or was cancelled; never, if it completed; latest first
  (the members of a parallel stage in any order, or the saga's own
  compensation order);
- nothing that never started is undone.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sagakit.definition import Saga, StepKind
from sagakit.journal import Event, EventKind, Phase, RunStatus
from sagakit.testing.explore.faults import Call
from sagakit.testing.explore.plan import FaultKind, Scenario
from sagakit.testing.explore.runner import Outcome

_NEVER_ENDING = frozenset({FaultKind.CRASH, FaultKind.TWICE})


def check_invariants(
    saga: Saga[Any], scenario: Scenario, outcome: Outcome, baseline: RunStatus | None
) -> list[str]:
    """The promises the run broke, each in one sentence (empty: none).

    Args:
        saga: The user's saga.
        scenario: The scenario the run went through.
        outcome: How it went.
        baseline: How the run without faults ended (None for the baseline itself).
    """
    if outcome.problem is not None:
        return [outcome.problem]
    run = outcome.run
    if run is None:
        return ["the run could not be read back"]
    status = RunStatus(run.status)
    problems: list[str] = []
    if status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING):
        problems.append(f"the run did not settle: it is still {status.value}")
    events = outcome.events
    if status is RunStatus.NEEDS_ATTENTION and not _explains_attention(saga, scenario, outcome):
        halt = next((e for e in reversed(events) if e.kind is EventKind.NEEDS_ATTENTION), None)
        why = _halt_reason(halt)
        problems.append(f"the run needs attention, which no injected fault explains{why}")
    faults = {fault.kind for fault in scenario.injected}
    if (
        baseline is not None
        and scenario.faults
        and faults <= _NEVER_ENDING
        and status is not baseline
    ):
        problems.append(
            f"a crash or a repeated delivery is not a failure, yet the run ended {status.value} "
            f"where the run without faults ended {baseline.value}"
        )
    problems.extend(_undo_problems(saga, status, events, outcome.calls))
    return problems


def _explains_attention(saga: Saga[Any], scenario: Scenario, outcome: Outcome) -> bool:
    """Whether a fault that fired may rightly leave the run needing a person."""
    for fault in outcome.fired:
        if fault not in scenario.injected or fault.step is None:
            continue
        step = saga[fault.step]
        if fault.kind is FaultKind.COMPENSATION_FAILS:
            return True
        if fault.kind is FaultKind.COMPENSATION_FAILS_ONCE and (
            step.compensation_retry.max_attempts == 1
        ):
            return True
        if fault.kind in (FaultKind.FAIL, FaultKind.TIMEOUT) and step.kind in (
            StepKind.PIVOT,
            StepKind.RETRIABLE,
        ):
            return True  # the saga cannot roll back past its point of no return
    return False


def _halt_reason(halt: Event | None) -> str:
    if halt is None:
        return ""
    reason = halt.data.get("reason")
    error = halt.error
    said = reason if isinstance(reason, str) and reason else (str(error) if error else "")
    return f" ({said})" if said else ""


def _took_effect(saga: Saga[Any], events: list[Event], calls: list[Call]) -> list[str]:
    """The steps whose action took effect, in the order they first did."""
    order: dict[str, None] = {}
    succeeded = {e.step for e in events if e.kind is EventKind.STEP_SUCCEEDED}
    unknown = {e.step for e in events if e.kind is EventKind.STEP_FAILED and e.data.get("unknown")}
    for call in calls:
        if call.phase is not Phase.ACTION or not call.effect:
            continue
        if saga[call.step].local_transaction and call.step not in succeeded:
            continue  # its writes were rolled back with the attempt
        order.setdefault(call.step)
    for name in (*succeeded, *unknown):
        if name is not None:
            order.setdefault(name)
    return list(order)


def _undo_problems(
    saga: Saga[Any], status: RunStatus, events: list[Event], calls: list[Call]
) -> Iterable[str]:
    started = {e.step for e in events if e.kind is EventKind.STEP_STARTED}
    called = {c.step for c in calls if c.phase is Phase.ACTION}
    undo_calls = [c for c in calls if c.phase is Phase.COMPENSATION]
    for name in dict.fromkeys(c.step for c in undo_calls):
        if name not in started and name not in called:
            yield f"{name} was undone though it never started"
    undone = [e.step for e in events if e.kind is EventKind.COMPENSATION_SUCCEEDED and e.step]
    for name, times in Counter(undone).items():
        if times > 1:
            yield f"{name} was undone {times} times (once at most)"
    effect = _took_effect(saga, events, calls)
    if status is RunStatus.COMPLETED:
        for name in dict.fromkeys(undone):
            yield f"the run completed, yet {name} was undone"
    if status in (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED):
        for name in effect:
            step = saga[name]
            if step.compensation is not None and name not in undone:
                yield f"{name} took effect but was never undone (the run ended {status.value})"
    yield from _order_problems(saga, undone)


def _order_problems(saga: Saga[Any], undone: list[str]) -> Iterable[str]:
    """Undos out of order: latest stage first, or the saga's own compensation order."""
    plan = saga.plan()
    if plan.compensation_order is not None:
        rank = {name: i for i, group in enumerate(plan.compensation_order) for name in group}
        later_first = False
    else:
        rank = {name: i for i, stage in enumerate(plan.stages) for name in stage}
        later_first = True
    for before, after in itertools.pairwise(undone):
        wrong = rank[after] > rank[before] if later_first else rank[after] < rank[before]
        if wrong:
            yield f"undone out of order: {before} before {after}"

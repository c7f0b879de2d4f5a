"""Deciding what to do next: a plan and a run's progress in, a `Decision` out.

`decide` looks at a run folded from its journal (see `sagakit.core`) and the
calls in flight, and says whether to invoke actions or compensations, to
journal one transition event, or to wait. Like the fold, it performs no I/O
and reads no clock.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sagakit.core.plan import PIVOT, RETRIABLE, Plan
from sagakit.core.progress import CANCEL, DEADLINE, Attempts, Progress, pivot_reached
from sagakit.journal import JSON, SETTLED, ErrorInfo, EventKind, Phase, RunStatus

# Invoke, Transition and Decision are made at every step and never changed
# afterwards (a first attempt's Decision and Invoke are even shared by all
# the runs of a plan, see `_decide_forward`); they are not frozen because a
# frozen dataclass costs about three times as much to make, and nothing
# outside the engine sees them. (An Invoke keys dicts, so it keeps a hash of
# its fields.)

# Members bound once: on Python 3.11 reading one through its enum class
# (``Phase.ACTION``) goes through the enum metaclass's __getattr__
# hook, about a thousand instructions, and these are read at every step.
_ACTION = Phase.ACTION
_COMPLETED = RunStatus.COMPLETED.value  # `value` is a property call too
_RUN_FINISHED = EventKind.RUN_FINISHED


@dataclass(slots=True, unsafe_hash=True)
class Invoke:
    """Call a step's action or compensation as attempt ``attempt``."""

    phase: Phase
    step: str
    attempt: int
    not_before: float | None = None


@dataclass(slots=True)
class Transition:
    """Append one event that moves the run on (no user code runs)."""

    kind: EventKind
    step: str | None = None
    data: JSON = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    """What the driver must do next.

    Exactly one of these holds: ``transition`` is set (journal it, then ask
    again); ``invoke`` is non-empty (start these calls, each not before its
    time); or both are empty (wait for the calls in flight to land, or, with
    none in flight, the run is settled and there is nothing to do).
    """

    invoke: tuple[Invoke, ...] = ()
    transition: Transition | None = None


IDLE = Decision()


def decide(plan: Plan, progress: Progress, running: Collection[tuple[Phase, str]] = ()) -> Decision:
    """What to do next for a run in ``progress``.

    Args:
        plan: The saga's plan.
        progress: The run, folded from its journal.
        running: The calls the driver has in flight right now, as
            ``(phase, step)``. A call that the journal shows open but that is
            not in flight was cut short by a crash and is run again (a crash is
            not a failure, so that attempt costs nothing from the budget).
    """
    if progress.status in SETTLED:  # not the `settled` property: a call at every step
        return IDLE
    if progress.reason is None:
        if progress.cancel is not None or progress.deadline_passed:
            return _decide_stop(plan, progress, running)
        return _decide_forward(plan, progress, running)
    return _decide_undo(plan, progress, running)


def _decide_forward(
    plan: Plan, progress: Progress, running: Collection[tuple[Phase, str]]
) -> Decision:
    stages = plan.stages
    done = progress.stages_done
    if done == len(stages):
        return Decision((), Transition(_RUN_FINISHED, None, {"status": _COMPLETED}))
    # The first stage not done (see `apply`): what happens next happens there.
    # Written for speed, as this runs before every step.
    stage = stages[done]
    if len(stage) == 1 and not running:
        # A stage of one step, the most common: its next attempt, unless it
        # waits for a signal or failed for good (the general path below).
        # (`progress.attempts` and `plan.step` written out.)
        name = stage[0]
        record = progress.actions.get(name)
        if record is None:
            record = progress.actions[name] = Attempts()
        if not record.exhausted and not record.done:
            if record.open:  # cut short by a crash: find out by running it again
                return Decision((Invoke(_ACTION, name, record.started + 1, None),), None)
            if plan._by_name[name].wait_for is None:
                if record.started == 0 and record.retry_at is None:
                    # A first attempt is decided alike for every run: one
                    # Decision shared by all, rather than a Decision, a tuple
                    # and an Invoke made at each step and kept alive while the
                    # run waits for its write-ahead commit. With many runs in
                    # flight, those are what the garbage collector's young
                    # collections mostly walk (see docs/benchmarks.md).
                    first: Decision | None = plan._first_tries.get(name)
                    if first is None:
                        first = Decision((Invoke(_ACTION, name, 1, None),), None)
                        plan._first_tries[name] = first
                    return first
                return Decision((Invoke(_ACTION, name, record.started + 1, record.retry_at),), None)
    records = [progress.attempts(_ACTION, name) for name in stage]
    failed = [name for name, record in zip(stage, records, strict=True) if record.exhausted]
    busy = False
    calls: list[Invoke] = []
    waiting: list[str] = []
    for name, record in zip(stage, records, strict=True):
        if record.done or record.exhausted:
            continue
        if running and (_ACTION, name) in running:
            busy = True
        elif record.open:  # cut short by a crash: find out by running it again
            calls.append(Invoke(_ACTION, name, record.started + 1))
        elif not failed:  # once a member failed for good, start nothing new
            signal = plan.step(name).wait_for
            if signal is not None and signal not in progress.signals:
                waiting.append(signal)
                continue
            calls.append(Invoke(_ACTION, name, record.started + 1, record.retry_at))
    if calls or busy:
        return Decision(tuple(calls))
    if waiting and not failed:
        step = next(n for n in stage if plan.step(n).wait_for == waiting[0])
        return Decision(
            transition=Transition(
                EventKind.PAUSED,
                step=step,
                data={
                    "question": f"waiting for the signal {waiting[0]!r}",
                    "options": [waiting[0]],
                    "waiting_for": waiting[0],
                },
            )
        )
    return _on_step_failed(plan, progress, failed[0])


def _on_step_failed(plan: Plan, progress: Progress, name: str) -> Decision:
    record = progress.attempts(Phase.ACTION, name)
    error = record.error
    kind = plan.step(name).kind
    if kind == RETRIABLE or progress.pivot_passed:
        return _attention(
            Phase.ACTION, name, "the step exhausted its retries after the pivot", error
        )
    if kind == PIVOT and record.unknown:
        return _attention(
            Phase.ACTION,
            name,
            "the pivot's outcome is unknown, so the saga cannot roll back",
            error,
        )
    if not any(plan.step(s).compensable for s in progress.completion):
        return Decision(
            transition=Transition(
                EventKind.RUN_FINISHED,
                data={"status": RunStatus.FAILED.value, "error": error},
            )
        )
    return Decision(
        transition=Transition(
            EventKind.ROLLBACK_STARTED, step=name, data={"reason": "failure", "error": error}
        )
    )


def _decide_stop(
    plan: Plan, progress: Progress, running: Collection[tuple[Phase, str]]
) -> Decision:
    """A cancel or a passed deadline: finish the calls under way, start nothing new."""
    # A call cut short by a crash is finished first: a crash is not a failure.
    calls = tuple(
        Invoke(Phase.ACTION, name, record.started + 1)
        for name, record in progress.actions.items()
        if record.open and (Phase.ACTION, name) not in running
    )
    if calls or any(phase is Phase.ACTION for phase, _ in running):
        return Decision(invoke=calls)
    cancel = progress.cancel
    # Past the pivot, or its outcome unknown: the steps before it must not be undone.
    past_pivot = pivot_reached(plan, progress)
    if cancel is not None and past_pivot and not cancel.get("force"):
        # The pivot succeeded (or may have) while the cancel waited for it: too late to undo.
        return Decision(
            transition=Transition(
                EventKind.CANCEL_REFUSED,
                data={
                    "withdrawn": True,
                    "why": "the pivot step succeeded before the cancel took effect"
                    if progress.pivot_passed
                    else "the pivot step may have taken effect (an attempt timed out) "
                    "before the cancel took effect",
                },
            )
        )
    error = None if cancel is not None else _deadline_error(progress)
    if cancel is None and past_pivot:
        name = next(
            (s.name for s in plan.steps if not progress.attempts(Phase.ACTION, s.name).done),
            plan.steps[-1].name,
        )
        why = (
            "the deadline passed after the pivot"
            if progress.pivot_passed
            else "the deadline passed while the pivot's outcome is unknown"
        )
        return _attention(Phase.ACTION, name, why, error)
    reason = CANCEL if cancel is not None else DEADLINE
    if any(plan.step(s).compensable for s in progress.completion):
        data: JSON = {"reason": reason, "error": error}
        if cancel is not None and cancel.get("reason"):
            data["note"] = cancel["reason"]
        return Decision(transition=Transition(EventKind.ROLLBACK_STARTED, data=data))
    status = RunStatus.CANCELLED if cancel is not None else RunStatus.FAILED
    return Decision(
        transition=Transition(EventKind.RUN_FINISHED, data={"status": status.value, "error": error})
    )


def _deadline_error(progress: Progress) -> JSON:
    return ErrorInfo(
        type="sagakit.DeadlinePassed",
        message=f"the run's deadline passed (at {progress.deadline})",
    ).to_json()


def undo_stages(plan: Plan, progress: Progress) -> list[tuple[str, ...]]:
    """The steps to compensate, grouped in the order their compensations run.

    The members of one group run at the same time. Only steps that took
    effect are compensated; a step that never started never is.
    """
    due = [name for name in reversed(progress.completion) if plan.step(name).compensable]
    if plan.compensation_order is None:
        return [(name,) for name in due]
    wanted = set(due)
    groups = (tuple(n for n in group if n in wanted) for group in plan.compensation_order)
    return [group for group in groups if group]


def _undo_groups(plan: Plan, progress: Progress) -> list[tuple[str, ...]]:
    """`undo_stages`, worked out again only when a step took effect since.

    ``completion`` only ever grows, so its length says whether the order is
    still the one worked out. Remembered in the progress, as ``stages_done``
    is, so that undoing a long saga does not cost the whole saga at each step.
    """
    if progress.undo_groups is None or progress.undo_for != len(progress.completion):
        progress.undo_groups = undo_stages(plan, progress)
        progress.undo_for = len(progress.completion)
        progress.undo_done = 0  # a step that took effect late is undone first
    return progress.undo_groups


def _decide_undo(
    plan: Plan, progress: Progress, running: Collection[tuple[Phase, str]]
) -> Decision:
    if any(phase is Phase.ACTION for phase, _ in running):
        return IDLE  # let forward calls still in flight land before undoing
    skipped: list[str] = []
    groups = _undo_groups(plan, progress)
    compensations = progress.compensations
    for index in range(progress.undo_done, len(groups)):
        group = groups[index]
        calls: list[Invoke] = []
        busy = False
        exhausted: list[str] = []
        for name in group:
            record = compensations.get(name)
            if record is None:
                record = progress.attempts(Phase.COMPENSATION, name)
            if record.done:
                continue
            if record.exhausted:
                exhausted.append(name)
            elif (Phase.COMPENSATION, name) in running:
                busy = True
            else:
                not_before = None if record.open else record.retry_at
                calls.append(Invoke(Phase.COMPENSATION, name, record.started + 1, not_before))
        if calls or busy:
            return Decision(invoke=tuple(calls))
        if not exhausted:
            if index == progress.undo_done and not skipped:
                # Every compensation of the group is done, which none undoes:
                # the next decision starts after it.
                progress.undo_done = index + 1
            continue
        if plan.continue_on_compensation_error:
            skipped.extend(exhausted)
            continue
        first = progress.attempts(Phase.COMPENSATION, exhausted[0])
        return _attention(
            Phase.COMPENSATION, exhausted[0], "the compensation exhausted its retries", first.error
        )
    if skipped:
        first = progress.attempts(Phase.COMPENSATION, skipped[0])
        return _attention(
            Phase.COMPENSATION,
            skipped[0],
            "some compensations exhausted their retries",
            first.error,
        )
    status = RunStatus.CANCELLED if progress.reason == CANCEL else RunStatus.ROLLED_BACK
    return Decision(transition=Transition(EventKind.RUN_FINISHED, data={"status": status.value}))


def _attention(phase: Phase, name: str, reason: str, error: JSON | None) -> Decision:
    return Decision(
        transition=Transition(
            EventKind.NEEDS_ATTENTION,
            step=name,
            data={"phase": phase.value, "reason": reason, "error": error},
        )
    )

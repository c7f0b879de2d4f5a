"""Folding a run's journal into its `Progress`.

`replay` folds a whole journal; `apply` folds one more event. Nothing here
performs I/O or reads a clock: the fold and `sagakit.core.decide` hold every
rule of the saga semantics between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sagakit.core.plan import PIVOT, Plan
from sagakit.journal import JSON, Event, EventKind, Phase, RunStatus

# What a failure or signal handler may decide, as journaled (see `sagakit.Next`).
RETRY = "retry"
COMPENSATE = "compensate"
CONTINUE = "continue"
PAUSE = "pause"
ANSWERS = (RETRY, COMPENSATE, CONTINUE)

# Why a run undoes its work (``Progress.reason``).
FAILURE = "failure"
CANCEL = "cancel"
DEADLINE = "deadline"

# Members bound once: on Python 3.11 reading one through its enum class
# (``EventKind.STEP_STARTED``) goes through the enum metaclass's __getattr__
# hook, about a thousand instructions, and these are read at every step.
_STEP_STARTED = EventKind.STEP_STARTED
_COMPENSATION_STARTED = EventKind.COMPENSATION_STARTED
_STEP_SUCCEEDED = EventKind.STEP_SUCCEEDED
_COMPENSATION_SUCCEEDED = EventKind.COMPENSATION_SUCCEEDED
_RUNNING = RunStatus.RUNNING
_RUN_STARTED = EventKind.RUN_STARTED
_RUN_FINISHED = EventKind.RUN_FINISHED
IMMUTABLE: frozenset[type] = frozenset({str, int, float, bool, type(None)})
"""The types of JSON value that cannot be changed in place: shared, never copied."""
# A status by its value without the enum's call (which the journal's strings go through).
_STATUSES = {status.value: status for status in RunStatus}
_ACTION = Phase.ACTION


@dataclass(slots=True)
class Attempts:
    """Progress of one step's action, or of its compensation."""

    started: int = 0
    """Attempts started so far, crashed ones included (the next is ``started + 1``)."""
    failures: int = 0
    """Failed attempts counted against the retry budget (reset by an operator retry)."""
    open: bool = False
    """An attempt was started and has no recorded outcome (running, or cut by a crash)."""
    done: bool = False
    """Succeeded, or resolved by hand."""
    exhausted: bool = False
    """Failed for good: a permanent error or no attempts left."""
    unknown: bool = False
    """Some attempt timed out, so it may have taken effect."""
    retry_at: float | None = None
    """The next attempt may not start before this time."""
    result: JSON | None = None
    finished_at: float | None = None
    error: JSON | None = None
    """The last error."""


@dataclass(slots=True)
class Progress:
    """A run as derived from its journal."""

    status: RunStatus = RunStatus.PENDING
    state: JSON = field(default_factory=dict)
    actions: dict[str, Attempts] = field(default_factory=dict)
    compensations: dict[str, Attempts] = field(default_factory=dict)
    completion: list[str] = field(default_factory=list)
    """Steps in the order they took effect: the default undo order is its reverse."""
    reason: str | None = None
    """Why the run is undoing: ``"failure"``, ``"cancel"`` or ``"deadline"``; None going forward."""
    error: JSON | None = None
    """The error that made the run roll back or fail."""
    compensation_errors: list[JSON] = field(default_factory=list)
    attention: tuple[Phase, str] | None = None
    """What the run is halted on while it needs attention."""
    pivot_passed: bool = False
    """Whether the run has gone past its point of no return."""
    cancel: JSON | None = None
    """The accepted cancel request (``reason``, ``force``), until the undo starts."""
    cancel_reason: str | None = None
    """The reason given with the cancel that started the undo."""
    paused: JSON | None = None
    """What the run is paused on: ``step``, ``question``, ``options``, ``waiting_for``."""
    signals: dict[str, JSON] = field(default_factory=dict)
    """The latest payload of each signal received, by name."""
    deadline: float | None = None
    """When the run must have finished going forward (seconds since the epoch)."""
    deadline_passed: bool = False
    alert_seq: int | None = None
    """The seq of the ``needs_attention`` event whose alert is owed (None: none is)."""
    alert_at: float | None = None
    """When the owed alert is due: the halt, or the next try after a failed one."""
    alert_failures: int = 0
    """Failed tries at delivering the owed alert."""
    last_seq: int = 0
    started_at: float | None = None
    trace: dict[str, str] | None = None
    """The trace context stored with the run when it started (``run_started``'s ``trace``)."""
    updated_at: float | None = None
    stages_done: int = field(default=0, compare=False, repr=False)
    """How many leading stages have every step done."""
    took_effect: set[str] = field(default_factory=set, compare=False, repr=False)
    """The steps in ``completion``, as a set: a long saga asks of one at every step."""
    undo_groups: list[tuple[str, ...]] | None = field(default=None, compare=False, repr=False)
    """The undo order as last worked out (see `sagakit.core.decide.undo_stages`)."""
    undo_for: int = field(default=-1, compare=False, repr=False)
    """The length of ``completion`` that ``undo_groups`` was worked out for."""
    undo_done: int = field(default=0, compare=False, repr=False)
    """How many leading groups of ``undo_groups`` have every compensation done."""
    touched: set[str] | None = field(default=None, compare=False, repr=False)
    """The keys of ``state`` set since whoever tracks them began to (None: not tracked).

    The fold adds each key it sets; the driver's writer starts tracking a
    big state and empties the set at each commit (`sagakit.store.Commit.sets`).
    """
    nested: set[str] | None = field(default=None, compare=False, repr=False)
    """Keys of ``state`` whose value may be changed in place (None: not tracked).

    Every key whose value is not a string, number, boolean or None is in it
    (it may hold more): a step is handed a copy of those values only. The
    driver starts tracking a big state; the fold adds each key it sets to such a value.
    """

    @property
    def alert_due(self) -> float | None:
        """When the alert this run owes is due, or None if it owes none.

        A run that needs attention owes an alert until one is journaled as
        sent (``alert_sent``); once the run moves on (an operator acted, a
        cancel), nothing is owed any more.
        """
        if self.status is not RunStatus.NEEDS_ATTENTION or self.alert_seq is None:
            return None
        return self.alert_at

    def attempts(self, phase: Phase, step: str) -> Attempts:
        """The progress record of one step's action or compensation."""
        table = self.actions if phase is _ACTION else self.compensations
        record = table.get(step)
        if record is None:
            record = table[step] = Attempts()
        return record


# -- folding the journal ------------------------------------------------------


def replay(plan: Plan, events: Iterable[Event]) -> Progress:
    """Fold a whole journal into the run's progress."""
    progress = Progress()
    for event in events:
        apply(plan, progress, event)
    return progress


def is_final_failure(
    plan: Plan, progress: Progress, phase: Phase, step: str, *, permanent: bool
) -> bool:
    """Whether one more failure of this call would be its last (no retry)."""
    if permanent:
        return True
    budget = plan.max_attempts(phase, step)
    return budget is not None and progress.attempts(phase, step).failures + 1 >= budget


def apply(plan: Plan, progress: Progress, event: Event) -> None:
    """Fold one event into ``progress`` (in place)."""
    if event.seq != progress.last_seq + 1:
        raise ValueError(
            f"journal of run {event.run_id!r} skips from seq {progress.last_seq} to {event.seq}"
        )
    progress.last_seq = event.seq
    progress.updated_at = event.at
    kind = event.kind
    # The two kinds of every step come first, written out rather than through
    # `_step`, `attempts`, `_succeed` and `_merge`: this runs twice at every step.
    if kind is _STEP_STARTED or kind is _COMPENSATION_STARTED:
        action = kind is _STEP_STARTED
        name = event.step
        if name is None or name not in plan._by_name:
            name = _step(plan, event)  # raises
        table = progress.actions if action else progress.compensations
        record = table.get(name)
        if record is None:
            record = table[name] = Attempts()
        attempt = event.attempt or record.started + 1
        if attempt > record.started:  # noqa: PLR1730 (max() is a call, at every step)
            record.started = attempt
        record.open = True
        record.retry_at = None
        if action and progress.reason is None:
            progress.status = _RUNNING
        return  # a start completes no stage: `_stages_done` has nothing to do
    if kind is _STEP_SUCCEEDED or kind is _COMPENSATION_SUCCEEDED:
        action = kind is _STEP_SUCCEEDED
        name = event.step
        if name is None or name not in plan._by_name:
            name = _step(plan, event)  # raises
        table = progress.actions if action else progress.compensations
        record = table.get(name)
        if record is None:
            record = table[name] = Attempts()
        data = event.data
        result = data.get("result")
        record.open = False
        record.done = True
        record.exhausted = False
        record.retry_at = None
        record.result = result = result if isinstance(result, dict) else None
        record.finished_at = event.at
        update = data.get("state", result)  # see `_merge`
        if update:
            progress.state.update(update)
            if progress.touched is not None or progress.nested is not None:
                track(progress, update)
        if action:
            _took_effect(plan, progress, name)
    else:
        _fold(plan, progress, event)
    # Move past the leading stages now done, so deciding the next forward
    # move does not look at them again (a step never comes undone). Plain
    # loops, not all() over a generator: this runs for every event.
    stages, actions = plan.stages, progress.actions
    done = progress.stages_done
    while done < len(stages):
        for name in stages[done]:
            record = actions.get(name)
            if record is None or not record.done:
                progress.stages_done = done
                return
        done += 1
    progress.stages_done = done


def track(progress: Progress, update: JSON) -> None:
    """Note in ``progress``'s trackers the keys ``update`` sets (where they are tracked)."""
    if progress.touched is not None:
        progress.touched.update(update)
    nested = progress.nested
    if nested is not None:
        for key, value in update.items():
            if type(value) not in IMMUTABLE:
                nested.add(key)


def _fold(plan: Plan, progress: Progress, event: Event) -> None:
    """Fold the kinds of event other than a step's start and success (`apply`)."""
    kind = event.kind
    data = event.data
    if kind is _RUN_STARTED:
        progress.state = dict(data.get("state", {}))
        # A new state: what was tracked of the one before says nothing of it.
        progress.touched = progress.nested = None
        progress.started_at = event.at
        trace = data.get("trace")
        progress.trace = trace if isinstance(trace, dict) else None
        deadline = data.get("deadline")
        progress.deadline = float(deadline) if deadline is not None else None
    elif kind is _RUN_FINISHED:  # early: once per run, the kinds before it are not free
        status = data["status"]
        # Only a string is looked up: any other value (a list, say, in a
        # journal written by hand) is refused by the enum, with a ValueError.
        found = _STATUSES.get(status) if type(status) is str else None
        progress.status = found or RunStatus(status)
        if data.get("error") is not None:
            progress.error = data["error"]
    elif kind in (EventKind.STEP_FAILED, EventKind.COMPENSATION_FAILED):
        phase = Phase.ACTION if kind is EventKind.STEP_FAILED else Phase.COMPENSATION
        name = _step(plan, event)
        final = is_final_failure(plan, progress, phase, name, permanent=bool(data.get("permanent")))
        record = progress.attempts(phase, name)
        record.open = False
        record.failures += 1
        record.error = data.get("error")
        record.finished_at = event.at
        if data.get("unknown"):
            record.unknown = True
        if phase is Phase.COMPENSATION and record.error is not None:
            progress.compensation_errors.append(record.error)
        handled = data.get("handled")
        if handled == RETRY:  # a failure handler asked for a fresh round of attempts
            record.failures = 0
            record.retry_at = data.get("retry_at")
        elif handled == CONTINUE:  # the handler lets the saga go on without this step
            _succeed(record, data.get("result"), event.at)
            _merge(progress, data, record.result)
        elif final:
            record.exhausted = True
            record.retry_at = None
        else:
            record.retry_at = data.get("retry_at")
        # Counted as having taken effect now, not only once it fails for good: a
        # parallel member whose retry is abandoned (another member failed for
        # good) must still be compensated.
        if phase is Phase.ACTION and (record.unknown or plan.step(name).compensate_on_failure):
            _took_effect(plan, progress, name)
    elif kind is EventKind.STEP_WITHDRAWN:
        # Journaled as started, but a cancel arrived before the call was made.
        progress.attempts(Phase.ACTION, _step(plan, event)).open = False
    elif kind is EventKind.ROLLBACK_STARTED:
        progress.reason = str(data.get("reason", FAILURE))
        progress.error = data.get("error")
        progress.cancel = None
        progress.cancel_reason = data.get("note")
        progress.status = RunStatus.COMPENSATING
    elif kind is EventKind.PAUSED:
        if event.step is not None:
            _step(plan, event)
            record = progress.attempts(Phase.ACTION, event.step)
            record.open = False  # the attempt ended by pausing: not a failure
        progress.paused = {"step": event.step, **data}
        progress.status = RunStatus.PAUSED
    elif kind is EventKind.SIGNAL_RECEIVED:
        _signal_received(plan, progress, event)
    elif kind is EventKind.CANCEL_REQUESTED:
        progress.cancel = {"reason": data.get("reason"), "force": bool(data.get("force"))}
        _reopen(progress)
    elif kind is EventKind.CANCEL_REFUSED:
        if data.get("withdrawn"):  # an accepted cancel that the pivot overtook
            progress.cancel = None
    elif kind is EventKind.DEADLINE_PASSED:
        progress.deadline_passed = True
        if progress.status is RunStatus.PAUSED:
            _reopen(progress)
    elif kind is EventKind.NEEDS_ATTENTION:
        progress.attention = (Phase(data.get("phase", Phase.ACTION)), _step(plan, event))
        progress.status = RunStatus.NEEDS_ATTENTION
        if progress.error is None and data.get("error") is not None:
            progress.error = data.get("error")
        # Owed from the commit that journals the halt: whoever delivers it
        # journals alert_sent (see sagakit.engine.attention).
        progress.alert_seq = event.seq
        progress.alert_at = event.at
        progress.alert_failures = 0
    elif kind is EventKind.RETRIED:
        _operator_acted(progress)
        if progress.deadline_passed:  # the operator grants the run the time it needs
            progress.deadline = None
            progress.deadline_passed = False
        for table in (progress.actions, progress.compensations):
            for record in table.values():
                if record.exhausted:
                    record.exhausted = False
                    record.failures = 0
                    record.retry_at = None
    elif kind is EventKind.RESOLVED:
        if progress.attention is not None:
            phase, name = progress.attention
            _succeed(progress.attempts(phase, name), None, event.at)
            if phase is Phase.ACTION:
                _took_effect(plan, progress, name)
        _operator_acted(progress)
    elif kind is EventKind.ALERT_SENT and data.get("seq") == progress.alert_seq:
        progress.alert_seq = None
        progress.alert_at = None
    elif kind is EventKind.ALERT_FAILED and data.get("seq") == progress.alert_seq:
        progress.alert_failures += 1
        retry_at = data.get("retry_at")
        progress.alert_at = float(retry_at) if retry_at is not None else event.at


def _step(plan: Plan, event: Event) -> str:
    step = event.step
    if step is None:
        raise ValueError(f"{event.kind} event #{event.seq} of run {event.run_id!r} names no step")
    if not plan.has(step):
        plan.step(step)  # a journal written by another definition must not be driven: raises
    return step


def _succeed(record: Attempts, result: Any, at: float) -> None:
    record.open = False
    record.done = True
    record.exhausted = False
    record.retry_at = None
    record.result = result if isinstance(result, dict) else None
    record.finished_at = at


def _merge(progress: Progress, data: JSON, result: JSON | None) -> None:
    # "state" is the part of the result the state model keeps, recorded only
    # when it is less than the whole result (older journals never have it).
    update = data.get("state", result)
    if update:
        progress.state.update(update)
        if progress.touched is not None or progress.nested is not None:
            track(progress, update)


def _took_effect(plan: Plan, progress: Progress, name: str) -> None:
    if name not in progress.took_effect:  # a set: `completion` grows with the saga
        progress.took_effect.add(name)
        progress.completion.append(name)
    # `plan.step(name)` without its call: ``name`` is one of the plan's (see `_step`).
    if plan._by_name[name].kind == PIVOT and progress.actions[name].done:
        progress.pivot_passed = True


def _operator_acted(progress: Progress) -> None:
    progress.attention = None
    progress.alert_seq = None  # a person acted: the alert is moot
    progress.status = RunStatus.COMPENSATING if progress.reason else RunStatus.RUNNING


def _reopen(progress: Progress) -> None:
    """Let a settled run move again (a cancel, a signal, a deadline)."""
    progress.paused = None
    progress.attention = None
    progress.alert_seq = None
    if progress.status in (
        RunStatus.PENDING,
        RunStatus.COMPLETED,
        RunStatus.PAUSED,
        RunStatus.NEEDS_ATTENTION,
    ):
        progress.status = RunStatus.RUNNING


def _signal_received(plan: Plan, progress: Progress, event: Event) -> None:
    data = event.data
    if data.get("ignored"):
        return
    name = str(data.get("name"))
    payload = data.get("payload")
    if isinstance(payload, dict):
        progress.state.update(payload)
        if progress.touched is not None or progress.nested is not None:
            track(progress, payload)
    progress.signals[name] = payload if isinstance(payload, dict) else {}
    paused = progress.paused
    if paused is None:
        return  # kept for a step that will wait for it
    if paused.get("waiting_for") == name:
        _reopen(progress)
        return
    answer = data.get("decision")
    step = paused.get("step")
    if answer not in ANSWERS or not isinstance(step, str):
        return  # not an answer (the handler failed or paused again): still paused
    record = progress.attempts(Phase.ACTION, plan.step(step).name)
    if answer == RETRY:
        record.exhausted = False
        record.failures = 0
        record.retry_at = None
    elif answer == COMPENSATE:
        record.exhausted = True
        record.retry_at = None
        if data.get("error") is not None:
            record.error = data["error"]
    else:
        _succeed(record, data.get("result"), event.at)
        _merge(progress, data, record.result)
    _reopen(progress)


def cancel_refusal(plan: Plan, progress: Progress, *, force: bool) -> str | None:
    """Why a cancel request cannot be accepted now, or None if it can."""
    status = progress.status
    # A run that rolled back keeps its reason: it has finished, not compensating.
    if status in (RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED):
        return f"the run has already finished as {status.value}"
    if progress.reason is not None:
        why = {CANCEL: "a cancel", DEADLINE: "its deadline passed"}.get(
            progress.reason, "a failure"
        )
        return f"the run is already compensating (after {why})"
    if progress.cancel is not None:
        return "a cancel of this run is already under way"
    if pivot_reached(plan, progress) and not force:
        pivot = next((s.name for s in plan.steps if s.kind == PIVOT), "?")
        where = (
            f"passed its pivot step {pivot!r}"
            if progress.pivot_passed
            else f"may have passed its pivot step {pivot!r} (an attempt timed out)"
        )
        return (
            f"the run {where}, the point of no return; "
            "cancel with force=True to compensate the steps before it anyway"
        )
    return None


def pivot_reached(plan: Plan, progress: Progress) -> bool:
    """Whether the pivot succeeded, or may have taken effect (an attempt timed out)."""
    return progress.pivot_passed or any(
        s.kind == PIVOT and s.name in progress.actions and progress.actions[s.name].unknown
        for s in plan.steps
    )

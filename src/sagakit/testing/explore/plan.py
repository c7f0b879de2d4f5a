"""The fault plan: which faults `explore` injects, one scenario at a time.

Pure: it reads a saga's shape (its steps, kinds, stages) and returns
scenarios; nothing here runs a saga. A scenario is a small set of `Fault`s
(none for the baseline, one, or a bounded sample of pairs); its size is the
number of faults, and scenarios are numbered in plan order, so "the smallest
failing scenario" is the one with fewest faults, then the lowest number.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sagakit.definition import Saga, Step, StepKind
from sagakit.journal import Phase

DEFAULT_PAIRS = 100
"""How many pairs of faults `explore` runs when ``pairs=True``: a seeded sample of all pairs."""


class FaultKind(StrEnum):
    """What goes wrong in a scenario."""

    CRASH = "crash"
    """The process dies just before, or just after, a record is committed."""
    FAIL = "fail"
    """The action fails for good (a `PermanentError`) without taking effect."""
    TIMEOUT = "timeout"
    """Every attempt of the action takes effect, then times out: its outcome is unknown."""
    COMPENSATION_FAILS_ONCE = "compensation_fails_once"
    """The compensation's first attempt fails without taking effect; later ones run."""
    COMPENSATION_FAILS = "compensation_fails"
    """The compensation fails for good (a `PermanentError`) without taking effect."""
    CANCEL = "cancel"
    """A cancel arrives: before the run starts, while a step runs, or the next day."""
    TWICE = "twice"
    """The call is delivered twice with the same idempotency key (the first outcome is lost)."""


class Record(StrEnum):
    """The journal record a crash is placed around."""

    STARTED = "started"
    """The write-ahead record of an attempt (the call has not been made yet)."""
    SUCCEEDED = "succeeded"
    """The record of the call's success (the call has been made)."""


class When(StrEnum):
    """Where a crash or a cancel falls."""

    BEFORE = "before"
    AFTER = "after"
    START = "start"
    """A cancel before the run's first step."""
    DURING = "during"
    """A cancel while a step's action runs: the run stops after that step."""
    NEXT_DAY = "next_day"
    """A cancel of the completed run, a day later, after another run of the saga completed."""


# Faults that end the forward path: a scenario holds at most one of them.
_ENDING = frozenset({FaultKind.FAIL, FaultKind.TIMEOUT, FaultKind.CANCEL})
# Faults that replace a function of the saga: two on one function do not combine.
_WRAPPING = frozenset(
    {
        FaultKind.FAIL,
        FaultKind.TIMEOUT,
        FaultKind.COMPENSATION_FAILS_ONCE,
        FaultKind.COMPENSATION_FAILS,
        FaultKind.TWICE,
    }
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault injected into a run.

    Attributes:
        kind: What goes wrong.
        step: The step whose action or compensation it hits (None: a cancel
            before the start or the next day).
        phase: The action or the compensation.
        record: For a crash, the record it falls around.
        when: For a crash, before or after the record is committed; for a
            cancel, when it arrives.
    """

    kind: FaultKind
    step: str | None = None
    phase: Phase = Phase.ACTION
    record: Record | None = None
    when: When | None = None

    def describe(self) -> str:
        """The fault in words, as the report prints it."""
        what = self._call()
        if self.kind is FaultKind.CRASH:
            record = (
                f"{what} is recorded as started"
                if self.record is Record.STARTED
                else f"the success of {what} is recorded"
            )
            return f"crash {self.when} {record}"
        if self.kind is FaultKind.FAIL:
            return f"{what} fails for good"
        if self.kind is FaultKind.TIMEOUT:
            return f"{what} takes effect, then times out (every attempt)"
        if self.kind is FaultKind.COMPENSATION_FAILS_ONCE:
            return f"{what} fails once"
        if self.kind is FaultKind.COMPENSATION_FAILS:
            return f"{what} fails for good"
        if self.kind is FaultKind.TWICE:
            return f"{what} is delivered twice"
        if self.when is When.START:
            return "cancel before the run starts"
        if self.when is When.NEXT_DAY:
            return "cancel the next day, after another run completed"
        return f"cancel while {what} runs"

    def _call(self) -> str:
        if self.step is None:
            return "the run"
        return self.step if self.phase is Phase.ACTION else f"the undo of {self.step}"

    def to_json(self) -> dict[str, Any]:
        """The fault as JSON (``sagakit test --json``)."""
        return {
            "kind": self.kind.value,
            "step": self.step,
            "phase": self.phase.value,
            "record": None if self.record is None else self.record.value,
            "when": None if self.when is None else self.when.value,
            "text": self.describe(),
        }


@dataclass(frozen=True, slots=True)
class Scenario:
    """One run of the saga with its faults.

    Attributes:
        number: Its place in the plan (0 is the baseline, with no fault).
        faults: The faults injected.
        trigger: A failure or cancel added only so that a fault in a
            compensation can happen (a compensation runs only in a rollback);
            None when the faults need none.
    """

    number: int
    faults: tuple[Fault, ...]
    trigger: Fault | None = None

    @property
    def size(self) -> int:
        """How many faults it injects, the trigger counted."""
        return len(self.injected)

    def describe(self) -> str:
        """The scenario in words."""
        if not self.faults:
            return "no fault (baseline)"
        text = " + ".join(fault.describe() for fault in self.faults)
        if self.trigger is not None:
            text += f" (rolled back by: {self.trigger.describe()})"
        return text

    @property
    def injected(self) -> tuple[Fault, ...]:
        """Every fault to inject: the faults and the trigger."""
        return self.faults if self.trigger is None else (*self.faults, self.trigger)

    def to_json(self) -> dict[str, Any]:
        """The scenario as JSON."""
        return {
            "number": self.number,
            "size": self.size,
            "text": self.describe(),
            "faults": [fault.to_json() for fault in self.faults],
            "trigger": None if self.trigger is None else self.trigger.to_json(),
        }


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Every scenario `explore` runs, and how the pairs were bounded.

    Attributes:
        scenarios: The baseline, every single fault, then the pairs chosen.
        singles: How many single-fault scenarios.
        pairs_possible: How many pairs of single faults combine.
        pairs_chosen: How many of them are in ``scenarios``.
        seed: The seed that chose them.
    """

    scenarios: tuple[Scenario, ...]
    singles: int
    pairs_possible: int
    pairs_chosen: int
    seed: int


def _pivot_index(steps: Sequence[Step]) -> int | None:
    return next((i for i, s in enumerate(steps) if s.kind is StepKind.PIVOT), None)


def _singles(saga: Saga[Any]) -> list[tuple[Fault, Fault | None]]:
    """Every single fault, with the trigger a compensation fault needs."""
    steps = saga.steps
    pivot = _pivot_index(steps)
    stage_of = {name: i for i, stage in enumerate(saga.plan().stages) for name in stage}
    faults: list[tuple[Fault, Fault | None]] = []
    crash = [(record, when) for record in Record for when in (When.BEFORE, When.AFTER)]
    for index, step in enumerate(steps):
        name = step.name
        for record, when in crash:
            faults.append((Fault(FaultKind.CRASH, name, Phase.ACTION, record, when), None))
        faults.append((Fault(FaultKind.FAIL, name), None))
        # A local transaction commits with the step's record: a repeated or
        # timed-out delivery can only follow a rolled-back attempt, which the
        # crashes around its record already cover.
        if not step.local_transaction:
            faults.append((Fault(FaultKind.TIMEOUT, name), None))
            faults.append((Fault(FaultKind.TWICE, name), None))
        # After the pivot a cancel is refused: the saga can only go forward.
        if pivot is None or index <= pivot:
            faults.append((Fault(FaultKind.CANCEL, name, when=When.DURING), None))
    for index, step in enumerate(steps):
        if step.compensation is None:
            continue
        trigger = _trigger(steps, index, stage_of, pivot)
        if trigger is None:
            continue
        name = step.name
        undo = Phase.COMPENSATION
        for record, when in crash:
            faults.append((Fault(FaultKind.CRASH, name, undo, record, when), trigger))
        faults.append((Fault(FaultKind.COMPENSATION_FAILS_ONCE, name, undo), trigger))
        faults.append((Fault(FaultKind.COMPENSATION_FAILS, name, undo), trigger))
        faults.append((Fault(FaultKind.TWICE, name, undo), trigger))
    faults.append((Fault(FaultKind.CANCEL, when=When.START), None))
    if pivot is None:
        faults.append((Fault(FaultKind.CANCEL, when=When.NEXT_DAY), None))
    return faults


def _trigger(
    steps: Sequence[Step], index: int, stage_of: dict[str, int], pivot: int | None
) -> Fault | None:
    """What rolls the saga back after ``steps[index]`` took effect.

    The first later step, in a later stage, that may fail and roll back
    (not retriable, not waiting for a signal) fails for good; without one,
    and without a pivot, a cancel the next day.
    """
    stage = stage_of[steps[index].name]
    for later in steps[index + 1 :]:
        if stage_of[later.name] == stage or later.kind is StepKind.RETRIABLE:
            continue
        if later.wait_for is None:
            return Fault(FaultKind.FAIL, later.name)
    return Fault(FaultKind.CANCEL, when=When.NEXT_DAY) if pivot is None else None


def _combine(a: Fault, b: Fault) -> bool:
    """Whether two single faults make a meaningful pair."""
    if a.kind in _ENDING and b.kind in _ENDING:
        return False  # only the first would happen
    if a.kind in _WRAPPING and b.kind in _WRAPPING and (a.step, a.phase) == (b.step, b.phase):
        return False  # one function cannot be replaced twice
    return a != b


def build_plan(saga: Saga[Any], *, pairs: bool | int = True, seed: int = 0) -> FaultPlan:
    """The scenarios for ``saga``: the baseline, every single fault, and pairs.

    Args:
        saga: The saga (validated: its plan is built).
        pairs: ``True`` for a sample of `DEFAULT_PAIRS` pairs, an int for
            that many (0 or ``False`` for none). All pairs are taken when
            there are no more than that.
        seed: Chooses the sample of pairs; the same seed, the same plan.

    Raises:
        ValueError: ``pairs`` is negative.
    """
    limit = DEFAULT_PAIRS if pairs is True else int(pairs)
    if limit < 0:
        raise ValueError(f"pairs must be True, False or a count of 0 or more, got {pairs!r}")
    singles = _singles(saga)
    scenarios = [Scenario(0, ())]
    for fault, trigger in singles:
        scenarios.append(Scenario(len(scenarios), (fault,), trigger))
    combined = [(a, b) for a, b in itertools.combinations(singles, 2) if _combine(a[0], b[0])]
    chosen = combined
    if len(combined) > limit:
        picks = sorted(random.Random(seed).sample(range(len(combined)), limit))
        chosen = [combined[i] for i in picks]
    for (a, trigger_a), (b, trigger_b) in chosen:
        ending = any(f.kind in _ENDING for f in (a, b))
        # An ending fault of the pair rolls the run back by itself.
        trigger = None if ending else (trigger_a or trigger_b)
        scenarios.append(Scenario(len(scenarios), (a, b), trigger))
    return FaultPlan(
        scenarios=tuple(scenarios),
        singles=len(singles),
        pairs_possible=len(combined),
        pairs_chosen=len(chosen),
        seed=seed,
    )

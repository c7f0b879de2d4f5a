"""A saga definition reduced to what the pure core needs: its steps, stages and limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagakit.journal import Phase

# Step kinds as plain strings: the core depends on nothing of the definition.
PIVOT = "pivot"
RETRIABLE = "retriable"


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the core needs to know of one step."""

    name: str
    kind: str
    compensable: bool
    max_attempts: int | None
    compensation_max_attempts: int | None
    compensate_on_failure: bool = False
    wait_for: str | None = None
    """The signal the step waits for before its action may start."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A saga definition reduced to its shape and its limits.

    Attributes:
        steps: Every step, in definition order.
        stages: The steps grouped into stages that run one after another;
            the members of one stage run at the same time.
        continue_on_compensation_error: Go on with the remaining compensations
            when one fails for good (the run still ends needing attention).
        compensation_order: Groups of compensable steps in the order their
            compensations run (the members of a group at the same time);
            None: one at a time, in reverse order of completion.
    """

    steps: tuple[StepPlan, ...]
    stages: tuple[tuple[str, ...], ...]
    continue_on_compensation_error: bool = False
    compensation_order: tuple[tuple[str, ...], ...] | None = None
    _by_name: dict[str, StepPlan] = field(init=False, repr=False, compare=False)
    _before: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    # `sagakit.core.decide`'s, filled as it goes: the decision to make a
    # step's first attempt, the same for every run of the plan. (Its values
    # are `Decision`s, which this module cannot name: decide imports it.)
    _first_tries: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.steps})
        object.__setattr__(self, "_first_tries", {})
        before: dict[str, tuple[str, ...]] = {}
        for index, stage in enumerate(self.stages):
            for name in stage:
                before[name] = self.stages[index - 1] if index else ()
        object.__setattr__(self, "_before", before)

    def previous_stage(self, name: str) -> tuple[str, ...]:
        """The steps of the stage before the one ``name`` is in (empty for the first)."""
        return self._before.get(name, ())

    def previous_stages(self) -> Mapping[str, tuple[str, ...]]:
        """`previous_stage` of every step, by name, to read without a call (do not change it)."""
        return self._before

    def has(self, name: str) -> bool:
        """Whether the plan has a step called ``name``."""
        return name in self._by_name

    def step(self, name: str) -> StepPlan:
        """The step called ``name``.

        Raises:
            ValueError: the plan has no such step (a journal from another definition).
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"the saga has no step named {name!r}") from None

    def max_attempts(self, phase: Phase, name: str) -> int | None:
        """The attempt budget of a step's action or compensation."""
        plan = self.step(name)
        return plan.max_attempts if phase is Phase.ACTION else plan.compensation_max_attempts

"""Property tests of the pure core: random sagas, random failures, random crashes.

A small simulated driver carries out `decide`'s decisions the way the engine
does (journal the start, land an outcome, ask again). What each attempt does
is scripted per call and attempt number, so a call re-run after a crash
follows the script too. A crash keeps the journal written so far and drives
on from `replay` with nothing in flight. The properties are then checked
against the journal alone, computed without the core's help.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sagakit.core import Invoke, Plan, Progress, StepPlan, apply, decide, is_final_failure, replay
from sagakit.journal import FAILED, JSON, STARTED, SUCCEEDED, Event, EventKind, Phase, RunStatus

A, C = Phase.ACTION, Phase.COMPENSATION
OUTCOMES = ("ok", "error", "permanent", "timeout")
MAX_CRASHES = 4
Script = dict[tuple[Phase, str], list[str]]


@dataclass(frozen=True)
class Scenario:
    plan: Plan
    script: Script
    """What attempt n of a call does: ``script[call][n - 1]``; attempts past the end succeed."""
    crash_rate: float
    """The chance of a crash right after each event (at most `MAX_CRASHES` per `run`)."""
    seed: int
    """Decides which call in flight lands first, the crashes, and what the operator does."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    steps = []
    for i in range(draw(st.integers(1, 8))):
        compensable = draw(st.booleans())
        steps.append(
            StepPlan(
                name=f"s{i}",
                kind="compensatable" if compensable else "plain",
                compensable=compensable,
                max_attempts=draw(st.integers(1, 3)),
                compensation_max_attempts=draw(st.integers(1, 3)) if compensable else None,
                compensate_on_failure=compensable and draw(st.booleans()),
            )
        )
    # Before any pivot, neighbouring steps may share a stage and run in parallel.
    stages: list[tuple[str, ...]] = []
    parallel = draw(st.booleans())
    for step in steps:
        if stages and parallel and draw(st.booleans()):
            stages[-1] += (step.name,)
        else:
            stages.append((step.name,))
    pivoted = draw(st.booleans())
    if pivoted:  # the pivot and a tail of retriable steps, one stage each
        tail = [StepPlan("pivot", "pivot", False, draw(st.integers(1, 3)), None)]
        for j in range(draw(st.integers(0, 3))):
            tail.append(StepPlan(f"t{j}", "retriable", False, draw(st.integers(1, 3)), None))
        steps.extend(tail)
        stages.extend((s.name,) for s in tail)
    assert sorted(n for stage in stages for n in stage) == sorted(s.name for s in steps)
    plan = Plan(
        steps=tuple(steps),
        stages=tuple(stages),
        continue_on_compensation_error=draw(st.booleans()),
    )
    # A few calls get into trouble, the others always succeed: so runs often get
    # far (to the pivot, to the undo) before something goes wrong.
    calls = [(A, s.name) for s in steps] + [(C, s.name) for s in steps if s.compensable]
    troubled = draw(st.lists(st.sampled_from(calls), unique=True, max_size=6))
    if pivoted and (A, "pivot") not in troubled and draw(st.booleans()):
        troubled.append((A, "pivot"))  # else a pivot in trouble is rare
    script: Script = {
        call: [
            draw(st.sampled_from(OUTCOMES[1:])),
            *draw(st.lists(st.sampled_from(OUTCOMES), max_size=3)),
        ]
        for call in troubled
    }
    crash_rate = draw(st.sampled_from([0.0, 0.1, 0.3]))
    return Scenario(plan, script, crash_rate, draw(st.integers(0, 2**32)))


class Crash(Exception):
    """The simulated process dies right after an event became durable."""


@dataclass
class Simulation:
    scenario: Scenario
    journal: list[Event] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    clock: float = 0.0
    crashes_left: int = MAX_CRASHES

    def __post_init__(self) -> None:
        self.plan = self.scenario.plan
        self.rng = random.Random(self.scenario.seed)

    def run(self) -> None:
        """Drive until the run settles, surviving up to `MAX_CRASHES` crashes."""
        self.crashes_left = MAX_CRASHES
        while True:
            self.progress = replay(self.plan, self.journal)
            try:
                self.drive()
                return
            except Crash:
                self.crashes_left -= 1

    def drive(self) -> None:
        running: dict[tuple[Phase, str], Invoke] = {}
        for _ in range(1000):
            decision = decide(self.plan, self.progress, running.keys())
            if decision.transition is not None:
                t = decision.transition
                self.append(t.kind, t.step, None, t.data)
                continue
            for call in decision.invoke:
                assert (call.phase, call.step) not in running, f"{call} invoked twice"
                self.clock = max(self.clock, call.not_before or 0.0)
                self.append(STARTED[call.phase], call.step, call.attempt, {})
                running[(call.phase, call.step)] = call
            if not running:
                return  # nothing to do and nothing in flight: settled
            self.land(running.pop(self.rng.choice(sorted(running))))
        raise AssertionError("the run did not settle")

    def land(self, call: Invoke) -> None:
        script = self.scenario.script.get((call.phase, call.step), [])
        outcome = script[call.attempt - 1] if call.attempt <= len(script) else "ok"
        if outcome == "ok":
            result = {call.step: call.attempt} if call.phase is A else None
            self.append(SUCCEEDED[call.phase], call.step, call.attempt, {"result": result})
            return
        permanent = outcome == "permanent"
        final = is_final_failure(
            self.plan, self.progress, call.phase, call.step, permanent=permanent
        )
        data = {
            "error": {"type": outcome, "step": call.step, "attempt": call.attempt},
            "permanent": permanent,
            "unknown": outcome == "timeout",
            "retry_at": None if final else self.clock + 5.0,
        }
        self.append(FAILED[call.phase], call.step, call.attempt, data)

    def append(self, kind: EventKind, step: str | None, attempt: int | None, data: JSON) -> None:
        self.clock += 1.0
        event = Event("r", len(self.journal) + 1, kind, self.clock, step, attempt, data)
        apply(self.plan, self.progress, event)
        self.journal.append(event)
        if self.crashes_left and self.rng.random() < self.scenario.crash_rate:
            raise Crash


# -- what the journal says, worked out without the core ------------------------------


def steps_of(journal: Iterable[Event], kind: EventKind) -> list[str]:
    return [e.step for e in journal if e.kind is kind and e.step is not None]


def first_seen(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def due_undo_order(plan: Plan, journal: list[Event]) -> list[str]:
    """Compensatable steps that may have taken effect, latest first.

    A step may have taken effect from its first success, its first timed-out
    attempt, or (with compensate_on_failure) its first failure.
    """
    took_effect = first_seen(
        e.step
        for e in journal
        if e.step is not None
        and (
            e.kind is EventKind.STEP_SUCCEEDED
            or (
                e.kind is EventKind.STEP_FAILED
                and (e.data["unknown"] or plan.step(e.step).compensate_on_failure)
            )
        )
    )
    return [name for name in reversed(took_effect) if plan.step(name).compensable]


def failed_for_good(plan: Plan, journal: list[Event], phase: Phase) -> set[str]:
    """Calls that failed permanently or used up their attempts (no operator acted)."""
    kind = FAILED[phase]
    failures = [e for e in journal if e.kind is kind and e.step is not None]
    return {
        e.step
        for e in failures
        if e.step is not None  # always so (see failures): tells mypy
        if e.data["permanent"]
        or steps_of(failures, kind).count(e.step) >= (plan.max_attempts(phase, e.step) or 0)
    }


def check_compensations_run_once_and_only_for_started_steps(
    plan: Plan, journal: list[Event]
) -> None:
    """A compensation never runs for a step never started, nor again once it succeeded."""
    started: set[str] = set()
    undone: set[str | None] = set()
    for e in journal:
        if e.kind is EventKind.STEP_STARTED:
            started.add(e.step or "")
        if e.kind in (EventKind.COMPENSATION_STARTED, EventKind.COMPENSATION_SUCCEEDED):
            assert e.step in started, f"{e.step} compensated but never started"
            assert plan.step(e.step).compensable
            assert e.step not in undone, f"{e.step} compensated again after it succeeded"
        if e.kind is EventKind.COMPENSATION_SUCCEEDED:
            undone.add(e.step)


def check_calls_follow_the_rules(plan: Plan, journal: list[Event]) -> None:
    """No retry before its time; budgets counted right (crashes are free, an operator's
    retry starts afresh); nothing new after a failure for good; nothing left open."""
    open_calls: set[tuple[Phase, str]] = set()
    retry_at: dict[tuple[Phase, str], float] = {}
    failures: dict[tuple[Phase, str], int] = {}
    gave_up = False
    for e in journal:
        if e.kind in (EventKind.RETRIED, EventKind.RESOLVED):  # an operator moved the run on
            failures.clear()
            gave_up = False
            continue
        phase = A if e.kind.value.startswith("step") else C
        call = (phase, e.step or "")
        if e.kind is STARTED[phase]:
            assert e.at >= retry_at.pop(call, e.at), f"{call} retried before its retry_at"
            if gave_up and phase is A:
                assert call in open_calls, f"{e.step} started after a step failed for good"
            open_calls.add(call)
        elif e.kind in (SUCCEEDED[phase], FAILED[phase]):
            open_calls.discard(call)
        if e.kind is FAILED[phase]:
            failures[call] = failures.get(call, 0) + 1
            if e.data["retry_at"] is not None:
                retry_at[call] = e.data["retry_at"]
            else:  # failed for good: permanent, or as many failures as attempts (crashes are free)
                assert e.data["permanent"] or failures[call] == plan.max_attempts(*call)
                gave_up = gave_up or phase is A
    assert not open_calls, f"calls left without an outcome: {open_calls}"


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(name in it for name in short)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(scenarios())
def test_runs_settle_and_undo_exactly_what_took_effect(scenario: Scenario) -> None:
    sim = Simulation(scenario)
    sim.run()
    plan, journal, status = sim.plan, sim.journal, sim.progress.status
    assert status.settled
    assert replay(plan, journal).status is status

    check_compensations_run_once_and_only_for_started_steps(plan, journal)
    check_calls_follow_the_rules(plan, journal)
    due = due_undo_order(plan, journal)
    undo_started = first_seen(steps_of(journal, EventKind.COMPENSATION_STARTED))
    undone = steps_of(journal, EventKind.COMPENSATION_SUCCEEDED)
    rolling_back = any(e.kind is EventKind.ROLLBACK_STARTED for e in journal)
    pivot_passed = "pivot" in steps_of(journal, EventKind.STEP_SUCCEEDED)
    stuck = failed_for_good(plan, journal, C)

    # The original error is never lost, and every compensation error is kept beside it.
    errors = [e.data["error"] for e in journal if e.kind is EventKind.COMPENSATION_FAILED]
    assert sim.progress.compensation_errors == errors
    if rolling_back:
        (rollback,) = (e for e in journal if e.kind is EventKind.ROLLBACK_STARTED)
        assert rollback.data["error"] is not None
        assert sim.progress.error == rollback.data["error"]

    # Compensations run in reverse order of completion, only when rolling back.
    assert undo_started == due[: len(undo_started)]
    assert is_subsequence(undone, due)
    if not rolling_back:
        assert not undo_started
    else:
        assert due
        assert not pivot_passed

    all_succeeded = set(steps_of(journal, EventKind.STEP_SUCCEEDED)) == {s.name for s in plan.steps}
    assert (status is RunStatus.COMPLETED) == all_succeeded
    if status is RunStatus.COMPLETED:
        assert not undo_started
        assert all(s.name in sim.progress.state for s in plan.steps)

    assert (status is RunStatus.ROLLED_BACK) == (rolling_back and set(undone) == set(due))

    broken = failed_for_good(plan, journal, A)
    unknown_pivot = "pivot" in broken and any(
        e.data["unknown"] for e in journal if e.kind is EventKind.STEP_FAILED and e.step == "pivot"
    )
    if rolling_back:
        assert not unknown_pivot, "rolled back past a pivot that may have taken effect"
    nothing_to_undo = not due and not pivot_passed and not unknown_pivot
    assert (status is RunStatus.FAILED) == (bool(broken) and nothing_to_undo)

    if stuck:
        # A compensation that failed for good halts the undo there (or is skipped).
        assert status is RunStatus.NEEDS_ATTENTION
        if plan.continue_on_compensation_error:
            assert undo_started == due
            assert set(undone) == set(due) - stuck
        else:
            (halted,) = stuck
            assert undo_started[-1] == halted
            assert undone == due[: due.index(halted)]
            assert sim.progress.attention == (C, halted)
    elif status is RunStatus.NEEDS_ATTENTION:
        # Going forward: past the pivot, or the pivot's outcome is unknown.
        assert not rolling_back
        assert pivot_passed or unknown_pivot
        assert sim.progress.attention is not None
        assert sim.progress.attention[0] is A


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_an_operator_who_keeps_acting_brings_every_run_to_an_end(scenario: Scenario) -> None:
    sim = Simulation(scenario)
    sim.run()
    for _ in range(100):
        if sim.progress.status is not RunStatus.NEEDS_ATTENTION:
            break
        # Attempts past the script succeed, so retrying gets through in the end.
        kind = sim.rng.choice([EventKind.RETRIED, EventKind.RESOLVED])
        sim.journal.append(Event("r", len(sim.journal) + 1, kind, sim.clock, data={"note": "op"}))
        sim.run()
    plan, journal, progress = sim.plan, sim.journal, sim.progress
    assert progress.status.terminal

    check_compensations_run_once_and_only_for_started_steps(plan, journal)
    check_calls_follow_the_rules(plan, journal)
    resolved: set[tuple[Phase, str]] = set()
    halted_on: tuple[Phase, str] | None = None
    for e in journal:
        if e.kind is EventKind.NEEDS_ATTENTION:
            halted_on = (Phase(e.data["phase"]), e.step or "")
        if e.kind is EventKind.RESOLVED:
            assert halted_on is not None
            resolved.add(halted_on)
        if e.kind is EventKind.COMPENSATION_STARTED:
            assert (C, e.step) not in resolved, f"{e.step} compensated after it was resolved"

    undone = set(steps_of(journal, EventKind.COMPENSATION_SUCCEEDED))
    undone |= {name for phase, name in resolved if phase is C}
    if progress.status is RunStatus.ROLLED_BACK:
        assert undone == set(due_undo_order(plan, journal))
    if progress.status is RunStatus.COMPLETED:
        succeeded = set(steps_of(journal, EventKind.STEP_SUCCEEDED))
        succeeded |= {name for phase, name in resolved if phase is A}
        assert succeeded == {s.name for s in plan.steps}
        assert not undone

"""A clock whose hold does nothing: calls made without it, the same journal as with a hold."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pydantic import BaseModel

from sagakit import AsyncEngine, PermanentError, RetryPolicy, Saga, StepContext, runlog
from sagakit.clock import HandClock, SystemClock, holds_nothing
from sagakit.journal import Phase, idempotency_key
from sagakit.testing import SkippingClock


def test_only_the_idle_holds_count_as_nothing() -> None:
    assert holds_nothing(SystemClock())
    assert holds_nothing(HandClock(lambda: 5.0))
    assert not holds_nothing(SkippingClock())


def make_saga(seen: list[tuple[Any, ...]]) -> Saga[Any]:
    """Steps that return results, change their state in place, and read their context."""
    saga: Saga[Any] = Saga("unheld")

    async def first(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seen.append((ctx.step, ctx.idempotency_key, ctx.previous_step_result, ctx.attempt))
        return {"a": 1}

    async def second(state: dict[str, Any], ctx: StepContext) -> None:
        seen.append((ctx.step, ctx.idempotency_key, ctx.previous_step_result, ctx.attempt))
        state["items"].append(2)  # changed in place: recorded like a result

    def third(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seen.append((ctx.step, ctx.idempotency_key, ctx.previous_step_result, ctx.attempt))
        return {"b": state["a"] + len(state["items"])}

    saga.add_step(first, name="first")
    saga.add_step(second, name="second")
    saga.add_step(third, name="third")
    return saga


async def journal_with(clock: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], Any]:
    seen: list[tuple[Any, ...]] = []
    async with AsyncEngine("memory://", clock=clock) as engine:
        run = await engine.run(make_saga(seen), {"items": [1]}, run_id="r1")
        events = await engine.history(run.id)
    return seen, [(e.seq, e.kind, e.step, e.attempt, e.data) for e in events], run.state


def test_calls_made_unheld_journal_what_held_calls_journal() -> None:
    # The system clock's calls go through `run_unheld` (no hold), the skipping
    # clock's through `run` (held): the same saga leaves the same journal,
    # the same contexts and the same state.
    unheld = asyncio.run(journal_with(SystemClock()))
    held = asyncio.run(journal_with(SkippingClock()))
    assert unheld == held
    seen, kinds, state = unheld
    assert seen == [
        ("first", "r1/first", None, 1),
        ("second", "r1/second", {"a": 1}, 1),
        ("third", "r1/third", {"items": [1, 2]}, 1),
    ]
    # The key an action's context carries is written out there: it must stay
    # what `idempotency_key` makes (and a compensation's context is given).
    assert [key for _, key, _, _ in seen] == [
        idempotency_key("r1", name, Phase.ACTION) for name in ("first", "second", "third")
    ]
    assert state == {"items": [1, 2], "a": 1, "b": 3}
    assert [kind for _, kind, _, _, _ in kinds][-1] == "run_finished"


class AskedClock(SystemClock):
    """The system's time and waits; each hold asked for is noted, with the step bound then."""

    __slots__ = ("asked",)

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def busy(self) -> AbstractContextManager[None]:
        fields = runlog.current()
        self.asked.append(None if fields is None else fields.step)
        return super().busy()


def test_a_clock_of_its_own_busy_is_asked_for_its_hold_at_every_call() -> None:
    # Its hold is the system clock's, but asking for it does something: the
    # drive may not skip it (as it may the system clock's own, which does
    # nothing), so every call and commit asks, as they always did.
    clock = AskedClock()
    assert not holds_nothing(clock)
    seen: list[tuple[Any, ...]] = []

    async def main() -> None:
        async with AsyncEngine("memory://", clock=clock) as engine:
            await engine.run(make_saga(seen), {"items": [1]}, run_id="r1")

    asyncio.run(main())
    # Each call (its step bound then) and each commit (none bound): four
    # commits, the first creating the run with its first step's start.
    assert clock.asked == [None, "first", None, "second", None, "third", None]


class Counted(BaseModel):
    """A state whose model changes what a step returns (a string read as a number)."""

    n: int = 0
    m: int = 0


def model_saga(parallel: bool) -> Saga[Any]:
    saga: Saga[Any] = Saga("succeeded", state=Counted)

    async def first(state: Counted, ctx: StepContext) -> dict[str, Any]:
        return {"n": "1", "note": "kept in the result only"}

    async def second(state: Counted, ctx: StepContext) -> None:
        state.m = 2  # changed in place: recorded like a result

    saga.add_step(first, name="first")
    saga.add_step(second, name="second")
    if parallel:
        saga.parallel("first", "second")
    return saga


def test_a_success_is_journaled_alike_one_call_at_a_time_and_in_a_parallel_stage() -> None:
    # The drive journals a plain success of a call made alone itself (no
    # `succeeded` call); a call of a parallel stage goes through `succeeded`.
    # Both write the same event: the result whole, and the state the model kept.
    async def successes(parallel: bool) -> dict[str | None, Any]:
        async with AsyncEngine("memory://") as engine:
            run = await engine.run(model_saga(parallel), {}, run_id="r1")
            events = await engine.history(run.id)
        assert run.state == Counted(n=1, m=2)
        return {e.step: (e.attempt, e.data) for e in events if e.kind == "step_succeeded"}

    alone, together = asyncio.run(successes(False)), asyncio.run(successes(True))
    assert alone == together
    assert alone["first"] == (
        1,
        {"result": {"n": "1", "note": "kept in the result only"}, "state": {"n": 1}},
    )
    assert alone["second"] == (1, {"result": {"m": 2}})


class HeldClock(SystemClock):
    """The system's time and waits, with a hold of its own: its drives are held."""

    __slots__ = ()

    def busy(self) -> AbstractContextManager[None]:
        return nullcontext()


def timeless(value: Any) -> Any:
    """``value`` without what depends on when it ran (times, and a traceback's lines)."""
    if isinstance(value, dict):
        return {
            key: timeless(item)
            for key, item in value.items()
            if not key.endswith("_at") and key != "traceback"
        }
    if isinstance(value, list):
        return [timeless(item) for item in value]
    return value


def failing_saga(log: list[str]) -> Saga[Any]:
    """A retried step, a sync step, a compensation retried, and a step failing for good."""
    saga: Saga[Any] = Saga("rolled")
    quick = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0)

    async def pay(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        log.append(f"pay {ctx.attempt}")
        if ctx.attempt == 1:
            raise ConnectionError("gateway busy")
        return {"paid": 10}

    async def refund(state: dict[str, Any], ctx: StepContext) -> None:
        log.append(f"refund {ctx.attempt} {ctx.reason} {ctx.step_result}")
        if ctx.step == "pay" and ctx.attempt == 1:
            raise ConnectionError("gateway busy")

    def reserve(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        log.append(f"reserve {ctx.attempt} {ctx.previous_step_result}")
        return {"reserved": True}

    async def ship(state: dict[str, Any], ctx: StepContext) -> None:
        log.append(f"ship {ctx.attempt}")
        raise PermanentError("no carrier today")

    saga.add_step(pay, name="pay", retry=quick, compensation=refund, compensation_retry=quick)
    saga.add_step(reserve, name="reserve", compensation=refund)
    saga.add_step(ship, name="ship")
    return saga


def test_a_failing_run_made_unheld_journals_what_a_held_one_journals() -> None:
    # Retries with a backoff, a sync step, a permanent failure, compensations
    # (one retried): the system clock's drive (unheld) and the same clock
    # with a hold of its own (held) call the same functions and journal the
    # same events, but for the times.
    async def rolled(clock: Any) -> tuple[list[str], list[tuple[Any, ...]], Any]:
        log: list[str] = []
        async with AsyncEngine("memory://", clock=clock) as engine:
            run = await engine.run(failing_saga(log), {}, run_id="r1")
            events = await engine.history(run.id)
        journal = [(e.seq, str(e.kind), e.step, e.attempt, timeless(e.data)) for e in events]
        return log, journal, (run.status, run.state)

    assert not holds_nothing(HeldClock())
    unheld = asyncio.run(rolled(SystemClock()))
    held = asyncio.run(rolled(HeldClock()))
    assert unheld == held
    log, journal, outcome = unheld
    assert log == [
        "pay 1",
        "pay 2",
        "reserve 1 {'paid': 10}",
        "ship 1",
        "refund 1 failure {'reserved': True}",
        "refund 1 failure {'paid': 10}",
        "refund 2 failure {'paid': 10}",
    ]
    assert outcome == ("rolled_back", {"paid": 10, "reserved": True})
    assert [kind for _, kind, _, _, _ in journal].count("step_failed") == 2

"""A clock whose hold does nothing: calls made without it, the same journal as with a hold."""

from __future__ import annotations

import asyncio
from typing import Any

from sagakit import AsyncEngine, Saga, StepContext
from sagakit.clock import HandClock, SystemClock, holds_nothing
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
    assert state == {"items": [1, 2], "a": 1, "b": 3}
    assert [kind for _, kind, _, _, _ in kinds][-1] == "run_finished"

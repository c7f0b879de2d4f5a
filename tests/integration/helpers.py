"""Sagas and moves shared by the engine tests."""

from __future__ import annotations

import asyncio
from typing import Any

from sagakit import AsyncEngine, PermanentError, RetryPolicy, Saga, StepContext


def halting_saga(name: str = "halts") -> Saga[Any]:
    """book → pay (declined); undoing book fails for good at once: needs attention."""
    saga: Saga[Any] = Saga(name)

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @book.compensate(retry=RetryPolicy(max_attempts=1))
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        raise RuntimeError("provider down")

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("declined")

    return saga


def crash(engine: AsyncEngine, *drives: asyncio.Future[Any]) -> None:
    """Simulate the death of ``engine``'s process: stop driving and renewing, release nothing."""
    for drive in drives:
        drive.cancel()
    assert engine._heartbeat is not None
    engine._heartbeat.cancel()

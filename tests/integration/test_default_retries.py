"""An action with no retry policy of its own is tried three times before the saga compensates.

The engine's clock ticks five seconds at every read, so every retry timer is
due at once: nothing here waits for a real backoff.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sagakit import Engine, EventKind, PermanentError, RunStatus, Saga, StepContext


class TickingClock:
    """A clock that moves five seconds on at every read."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 5.0
        return self.now


def blipping(calls: Counter[str], *, blips: int, permanent: bool = False) -> Saga[Any]:
    """reserve (undone by release) → charge, which fails ``blips`` times first."""
    saga: Saga[Any] = Saga("blips")

    @saga.step
    def reserve(state: dict[str, Any], ctx: StepContext) -> None:
        calls["reserve"] += 1

    @reserve.compensate
    def release(state: dict[str, Any], ctx: StepContext) -> None:
        calls["release"] += 1

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        calls["charge"] += 1
        if permanent:
            raise PermanentError("card declined")
        if calls["charge"] <= blips:
            raise ConnectionError("gateway blip")

    return saga


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://default-retries-{tmp_path.name}"
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_two_passing_failures_are_retried_and_the_run_completes(url: str) -> None:
    calls: Counter[str] = Counter()
    with Engine(url, clock=TickingClock()) as engine:
        run = engine.run(blipping(calls, blips=2), run_id="blip")
        failed = [e for e in engine.history("blip") if e.kind is EventKind.STEP_FAILED]
    assert run.status == RunStatus.COMPLETED
    assert calls == Counter(reserve=1, charge=3)
    assert [e.attempt for e in failed] == [1, 2]
    assert all(e.data["retry_at"] is not None for e in failed)


def test_a_third_failure_compensates(url: str) -> None:
    calls: Counter[str] = Counter()
    with Engine(url, clock=TickingClock()) as engine:
        run = engine.run(blipping(calls, blips=3), run_id="down")
        failed = [e for e in engine.history("down") if e.kind is EventKind.STEP_FAILED]
    assert run.status == RunStatus.ROLLED_BACK
    assert calls == Counter(reserve=1, charge=3, release=1)
    assert [e.data["retry_at"] is None for e in failed] == [False, False, True]
    assert run.error is not None
    assert run.error.attempt == 3


def test_a_permanent_error_is_not_retried(url: str) -> None:
    calls: Counter[str] = Counter()
    with Engine(url, clock=TickingClock()) as engine:
        run = engine.run(blipping(calls, blips=0, permanent=True), run_id="declined")
    assert run.status == RunStatus.ROLLED_BACK
    assert calls == Counter(reserve=1, charge=1, release=1)

"""Operator actions with ``park_after``: the run is handed back rather than waited on here.

The dashboard acts with ``park_after``, so that a request never waits out a
compensation's retry backoff; the run keeps its timer in the store for a
worker (or `recover`) to carry on when it is due.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from sagakit import Engine, RetryPolicy, RunStatus, Saga, StepContext
from sagakit.testing import SkippingClock

LATER = RetryPolicy(max_attempts=3, initial_delay=600.0, max_delay=600.0, backoff=1.0, jitter=0.0)


def booking(failures: dict[str, int]) -> Saga[Any]:
    """``book`` succeeds; its undo fails ``failures["undo"]`` times, then works."""
    saga: Saga[Any] = Saga("booking")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        pass

    @book.compensate(retry=LATER)
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        if failures["undo"] > 0:
            failures["undo"] -= 1
            raise ConnectionError("the desk is down")

    return saga


@pytest.mark.timeout(60)
def test_a_cancel_whose_undo_must_wait_ten_minutes_is_handed_back_with_its_timer(
    store_url: str,
) -> None:
    failures = {"undo": 1}
    saga = booking(failures)
    with Engine(store_url) as engine:
        assert engine.run(saga, {}, run_id="b-1").status is RunStatus.COMPLETED
        before = time.time()
        run = engine.cancel("b-1", reason="changed plans", park_after=2.0)
        assert run.status is RunStatus.COMPENSATING  # not waited on here
        record = engine.call(engine.async_engine.store.get_run("b-1"))
        assert record is not None
        assert record.owner is None  # handed back: any worker may take it
        assert record.wake_at is not None
        assert record.wake_at >= before + 599


@pytest.mark.timeout(60)
def test_a_retry_whose_undo_must_wait_is_handed_back_too(store_url: str) -> None:
    failures = {"undo": 3}  # every attempt of the first budget fails
    saga = booking(failures)
    clock = SkippingClock()  # the first budget's twenty minutes of backoff take none
    with Engine(store_url, clock=clock) as engine:
        engine.run(saga, {}, run_id="b-2")
        assert engine.cancel("b-2").status is RunStatus.NEEDS_ATTENTION
        failures["undo"] = 1  # the retry's first attempt fails too, the second would work
        run = engine.retry("b-2", note="desk back up", park_after=2.0, by="dashboard:ada")
        assert run.status is RunStatus.COMPENSATING
        record = engine.call(engine.async_engine.store.get_run("b-2"))
        assert record is not None
        assert record.owner is None
        assert record.wake_at == pytest.approx(clock() + 600, abs=1)

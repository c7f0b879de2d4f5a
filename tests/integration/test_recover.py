"""`recover()` does, once, what a worker does: only what is due now.

Each test builds a run left in the store in one condition (parked on a
retry timer, paused with a deadline, settled with mail, a journal that does
not fit) and checks what `recover` takes, what it leaves, and what it hands
back. Time is an injected clock, moved by the tests.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sagakit import (
    Engine,
    EventKind,
    Pause,
    RetryPolicy,
    RunStatus,
    Saga,
    SagaError,
    StepContext,
)


class Clock:
    """Seconds since the epoch that only move when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(store_url: str) -> str:
    """Every store: memory, SQLite and PostgreSQL (see tests/conftest.py)."""
    return store_url


def flaky(calls: Counter[str], delay: float = 60.0) -> Saga[Any]:
    """book, then charge, whose first attempt fails and is retried ``delay`` s later."""
    saga: Saga[Any] = Saga("flaky")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        calls["book"] += 1

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay=delay, backoff=1.0, jitter=0.0))
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        calls["charge"] += 1
        if ctx.attempt == 1:
            raise ConnectionError("gateway busy")

    return saga


def test_recover_hands_back_a_run_that_waits_on_a_long_timer_and_takes_it_when_due(
    url: str,
) -> None:
    calls: Counter[str] = Counter()
    clock = Clock()
    saga = flaky(calls)
    with Engine(url, clock=clock) as engine:
        engine.register(saga)
        engine.start(saga, run_id="p1")

        (run,) = engine.recover()  # runs book, then charge fails: retry in 60 s
        assert run.status == RunStatus.RUNNING
        assert run.owner is None  # handed back, not held while it waits
        assert calls == Counter({"book": 1, "charge": 1})

        clock.now += 30
        assert engine.recover() == []  # not due: not taken (nor held)
        assert engine.get("p1").owner is None

        clock.now += 31
        (run,) = engine.recover()
        assert run.status == RunStatus.COMPLETED
    assert calls == Counter({"book": 1, "charge": 2})


def test_recover_with_park_after_none_waits_out_the_timer_here(url: str) -> None:
    calls: Counter[str] = Counter()
    saga = flaky(calls, delay=0.05)
    with Engine(url) as engine:
        engine.register(saga)
        engine.start(saga, run_id="p2")
        (run,) = engine.recover(park_after=None)
    assert run.status == RunStatus.COMPLETED
    assert calls["charge"] == 2


def test_recover_drives_a_paused_run_whose_deadline_is_due(url: str) -> None:
    clock = Clock()
    undone: list[str] = []
    saga: Saga[Any] = Saga("hotel", deadline=timedelta(seconds=60))

    @saga.step
    def flight(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @flight.compensate
    def cancel_flight(state: dict[str, Any], ctx: StepContext) -> None:
        undone.append(f"flight ({ctx.reason})")

    @saga.step
    def hotel(state: dict[str, Any], ctx: StepContext) -> None:
        raise Pause("the hotel is full", options=["choose"])

    with Engine(url, clock=clock) as engine:
        assert engine.run(saga, run_id="d1").status == RunStatus.PAUSED
        clock.now += 30
        assert engine.recover() == []  # its deadline is not due yet
        clock.now += 31
        (run,) = engine.recover()
    assert run.status == RunStatus.ROLLED_BACK
    assert undone == ["flight (deadline)"]


def test_recover_acts_on_a_settled_run_with_mail_waiting(tmp_path: Path) -> None:
    """A completed run cancelled from a process that did not know its saga."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    undone: list[str] = []
    saga: Saga[Any] = Saga("order")

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        undone.append(f"refund ({ctx.reason})")

    with Engine(url) as engine:
        assert engine.run(saga, run_id="m1").status == RunStatus.COMPLETED
    with Engine(url) as unaware:  # no saga registered: the cancel is posted as mail
        assert unaware.cancel("m1", reason="changed my mind").status == RunStatus.COMPLETED
    with Engine(url) as engine:
        engine.register(saga)
        (run,) = engine.recover()
        kinds = [e.kind for e in engine.history("m1")]
    assert run.status == RunStatus.CANCELLED
    assert EventKind.CANCEL_REQUESTED in kinds
    assert undone == ["refund (cancel)"]


def test_recover_holds_back_a_run_whose_journal_does_not_fit_even_with_mail(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def make(step_name: str) -> Saga[Any]:
        saga: Saga[Any] = Saga("renamed")

        @saga.step(name=step_name, retry=RetryPolicy(max_attempts=2, initial_delay=60.0))
        def step(state: dict[str, Any], ctx: StepContext) -> None:
            raise ConnectionError("down")

        return saga

    clock = Clock()
    with Engine(url, clock=clock) as engine:
        engine.register(make("reserve"))
        engine.start("renamed", run_id="u1")
        assert engine.recover()[0].status == RunStatus.RUNNING  # parked on its retry
    with Engine(url, clock=clock) as unaware:  # no saga registered: the cancel is mail
        unaware.cancel("u1", reason="stop")
    with Engine(url, clock=clock) as engine:
        engine.register(make("reserve_seat"))  # same version, step renamed
        assert engine.recover() == []  # logged and held back
        assert engine.recover() == []  # not taken again while held, mail or not
        record = engine.get("u1")
        history = engine.history("u1")
    assert record.status == RunStatus.RUNNING
    assert EventKind.CANCEL_REQUESTED not in [e.kind for e in history]  # the mail waits
    unfit = [r for r in caplog.records if "cannot be resumed" in r.getMessage()]
    assert len(unfit) == 1
    assert "left as it is for 60s" in unfit[0].getMessage()


def test_recover_refuses_a_negative_park_after(url: str) -> None:
    with Engine(url) as engine, pytest.raises(SagaError, match="park_after must not be"):
        engine.recover(park_after=-1)

"""A call that times out and never returns: the run needs attention, then resumes.

A sync function's thread cannot be stopped and a coroutine may ignore its
cancellation, so the next call of the step (a retry, or its compensation)
waits for it. These tests hang real calls (on a `threading.Event` nobody sets
until the test says so) and check that the run reaches ``needs_attention``
within the engine's hang grace, naming the step, and that it carries on once
the call returns or an operator acts. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    AttentionReport,
    Engine,
    Event,
    EventKind,
    RetryPolicy,
    Run,
    RunStatus,
    Saga,
    SagaError,
    StepContext,
)

# Bounds for waits that must end; generous, since they only fail a broken build.
HANG_BOUND = 20.0


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set by the test to let the hung call return; set at the end in any case."""
    event = threading.Event()
    yield event
    event.set()


def hanging_saga(release: threading.Event, timeline: list[str], *, attempts: int = 1) -> Saga[Any]:
    """book → charge; charge's first attempt times out and runs on until ``release``."""
    saga: Saga[Any] = Saga("hangs")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("book")

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("unbook")

    @saga.step(timeout=0.1, retry=RetryPolicy(max_attempts=attempts, initial_delay=0.0))
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append(f"charge {ctx.attempt} starts")
        if ctx.attempt == 1:
            release.wait(HANG_BOUND * 3)  # hangs: the test sets it
            timeline.append("charge 1 returns")

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("refund")

    return saga


def run_bounded(call: Callable[[], Run]) -> Run:
    """``call()`` on a thread, failing the test if it has not returned in time."""
    out: list[Run] = []
    failed: list[BaseException] = []

    def main() -> None:
        try:
            out.append(call())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(HANG_BOUND)
    assert not thread.is_alive(), "the run hangs: it never returned"
    if failed:
        raise failed[0]
    return out[0]


def settles_as(read: Callable[[], Run], status: RunStatus) -> Run:
    """The run, once it reads as ``status`` (within the bound)."""
    give_up = time.monotonic() + HANG_BOUND
    while True:
        run = read()
        if run.status == status:
            return run
        assert time.monotonic() < give_up, f"run still {run.status}, never {status}"
        time.sleep(0.02)


def test_a_hung_sync_step_halts_its_run_then_resumes_when_it_returns(
    store_url: str, release: threading.Event
) -> None:
    timeline: list[str] = []
    reports: list[AttentionReport] = []
    saga = hanging_saga(release, timeline)
    with Engine(store_url, hang_grace=0.3, on_attention=reports.append) as engine:
        run = run_bounded(lambda: engine.run(saga, run_id="h1"))

        assert run.status == RunStatus.NEEDS_ATTENTION
        halt = last_halt(engine.history("h1"))
        assert halt.kind is EventKind.NEEDS_ATTENTION
        assert halt.step == "charge"
        assert halt.data["phase"] == "compensation"
        assert halt.data["hung"] == {"phase": "action", "attempt": 1}
        reason = halt.data["reason"]
        assert "action of step 'charge' (attempt 1) is still running on its thread" in reason
        assert "its compensation cannot start before it returns" in reason
        (report,) = reports
        assert (report.step, report.phase, report.reason) == ("charge", "compensation", reason)
        assert "refund" not in timeline  # never overlaps the call still running

        release.set()  # the call returns: the engine resumes the run by itself
        run = settles_as(lambda: engine.get("h1"), RunStatus.ROLLED_BACK)

        kinds = [e.kind for e in engine.history("h1")]
        resumed = engine.history("h1")[kinds.index(EventKind.RETRIED)]
        assert resumed.data["by"] == "sagakit"
        assert "returned" in resumed.data["note"]
    assert timeline == ["book", "charge 1 starts", "charge 1 returns", "refund", "unbook"]


def test_an_operator_retry_resumes_a_run_halted_on_a_hung_step(
    tmp_path: Path, release: threading.Event
) -> None:
    """The process that ran the call is gone (closed); an operator retries elsewhere."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    timeline: list[str] = []
    saga = hanging_saga(release, timeline)
    with Engine(url, hang_grace=0.2) as first:
        run = run_bounded(lambda: first.run(saga, run_id="h2"))
    assert run.status == RunStatus.NEEDS_ATTENTION
    release.set()
    deadline = time.monotonic() + HANG_BOUND
    while "charge 1 returns" not in timeline:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    with Engine(url) as second:
        second.register(saga)
        run = run_bounded(lambda: second.retry("h2", note="the gateway answered", step="charge"))
        history = second.history("h2")
    assert run.status == RunStatus.ROLLED_BACK
    retried = next(e for e in history if e.kind is EventKind.RETRIED)
    assert retried.data == {"phase": "compensation", "note": "the gateway answered"}
    assert timeline.count("refund") == 1


def test_a_run_halted_on_a_hung_step_can_be_resolved(
    tmp_path: Path, release: threading.Event
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    timeline: list[str] = []
    saga = hanging_saga(release, timeline)
    with Engine(url, hang_grace=0.2) as first:
        assert run_bounded(lambda: first.run(saga, run_id="h3")).status == "needs_attention"
    with Engine(url) as second:
        second.register(saga)
        run = run_bounded(lambda: second.resolve("h3", note="refunded by hand", step="charge"))
    assert run.status == RunStatus.ROLLED_BACK
    assert "refund" not in timeline  # done by hand, as the operator said
    assert timeline[-1] == "unbook"


def test_a_retry_while_the_call_still_runs_halts_again_and_resumes_once(
    store_url: str, release: threading.Event
) -> None:
    timeline: list[str] = []
    saga = hanging_saga(release, timeline)
    with Engine(store_url, hang_grace=0.2) as engine:
        assert run_bounded(lambda: engine.run(saga, run_id="h4")).status == "needs_attention"
        again = run_bounded(lambda: engine.retry("h4"))
        assert again.status == RunStatus.NEEDS_ATTENTION  # the thread still runs here
        release.set()
        settles_as(lambda: engine.get("h4"), RunStatus.ROLLED_BACK)
        kinds = [e.kind for e in engine.history("h4")]
    assert kinds.count(EventKind.NEEDS_ATTENTION) == 2
    assert kinds.count(EventKind.RETRIED) == 2  # the operator's, then sagakit's
    assert timeline.count("refund") == 1


def test_a_retry_blocked_by_its_hung_attempt_halts_going_forward(
    store_url: str, release: threading.Event
) -> None:
    """The action's own retry waits for the timed-out attempt, then halts: no rollback."""
    timeline: list[str] = []
    saga = hanging_saga(release, timeline, attempts=2)
    with Engine(store_url, hang_grace=0.2) as engine:
        run = run_bounded(lambda: engine.run(saga, run_id="h5"))
        assert run.status == RunStatus.NEEDS_ATTENTION
        halt = last_halt(engine.history("h5"))
        assert (halt.step, halt.data["phase"]) == ("charge", "action")
        assert "attempt 2 cannot start before it returns" in halt.data["reason"]
        assert halt.data["error"]["timed_out"] is True
        release.set()
        run = settles_as(lambda: engine.get("h5"), RunStatus.COMPLETED)
    assert timeline == ["book", "charge 1 starts", "charge 1 returns", "charge 2 starts"]


def test_a_call_that_returns_within_the_grace_is_waited_for(store_url: str) -> None:
    timeline: list[str] = []
    saga: Saga[Any] = Saga("slow")

    @saga.step(timeout=0.05, retry=RetryPolicy(max_attempts=1))  # fails, then compensates
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        time.sleep(0.3)
        timeline.append("charge returns")

    @charge.compensate
    def refund(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("refund")

    with Engine(store_url, hang_grace=10.0) as engine:
        run = run_bounded(lambda: engine.run(saga, run_id="h6"))
    assert run.status == RunStatus.ROLLED_BACK
    assert timeline == ["charge returns", "refund"]


def test_an_async_step_that_ignores_its_cancellation_halts_its_run(
    store_url: str, release: threading.Event
) -> None:
    timeline: list[str] = []
    saga: Saga[Any] = Saga("stubborn")

    @saga.step(timeout=0.1, retry=RetryPolicy(max_attempts=1))  # fails, then compensates
    async def charge(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("charge starts")
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                timeline.append("cancel ignored")
        timeline.append("charge returns")

    @charge.compensate
    async def refund(state: dict[str, Any], ctx: StepContext) -> None:
        timeline.append("refund")

    async def body() -> tuple[Run, Run, str]:
        async with AsyncEngine(store_url, hang_grace=0.2) as engine:
            halted = await asyncio.wait_for(engine.run(saga, run_id="h7"), HANG_BOUND)
            reason = last_halt(await engine.history("h7")).data["reason"]
            release.set()
            give_up = time.monotonic() + HANG_BOUND
            while (run := await engine.get("h7")).status != RunStatus.ROLLED_BACK:
                assert time.monotonic() < give_up, f"run still {run.status}"
                await asyncio.sleep(0.02)
            return halted, run, reason

    halted, run, reason = asyncio.run(body())
    assert halted.status == RunStatus.NEEDS_ATTENTION
    assert "step 'charge' (attempt 1) is still running (its coroutine ignored" in reason
    assert run.status == RunStatus.ROLLED_BACK
    assert timeline == ["charge starts", "cancel ignored", "charge returns", "refund"]


def test_a_negative_hang_grace_is_refused() -> None:
    with pytest.raises(SagaError, match="hang_grace must not be negative, got -1"):
        AsyncEngine("memory://", hang_grace=-1)


def last_halt(events: list[Event]) -> Event:
    """The latest needs_attention event (an alert may be journaled after it)."""
    return next(e for e in reversed(events) if e.kind is EventKind.NEEDS_ATTENTION)

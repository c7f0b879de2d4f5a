"""Observers: told of every committed journal event, never able to break or stall a run.

Engines on every store, observers recording what they are told; observers
that raise, that block, and none at all.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from sagakit import (
    AsyncEngine,
    AttemptOutcome,
    Engine,
    Event,
    EventKind,
    ObservedEvent,
    Observer,
    Phase,
    RetryPolicy,
    RunStatus,
    Saga,
    SagaError,
    Sensitive,
    Worker,
)
from sagakit.observe import Observers
from sagakit.observe.events import observed_events

QUICK = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)


class Recorder(Observer):
    """Keeps what it is told, and hands out a trace context of its own."""

    def __init__(self, context: Mapping[str, str] | None = None) -> None:
        self.events: list[ObservedEvent] = []
        self.lost: list[str] = []
        self.context = context

    def on_event(self, event: ObservedEvent) -> None:
        self.events.append(event)

    def on_lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        self.lost.append(run_id)

    def run_context(self, *, run_id: str, saga: str, version: str) -> Mapping[str, str] | None:
        return self.context

    def of(self, run_id: str) -> list[ObservedEvent]:
        return [e for e in self.events if e.run_id == run_id]


def failing_saga(name: str = "observed") -> Saga[Any]:
    """``reserve`` succeeds, ``charge`` fails twice: the run rolls back, ``reserve`` undone."""
    saga: Saga[Any] = Saga(name, version="2")

    @saga.step(retry=QUICK)
    def reserve(state: dict[str, Any], ctx: object) -> dict[str, Any]:
        return {"reserved": True}

    @reserve.compensate
    def release(state: dict[str, Any], ctx: object) -> None:
        pass

    @saga.step(retry=QUICK)
    def charge(state: dict[str, Any], ctx: object) -> None:
        raise RuntimeError("card declined")

    return saga


def test_every_committed_event_is_told_in_order_with_its_attempt(store_url: str) -> None:
    recorder = Recorder()
    with Engine(store_url, observers=[recorder]) as engine:
        run = engine.run(failing_saga(), {}, run_id="obs-1")
        assert run.status is RunStatus.ROLLED_BACK
        history = engine.history("obs-1")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    told = recorder.of("obs-1")
    assert [(e.seq, e.kind, e.step, e.attempt) for e in told] == [
        (e.seq, e.kind, e.step, e.attempt) for e in history
    ]
    assert {(e.saga, e.version) for e in told} == {("observed", "2")}
    ends = [(e.kind, e.step, e.phase, e.attempt, e.outcome) for e in told if e.outcome]
    assert ends == [
        (EventKind.STEP_SUCCEEDED, "reserve", Phase.ACTION, 1, AttemptOutcome.SUCCEEDED),
        (EventKind.STEP_FAILED, "charge", Phase.ACTION, 1, AttemptOutcome.FAILED),
        (EventKind.STEP_FAILED, "charge", Phase.ACTION, 2, AttemptOutcome.FAILED),
        (
            EventKind.COMPENSATION_SUCCEEDED,
            "reserve",
            Phase.COMPENSATION,
            1,
            AttemptOutcome.SUCCEEDED,
        ),
    ]
    failed = [e for e in told if e.kind is EventKind.STEP_FAILED]
    # The first failure is retried, the second is final.
    assert failed[0].retry_at is not None
    assert failed[1].retry_at is None
    assert failed[1].error is not None
    assert failed[1].error.type == "RuntimeError"
    assert failed[1].error.message == "card declined"
    for end in (e for e in told if e.outcome):
        started = next(
            s
            for s in history
            if s.kind in (EventKind.STEP_STARTED, EventKind.COMPENSATION_STARTED)
            and s.step == end.step
            and s.attempt == end.attempt
            and (s.kind is EventKind.STEP_STARTED) == (end.phase is Phase.ACTION)
        )
        assert end.started_at == started.at
        assert end.duration == pytest.approx(end.at - started.at)
    undo = next(e for e in told if e.kind is EventKind.COMPENSATION_SUCCEEDED)
    assert undo.idempotency_key == "obs-1/reserve/compensate"
    finished = told[-1]
    assert finished.kind is EventKind.RUN_FINISHED
    assert finished.status is RunStatus.ROLLED_BACK
    assert finished.started_at == history[0].at
    rollback = next(e for e in told if e.kind is EventKind.ROLLBACK_STARTED)
    assert rollback.reason == "failure"


def test_no_observer_changes_nothing(tmp_path: Any) -> None:
    with Engine(f"sqlite:///{tmp_path / 'runs.db'}") as engine:
        assert engine.async_engine.observers is None
        assert engine.async_engine.drives.observers is None
        engine.run(failing_saga(), {}, run_id="plain")
        started = engine.history("plain")[0]
    assert started.kind is EventKind.RUN_STARTED
    assert "trace" not in started.data


def test_the_context_given_at_start_is_stored_and_told_by_the_engine_that_drives(
    tmp_path: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    saga = failing_saga()
    starter = Recorder(context={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})
    with Engine(url, observers=[starter]) as engine:
        engine.start(saga, {}, run_id="ctx-1")
        assert engine.history("ctx-1")[0].data["trace"] == starter.context
    assert [e.kind for e in starter.events] == [EventKind.RUN_STARTED]
    assert starter.events[0].trace == starter.context
    driver = Recorder()  # another engine, as another process would have
    with Engine(url, observers=[driver]) as engine:
        engine.register(saga)
        engine.recover(park_after=None)
    told = driver.of("ctx-1")
    assert told
    assert told[-1].kind is EventKind.RUN_FINISHED
    assert {tuple(sorted((e.trace or {}).items())) for e in told} == {
        tuple(sorted(starter.context.items()))  # type: ignore[union-attr]
    }


def test_a_worker_and_operator_actions_are_told(store_url: str) -> None:
    halts: Saga[Any] = Saga("halts")

    @halts.step(retry=RetryPolicy(max_attempts=1))
    def book(state: dict[str, Any], ctx: object) -> None:
        pass

    @book.compensate(retry=RetryPolicy(max_attempts=1))
    def unbook(state: dict[str, Any], ctx: object) -> None:
        if not state.get("fixed"):
            raise RuntimeError("the provider is down")

    @halts.step(retry=RetryPolicy(max_attempts=1))
    def pay(state: dict[str, Any], ctx: object) -> None:
        raise RuntimeError("declined")

    recorder = Recorder()

    async def body() -> list[Event]:
        async with AsyncEngine(store_url, observers=[recorder]) as engine:
            engine.register(halts)
            await engine.start(halts, {}, run_id="halt-1")
            worker = Worker(engine, poll_interval=0.05)
            serving = asyncio.ensure_future(worker.run())
            run = await engine.wait("halt-1", timeout=20)
            for _ in range(1000):  # the alert follows the halt, delivered by the worker
                if any(e.kind is EventKind.ALERT_SENT for e in await engine.history("halt-1")):
                    break
                await asyncio.sleep(0.02)
            worker.stop(0)
            await serving
            assert run.status is RunStatus.NEEDS_ATTENTION
            await engine.resolve("halt-1", note="undone by hand")
            assert engine.observers is not None
            assert engine.observers.flush(10)
            return await engine.history("halt-1")

    history = asyncio.run(body())
    told = recorder.of("halt-1")
    assert [e.seq for e in told] == [e.seq for e in history]
    halt = next(e for e in told if e.kind is EventKind.NEEDS_ATTENTION)
    assert (halt.step, halt.phase) == ("book", Phase.COMPENSATION)
    resolved = next(e for e in told if e.kind is EventKind.RESOLVED)
    assert (resolved.step, resolved.phase) == ("book", Phase.COMPENSATION)
    assert told[-1].status is RunStatus.ROLLED_BACK
    # The worker delivered the alert to its log: journaled, and told.
    assert any(e.kind is EventKind.ALERT_SENT for e in told)


class Raising(Observer):
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: ObservedEvent) -> None:
        self.calls += 1
        raise ValueError("observer bug")

    def run_context(self, *, run_id: str, saga: str, version: str) -> Mapping[str, str] | None:
        raise ValueError("context bug")

    def __repr__(self) -> str:
        return "Raising()"


def test_an_observer_that_raises_breaks_no_run_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raising, recorder = Raising(), Recorder()
    with (
        caplog.at_level(logging.WARNING, logger="sagakit"),
        Engine("memory://", observers=[raising, recorder]) as engine,
    ):
        for i in range(3):
            run = engine.run(failing_saga(), {}, run_id=f"r{i}")
            assert run.status is RunStatus.ROLLED_BACK
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
        journaled = sum(len(engine.history(f"r{i}")) for i in range(3))
    # Told of everything all the same, and so is the observer after it.
    assert raising.calls == journaled == len(recorder.events)
    raised = [r for r in caplog.records if "observer Raising()" in r.getMessage()]
    assert len(raised) == 1  # then at most once a minute
    assert raised[0].exc_info is not None


class Blocking(Observer):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.told = 0

    def on_event(self, event: ObservedEvent) -> None:
        self.release.wait(30)
        self.told += 1

    def __repr__(self) -> str:
        return "Blocking()"


def test_a_slow_observer_stalls_no_run_and_what_overflows_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocking = Blocking()
    with caplog.at_level(logging.WARNING, logger="sagakit"), Engine("memory://") as engine:
        # A small queue, so that it fills: the engine made with no observer is given one.
        observers = Observers([blocking], capacity=3)
        engine.async_engine.observers = observers
        engine.async_engine.drives.observers = observers
        for i in range(5):
            # Each run commits several times while the observer is stuck on its first event.
            assert engine.run(failing_saga(), {}, run_id=f"s{i}").status is RunStatus.ROLLED_BACK
        # Every run settled while the observer was still stuck on the first event.
        assert blocking.told == 0
        assert observers.dropped > 0
        blocking.release.set()
        assert observers.flush(10)
    assert blocking.told > 0
    assert any("observers are 3 commits behind" in r.getMessage() for r in caplog.records)


class Sensitive_(BaseModel):
    card: Annotated[str, Sensitive()]


def test_sensitive_values_are_masked_in_what_observers_are_told() -> None:
    saga: Saga[Sensitive_] = Saga("card", state=Sensitive_)

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def charge(state: Sensitive_, ctx: object) -> None:
        raise RuntimeError(f"card {state.card} refused")

    recorder = Recorder()
    with Engine("memory://", observers=[recorder]) as engine:
        engine.run(saga, {"card": "4111111111111111"}, run_id="card-1")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    failed = next(e for e in recorder.events if e.kind is EventKind.STEP_FAILED)
    assert failed.error is not None
    assert failed.error.message == "card *** refused"
    assert "4111111111111111" not in failed.error.traceback


def test_an_object_without_on_event_is_refused() -> None:
    with pytest.raises(SagaError, match="an observer needs an on_event method"):
        AsyncEngine("memory://", observers=[object()])  # type: ignore[list-item]


WITHOUT_OPENTELEMETRY = """
import sys


class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None


sys.meta_path.insert(0, NoOpenTelemetry())

from sagakit import Engine, Observer, Saga

saga = Saga("plain")


@saga.step
def one(state, ctx):
    return {"done": True}


class Count(Observer):
    told = 0

    def on_event(self, event):
        Count.told += 1


with Engine("memory://", observers=[Count()]) as engine:
    assert engine.run(saga, {}, run_id="p-1").status == "completed"
assert Count.told == 4, Count.told  # run_started, step_started, step_succeeded, run_finished
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
try:
    import sagakit.observe.otel
except ImportError:
    print("no otel")
"""


def test_sagakit_and_its_observers_need_no_opentelemetry(tmp_path: Any) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENTELEMETRY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no otel"


def test_a_lease_taken_by_another_engine_is_told_as_lost(store_url: str) -> None:
    """The heartbeat stops, the lease lapses and another engine claims the run while
    a step runs: the first engine's commit finds the run taken, and its observers
    hear that the lease was lost."""
    recorder = Recorder()
    saga: Saga[Any] = Saga("taken")
    running = asyncio.Event()
    go_on = asyncio.Event()

    @saga.step
    async def slow(state: dict[str, Any], ctx: object) -> None:
        running.set()
        await go_on.wait()

    async def body() -> list[str]:
        async with (
            AsyncEngine(store_url, lease_seconds=0.3, observers=[recorder]) as owner,
            AsyncEngine(store_url, lease_seconds=30) as thief,
        ):
            owner.register(saga)
            thief.register(saga)
            started = asyncio.ensure_future(owner.run(saga, {}, run_id="taken-1"))
            await asyncio.wait_for(running.wait(), 10)
            owner.drives.heartbeat.stop()  # as if this process froze: the lease lapses
            await asyncio.sleep(0.8)
            assert await thief.drives.claim("taken-1") is not None
            go_on.set()
            run = await asyncio.wait_for(started, 10)  # what it knows: the run goes on elsewhere
            assert run.status is RunStatus.RUNNING
            assert run.owner == thief.owner
            assert owner.observers is not None
            assert await asyncio.to_thread(owner.observers.flush, 10)
            record = await thief.store.get_run("taken-1")
            assert record is not None
            assert record.owner == thief.owner
            return recorder.lost

    assert asyncio.run(body()) == ["taken-1"]
    # What the owner committed before it lost the run was told as usual.
    kinds = [e.kind for e in recorder.of("taken-1")]
    assert kinds[:2] == [EventKind.RUN_STARTED, EventKind.STEP_STARTED]
    assert EventKind.STEP_SUCCEEDED not in kinds  # its commit was refused


class Batches(Observer):
    """Takes each commit's events in one call."""

    def __init__(self) -> None:
        self.commits: list[list[ObservedEvent]] = []

    def on_events(self, events: Sequence[ObservedEvent]) -> None:
        self.commits.append(list(events))


class LeasesOnly(Observer):
    """Overrides no method that takes events."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def on_lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        self.lost.append(run_id)


class RaisingBatches(Batches):
    def on_events(self, events: Sequence[ObservedEvent]) -> None:
        super().on_events(events)
        raise RuntimeError("batch observer bug")

    def __repr__(self) -> str:
        return "RaisingBatches()"


def test_an_observer_with_on_events_is_told_each_commit_once_with_the_same_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder, batches, raising = Recorder(), Batches(), RaisingBatches()
    with (
        caplog.at_level(logging.WARNING, logger="sagakit"),
        Engine("memory://", observers=[raising, batches, recorder]) as engine,
    ):
        engine.run(failing_saga(), {}, run_id="b-1")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
        history = engine.history("b-1")
    # The same events, in the same order, as an on_event observer is told,
    # grouped by commit: more events than calls, since commits hold several.
    told = [e for commit in batches.commits for e in commit]
    assert told == recorder.events
    assert [e.seq for e in told] == [e.seq for e in history]
    assert len(batches.commits) < len(told)
    assert all(commit for commit in batches.commits)
    # One that raises is logged and told the next commits all the same.
    assert raising.commits == batches.commits
    assert len([r for r in caplog.records if "observer RaisingBatches()" in r.getMessage()]) == 1


def test_observers_that_take_no_events_have_none_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain `Observer`, or one overriding only the worker's methods, costs no event."""
    from sagakit.observe import dispatch

    made: list[int] = []
    real = observed_events

    def counting(*args: Any) -> list[ObservedEvent]:
        made.append(1)
        return real(*args)

    monkeypatch.setattr(dispatch, "observed_events", counting)
    leases, recorder = LeasesOnly(), Recorder()
    quiet = Observers([Observer(), leases])
    told = Observers([leases, recorder])
    for observers in (quiet, told):
        observers.committed("s", "1", [Event("r", 1, EventKind.RUN_STARTED, 1.0)])
        observers.lease_lost(run_id="r", saga="s", version="1", at=2.0)
        assert observers.flush(10)
        observers.close()
    assert made == [1]  # for `told` only
    assert [e.kind for e in recorder.events] == [EventKind.RUN_STARTED]
    assert leases.lost == ["r", "r"]  # its other methods are called all the same


def test_the_thread_wakes_for_commits_after_it_went_idle_and_a_flush_wakes_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The thread gathers commits for GATHER_SECONDS between drains; set long
    # here, a flush must still come back at once with everything delivered.
    from sagakit.observe import dispatch

    monkeypatch.setattr(dispatch, "GATHER_SECONDS", 30.0)
    recorder = Recorder()
    observers = Observers([recorder])
    event = Event("run-1", 1, EventKind.RUN_STARTED, 1.0, data={"state": {}})
    try:
        observers.committed("s", "1", [event])  # starts the thread: idle at once after
        seen = threading.Event()
        deadline = 10.0  # bounds a hang only
        for _ in range(int(deadline / 0.01)):
            if recorder.events:
                seen.set()
                break
            threading.Event().wait(0.01)
        assert seen.is_set(), "a commit to an idle thread was not delivered"
        # Now the thread gathers for 30 s: a flush wakes it.
        observers.committed("s", "1", [event])
        assert observers.flush(timeout=10.0)
        assert len(recorder.events) == 2
    finally:
        observers.close(timeout=10.0)


def test_a_commit_put_after_the_thread_went_idle_wakes_it_every_time() -> None:
    # Each item is put alone, then waited for, so the consumer runs dry and
    # goes idle before nearly every put, with threads switching every few
    # instructions: each put must wake it (no later put would).
    from sagakit.observe.dispatch import _Mailbox

    mailbox = _Mailbox()
    count = 5_000
    got: list[int] = []
    arrived = threading.Semaphore(0)

    def consume() -> None:
        while len(got) < count:
            got.append(mailbox.take())
            arrived.release()

    consumer = threading.Thread(target=consume, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns every few instructions: the race shows
    try:
        consumer.start()
        for i in range(count):
            mailbox.put(i)
            assert arrived.acquire(timeout=10), f"item {i} put as the consumer went idle waits"
    finally:
        sys.setswitchinterval(switch)
    consumer.join(timeout=10)
    assert got == list(range(count))

"""How observers are told: cases the batched delivery and the gathering thread must keep."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from unittest import mock

from sagakit import Observer
from sagakit.journal import Event, EventKind
from sagakit.observe import Observers, dispatch
from sagakit.observe.events import ObservedEvent, observed_events
from sagakit.observe.metrics import Metrics

from .helpers import in_child


def _started(run_id: str, seq: int = 1) -> Event:
    return Event(run_id, seq, EventKind.RUN_STARTED, 1.0, data={"state": {}})


class Logged(Observer):
    """A mixin that sees every event, then hands it on to the next class's on_event."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[ObservedEvent] = []

    def on_event(self, event: ObservedEvent) -> None:
        self.seen.append(event)
        super().on_event(event)


class LoggedMetrics(Logged, Metrics):
    """Metrics with the mixin's on_event before Metrics' own in the MRO."""


def test_a_mixins_on_event_ahead_of_a_class_with_on_events_is_still_called() -> None:
    # `observer.on_event` is the mixin's: it was called for every event before
    # on_events existed, and must still be, rather than Metrics.on_events alone.
    observer = LoggedMetrics()
    observers = Observers([observer])
    try:
        observers.committed("s", "1", [_started("r1"), _started("r2", 2)])
        assert observers.flush(10)
    finally:
        observers.close()
    assert [e.run_id for e in observer.seen] == ["r1", "r2"]
    # And Metrics (next in the MRO) counted them through the mixin's super() call.
    assert observer._started == {("s", "1"): 2}


def test_a_mock_observer_is_told_through_its_on_event() -> None:
    # A mock made to the Observer spec (as tests of an application make them)
    # answers every attribute, on_events too: on_event is what it was told by.
    observer = mock.Mock(spec=Observer)
    observers = Observers([observer])
    try:
        observers.committed("s", "1", [_started("r1"), _started("r2", 2)])
        assert observers.flush(10)
    finally:
        observers.close()
    assert [c.args[0].run_id for c in observer.on_event.call_args_list] == ["r1", "r2"]
    observer.on_events.assert_not_called()


class Counting(Observer):
    def __init__(self) -> None:
        self.events: list[ObservedEvent] = []

    def on_events(self, events: Sequence[ObservedEvent]) -> None:
        self.events.extend(events)


def test_commits_gathering_while_the_thread_waits_are_not_dropped_below_capacity(
    monkeypatch: Any,
) -> None:
    # A fast observer never lags: commits coming faster than the thread's
    # gathering pause must wake it before the queue fills, not be dropped.
    monkeypatch.setattr(dispatch, "GATHER_SECONDS", 5.0)
    observer = Counting()
    observers = Observers([observer], capacity=8)
    try:
        observers.committed("s", "1", [_started("first")])
        deadline = time.monotonic() + 10
        while not observer.events and time.monotonic() < deadline:
            time.sleep(0.001)
        assert observer.events  # delivered: the thread now gathers for 5 s
        for i in range(40):
            observers.committed("s", "1", [_started(f"r{i}")])
            time.sleep(0.005)  # far more than the observer takes per commit
        assert observers.flush(10)
    finally:
        observers.close()
    assert observers.dropped == 0
    assert len(observer.events) == 41


def test_an_attempt_in_flight_keeps_its_start_while_other_runs_wait_between_steps(
    monkeypatch: Any,
) -> None:
    # Runs whose attempts have all ended (waiting, or lost to another process)
    # hold no start: only attempts in flight count toward the bound.
    from sagakit.observe import events as events_module

    monkeypatch.setattr(events_module, "_MAX_RUNS_STARTED", 3)
    starts: dict[str, Any] = {}

    def tell(*events: Event) -> list[ObservedEvent]:
        return observed_events("s", "1", list(events), starts, None, None, None)

    def start(run_id: str, seq: int, at: float) -> Event:
        return Event(run_id, seq, EventKind.STEP_STARTED, at, step="a", attempt=1)

    def end(run_id: str, seq: int, at: float) -> Event:
        return Event(run_id, seq, EventKind.STEP_SUCCEEDED, at, step="a", attempt=1)

    tell(start("a", 1, 1.0))
    tell(start("b", 1, 2.0))
    tell(end("b", 2, 3.0))  # b waits between steps: nothing of it in flight
    tell(start("c", 1, 4.0))
    tell(start("d", 1, 5.0))  # three attempts in flight: within the bound
    (ended,) = tell(end("a", 2, 6.0))
    assert ended.started_at == 1.0


def test_a_method_set_after_the_observers_are_made_is_used_from_the_next_start() -> None:
    # An engine is often made before a test patches its observer: what was
    # read at each event before is read when the thread starts (the first
    # commit, and the first after close).
    plain = Observer()
    observers = Observers([plain])
    got: list[ObservedEvent] = []
    plain.on_event = got.append  # type: ignore[method-assign,assignment]
    try:
        observers.committed("s", "1", [_started("r1")])
        assert observers.flush(10)
        assert [e.run_id for e in got] == ["r1"]
        observers.close()
        logged = Logged()
        later = Observers([logged])
        with mock.patch.object(Logged, "on_event") as patched:  # the class, once made
            later.committed("s", "1", [_started("r2")])
            assert later.flush(10)
            later.close()
        assert [c.args[0].run_id for c in patched.call_args_list] == ["r2"]
    finally:
        observers.close()


EXITS_UNCLOSED = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from sagakit import Engine, Observer, Saga
from sagakit.observe.otel import Tracing

class Printing(Observer):
    def on_event(self, event):
        print("event", event.kind, flush=True)

class Exporter:
    def export(self, spans):
        for span in spans:
            print("span", span.name, flush=True)
        return SpanExportResult.SUCCESS
    def shutdown(self):
        pass
    def force_flush(self, timeout_millis=30000):
        return True

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Exporter()))
saga = Saga("exiting")

@saga.step()
def only(state, ctx):
    return None

engine = Engine("memory://", observers=[Printing(), Tracing(tracer_provider=provider)])
engine.run(saga, {}, run_id="r1")
# the process ends here, the engine never closed
"""


def test_a_process_that_exits_without_closing_its_engine_tells_its_last_commits() -> None:
    # The observers' thread is a daemon that lets commits gather between
    # drains: at exit it is flushed, before the tracer provider shuts down.
    import subprocess
    import sys

    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", EXITS_UNCLOSED],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lines = done.stdout.splitlines()
        assert "event run_finished" in lines
        assert "span run_finished" in lines


class Stuck(Observer):
    def __init__(self) -> None:
        self.release = threading.Event()

    def on_event(self, event: ObservedEvent) -> None:
        self.release.wait(30)


def test_the_flush_at_exit_waits_one_second_in_all_for_stuck_observers(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(dispatch, "EXIT_FLUSH_SECONDS", 0.3)
    stuck = [Stuck() for _ in range(4)]
    engines = [Observers([observer]) for observer in stuck]
    try:
        for observers in engines:
            observers.committed("s", "1", [_started("r")])
        began = time.monotonic()
        dispatch._flush_at_exit()
        took = time.monotonic() - began
    finally:
        for observer in stuck:
            observer.release.set()
        for observers in engines:
            observers.close()
    assert 0.25 <= took < 0.3 * 4 - 0.2  # one wait for all, not one each


def test_with_every_run_held_in_flight_the_oldest_are_forgotten_and_the_bound_kept(
    monkeypatch: Any,
) -> None:
    from sagakit.observe import events as events_module

    monkeypatch.setattr(events_module, "_MAX_RUNS_STARTED", 200)
    starts: dict[str, Any] = {}
    for i in range(450):
        run = f"r{i}"
        observed_events(
            "s",
            "1",
            [Event(run, 1, EventKind.STEP_STARTED, float(i), step="a", attempt=1)],
            starts,
            None,
            None,
            None,
        )
        assert len(starts) <= 200
    # The newest kept, the oldest gone: a hundredth of them at a time.
    assert "r449" in starts
    assert "r0" not in starts
    assert len(starts) >= 198


class RunIds(Observer):
    def __init__(self) -> None:
        self.run_ids: list[str] = []

    def on_event(self, event: ObservedEvent) -> None:
        self.run_ids.append(event.run_id)


def test_a_forked_child_tells_its_own_commits_on_a_thread_of_its_own() -> None:
    # Only the forking thread lives on in a child: before, the child's
    # commits waited for the parent's thread, which was not there, and its
    # flush said all was told (the copied thread is not alive) while nothing was.
    observer = RunIds()
    observers = Observers([observer])
    try:
        observers.committed("s", "1", [_started("parent")])
        assert observers.flush(10)
        reported = _told_in_child(observers, observer)
    finally:
        observers.close()
    assert reported == "True child"
    assert observer.run_ids == ["parent"]


def _told_in_child(observers: Observers, observer: RunIds) -> str:
    """Fork; in the child, commit one run and report whether it was told, and what was."""

    def child() -> str:
        observer.run_ids.clear()
        observers.committed("s", "1", [_started("child")])
        told = observers.flush(2)
        return f"{told} {','.join(observer.run_ids)}"

    return in_child(child, alarm=5)


def test_a_child_forked_while_another_thread_starts_its_observers_starts_them_again() -> None:
    # Another thread's first commit had set the observers' thread but not yet
    # registered it for the exit flush when the process forked: the child
    # had the parent's thread named (not alive there) and never started its
    # own, so its commits waited for no one and its flush said all was told.
    observer = RunIds()
    observers = Observers([observer])
    registering = threading.Event()
    go_on = threading.Event()
    starter: list[threading.Thread] = []
    register = dispatch._flushed_at_exit

    def slow_register(started: Observers) -> None:
        if starter and threading.current_thread() is starter[0]:
            registering.set()
            go_on.wait(10)
        register(started)

    with mock.patch.object(dispatch, "_flushed_at_exit", slow_register):
        thread = threading.Thread(target=observers.committed, args=("s", "1", [_started("parent")]))
        starter.append(thread)
        thread.start()
        try:
            assert registering.wait(10)
            reported = _told_in_child(observers, observer)
        finally:
            go_on.set()
            thread.join(10)
    try:
        assert observers.flush(10)
    finally:
        observers.close()
    assert reported == "True child"
    assert observer.run_ids == ["parent"]


def test_a_child_forked_while_another_thread_registers_the_exit_flush_can_commit() -> None:
    # The lock around the exit hook's registration, held by another thread of
    # the parent at the fork, stayed held in the child: the child's first
    # commit, which registers its observers' thread, waited for it for ever.
    observer = RunIds()
    observers = Observers([observer])
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with dispatch._at_exit_lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        reported = _told_in_child(observers, observer)
    finally:
        release.set()
        thread.join(10)
        observers.close()
    assert reported == "True child"


def test_a_histogram_whose_lock_was_held_at_a_fork_records_and_reads_in_the_child() -> None:
    # `Metrics`' own histograms are recorded on the observers' thread: one
    # caught inside a record when another thread forked left the lock held
    # in the child for ever, so the child's observers' thread and a scrape
    # (`read`) there waited for ever.
    from sagakit.observe.metrics import Histogram

    histogram = Histogram("sagakit.attempt.duration")
    key = ("order", "1", "reserve", "action", "succeeded")
    histogram.record(0.5, key)
    holding = threading.Event()
    release = threading.Event()

    def recording() -> None:  # the observers' thread, caught inside a record
        with histogram._lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=recording)
    thread.start()
    try:
        assert holding.wait(10)

        def child() -> str:
            histogram.record(2.0, key)
            ((_, counts, total),) = histogram.read()
            return f"{sum(counts)} {total}"

        reported = in_child(child, alarm=5)
    finally:
        release.set()
        thread.join(10)
    assert reported == "2 2.5"

"""OpenTelemetry traces of runs, checked with the real SDK and its in-memory exporter."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
)
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from sagakit import Engine, Observer, RetryPolicy, RunStatus, Saga
from sagakit.journal import Phase
from sagakit.observe.events import ObservedEvent
from sagakit.observe.otel import Tracing, _run_root

QUICK = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def order_saga() -> Saga[Any]:
    """``reserve`` succeeds; ``charge`` fails twice, so ``reserve`` is compensated."""
    saga: Saga[Any] = Saga("order", version="3")

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


def by_start(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return sorted(spans, key=lambda s: (s.start_time or 0, s.end_time or 0))


def test_the_span_tree_of_a_run_that_retries_fails_and_compensates(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("the-web-app")
    with Engine("memory://", observers=[Tracing(tracer_provider=provider)]) as engine:
        with tracer.start_as_current_span("POST /orders") as request:
            run = engine.run(order_saga(), {}, run_id="order-7")
        assert run.status is RunStatus.ROLLED_BACK
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    finished = exporter.get_finished_spans()
    request_context = request.get_span_context()
    trace_ids = {s.context.trace_id for s in finished if s.context is not None}
    assert trace_ids == {request_context.trace_id}  # one trace, the request's

    start = next(s for s in finished if s.name == "start order")
    assert start.kind is SpanKind.PRODUCER
    assert start.parent is not None
    assert start.parent.span_id == request_context.span_id
    assert start.context is not None

    run_spans = by_start(
        tuple(s for s in finished if s.name not in ("start order", "POST /orders"))
    )
    # Every span of the run is a child of its start span.
    assert {s.parent.span_id for s in run_spans if s.parent} == {start.context.span_id}
    assert len([s for s in run_spans if s.parent]) == len(run_spans)
    assert [(s.name, (s.attributes or {}).get("sagakit.step.attempt")) for s in run_spans] == [
        ("action reserve", 1),
        ("action charge", 1),
        ("action charge", 2),
        ("rollback_started", None),
        ("compensation reserve", 1),
        ("run_finished", None),
    ]
    reserve = run_spans[0]
    assert dict(reserve.attributes or {}) == {
        "sagakit.saga.name": "order",
        "sagakit.saga.version": "3",
        "sagakit.run.id": "order-7",
        "sagakit.event.kind": "step_succeeded",
        "sagakit.event.seq": 3,
        "sagakit.step.name": "reserve",
        "sagakit.step.phase": "action",
        "sagakit.step.attempt": 1,
        "sagakit.step.idempotency_key": "order-7/reserve",
        "sagakit.step.outcome": "succeeded",
    }
    assert reserve.status.status_code is StatusCode.UNSET
    assert reserve.start_time is not None
    assert reserve.end_time is not None
    assert reserve.start_time <= reserve.end_time

    first, second = run_spans[1], run_spans[2]
    for failed, retried in ((first, True), (second, False)):
        attributes = failed.attributes or {}
        assert attributes["sagakit.step.outcome"] == "failed"
        assert attributes["sagakit.step.will_retry"] is retried
        assert attributes["error.type"] == "RuntimeError"
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "RuntimeError: card declined"
        (exception,) = failed.events
        assert exception.name == "exception"
        assert (exception.attributes or {})["exception.type"] == "RuntimeError"
        assert (exception.attributes or {})["exception.message"] == "card declined"
        assert "RuntimeError: card declined" in str(
            (exception.attributes or {})["exception.stacktrace"]
        )

    rollback = run_spans[3]
    assert (rollback.attributes or {})["sagakit.reason"] == "failure"
    undo = run_spans[4]
    assert (undo.attributes or {})["sagakit.step.phase"] == "compensation"
    assert (undo.attributes or {})["sagakit.step.idempotency_key"] == "order-7/reserve/compensate"
    finished_span = run_spans[5]
    assert (finished_span.attributes or {})["sagakit.run.status"] == "rolled_back"
    assert finished_span.status.status_code is StatusCode.ERROR


def test_a_run_with_no_stored_context_keeps_one_trace_across_engines(
    spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Any
) -> None:
    provider, exporter = spans
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    saga = order_saga()
    with Engine(url) as engine:  # no tracing where it is started: nothing stored
        engine.start(saga, {}, run_id="plain-1")
        assert "trace" not in engine.history("plain-1")[0].data
    engines = 0
    status = RunStatus.PENDING
    while not status.settled:  # engines in turn, as workers would be
        assert engines < 200, "the run never settled"
        engines += 1
        with Engine(url, observers=[Tracing(tracer_provider=provider)]) as engine:
            engine.register(saga)
            engine.recover(park_after=0)  # the first engine parks the retry: a later one does it
            status = engine.get("plain-1").status
        time.sleep(0.01)
    assert engines >= 2
    finished = exporter.get_finished_spans()
    names = [s.name for s in by_start(finished)]
    assert names == [
        "action reserve",
        "action charge",
        "action charge",
        "rollback_started",
        "compensation reserve",
        "run_finished",
    ]
    assert len({s.context.trace_id for s in finished if s.context}) == 1
    assert len({s.parent.span_id for s in finished if s.parent}) == 1


def test_a_cancel_and_a_halt_have_spans(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    saga: Saga[Any] = Saga("trip")

    @saga.step
    def book(state: dict[str, Any], ctx: object) -> None:
        pass

    @book.compensate(retry=RetryPolicy(max_attempts=1))
    def unbook(state: dict[str, Any], ctx: object) -> None:
        raise RuntimeError("provider down")

    with Engine("memory://", observers=[Tracing(tracer_provider=provider)]) as engine:
        assert engine.run(saga, {}, run_id="trip-1").status is RunStatus.COMPLETED
        assert engine.cancel("trip-1", reason="changed my mind").status is (
            RunStatus.NEEDS_ATTENTION
        )
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert (finished["cancel_requested"].attributes or {})["sagakit.reason"] == ("changed my mind")
    halt = finished["needs_attention"]
    assert halt.status.status_code is StatusCode.ERROR
    assert (halt.attributes or {})["sagakit.step.phase"] == "compensation"
    assert (halt.attributes or {})["error.type"] == "RuntimeError"


def test_the_run_stores_the_trace_context_but_never_the_requests_baggage(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from opentelemetry import baggage, context

    provider, _ = spans
    tracer = provider.get_tracer("the-web-app")
    with Engine("memory://", observers=[Tracing(tracer_provider=provider)]) as engine:
        token = context.attach(baggage.set_baggage("user.email", "ada@example.com"))
        try:
            with tracer.start_as_current_span("POST /orders"):
                engine.run(order_saga(), {}, run_id="order-8")
        finally:
            context.detach(token)
        (started,) = [e for e in engine.history("order-8") if e.kind == "run_started"]
    stored = started.data["trace"]
    assert set(stored) == {"traceparent"}
    assert "ada@example.com" not in str(started.data)


class Watching(SpanProcessor):
    """An application's processor: it sees spans start, so `Tracing` must start them."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


class Unstored(Tracing):
    """`Tracing` that stores no trace context with the runs it starts (as an engine
    without it would): their spans' parent is the one made from the run id."""

    def run_context(self, *, run_id: str, saga: str, version: str) -> None:
        return None


def assert_made_by_start_span() -> None:
    """The saga's six spans, exported through a plain SDK provider, were made by
    `start_span` (the direct path declined)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans, direct = exported(provider, exporter)
    provider.shutdown()
    assert not direct
    assert len(spans) == 6


def exported(
    provider: TracerProvider, exporter: InMemorySpanExporter, *, stored: bool = True
) -> tuple[list[dict[str, Any]], Any]:
    """The spans of a run that retries, fails and compensates, as exported, ids left
    out; and the direct path that skipped `start_span` (None: they did not).
    ``stored``: the run was started with its trace context stored; else its
    parent is made from its run id."""
    ticks = iter(range(1_000_000))  # the same times on every run

    def clock() -> float:
        return 1_700_000_000.0 + next(ticks) / 1000

    tracing = (Tracing if stored else Unstored)(tracer_provider=provider)
    with Engine("memory://", observers=[tracing], clock=clock) as engine:
        engine.run(order_saga(), {}, run_id="order-8")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    provider.force_flush()  # a batching processor's spans, exported now
    finished = by_start(exporter.get_finished_spans())
    if stored:
        start = next(s for s in finished if s.name == "start order").context
        assert start is not None
        trace_id, parent_id = start.trace_id, start.span_id
    else:
        assert not any(s.name == "start order" for s in finished)
        root = _run_root("order-8")  # the parent made from the run id
        trace_id, parent_id = root.trace_id, root.span_id
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "parent": s.parent is not None and s.parent.span_id == parent_id,
            "parent remote": s.parent is not None and s.parent.is_remote,
            "trace": s.context is not None and s.context.trace_id == trace_id,
            "flags": s.context is not None and int(s.context.trace_flags),
            "state": s.context is not None and s.context.trace_state.to_header(),
            "is remote": s.context is not None and s.context.is_remote,
            "valid": s.context is not None and s.context.is_valid,
            # In order: an exporter writes them as they come.
            "attributes": list((s.attributes or {}).items()),
            "dropped": (s.dropped_attributes, s.dropped_events, s.dropped_links),
            "links": s.links,
            "events": [(e.name, e.timestamp, dict(e.attributes or {})) for e in s.events],
            "status": (s.status.status_code, s.status.description),
            "times": (s.start_time, s.end_time),
            "scope": s.instrumentation_scope,
            "resource": s.resource.attributes,
        }
        for s in finished
        if s.name != "start order"
    ], tracing._direct


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize("stored", [True, False])
def test_spans_handed_to_the_exporting_processors_are_those_the_sdk_makes(
    batching: bool, stored: bool
) -> None:
    """With only the SDK's exporting processors, spans skip `start_span`; with one
    of the application's, they go through it: both export the same spans, whether
    the run's trace context was stored or made from its id."""
    made = []
    for watching in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        exporting = BatchSpanProcessor(exporter) if batching else SimpleSpanProcessor(exporter)
        provider.add_span_processor(exporting)
        processor = Watching()
        if watching:
            provider.add_span_processor(processor)
        made.append(exported(provider, exporter, stored=stored))
        provider.shutdown()
        if isinstance(exporting, BatchSpanProcessor) and not watching:
            # A lone batching processor's queue is handed the spans directly.
            assert made[-1][1]._on_end == exporting._batch_processor.emit
        if watching:
            assert processor.started.count("action charge") == 2  # it saw the spans start
    (direct, skipped), (through_sdk, skipped_too) = made
    assert skipped
    assert not skipped_too
    assert len(direct) == 6
    assert direct == through_sdk


def sampled_spans(sampler: Sampler, *, watching: bool) -> tuple[list[dict[str, Any]], bool]:
    """Every span of a run under ``sampler`` as exported, ids left out; and whether
    the direct path knew the sampler's answers without asking it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if watching:  # a processor of the application's: every span through start_span
        provider.add_span_processor(Watching())
    tracing = Tracing(tracer_provider=provider)
    ticks = iter(range(1_000_000))
    try:
        with Engine(
            "memory://", observers=[tracing], clock=lambda: 1_700_000_000.0 + next(ticks) / 1000
        ) as engine:
            engine.run(order_saga(), {}, run_id="order-7")
            assert engine.async_engine.observers is not None
            assert engine.async_engine.observers.flush(10)
    finally:
        provider.shutdown()
    found = [
        {
            "name": s.name,
            "flags": s.context is not None and int(s.context.trace_flags),
            "state": s.context is not None and s.context.trace_state.to_header(),
            "parent remote": s.parent is not None and s.parent.is_remote,
            "attributes": dict(s.attributes or {}),
            "status": (s.status.status_code, s.status.description),
            # The start span's, made by start_span, are the wall clock's.
            "times": s.name.startswith("start") or (s.start_time, s.end_time),
        }
        for s in by_start(exporter.get_finished_spans())
    ]
    direct = tracing._direct
    return found, direct is not None and direct._decided is not None


@pytest.mark.parametrize(
    ("sampler", "exported"),
    [
        (ALWAYS_ON, 7),
        (ALWAYS_OFF, 0),
        (ParentBased(ALWAYS_ON), 7),
        # The start span dropped, and with it its context: the run's spans
        # have a remote parent that is not sampled.
        (ParentBased(ALWAYS_OFF), 0),
        (ParentBased(ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON), 6),
        (ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF), 1),
        # Recorded, not sampled: made, then dropped by the exporting processor.
        (StaticSampler(Decision.RECORD_ONLY), 0),
        (ParentBased(ALWAYS_ON, remote_parent_sampled=StaticSampler(Decision.RECORD_ONLY)), 1),
    ],
)
def test_the_answer_of_a_static_sampler_is_known_without_asking_it(
    sampler: Sampler, exported: int
) -> None:
    """Static samplers, and ParentBased over them, answer from the parent alone:
    the direct path applies their answer itself, and exports what the SDK would."""
    direct, knew = sampled_spans(sampler, watching=False)
    through_sdk, knew_too = sampled_spans(sampler, watching=True)
    assert knew
    assert not knew_too
    assert len(direct) == exported
    assert direct == through_sdk


def test_the_sampler_is_asked_for_each_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    class NoRetries(Sampler):
        """Drops the spans of attempts that will be retried."""

        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            attributes = kwargs.get("attributes") or args[4]
            if (attributes or {}).get("sagakit.step.will_retry"):
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "NoRetries"

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=NoRetries())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with Engine("memory://", observers=[Tracing(tracer_provider=provider)]) as engine:
            engine.run(order_saga(), {}, run_id="order-9")
            assert engine.async_engine.observers is not None
            assert engine.async_engine.observers.flush(10)
        names = [s.name for s in by_start(exporter.get_finished_spans())]
    finally:
        provider.shutdown()
    assert names == [
        "start order",
        "action reserve",
        "action charge",  # the second attempt: the first, to be retried, was dropped
        "rollback_started",
        "compensation reserve",
        "run_finished",
    ]


def test_a_limit_the_spans_could_reach_sends_them_through_start_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limit on attribute length, or the SDK counting its own spans: the SDK makes them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=12))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    (span, *_), direct = exported(provider, exporter)
    provider.shutdown()
    assert not direct
    assert dict(span["attributes"])["sagakit.step.idempotency_key"] == "order-8/rese"  # cut at 12

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert_made_by_start_span()


def test_an_sdk_newer_than_the_tested_ones_makes_the_spans_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct path reads private attributes: a newer SDK gets `start_span`."""
    import opentelemetry.sdk.version

    monkeypatch.setattr(opentelemetry.sdk.version, "__version__", "9.0.0")
    assert_made_by_start_span()


@pytest.mark.parametrize("where", ["class", "instance"])
def test_a_start_span_replaced_by_the_application_makes_the_spans(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An instrumentation that wraps the SDK's `start_span` (on the class, as
    wrapt-style patchers do, or on one tracer) sees every span: the direct
    path, which would skip it, is declined."""
    from opentelemetry.sdk import trace as sdk

    original = sdk.Tracer.start_span
    seen: list[str] = []

    @functools.wraps(original)
    def start_span(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(name)
        return original(self, name, *args, **kwargs)

    if where == "class":
        monkeypatch.setattr(sdk.Tracer, "start_span", start_span)
    else:
        made = sdk.TracerProvider.get_tracer

        def get_tracer(self: Any, *args: Any, **kwargs: Any) -> Any:
            tracer = made(self, *args, **kwargs)
            tracer.start_span = functools.partial(start_span, tracer)  # type: ignore[method-assign]
            return tracer

        monkeypatch.setattr(sdk.TracerProvider, "get_tracer", get_tracer)
    assert_made_by_start_span()
    assert len(seen) == 7  # the run's start and its six


def test_a_processor_added_later_sees_the_spans_start() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(tracer_provider=provider)
    watching = Watching()
    with Engine("memory://", observers=[tracing]) as engine:
        engine.run(order_saga(), {}, run_id="order-10")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
        assert tracing._direct is not None  # the SDK's exporting processor alone so far
        provider.add_span_processor(watching)
        engine.run(order_saga(), {}, run_id="order-11")
        assert engine.async_engine.observers.flush(10)
    provider.shutdown()
    assert tracing._direct is None
    assert watching.started.count("action charge") == 2  # the second run's, through start_span
    assert len([s for s in exporter.get_finished_spans() if s.name == "run_finished"]) == 2


def test_a_tracer_got_before_the_global_provider_was_set_takes_the_direct_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)  # none set yet
    tracing = Tracing()  # a proxy tracer, as in a worker that imports the app after
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # the application sets it
    with Engine("memory://", observers=[tracing]) as engine:
        engine.run(order_saga(), {}, run_id="order-12")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    provider.shutdown()
    assert tracing._direct is not None
    assert len(exporter.get_finished_spans()) == 7  # start, then the run's six


def test_an_attempts_attributes_are_those_set_one_by_one(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An attempt's attributes are made as one dict: the same, in the same order,
    as the general builder sets them one by one."""
    provider, exporter = spans
    told: list[ObservedEvent] = []

    class Told(Observer):
        def on_event(self, event: ObservedEvent) -> None:
            told.append(event)

    tracing = Tracing(tracer_provider=provider)
    with Engine("memory://", observers=[Told(), tracing]) as engine:
        engine.run(order_saga(), {}, run_id="order-13")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    spans_by_event = {
        (attributes["sagakit.run.id"], attributes["sagakit.event.seq"]): list(attributes.items())
        for attributes in (s.attributes or {} for s in exporter.get_finished_spans())
        if "sagakit.event.seq" in attributes
    }
    attempts = [e for e in told if e.outcome is not None]
    assert {e.phase for e in attempts} == set(Phase)
    assert any(e.error is not None for e in attempts)
    for event in attempts:
        expected = tracing._attributes(event)
        expected["sagakit.step.outcome"] = str(event.outcome)
        if event.error is not None:
            expected["sagakit.step.will_retry"] = event.retry_at is not None
            expected["error.type"] = event.error.type
        assert spans_by_event[(event.run_id, event.seq)] == list(expected.items())


def test_an_sdk_whose_span_arguments_differ_makes_the_spans_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct path passes `ReadableSpan`'s arguments by position: where their
    order is not the one it knows, `start_span` makes the spans."""
    from sagakit.observe import spans_direct

    assert spans_direct._positional(ReadableSpan.__init__, spans_direct._READABLE_SPAN_ARGS)
    swapped = ("name", "parent", "context", *spans_direct._READABLE_SPAN_ARGS[3:])
    monkeypatch.setattr(spans_direct, "_READABLE_SPAN_ARGS", swapped)
    assert_made_by_start_span()


def test_a_span_context_laid_out_otherwise_sends_spans_through_start_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct path makes a `SpanContext` as the tuple it is: one whose fields
    are laid out otherwise is noticed, and `start_span` makes the spans."""
    from sagakit.observe import spans_direct

    assert spans_direct._span_context_layout()

    class Reordered(SpanContext):
        def __new__(
            cls,
            trace_id: int,
            span_id: int,
            is_remote: bool,
            trace_flags: TraceFlags | None = None,
            trace_state: TraceState | None = None,
        ) -> Reordered:
            fields = (span_id, trace_id, is_remote, trace_flags, trace_state, True)
            return tuple.__new__(cls, fields)

    monkeypatch.setattr(spans_direct, "SpanContext", Reordered)
    assert not spans_direct._span_context_layout()
    assert_made_by_start_span()


class Sequential(IdGenerator):
    """Ids counted from 1: which span took which id shows."""

    def __init__(self) -> None:
        self.last = 0

    def generate_span_id(self) -> int:
        self.last += 1
        return self.last

    def generate_trace_id(self) -> int:
        self.last += 1
        return self.last


class RecordRetried(Sampler):
    """Records the spans of attempts to be retried without sampling them."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        attributes = kwargs.get("attributes") or args[4]
        if (attributes or {}).get("sagakit.step.will_retry"):
            return SamplingResult(Decision.RECORD_ONLY, attributes)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "RecordRetried"


class DropRetried(RecordRetried):
    """Drops the spans of attempts to be retried."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        found = super().should_sample(*args, **kwargs)
        if found.decision is Decision.RECORD_ONLY:
            return SamplingResult(Decision.DROP)
        return found


@pytest.mark.parametrize(
    "sampler",
    [
        RecordRetried(),
        DropRetried(),
        # Known without asking: the run's spans dropped, the start span kept.
        ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF),
        ParentBased(ALWAYS_ON, remote_parent_sampled=StaticSampler(Decision.RECORD_ONLY)),
    ],
)
def test_a_span_recorded_but_not_sampled_takes_its_span_id_as_start_span_does(
    sampler: Sampler,
) -> None:
    """The SDK gives every span it starts an id, sampled or not, dropped or
    not: with an id generator of the application's, the spans exported get
    the same ids either way."""
    made = []
    for watching in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler, id_generator=Sequential())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        if watching:
            provider.add_span_processor(Watching())
        tracing = Tracing(tracer_provider=provider)
        try:
            with Engine("memory://", observers=[tracing]) as engine:
                assert engine.async_engine.observers is not None
                # Two runs, the first one's spans all told before the second
                # starts: its start span's id follows theirs.
                for run_id in ("order-10", "order-11"):
                    engine.run(order_saga(), {}, run_id=run_id)
                    assert engine.async_engine.observers.flush(10)
        finally:
            provider.shutdown()
        assert (tracing._direct is not None) is not watching
        made.append(
            [
                (s.name, s.context.span_id if s.context else None)
                for s in by_start(exporter.get_finished_spans())
            ]
        )
    direct, through_sdk = made
    assert direct
    assert direct == through_sdk

"""OpenTelemetry traces of runs: `Tracing`, an observer (the ``otel`` extra).

Install with ``pip install 'sagakit[otel]'`` (the OpenTelemetry API) and
configure an SDK as for any application; then give an engine the observer::

    engine = Engine(url, observers=[Tracing()])

Only this module imports OpenTelemetry, and only an application that imports
it pays for it. What it emits (see docs/observability.md):

- ``start <saga>`` (kind PRODUCER): when a run is made by ``engine.start`` or
  ``engine.run``, a child of the span current in the caller (a web request's,
  say). Its context is stored with the run (W3C ``traceparent``), so every
  later span of the run, in whatever process, is its child: in one trace.
- ``action <step>`` and ``compensation <step>``: one per attempt, from its
  ``*_started`` event to the event that ends it, with the attempt's outcome;
  a failed attempt has status ERROR, ``error.type`` and an ``exception``
  event (type, message, traceback).
- a span per run transition, named after its event: ``rollback_started``,
  ``needs_attention``, ``cancel_requested``, ``retried``, ``resolved``,
  ``paused``, ``signal_received``, ``deadline_passed``, ``run_finished``
  (with the final status: ``cancelled``, ``rolled_back``...), and the alert's
  ``alert_sent`` and ``alert_failed``.

A run started with no trace context stored (by an engine without `Tracing`,
or before it was added) still keeps all its spans in one trace: its trace id
and parent span id are derived from its run id.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from sagakit.journal import EventKind, Phase, RunStatus, idempotency_key
from sagakit.observe.events import AttemptOutcome, ObservedEvent
from sagakit.observe.observer import Observer
from sagakit.observe.sdk_version import sdk_tested

__all__ = ["ATTRIBUTES", "TRANSITIONS", "Tracing"]

TRANSITIONS = frozenset(
    {
        EventKind.ROLLBACK_STARTED,
        EventKind.NEEDS_ATTENTION,
        EventKind.CANCEL_REQUESTED,
        EventKind.CANCEL_REFUSED,
        EventKind.RETRIED,
        EventKind.RESOLVED,
        EventKind.PAUSED,
        EventKind.SIGNAL_RECEIVED,
        EventKind.DEADLINE_PASSED,
        EventKind.RUN_FINISHED,
        EventKind.ALERT_SENT,
        EventKind.ALERT_FAILED,
        EventKind.ORPHAN_REMOVED,
    }
)
"""The run's events that get a span of their own (an instant, at the event's time)."""

ATTRIBUTES = {
    "sagakit.saga.name": "the saga",
    "sagakit.saga.version": "the saga's version",
    "sagakit.run.id": "the run",
    "sagakit.event.kind": "the journal event the span stands for (its end, for an attempt)",
    "sagakit.event.seq": "that event's position in the run's journal",
    "sagakit.step.name": "the step",
    "sagakit.step.phase": "action or compensation",
    "sagakit.step.attempt": "the attempt number, from 1",
    "sagakit.step.idempotency_key": "the key the action or compensation was given",
    "sagakit.step.outcome": "succeeded, failed, timed_out, paused or withdrawn",
    "sagakit.step.will_retry": "a failed attempt is to be tried again",
    "sagakit.run.status": "the run's final status (run_finished)",
    "sagakit.reason": "why: failure, cancel or deadline for a rollback; a cancel's reason",
    "error.type": "the exception's qualified class name (OpenTelemetry's error.type)",
}
"""The attributes `Tracing` sets, with what each holds (docs/observability.md)."""

# Each kind's plain text: an enum's ``.value`` is a descriptor call, a dict lookup is not.
_KIND_NAMES = {kind: kind.value for kind in EventKind}
_PHASE_NAMES = {phase: phase.value for phase in Phase}
_OUTCOME_NAMES: dict[AttemptOutcome | None, str] = {
    outcome: outcome.value for outcome in AttemptOutcome
}

# Final statuses that mean the run did not do what it was started for.
_FAILED_STATUSES = frozenset({RunStatus.FAILED, RunStatus.ROLLED_BACK})


# How many runs' parent contexts `Tracing` keeps made (a few hundred bytes each).
_MAX_PARENTS = 10_000


def _version() -> str:
    try:
        return metadata.version("sagakit")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class Tracing(Observer):
    """An observer that emits OpenTelemetry spans for runs.

    Args:
        tracer_provider: Where spans go; the global provider (set by the
            application, or by ``opentelemetry-instrument``) if None.
        propagator: How the run's trace context is stored with the run and
            read back; W3C trace context (``traceparent``, ``tracestate``)
            if None. Not the global propagator: its baggage (user ids,
            tenants, whatever a request carries) would be journaled with
            the run for as long as the run is kept.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("sagakit", _version(), tracer_provider=tracer_provider)
        self._propagator: TextMapPropagator = propagator or TraceContextTextMapPropagator()
        # Parsing a run's stored trace context (or hashing its run id) for
        # every span cost about a sixth of this observer's time: each context
        # is made once, kept by the carrier's items (or the run id), and all
        # forgotten once there are `_MAX_PARENTS`. Touched by the observers'
        # thread only.
        self._parents: dict[object, _Parent] = {}
        self._bases: dict[tuple[object, ...], dict[str, AttributeValue]] = {}
        self._last_parent: tuple[object, _Parent] | None = None
        # Chosen at the first span: a tracer got from the global provider
        # before the application set it is a proxy until then.
        self._direct: _Direct | None = None
        self._chosen = False

    def __repr__(self) -> str:
        return "Tracing()"

    # -- a run being started: in the caller's context ----------------------------------

    def run_context(self, *, run_id: str, saga: str, version: str) -> Mapping[str, str] | None:
        """Open and close the run's ``start`` span; return its context to store."""
        span = self._tracer.start_span(
            f"start {saga}",
            kind=SpanKind.PRODUCER,
            attributes={
                "sagakit.saga.name": saga,
                "sagakit.saga.version": version,
                "sagakit.run.id": run_id,
            },
        )
        try:
            carrier: dict[str, str] = {}
            context = trace.set_span_in_context(span)
            self._propagator.inject(carrier, context=context)
            return carrier
        finally:
            span.end()

    # -- what the engine committed: on the observers' thread -------------------------

    def on_event(self, event: ObservedEvent) -> None:
        """A span for the end of an attempt, or for a run transition."""
        if event.outcome is None or event.step is None:
            if event.kind in TRANSITIONS:
                self._transition(event)
            return
        # The end of an attempt: made here, not in a method of its own (a call
        # per span is a share of its cost worth saving).
        phase, attempt = event.phase, event.attempt
        if phase is not None and attempt is not None and event.reason is None:
            # Every attempt of a step: one dict made whole (one C call), in the
            # order `_attributes` sets them, rather than set key by key.
            run_id, step, phase_name = event.run_id, event.step, _PHASE_NAMES[phase]
            assert step is not None
            name = f"{phase_name} {step}"  # a plain str formats faster than the enum
            attributes: dict[str, AttributeValue] = {
                "sagakit.saga.name": event.saga,
                "sagakit.saga.version": event.version,
                "sagakit.step.name": step,
                "sagakit.step.phase": phase_name,
                "sagakit.run.id": run_id,
                "sagakit.event.kind": _KIND_NAMES[event.kind],
                "sagakit.event.seq": event.seq,
                "sagakit.step.idempotency_key": idempotency_key(run_id, step, phase),
                "sagakit.step.attempt": attempt,
                "sagakit.step.outcome": _OUTCOME_NAMES[event.outcome],
            }
        else:
            name = f"{phase} {event.step}"
            attributes = self._attributes(event)
            attributes["sagakit.step.outcome"] = str(event.outcome)
        if event.error is not None:
            attributes["sagakit.step.will_retry"] = event.retry_at is not None
        start = event.started_at if event.started_at is not None else event.at
        self._emit(event, name, attributes, int(start * 1_000_000_000), always=False)

    def _transition(self, event: ObservedEvent) -> None:
        attributes = self._attributes(event)
        if event.status is not None:
            attributes["sagakit.run.status"] = event.status.value
        failed = event.kind is EventKind.NEEDS_ATTENTION or event.status in _FAILED_STATUSES
        self._emit(event, _KIND_NAMES[event.kind], attributes, _ns(event.at), always=failed)

    def _emit(
        self,
        event: ObservedEvent,
        name: str,
        attributes: dict[str, AttributeValue],
        start: int,
        *,
        always: bool,
    ) -> None:
        """Make the span, already ended: through the SDK's processors directly, if it may."""
        last = self._last_parent  # `_parent`'s first test, without the call
        if last is not None and last[0] is (event.trace or event.run_id):
            parent = last[1]
        else:
            parent = self._parent(event)
        end = int(event.at * 1_000_000_000)  # `_ns`, without the call
        direct = self._direct
        if direct is None or direct._processors._span_processors is not direct._each:
            # Not chosen yet, or the processors it was chosen for changed (one
            # may be added later).
            if self._chosen and direct is None:
                return self._start_span(
                    event, name, parent, attributes=attributes, start=start, end=end, always=always
                )
            direct, self._chosen = _Direct.of(self._tracer), True
            self._direct = direct
            if direct is None:
                return self._start_span(
                    event, name, parent, attributes=attributes, start=start, end=end, always=always
                )
        error, status = event.error, _UNSET
        events: Sequence[Any] = ()
        if error is not None:
            attributes["error.type"] = error.type
            events = (direct.event("exception", _exception(event), end),)
            status = Status(StatusCode.ERROR, _what(event))
        elif always:
            status = Status(StatusCode.ERROR, event.reason or event.kind.value)
        direct.emit(
            name, parent, attributes=attributes, start=start, end=end, status=status, events=events
        )

    def _start_span(
        self,
        event: ObservedEvent,
        name: str,
        parent: _Parent,
        *,
        attributes: dict[str, AttributeValue],
        start: int,
        end: int,
        always: bool,
    ) -> None:
        """Make the span through `start_span`, as any tracer takes it."""
        span = self._tracer.start_span(
            name,
            context=parent.context(),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )
        self._error(span, event, always=always)
        span.end(end_time=end)

    def _attributes(self, event: ObservedEvent) -> dict[str, AttributeValue]:
        # What every span of a (saga, version, step, phase) shares is made
        # once and copied (one C call), not set key by key for each span.
        shape = (event.saga, event.version, event.step, event.phase)
        base = self._bases.get(shape)
        if base is None:
            if len(self._bases) >= _MAX_PARENTS:
                self._bases.clear()
            base = {"sagakit.saga.name": event.saga, "sagakit.saga.version": event.version}
            if event.step is not None:
                base["sagakit.step.name"] = event.step
            if event.phase is not None:
                base["sagakit.step.phase"] = event.phase.value
            self._bases[shape] = base
        attributes = base.copy()
        attributes["sagakit.run.id"] = event.run_id
        attributes["sagakit.event.kind"] = _KIND_NAMES[event.kind]
        attributes["sagakit.event.seq"] = event.seq
        if event.step is not None and event.phase is not None:
            attributes["sagakit.step.idempotency_key"] = idempotency_key(
                event.run_id, event.step, event.phase
            )
        if event.attempt is not None:
            attributes["sagakit.step.attempt"] = event.attempt
        if event.reason is not None:
            attributes["sagakit.reason"] = event.reason
        return attributes

    @staticmethod
    def _error(span: trace.Span, event: ObservedEvent, *, always: bool = False) -> None:
        """Record the event's error on ``span`` (status ERROR, an ``exception`` event)."""
        error = event.error
        if error is None:
            if always:
                span.set_status(Status(StatusCode.ERROR, event.reason or event.kind.value))
            return
        span.set_attribute("error.type", error.type)
        span.add_event("exception", _exception(event), timestamp=_ns(event.at))
        span.set_status(Status(StatusCode.ERROR, _what(event)))

    def _parent(self, event: ObservedEvent) -> _Parent:
        """The run's parent span: the one stored, else one made from its id."""
        carrier = event.trace
        held = carrier or event.run_id
        last = self._last_parent
        if last is not None and held is last[0]:
            # The same stored context, or the same run, as the span before
            # (every event of a commit, and a run's commits, are told the one
            # mapping).
            return last[1]
        key = tuple(carrier.items()) if carrier else event.run_id
        parents = self._parents
        found = parents.get(key)
        if found is None:
            if len(parents) >= _MAX_PARENTS:
                parents.clear()
            found = parents[key] = self._make_parent(event)
        self._last_parent = (held, found)
        return found

    def _make_parent(self, event: ObservedEvent) -> _Parent:
        if event.trace:
            context = self._propagator.extract(event.trace)
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                return _Parent(span_context, context)
        return _Parent(_run_root(event.run_id))


class _Parent:
    """A run's parent span, made once per run, and what its spans take from it.

    Read from its `SpanContext`'s properties once, not for every span. Its
    `Context` (what a sampler or `start_span` is given) is made when first
    asked for: the direct path with a static sampler never needs it.
    """

    __slots__ = ("_context", "index", "random", "span", "trace_id", "trace_state", "valid_trace")

    def __init__(self, span: SpanContext, context: Context | None = None) -> None:
        self.span = span
        self._context = context
        valid = span.is_valid
        self.trace_id: int = span.trace_id
        self.valid_trace = 0 < self.trace_id <= _TRACE_ID_MAX
        self.trace_state: TraceState = span.trace_state if valid else DEFAULT_TRACE_STATE
        flags = span.trace_flags
        # Which answer of a static sampler applies (see `_decisions`).
        self.index = 0 if not valid else (2 if span.is_remote else 4) + (flags & 1)
        self.random = bool(flags & _RANDOM_TRACE_ID)

    def context(self) -> Context:
        """The context whose current span is this parent."""
        if self._context is None:
            self._context = trace.set_span_in_context(NonRecordingSpan(self.span))
        return self._context


_UNSET = Status(StatusCode.UNSET)


def _exception(event: ObservedEvent) -> dict[str, AttributeValue]:
    """The attributes of a failed attempt's ``exception`` span event."""
    error = event.error
    assert error is not None
    return {
        "exception.type": error.type,
        "exception.message": error.message,
        "exception.stacktrace": error.traceback,
    }


def _what(event: ObservedEvent) -> str:
    """The status description of a failed attempt."""
    error = event.error
    assert error is not None
    return "timed out" if error.timed_out else f"{error.type}: {error.message}"


class _Direct:
    """Spans known whole when made, handed straight to an SDK tracer's span processors.

    `Tracer.start_span` makes a span to be changed while it runs: a lock, a
    bounded copy of its attributes with each value checked, bounded lists
    for events and links, then ``end`` freezes it into a `ReadableSpan`
    for the processors. Those were about nine tenths of the time `Tracing`
    took per span, and all of them serve spans that change; these spans are
    complete at birth. So, for an SDK tracer whose span processors are the
    SDK's exporting ones (which do nothing until a span ends), whose
    limits these spans stay within and which counts no spans of its own (the
    SDK's internal metrics, off by default), `Tracing` asks the tracer's sampler as
    `start_span` would, and hands the processors the `ReadableSpan` that
    ``end`` would have made: the same span, exported the same way. Any other
    tracer gets `start_span`.

    What it reads of the SDK beyond its public API (the tracer's limits,
    scope and processors, `SpanContext`'s tuple, a batching processor's
    queue) is checked when it is chosen, and for SDK versions up to the
    newest tested (`sagakit.observe.sdk_version.NEWEST_TESTED_SDK`) only.
    """

    __slots__ = (
        "_decided",
        "_each",
        "_enabled",
        "_info",
        "_new_id",
        "_on_end",
        "_processors",
        "_readable",
        "_resource",
        "_sampler",
        "_scope",
        "event",
    )

    def __init__(
        self, tracer: Any, sdk: Any, export: Any, processors: Any, each: tuple[Any, ...]
    ) -> None:
        self._processors = processors
        self._each = each
        self._sampler = tracer.sampler
        self._new_id: Callable[[], int] = tracer.id_generator.generate_span_id
        # The multi-processor's on_end only calls each one's: with one, call it directly.
        self._on_end: Callable[[Any], None] = (
            each[0].on_end if len(each) == 1 else processors.on_end
        )
        batching = getattr(each[0], "_batch_processor", None)
        if len(each) == 1 and type(each[0]) is export.BatchSpanProcessor and batching is not None:
            # Its on_end reads the span's sampled flag through three properties
            # (most of what it cost), then queues the span with this `emit`;
            # `emit` hands it only sampled spans.
            self._on_end = batching.emit
        self._enabled: Callable[[], bool] = getattr(tracer, "_is_enabled", lambda: True)
        self._resource = tracer.resource
        self._scope = tracer._instrumentation_scope
        self._info = tracer.instrumentation_info
        self._readable = sdk.ReadableSpan
        self._decided = _decisions(self._sampler)
        self.event: Callable[[str, Mapping[str, AttributeValue], int], Any] = sdk.Event

    @classmethod
    def of(cls, tracer: object) -> _Direct | None:
        """The direct path for ``tracer``, or None where it could differ from `start_span`."""
        try:
            from opentelemetry.sdk import trace as sdk
            from opentelemetry.sdk.trace import export
        except ImportError:  # the API alone: its tracer is not the SDK's
            return None
        if not sdk_tested():
            # It reads some of the SDK's private attributes, checked against the
            # SDK's own path by the tests up to this version: a newer SDK may
            # mean something else by them.
            return None
        if isinstance(tracer, trace.ProxyTracer):
            # Got from the global provider before the application set it:
            # the tracer it hands spans to, now that one may be set.
            tracer = getattr(tracer, "_tracer", None)
        if type(tracer) is not sdk.Tracer:
            return None
        processors = getattr(tracer, "span_processor", None)
        if type(processors) is not sdk.SynchronousMultiSpanProcessor:
            return None
        exporting = (export.BatchSpanProcessor, export.SimpleSpanProcessor)
        each = getattr(processors, "_span_processors", None)
        if not isinstance(each, tuple) or any(type(p) not in exporting for p in each):
            return None  # a processor of the application's may act on a span as it starts
        limits = getattr(tracer, "_span_limits", None)
        if limits is None or not (
            _within(limits.max_span_attributes, len(ATTRIBUTES) + 2)
            and _within(limits.max_events, 1)
            and _within(limits.max_event_attributes, 3)
            and limits.max_span_attribute_length is None
            and limits.max_attribute_length is None
        ):
            return None  # a limit these spans could reach: the SDK applies it
        if not all(hasattr(tracer, name) for name in ("_instrumentation_scope", "sampler")):
            return None
        if type(getattr(tracer, "_tracer_metrics", None)).__name__ != "NoOpTracerMetrics":
            return None  # the SDK counts the spans it makes (its internal metrics are on)
        if not _positional(sdk.ReadableSpan.__init__, _READABLE_SPAN_ARGS):
            return None  # `emit` passes its arguments by position
        if not _span_context_layout():
            return None  # `emit` makes span contexts as the tuples they are
        return cls(tracer, sdk, export, processors, each)

    def emit(
        self,
        name: str,
        parent: _Parent,
        *,
        attributes: Mapping[str, AttributeValue],
        start: int,
        end: int,
        status: Status,
        events: Sequence[Any],
    ) -> None:
        """Sample, make and hand over one span, as `start_span` and ``end`` would."""
        if not self._enabled():
            return
        trace_id = parent.trace_id
        decided = self._decided
        if decided is None:
            sampled = self._sampler.should_sample(
                parent.context(), trace_id, name, SpanKind.INTERNAL, attributes, ()
            )
            decision = sampled.decision
            if not decision.is_recording():
                self._new_id()  # `start_span` gives a dropped span an id too
                return
            flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
            trace_state, kept = sampled.trace_state, sampled.attributes
            if trace_state is None:
                trace_state = DEFAULT_TRACE_STATE  # as `SpanContext` would
        else:
            # What the sampler would answer, known from the parent's flags alone.
            known = decided[parent.index]
            if known is None:
                self._new_id()  # `start_span` gives a dropped span an id too
                return
            flags = known
            trace_state = parent.trace_state
            # `SamplingResult` would keep them in a read-only view; the span's
            # `attributes` gives one anyway, and nothing else holds this dict.
            kept = attributes
        if not flags & _SAMPLED_BIT:
            # The SDK's exporting processors drop it at on_end: not made. But
            # `start_span` takes it an id all the same (a dropped span's too),
            # and so does this: with an id generator of the application's,
            # the spans after it keep the ids they would get.
            self._new_id()
            return
        if parent.random:
            flags = _WITH_RANDOM[flags]
        span_id = self._new_id()
        # The tuple `SpanContext(trace_id, span_id, False, flags, trace_state)`
        # makes, made directly: its `__new__` (keywords, defaults, the ids'
        # checks) cost as much as the span itself. The layout is checked in `of`.
        context = _new_tuple(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                flags,
                trace_state,
                parent.valid_trace and 0 < span_id <= _SPAN_ID_MAX,
            ),
        )
        # Positional: the SDK binds keywords to a dict first, which made this
        # call cost twice as much (the order is checked in `of`).
        self._on_end(
            self._readable(
                name,
                context,
                parent.span,
                self._resource,
                kept,
                events,
                (),
                SpanKind.INTERNAL,
                self._info,
                status,
                start,
                end,
                self._scope,
            )
        )


# W3C trace context level 2's "random" flag, as the SDK passes it on from a parent.
_RANDOM_TRACE_ID = 0x02
# The flags a span can get, made once (a `TraceFlags` is an immutable int).
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_BIT = TraceFlags.SAMPLED
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_WITH_RANDOM = {flags: TraceFlags(flags | _RANDOM_TRACE_ID) for flags in (_SAMPLED, _NOT_SAMPLED)}


def _decisions(sampler: object) -> tuple[TraceFlags | None, ...] | None:
    """The flags of a span by its parent, for a sampler whose answer depends on nothing else.

    The SDK's static samplers (always on, always off) and `ParentBased` over
    them answer from the parent's validity, remoteness and sampled flag, and
    keep the span's attributes and the parent's trace state as they are: so
    the answer is known here without asking, for each kind of parent (index
    0: none; 2 and 3: remote, not sampled and sampled; 4 and 5: local). None
    in the tuple: the span is dropped. None for any other sampler: ask it.
    """
    from opentelemetry.sdk.trace import sampling

    def flags(static: object) -> TraceFlags | None:
        decision = getattr(static, "_decision", None)
        if decision is sampling.Decision.RECORD_AND_SAMPLE:
            return _SAMPLED
        return _NOT_SAMPLED if decision is sampling.Decision.RECORD_ONLY else None

    if type(sampler) is sampling.StaticSampler:
        return (flags(sampler),) * 6
    if type(sampler) is not sampling.ParentBased:
        return None
    delegates = [
        getattr(sampler, f"_{name}", None)
        for name in (
            "root",
            "remote_parent_not_sampled",
            "remote_parent_sampled",
            "local_parent_not_sampled",
            "local_parent_sampled",
        )
    ]
    if not all(type(d) is sampling.StaticSampler for d in delegates):
        return None
    root, remote_no, remote_yes, local_no, local_yes = (flags(d) for d in delegates)
    return (root, root, remote_no, remote_yes, local_no, local_yes)


# The parameters `_Direct.emit` passes by position, in their order.
_READABLE_SPAN_ARGS = (
    "name",
    "context",
    "parent",
    "resource",
    "attributes",
    "events",
    "links",
    "kind",
    "instrumentation_info",
    "status",
    "start_time",
    "end_time",
    "instrumentation_scope",
)

# What `SpanContext` counts as a valid trace id and span id (W3C trace context's sizes).
_TRACE_ID_MAX = 2**128 - 1
_SPAN_ID_MAX = 2**64 - 1
_new_tuple = tuple.__new__


def _span_context_layout() -> bool:
    """Whether `SpanContext` is the tuple ``_Direct.emit`` makes, for ids valid or not."""
    state = TraceState([("vendor", "value")])
    for trace_id, span_id in ((1, 2), (_TRACE_ID_MAX, _SPAN_ID_MAX), (0, 1), (1, 0), (1, 2**64)):
        for flags in (_SAMPLED, _NOT_SAMPLED):
            made = SpanContext(trace_id, span_id, False, flags, state)
            valid = 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX
            direct = _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, valid))
            if type(made) is not SpanContext or made != direct or made.is_valid is not valid:
                return False
    return True


def _positional(function: Callable[..., object], names: tuple[str, ...]) -> bool:
    """Whether ``function`` takes exactly ``names`` (after ``self``/``cls``), in this order."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    return tuple(p.name for p in parameters) == names and all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters
    )


def _within(limit: int | None, needed: int) -> bool:
    return limit is None or limit >= needed


def _run_root(run_id: str) -> SpanContext:
    """A span context that stands for a run with no trace context stored.

    Derived from the run id, so every process puts the run's spans in the
    same trace, under the same (never exported) parent.
    """
    digest = hashlib.sha256(f"sagakit run {run_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(trace_id, span_id, True, _SAMPLED)  # positional: see `_Direct.emit`

"""Spans handed straight to the OpenTelemetry SDK's span processors: `DirectSpans`.

`Tracing` (`sagakit.observe.otel`) makes its spans whole, from the journal's
times, so it can hand an SDK tracer's exporting processors the finished
`ReadableSpan` that ``start_span`` and ``end`` would have made, at a
fraction of their cost. What that reads of the SDK beyond its API (the
tracer's limits, scope and processors, `ReadableSpan`'s arguments,
`SpanContext`'s layout as a tuple, a batching processor's queue) is checked
here when the path is chosen, for SDK versions up to the newest tested
(`sagakit.observe.sdk_version`). Also here: `Parent`, what a run's spans
take from their parent, read once per run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from types import FunctionType, ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import AttributeValue

from sagakit.observe.sdk_version import sdk_tested

__all__ = ["SAMPLED", "DirectSpans", "Parent"]

# W3C trace context level 2's "random" flag, as the SDK passes it on from a parent.
_RANDOM_TRACE_ID = 0x02
# The flags a span can get, made once (a `TraceFlags` is an immutable int).
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
"""The flags of a sampled span."""
_SAMPLED_BIT = TraceFlags.SAMPLED
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_WITH_RANDOM = {flags: TraceFlags(flags | _RANDOM_TRACE_ID) for flags in (SAMPLED, _NOT_SAMPLED)}
# What `SpanContext` counts as a valid trace id and span id (W3C trace context's sizes).
_TRACE_ID_MAX = 2**128 - 1
_SPAN_ID_MAX = 2**64 - 1
_new_tuple = tuple.__new__


class Parent:
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


class DirectSpans:
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
    def of(cls, tracer: object, *, attributes: int) -> DirectSpans | None:
        """The direct path for ``tracer``, or None where it could differ from `start_span`.

        ``attributes``: how many attributes a span may have, besides the
        two a failed attempt adds (the limits are checked against it).
        """
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
        if type(tracer) is not sdk.Tracer or not _sdk_start_span(tracer, sdk):
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
            _within(limits.max_span_attributes, attributes + 2)
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
        parent: Parent,
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
            flags = SAMPLED if decision.is_sampled() else _NOT_SAMPLED
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
            return SAMPLED
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


# The parameters `DirectSpans.emit` passes by position, in their order.
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


def _span_context_layout() -> bool:
    """Whether `SpanContext` is the tuple ``DirectSpans.emit`` makes, for ids valid or not."""
    state = TraceState([("vendor", "value")])
    for trace_id, span_id in ((1, 2), (_TRACE_ID_MAX, _SPAN_ID_MAX), (0, 1), (1, 0), (1, 2**64)):
        for flags in (SAMPLED, _NOT_SAMPLED):
            made = SpanContext(trace_id, span_id, False, flags, state)
            valid = 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX
            direct = _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, valid))
            if type(made) is not SpanContext or made != direct or made.is_valid is not valid:
                return False
    return True


def _sdk_start_span(tracer: object, sdk: ModuleType) -> bool:
    """Whether ``tracer``'s `start_span` is the SDK's own.

    An instrumentation that wraps it (on the class or on this tracer) must
    see every span, which the direct path would make without calling it. The
    code object tells a wrapper apart, even one `functools.wraps` gave the
    SDK's name.
    """
    if "start_span" in getattr(tracer, "__dict__", {}):
        return False
    function = sdk.Tracer.__dict__.get("start_span")
    return (
        type(function) is FunctionType
        and function.__code__.co_qualname == "Tracer.start_span"
        and function.__code__.co_filename == sdk.__file__
    )


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

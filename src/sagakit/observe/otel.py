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
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from sagakit.journal import EventKind, Phase, RunStatus, idempotency_key
from sagakit.observe.events import AttemptOutcome, ObservedEvent
from sagakit.observe.observer import Observer
from sagakit.observe.spans_direct import SAMPLED, DirectSpans, Parent

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
        self._parents: dict[object, Parent] = {}
        self._bases: dict[tuple[object, ...], dict[str, AttributeValue]] = {}
        self._last_parent: tuple[object, Parent] | None = None
        # Chosen at the first span: a tracer got from the global provider
        # before the application set it is a proxy until then.
        self._direct: DirectSpans | None = None
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
            direct, self._chosen = DirectSpans.of(self._tracer, attributes=len(ATTRIBUTES)), True
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
        parent: Parent,
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

    def _parent(self, event: ObservedEvent) -> Parent:
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

    def _make_parent(self, event: ObservedEvent) -> Parent:
        if event.trace:
            context = self._propagator.extract(event.trace)
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                return Parent(span_context, context)
        return Parent(_run_root(event.run_id))


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


def _run_root(run_id: str) -> SpanContext:
    """A span context that stands for a run with no trace context stored.

    Derived from the run id, so every process puts the run's spans in the
    same trace, under the same (never exported) parent.
    """
    digest = hashlib.sha256(f"sagakit run {run_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(trace_id, span_id, True, SAMPLED)  # positional: see `DirectSpans.emit`

"""Observing runs: the public observer interface, and telemetry built on it.

An engine given observers (``Engine(..., observers=[...])``) tells each of
them of every journal event it commits, as an `ObservedEvent`: the run, its
saga and version, the step, phase and attempt, the attempt's outcome and
timing, the error. `Observer` is the base class to subclass; `Observers` is
how an engine tells them, on a thread of its own, so that an observer that
raises or is slow never breaks or stalls a run.

OpenTelemetry traces are one such observer: `sagakit.observe.otel.Tracing`
(the ``otel`` extra). This package imports nothing of OpenTelemetry.
See docs/observability.md.
"""

from __future__ import annotations

from sagakit.observe.dispatch import DEFAULT_CAPACITY, Observers
from sagakit.observe.events import AttemptOutcome, ObservedEvent
from sagakit.observe.observer import Observer

__all__ = ["DEFAULT_CAPACITY", "AttemptOutcome", "ObservedEvent", "Observer", "Observers"]

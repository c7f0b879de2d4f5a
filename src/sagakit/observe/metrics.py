"""OpenTelemetry metrics of runs: `Metrics`, an observer (the ``metrics`` extra).

Install with ``pip install 'sagakit[metrics]'`` (the OpenTelemetry SDK and
its Prometheus exporter); then give an engine the observer::

    engine = Engine(url, observers=[Metrics()])

or serve a worker's metrics for Prometheus to scrape with
``sagakit worker --metrics-port 9464``. Only this module imports
OpenTelemetry's metrics, and only an application that imports it pays for it.

Two kinds of figures:

- **What this process did**, counted as its commits are told (`on_event`):
  runs started and finished, attempts by outcome and their durations, run
  durations, runs that came to need attention, alerts sent or failed, leases
  lost, and how long new runs waited to be picked up.
- **What waits in the store**, read from the store (`Store.backlog`) so that
  every worker reports the same figure: runs needing attention, alerts owed,
  runs due and the age of the oldest. `sample` reads it (a worker every few
  seconds, on its own event loop); a scrape reads the last reading, and never
  touches the database.

The names below are OpenTelemetry's; the Prometheus exporter writes them
with underscores, a unit suffix and ``_total`` on counters
(``sagakit.attempts`` is ``sagakit_attempts_total``): `PROMETHEUS_NAMES`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from sagakit.errors import StoreError
from sagakit.journal import EventKind
from sagakit.observe.events import ObservedEvent
from sagakit.observe.observer import Observer

__all__ = ["BUCKETS", "METRICS", "PROMETHEUS_NAMES", "BacklogReading", "BacklogSource", "Metrics"]

logger = logging.getLogger("sagakit")

BUCKETS: Sequence[float] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Bucket bounds of the duration histograms, in seconds: a step call of a few
milliseconds to a run that waits an hour for its retries."""


@dataclass(frozen=True, slots=True)
class _Metric:
    kind: str
    unit: str
    labels: tuple[str, ...]
    description: str


METRICS: Mapping[str, _Metric] = {
    "sagakit.runs.started": _Metric(
        "counter", "{run}", ("saga", "version"), "Runs started (by engine.start or engine.run)."
    ),
    "sagakit.runs.finished": _Metric(
        "counter",
        "{run}",
        ("saga", "version", "status"),
        "Runs settled: completed, rolled_back, failed or cancelled.",
    ),
    "sagakit.attempts": _Metric(
        "counter",
        "{attempt}",
        ("saga", "version", "step", "phase", "outcome"),
        "Attempts at a step's action or compensation, by how they ended.",
    ),
    "sagakit.attempt.duration": _Metric(
        "histogram",
        "s",
        ("saga", "version", "step", "phase", "outcome"),
        "How long an attempt took (those whose start this process committed).",
    ),
    "sagakit.run.duration": _Metric(
        "histogram",
        "s",
        ("saga", "version", "status"),
        "How long a run took, from its start to its settling.",
    ),
    "sagakit.runs.attention": _Metric(
        "counter",
        "{run}",
        ("saga", "version", "phase"),
        "Runs that came to need attention here (a step that failed for good, a hang).",
    ),
    "sagakit.alerts": _Metric(
        "counter",
        "{alert}",
        ("saga", "version", "outcome"),
        "Alerts of runs needing attention: sent, or failed (tried again later).",
    ),
    "sagakit.leases.lost": _Metric(
        "counter",
        "{lease}",
        ("saga", "version"),
        "Runs this process was driving when another process took them over.",
    ),
    "sagakit.pickup.latency": _Metric(
        "histogram",
        "s",
        ("saga", "version"),
        "From a new run's start to its first claim by a worker.",
    ),
    "sagakit.runs.needing_attention": _Metric(
        "gauge", "{run}", ("saga",), "Runs that need attention now (read from the store)."
    ),
    "sagakit.alerts.owed": _Metric(
        "gauge",
        "{alert}",
        (),
        "Runs needing attention whose alert is not yet delivered (from the store).",
    ),
    "sagakit.runs.due": _Metric(
        "gauge", "{run}", (), "Runs due for work that no worker holds yet (from the store)."
    ),
    "sagakit.runs.due.oldest_age": _Metric(
        "gauge", "s", (), "How long the oldest due run has waited (0 with none; from the store)."
    ),
}
"""Every metric `Metrics` makes: its OpenTelemetry name, kind, unit, labels, meaning."""


def _prometheus_name(name: str, metric: _Metric) -> str:
    base = name.replace(".", "_")
    if metric.unit == "s":
        base += "_seconds"
    return base + "_total" if metric.kind == "counter" else base


PROMETHEUS_NAMES: Mapping[str, str] = {
    name: _prometheus_name(name, metric) for name, metric in METRICS.items()
}
"""The name each metric has once exported for Prometheus (histograms add
``_bucket``, ``_sum`` and ``_count``)."""


class BacklogReading(Protocol):
    """What `Metrics.sample` reads: a `sagakit.store.Backlog`."""

    @property
    def needs_attention(self) -> Mapping[str, int]:
        """Runs that need attention, by saga."""

    @property
    def alerts_owed(self) -> int:
        """Runs needing attention whose alert is not yet delivered."""

    @property
    def due(self) -> int:
        """Runs due for work that nobody holds."""

    @property
    def oldest_due(self) -> float | None:
        """When the longest-waiting due run became due."""


class BacklogSource(Protocol):
    """Where `Metrics.sample` reads the backlog from: a `sagakit.store.Store`."""

    async def backlog(self, *, now: float) -> BacklogReading:
        """See `sagakit.store.Store.backlog`."""


@dataclass(frozen=True, slots=True)
class _Sample:
    needs_attention: Mapping[str, int]
    alerts_owed: int
    due: int
    oldest_age: float


class Metrics(Observer):
    """Counts and times runs with the OpenTelemetry metrics API.

    Args:
        meter_provider: Where the instruments are made; default: the global
            one (as configured by the application or ``opentelemetry-instrument``).

    The gauges of what waits in the store report nothing until `sample` (or
    `sample_periodically`) has read it once: a scrape never queries the store.
    See docs/observability.md for the names, units and labels.
    """

    def __init__(self, *, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("sagakit")
        self._sample: _Sample | None = None

        def counter(name: str) -> dict[tuple[str, ...], int]:
            # Counted here, read by the SDK at collection: an increment of a
            # dict costs a fraction of a microsecond, Counter.add several.
            spec = METRICS[name]
            counts: dict[tuple[str, ...], int] = {}

            def callback(_: CallbackOptions) -> Iterable[Observation]:
                now = counts.copy()  # one C call: atomic against the observers' thread
                return [
                    Observation(n, dict(zip(spec.labels, key, strict=True)))
                    for key, n in now.items()
                ]

            meter.create_observable_counter(
                name, callbacks=[callback], unit=spec.unit, description=spec.description
            )
            return counts

        def histogram(name: str) -> metrics.Histogram:
            spec = METRICS[name]
            return meter.create_histogram(
                name,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=BUCKETS,
            )

        def gauge(name: str, read: Callable[[_Sample], Iterable[Observation]]) -> None:
            spec = METRICS[name]

            def callback(_: CallbackOptions) -> Iterable[Observation]:
                sample = self._sample  # one read: a sample is replaced whole, never changed
                return () if sample is None else read(sample)

            meter.create_observable_gauge(
                name, callbacks=[callback], unit=spec.unit, description=spec.description
            )

        self._started = counter("sagakit.runs.started")
        self._finished = counter("sagakit.runs.finished")
        self._attempts = counter("sagakit.attempts")
        self._attention = counter("sagakit.runs.attention")
        self._alerts = counter("sagakit.alerts")
        self._leases_lost = counter("sagakit.leases.lost")
        self._attempt_duration = histogram("sagakit.attempt.duration")
        self._run_duration = histogram("sagakit.run.duration")
        self._pickup = histogram("sagakit.pickup.latency")
        # The label dicts handed to histograms, made once per series.
        self._labels: dict[tuple[str, ...], dict[str, str]] = {}
        gauge(
            "sagakit.runs.needing_attention",
            lambda s: [Observation(n, {"saga": saga}) for saga, n in s.needs_attention.items()],
        )
        gauge("sagakit.alerts.owed", lambda s: [Observation(s.alerts_owed)])
        gauge("sagakit.runs.due", lambda s: [Observation(s.due)])
        gauge("sagakit.runs.due.oldest_age", lambda s: [Observation(s.oldest_age)])

    # -- what this process commits ----------------------------------------------------

    def on_event(self, event: ObservedEvent) -> None:
        """Count the event: a start, an attempt's end, a settling, a halt, an alert."""
        kind = event.kind
        if event.outcome is not None:
            attempt: tuple[str, ...] = (
                event.saga,
                event.version,
                event.step or "",
                event.phase or "",
                event.outcome,
            )
            counts = self._attempts
            counts[attempt] = counts.get(attempt, 0) + 1
            duration = event.duration
            if duration is not None:
                labels = self._labels_of("sagakit.attempts", attempt)
                self._attempt_duration.record(duration, labels)
        elif kind is EventKind.RUN_STARTED:
            self._add(self._started, (event.saga, event.version))
        elif kind is EventKind.RUN_FINISHED:
            key = (event.saga, event.version, str(event.status))
            self._add(self._finished, key)
            duration = event.duration
            if duration is not None:
                self._run_duration.record(duration, self._labels_of("sagakit.runs.finished", key))
        elif kind is EventKind.NEEDS_ATTENTION:
            self._add(self._attention, (event.saga, event.version, event.phase or ""))
        elif kind is EventKind.ALERT_SENT or kind is EventKind.ALERT_FAILED:
            outcome = "sent" if kind is EventKind.ALERT_SENT else "failed"
            self._add(self._alerts, (event.saga, event.version, outcome))

    def on_lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        """Count a lease this process lost to another."""
        self._add(self._leases_lost, (saga, version))

    def on_run_claimed(
        self, *, run_id: str, saga: str, version: str, due_at: float, at: float
    ) -> None:
        """Record how long a new run waited for a worker."""
        labels = self._labels_of("sagakit.pickup.latency", (saga, version))
        self._pickup.record(max(0.0, at - due_at), labels)

    @staticmethod
    def _add(counts: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
        counts[key] = counts.get(key, 0) + 1

    def _labels_of(self, name: str, key: tuple[str, ...]) -> dict[str, str]:
        labels = self._labels.get((name, *key))
        if labels is None:
            labels = self._labels[(name, *key)] = dict(zip(METRICS[name].labels, key, strict=True))
        return labels

    # -- what waits in the store --------------------------------------------------------

    async def sample(self, store: BacklogSource, *, now: float | None = None) -> None:
        """Read the backlog from ``store`` for the gauges to report (`sagakit.store.Store.backlog`).

        Call it on the event loop the store belongs to; a scrape then reads
        this reading, whatever thread it runs on.
        """
        now = time.time() if now is None else now
        backlog = await store.backlog(now=now)
        oldest = backlog.oldest_due
        self._sample = _Sample(
            dict(backlog.needs_attention),
            backlog.alerts_owed,
            backlog.due,
            0.0 if oldest is None else max(0.0, now - oldest),
        )

    async def sample_periodically(
        self,
        store: BacklogSource,
        *,
        every: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`sample` now and every ``every`` seconds, until cancelled.

        A failed reading is logged (at most once until one succeeds) and the
        last good one kept: a database outage stops no worker.
        """
        failing = False
        while True:
            try:
                await self.sample(store, now=clock())
                failing = False
            except StoreError as exc:
                if not failing:
                    logger.warning("metrics: could not read the backlog: %s", exc)
                failing = True
            await asyncio.sleep(every)

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
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from sagakit.errors import StoreError
from sagakit.journal import EventKind
from sagakit.observe.events import ObservedEvent
from sagakit.observe.observer import Observer
from sagakit.observe.sdk_histograms import direct_recorder

__all__ = [
    "BUCKETS",
    "METRICS",
    "PROMETHEUS_NAMES",
    "BacklogReading",
    "BacklogSource",
    "Histogram",
    "Metrics",
]

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


class Histogram:
    """A duration histogram kept by `Metrics` itself: per label values, bucket counts and a sum.

    Buckets as the SDK's explicit-bucket histograms count them: a value goes
    in the first bucket whose bound is at least it (`BUCKETS`, then one
    more for the values above the last bound).

    Attributes:
        name: The metric's OpenTelemetry name (a key of `METRICS`).
    """

    __slots__ = ("__weakref__", "_lock", "_series", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # Label values -> [count per bucket..., sum]: one list per series,
        # so that a record is one lookup and two additions.
        self._series: dict[tuple[str, ...], list[float]] = {}
        # Recorded on the observers' thread, read by a scrape on another: the
        # lock keeps a reading's counts and sum from the same records.
        self._lock = threading.Lock()
        _HISTOGRAMS.add(self)

    def record(self, value: float, key: tuple[str, ...]) -> None:
        """Count ``value`` in the series of label values ``key`` (in `METRICS` order)."""
        # acquire and release, not `with`: half the instructions.
        lock = self._lock
        lock.acquire()
        try:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(BUCKETS) + 2)
            series[bisect_left(BUCKETS, value)] += 1
            series[-1] += value
        finally:
            lock.release()

    def read(self) -> list[tuple[tuple[str, ...], list[int], float]]:
        """Each series: its label values, its count per bucket (not cumulative), its sum."""
        with self._lock:
            found = [(key, series[:-1], series[-1]) for key, series in self._series.items()]
        return [(key, [int(n) for n in counts], total) for key, counts, total in found]

    def _at_fork_reinit(self) -> None:
        """In a forked child: a lock of its own (see `_reinit_histograms_in_child`)."""
        self._lock = threading.Lock()


# Every `Histogram`, for `_reinit_histograms_in_child`.
_HISTOGRAMS: weakref.WeakSet[Histogram] = weakref.WeakSet()


def _reinit_histograms_in_child() -> None:
    # Only the forking thread lives on in a child: a histogram the parent's
    # observers' thread was recording in at the fork would keep its lock held
    # for ever there, and the child's observers' thread and scrapes wait on it.
    for histogram in list(_HISTOGRAMS):
        histogram._at_fork_reinit()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_reinit_histograms_in_child)


# Bound once: reading a member through its enum class costs about a thousand
# instructions on Python 3.11 (the metaclass's __getattr__ hook).
_RUN_STARTED = EventKind.RUN_STARTED
_RUN_FINISHED = EventKind.RUN_FINISHED
_NEEDS_ATTENTION = EventKind.NEEDS_ATTENTION
_ALERT_SENT = EventKind.ALERT_SENT
# The kinds counted besides the ends of attempts.
_COUNTED = frozenset(
    {_RUN_STARTED, _RUN_FINISHED, _NEEDS_ATTENTION, _ALERT_SENT, EventKind.ALERT_FAILED}
)


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
        own_histograms: Keep the duration histograms here (`histograms`)
            rather than record them with the meter provider's histograms,
            whose every record costs several times what the rest of this
            observer does. Whoever serves the metrics must then read them
            (`sagakit.observe.prometheus.serve` does, for ``--metrics-port``);
            the meter provider reports only the counters and gauges.

    Attributes:
        histograms: With ``own_histograms``, the duration histograms by
            OpenTelemetry name; else empty.

    The gauges of what waits in the store report nothing until `sample` (or
    `sample_periodically`) has read it once: a scrape never queries the store.
    See docs/observability.md for the names, units and labels.
    """

    def __init__(
        self, *, meter_provider: MeterProvider | None = None, own_histograms: bool = False
    ) -> None:
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

        self.histograms: dict[str, Histogram] = {}

        def histogram(name: str) -> Callable[[float, tuple[str, ...]], None]:
            """How to record a value of the histogram ``name`` for a tuple of label values."""
            if own_histograms:
                own = self.histograms[name] = Histogram(name)
                return own.record
            spec = METRICS[name]
            sdk = meter.create_histogram(
                name,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=BUCKETS,
            )
            direct = direct_recorder(sdk, spec.labels)
            if direct is not None:
                return direct
            record = sdk.record
            # The label dicts handed to the SDK, made once per series.
            labels_of: dict[tuple[str, ...], dict[str, str]] = {}

            def record_sdk(value: float, key: tuple[str, ...]) -> None:
                labels = labels_of.get(key)
                if labels is None:
                    labels = labels_of[key] = dict(zip(spec.labels, key, strict=True))
                record(value, labels)

            return record_sdk

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
        self.on_events((event,))

    def on_events(self, events: Sequence[ObservedEvent]) -> None:
        """Count the events of one commit (see `on_event`)."""
        # Two or three events a step: the attempt's end counted inline, with
        # no enum member read through its class (a thousand instructions
        # each on Python 3.11) and no call but the histogram's.
        attempts = self._attempts
        for event in events:
            outcome = event.outcome
            if outcome is not None:
                key: tuple[str, ...] = (
                    event.saga,
                    event.version,
                    event.step or "",
                    event.phase or "",
                    outcome,
                )
                attempts[key] = attempts.get(key, 0) + 1
                started = event.started_at
                if started is not None:
                    duration = event.at - started  # as ObservedEvent.duration
                    self._attempt_duration(duration if duration > 0.0 else 0.0, key)
            elif event.kind in _COUNTED:
                self._count(event)

    def _count(self, event: ObservedEvent) -> None:
        """Count an event that ends no attempt: a run's start or settling, a halt, an alert."""
        kind = event.kind
        if kind is _RUN_STARTED:
            self._add(self._started, (event.saga, event.version))
        elif kind is _RUN_FINISHED:
            key = (event.saga, event.version, str(event.status))
            self._add(self._finished, key)
            duration = event.duration
            if duration is not None:
                self._run_duration(duration, key)
        elif kind is _NEEDS_ATTENTION:
            self._add(self._attention, (event.saga, event.version, event.phase or ""))
        else:
            outcome = "sent" if kind is _ALERT_SENT else "failed"
            self._add(self._alerts, (event.saga, event.version, outcome))

    def on_lease_lost(self, *, run_id: str, saga: str, version: str, at: float) -> None:
        """Count a lease this process lost to another."""
        self._add(self._leases_lost, (saga, version))

    def on_run_claimed(
        self, *, run_id: str, saga: str, version: str, due_at: float, at: float
    ) -> None:
        """Record how long a new run waited for a worker."""
        self._pickup(max(0.0, at - due_at), (saga, version))

    @staticmethod
    def _add(counts: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
        counts[key] = counts.get(key, 0) + 1

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

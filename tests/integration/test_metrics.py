"""OpenTelemetry metrics of runs, read with the real SDK's in-memory reader.

And the Prometheus side: the endpoint `serve` makes answers a real scrape,
its names are the ones `PROMETHEUS_NAMES` lists, and every metric named by
the shipped alert rules and Grafana dashboard is one of them.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Sum
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sagakit import AsyncEngine, Engine, PermanentError, RetryPolicy, Saga
from sagakit.journal import EventKind
from sagakit.observe import ObservedEvent
from sagakit.observe.metrics import METRICS, PROMETHEUS_NAMES, Metrics
from sagakit.observe.prometheus import HistogramCollector, serve, writes_scope_labels
from sagakit.store import Backlog

DOCS = Path(__file__).parents[2] / "docs"
QUICK = RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0)


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Each metric's data points: (attributes, value or histogram count)."""
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    if data is None:  # nothing recorded
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(p.attributes or {}), getattr(p, "value", getattr(p, "count", None)))
                    for p in metric.data.data_points
                ]
    return found


def order_saga() -> Saga[Any]:
    """``reserve`` then ``charge``: order "bad" rolls back, "stuck" needs attention."""
    saga: Saga[Any] = Saga("order", version="3")

    @saga.step
    def reserve(state: dict[str, Any], ctx: object) -> dict[str, Any]:
        return {"reserved": True}

    @reserve.compensate
    def release(state: dict[str, Any], ctx: object) -> None:
        if state["order"] == "stuck":
            raise PermanentError("the warehouse refused")

    @saga.step(retry=QUICK)
    def charge(state: dict[str, Any], ctx: object) -> None:
        if state["order"] != "ok":
            raise RuntimeError("card declined")

    return saga


def test_runs_attempts_and_durations_are_counted_by_saga_status_and_outcome(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, memory = reader
    metrics = Metrics(meter_provider=provider)
    with Engine("memory://", observers=[metrics]) as engine:
        for i, order in enumerate(("ok", "ok", "bad", "stuck")):
            engine.run(order_saga(), {"order": order}, run_id=f"order-{i}")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    found = points(memory)
    assert found["sagakit.runs.started"] == [({"saga": "order", "version": "3"}, 4)]
    finished = {attrs["status"]: n for attrs, n in found["sagakit.runs.finished"]}
    assert finished == {"completed": 2, "rolled_back": 1}
    attempts = {(a["step"], a["phase"], a["outcome"]): n for a, n in found["sagakit.attempts"]}
    assert attempts == {
        ("reserve", "action", "succeeded"): 4,
        ("charge", "action", "succeeded"): 2,
        ("charge", "action", "failed"): 4,  # two runs, two attempts each
        ("reserve", "compensation", "succeeded"): 1,
        ("reserve", "compensation", "failed"): 1,
    }
    durations = {
        (a["step"], a["phase"], a["outcome"]): n for a, n in found["sagakit.attempt.duration"]
    }
    assert durations == attempts  # every attempt's start was committed here
    run_durations = {a["status"]: n for a, n in found["sagakit.run.duration"]}
    assert run_durations == finished
    assert found["sagakit.runs.attention"] == [
        ({"saga": "order", "version": "3", "phase": "compensation"}, 1)
    ]
    assert all(attrs["saga"] == "order" for attrs, _ in found["sagakit.attempts"])


def test_counters_export_as_cumulative_monotonic_sums_with_their_unit_and_labels(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """Counted by `Metrics` and reported through observable counters: exported
    as a synchronous counter's would be (a cumulative, monotonic sum)."""
    provider, memory = reader
    metrics = Metrics(meter_provider=provider)
    with Engine("memory://", observers=[metrics]) as engine:
        for i, order in enumerate(("ok", "bad", "stuck")):
            engine.run(order_saga(), {"order": order}, run_id=f"order-{i}")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
    data = memory.get_metrics_data()
    assert data is not None
    exported = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    counters = {name for name, spec in METRICS.items() if spec.kind == "counter"}
    counted = counters - {"sagakit.alerts", "sagakit.leases.lost"}  # none here
    assert counted <= exported.keys()
    for name in counted:
        metric, spec = exported[name], METRICS[name]
        assert isinstance(metric.data, Sum)
        assert metric.data.is_monotonic
        assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
        assert (metric.unit, metric.description) == (spec.unit, spec.description)
        assert metric.data.data_points
        for point in metric.data.data_points:
            assert tuple(point.attributes or {}) == spec.labels
            assert isinstance(point.value, int)
            assert point.value > 0


def test_a_subclass_overriding_on_event_is_told_per_event_and_still_counts(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """`Metrics` takes a commit in `on_events`; a subclass written against
    `on_event` has its override called for every event all the same."""
    provider, memory = reader

    class Seeing(Metrics):
        def __init__(self) -> None:
            super().__init__(meter_provider=provider)
            self.seen: list[EventKind] = []

        def on_event(self, event: ObservedEvent) -> None:
            self.seen.append(event.kind)
            super().on_event(event)

    seeing = Seeing()
    with Engine("memory://", observers=[seeing]) as engine:
        engine.run(order_saga(), {"order": "ok"}, run_id="order-1")
        assert engine.async_engine.observers is not None
        assert engine.async_engine.observers.flush(10)
        history = engine.history("order-1")
    assert seeing.seen == [e.kind for e in history]
    assert points(memory)["sagakit.runs.started"] == [({"saga": "order", "version": "3"}, 1)]


def test_leases_lost_pickups_and_alerts_are_counted(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, memory = reader
    metrics = Metrics(meter_provider=provider)
    metrics.on_lease_lost(run_id="r1", saga="order", version="3", at=10.0)
    metrics.on_lease_lost(run_id="r2", saga="order", version="3", at=11.0)
    metrics.on_run_claimed(run_id="r3", saga="order", version="3", due_at=10.0, at=10.25)
    for kind in (EventKind.ALERT_FAILED, EventKind.ALERT_SENT):
        metrics.on_event(ObservedEvent("r4", "order", "3", 5, kind, 12.0))
    found = points(memory)
    assert found["sagakit.leases.lost"] == [({"saga": "order", "version": "3"}, 2)]
    assert found["sagakit.pickup.latency"] == [({"saga": "order", "version": "3"}, 1)]
    alerts = {a["outcome"]: n for a, n in found["sagakit.alerts"]}
    assert alerts == {"failed": 1, "sent": 1}


class FakeStore:
    def __init__(self, backlog: Backlog) -> None:
        self.read = backlog
        self.asked: list[float] = []

    async def backlog(self, *, now: float) -> Backlog:
        self.asked.append(now)
        return self.read


def test_the_backlog_gauges_report_the_last_reading_of_the_store(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, memory = reader
    metrics = Metrics(meter_provider=provider)
    assert "sagakit.runs.due" not in points(memory)  # nothing read yet: nothing reported
    store = FakeStore(Backlog({"order": 2, "trip": 1}, alerts_owed=1, due=4, oldest_due=70.0))
    asyncio.run(metrics.sample(store, now=100.0))
    assert store.asked == [100.0]
    found = points(memory)
    attention = {a["saga"]: n for a, n in found["sagakit.runs.needing_attention"]}
    assert attention == {"order": 2, "trip": 1}
    assert found["sagakit.alerts.owed"] == [({}, 1)]
    assert found["sagakit.runs.due"] == [({}, 4)]
    assert found["sagakit.runs.due.oldest_age"] == [({}, 30.0)]
    assert store.asked == [100.0]  # a collection reads the reading, not the store
    store.read = Backlog({}, alerts_owed=0, due=0, oldest_due=None)
    asyncio.run(metrics.sample(store, now=200.0))
    found = points(memory)
    assert found["sagakit.runs.due.oldest_age"] == [({}, 0.0)]
    assert found.get("sagakit.runs.needing_attention", []) == []


def test_the_backlog_is_read_from_a_real_store(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, memory = reader
    metrics = Metrics(meter_provider=provider)

    async def start_one_and_sample() -> None:
        async with AsyncEngine("memory://") as engine:
            saga = order_saga()
            engine.register(saga)
            await engine.start(saga, {"order": "ok"}, run_id="waiting")
            await metrics.sample(engine.store)

    asyncio.run(start_one_and_sample())
    found = points(memory)
    assert found["sagakit.runs.due"] == [({}, 1)]
    [(_, age)] = found["sagakit.runs.due.oldest_age"]
    assert 0.0 <= age < 60.0


# -- the Prometheus side ------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text: str = answer.read().decode()
    return text


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_is_scraped_under_its_prometheus_name() -> None:
    endpoint = serve(0)
    try:
        metrics = endpoint.metrics
        with Engine("memory://", observers=[metrics]) as engine:
            for order in ("ok", "bad", "stuck"):
                engine.run(order_saga(), {"order": order}, run_id=f"p-{order}")
            assert engine.async_engine.observers is not None
            assert engine.async_engine.observers.flush(10)
        metrics.on_lease_lost(run_id="r1", saga="order", version="3", at=10.0)
        metrics.on_run_claimed(run_id="r3", saga="order", version="3", due_at=10.0, at=10.5)
        metrics.on_event(ObservedEvent("r4", "order", "3", 5, EventKind.ALERT_SENT, 12.0))
        store = FakeStore(Backlog({"order": 1}, alerts_owed=1, due=2, oldest_due=1.0))
        asyncio.run(metrics.sample(store, now=61.0))
        text = scrape(endpoint.port)
    finally:
        endpoint.close()
    names = sample_names(text)
    for otel_name, prometheus_name in PROMETHEUS_NAMES.items():
        if METRICS[otel_name].kind == "histogram":
            assert {f"{prometheus_name}_{end}" for end in ("bucket", "sum", "count")} <= names
        else:
            assert prometheus_name in names, (otel_name, sorted(n for n in names if "sagakit" in n))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    finished = {
        s.labels["status"]: s.value
        for s in families["sagakit_runs_finished"].samples
        if s.name == "sagakit_runs_finished_total"
    }
    assert finished == {"completed": 1.0, "rolled_back": 1.0}
    [age] = families["sagakit_runs_due_oldest_age_seconds"].samples
    assert age.value == 60.0


def shipped_metric_names() -> dict[str, set[str]]:
    """The sagakit metric names each shipped alert rule and dashboard panel uses."""
    word = re.compile(r"\bsagakit_[a-z_]+")
    used: dict[str, set[str]] = {}
    rules = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            used[f"alert {rule['alert']}"] = set(word.findall(rule["expr"]))
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used[f"panel {panel['title']}"] = used.get(f"panel {panel['title']}", set()) | set(
                word.findall(target["expr"])
            )
    return used


def test_the_alert_rules_and_the_dashboard_name_metrics_that_exist() -> None:
    used = shipped_metric_names()
    alerts = {what for what in used if what.startswith("alert ")}
    assert len(alerts) >= 3  # a run needs attention; an old backlog; leases lost climbing
    exported: set[str] = set()
    for otel_name, name in PROMETHEUS_NAMES.items():
        exported.add(name)
        if METRICS[otel_name].kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    for what, names in used.items():
        assert names, f"{what} names no sagakit metric"
        assert names <= exported, f"{what} names {sorted(names - exported)}, which do not exist"
    every = set().union(*used.values())
    assert {
        "sagakit_runs_needing_attention",
        "sagakit_runs_due_oldest_age_seconds",
        "sagakit_leases_lost_total",
    } <= every


def test_histograms_kept_by_metrics_scrape_as_the_sdks_do() -> None:
    # The same events told to Metrics on the SDK's histograms and to Metrics
    # keeping its own (what `serve` uses): the scrapes must match line for line.
    sdk_registry, own_registry = CollectorRegistry(), CollectorRegistry()
    sdk_reader = PrometheusMetricReader(registry=sdk_registry)
    sdk_provider = MeterProvider(metric_readers=[sdk_reader])
    own_memory = InMemoryMetricReader()
    own_provider = MeterProvider(metric_readers=[own_memory])
    sdk = Metrics(meter_provider=sdk_provider)
    own = Metrics(meter_provider=own_provider, own_histograms=True)
    own_registry.register(HistogramCollector(own, scope_labels=writes_scope_labels(sdk_reader)))
    try:
        assert generate_latest(own_registry) == b""  # nothing recorded, nothing written
        with Engine("memory://", observers=[sdk, own]) as engine:
            for i, order in enumerate(("ok", "ok", "bad", "stuck")):
                engine.run(order_saga(), {"order": order}, run_id=f"h-{i}")
            assert engine.async_engine.observers is not None
            assert engine.async_engine.observers.flush(10)
        # Values on, beside, below and above the bounds (a bound counts in its own bucket).
        for waited in (0.0, 0.005, 0.0050001, 0.25, 1.0, 3600.0, 3600.5, 1e6):
            for metrics in (sdk, own):
                metrics.on_run_claimed(
                    run_id="r", saga="order", version="3", due_at=100.0, at=100.0 + waited
                )
                metrics.on_run_claimed(
                    run_id="r", saga="other", version="1", due_at=100.0, at=100.0 + waited / 3
                )
        sdk_text = generate_latest(sdk_registry).decode()
        own_text = generate_latest(own_registry).decode()
        # The provider of the one keeping its own reports no histogram of them.
        assert not [name for name in points(own_memory) if METRICS[name].kind == "histogram"]
    finally:
        sdk_provider.shutdown()
        own_provider.shutdown()

    def histograms(text: str) -> list[str]:
        families = [f for f in text_string_to_metric_families(text) if f.type == "histogram"]
        lines = [f"{f.name} {f.type} {f.unit} {f.documentation}" for f in families]
        for family in families:
            lines += [f"{s.name} {sorted(s.labels.items())} {s.value!r}" for s in family.samples]
        return sorted(lines)

    expected = histograms(sdk_text)
    names = {line.split()[0] for line in expected}
    assert {PROMETHEUS_NAMES[n] for n, m in METRICS.items() if m.kind == "histogram"} <= names
    assert len(expected) > 100  # every series' buckets, sums and counts
    assert histograms(own_text) == expected
    # And the text itself, family by family, as a scrape reads it.
    sdk_lines = [line for line in sdk_text.splitlines() if "_duration_" in line or "pickup" in line]
    assert sorted(sdk_lines) == sorted(own_text.splitlines())


def test_a_closed_endpoint_takes_its_histograms_out_of_the_registry() -> None:
    endpoint = serve(0)
    try:
        endpoint.metrics.on_run_claimed(run_id="r", saga="order", version="3", due_at=1.0, at=2.0)
        assert b"sagakit_pickup_latency_seconds_count" in generate_latest(REGISTRY)
        assert "sagakit_pickup_latency_seconds_count" in scrape(endpoint.port)
    finally:
        endpoint.close()
    assert b"sagakit_pickup_latency" not in generate_latest(REGISTRY)
    endpoint.close()  # again: nothing to do, no error


def test_histograms_carry_the_scope_labels_the_counters_beside_them_carry() -> None:
    # Exporters before 0.64b0 label no series with the meter's scope; later
    # ones label every series: the histograms kept here must do as they do.
    endpoint = serve(0)
    try:
        with Engine("memory://", observers=[endpoint.metrics]) as engine:
            engine.run(order_saga(), {"order": "ok"}, run_id="scoped")
            assert engine.async_engine.observers is not None
            assert engine.async_engine.observers.flush(10)
        families = {f.name: f for f in text_string_to_metric_families(scrape(endpoint.port))}
    finally:
        endpoint.close()

    def scope(family: str) -> set[str]:
        return {k for s in families[family].samples for k in s.labels if k.startswith("otel_")}

    assert scope("sagakit_attempt_duration_seconds") == scope("sagakit_attempts")
    for scoped in (True, False):
        own = Metrics(meter_provider=MeterProvider(), own_histograms=True)
        own.on_run_claimed(run_id="r", saga="order", version="3", due_at=1.0, at=2.0)
        registry = CollectorRegistry()
        registry.register(HistogramCollector(own, scope_labels=scoped))
        text = generate_latest(registry).decode()
        assert ("otel_scope_name" in text) is scoped

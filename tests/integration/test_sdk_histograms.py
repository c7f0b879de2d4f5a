"""Histogram values handed straight to the SDK's aggregations export as `record`'s do.

`sagakit.observe.sdk_histograms` reads private attributes of the
OpenTelemetry SDK: each test here records the same values both ways (the
direct path, and the SDK's `Histogram.record`) into two meter providers
alike, and compares everything the readers export but the timestamps; and
checks that where the direct path could differ it is not chosen, or hands
the value to `record`.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import (
    AlwaysOnExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider

from sagakit import Engine, Saga
from sagakit.observe import sdk_histograms, sdk_version
from sagakit.observe.metrics import BUCKETS, METRICS, Metrics
from sagakit.observe.sdk_histograms import direct_recorder

LABELS = ("saga", "version", "step", "phase", "outcome")
KEYS = [
    ("order", "3", "reserve", "action", "succeeded"),
    ("order", "3", "charge", "action", "failed"),
    ("order", "3", "reserve", "compensation", "succeeded"),
    ("refund", "1", "", "", "timed_out"),
]


def exported(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    """Every histogram point the reader exports, all of it but its timestamps."""
    data = reader.get_metrics_data()
    found: list[tuple[Any, ...]] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if not isinstance(metric.data, Histogram):
                    continue  # `Metrics`' counters
                point: Any
                for point in metric.data.data_points:
                    found.append(
                        (
                            scope.scope.name,
                            metric.name,
                            metric.unit,
                            metric.description,
                            type(metric.data).__name__,
                            metric.data.aggregation_temporality,
                            tuple((point.attributes or {}).items()),
                            point.count,
                            point.sum,
                            point.min,
                            point.max,
                            tuple(point.bucket_counts),
                            tuple(point.explicit_bounds),
                            len(point.exemplars),
                        )
                    )
    return sorted(found, key=repr)


class Pair:
    """Two meter providers made alike: one told through the direct path, one through `record`."""

    def __init__(self, **provider: Any) -> None:
        self.readers: list[InMemoryMetricReader] = []
        self.providers: list[MeterProvider] = []
        self.histograms: list[Any] = []
        for _ in range(2):
            reader = InMemoryMetricReader()
            self.readers.append(reader)
            made = MeterProvider(metric_readers=[reader], **provider)
            self.providers.append(made)
            self.histograms.append(
                made.get_meter("sagakit").create_histogram(
                    "sagakit.attempt.duration",
                    unit="s",
                    description="how long",
                    explicit_bucket_boundaries_advisory=BUCKETS,
                )
            )
        self.direct = direct_recorder(self.histograms[0], LABELS)

    def record(self, value: float, key: tuple[str, ...]) -> None:
        assert self.direct is not None
        self.direct(value, key)
        self.histograms[1].record(value, dict(zip(LABELS, key, strict=True)))

    def compare(self) -> list[tuple[Any, ...]]:
        direct, sdk = (exported(reader) for reader in self.readers)
        assert direct == sdk
        return direct

    def close(self) -> None:
        for provider in self.providers:
            provider.shutdown()


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.close()


def values(rng: random.Random) -> Iterator[float]:
    """Durations of every bucket, bounds exactly, zero, and values `record` refuses."""
    specials = [0.0, *BUCKETS, 1e9, -1.0, math.nan, math.inf, -math.inf]
    while True:
        yield rng.choice(specials) if rng.random() < 0.2 else rng.expovariate(2.0)


def test_values_of_many_series_export_as_records_do(pair: Pair) -> None:
    assert pair.direct is not None
    rng = random.Random(7)
    draw = values(rng)
    for _round in range(3):  # collected between rounds: cumulative, as `record`'s
        for _ in range(2_000):
            pair.record(next(draw), rng.choice(KEYS))
        points = pair.compare()
    assert len(points) == len(KEYS)
    assert sum(point[7] for point in points) > 5_000


def test_a_views_other_aggregation_gets_the_measurement_record_makes() -> None:
    exponential = ExponentialBucketHistogramAggregation(max_size=20)
    made = Pair(views=[View(instrument_name="*", aggregation=exponential)])
    try:
        assert made.direct is not None
        rng = random.Random(11)
        draw = values(rng)
        for _ in range(500):
            made.record(next(draw), rng.choice(KEYS))
        direct, sdk = (_exponential(reader) for reader in made.readers)
        assert direct == sdk
        assert len(direct) == len(KEYS)
    finally:
        made.close()


def _exponential(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: list[Any] = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    return sorted(
        (
            tuple((p.attributes or {}).items()),
            p.count,
            p.sum,
            p.scale,
            p.zero_count,
            p.positive.offset,
            tuple(p.positive.bucket_counts),
            p.min,
            p.max,
        )
        for p in points
    )


def test_an_sdk_whose_bucket_aggregation_changed_gets_its_aggregate_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_histograms, "_AGGREGATE_NAMES", ("changed",))
    made = Pair()
    try:
        assert made.direct is not None
        rng = random.Random(5)
        draw = values(rng)
        for _ in range(500):
            made.record(next(draw), rng.choice(KEYS))
        assert len(made.compare()) == len(KEYS)
    finally:
        made.close()


def test_a_reader_added_later_gets_the_values_after_it(pair: Pair) -> None:
    for value in (0.001, 0.2, 7.0):
        pair.record(value, KEYS[0])
    late = [InMemoryMetricReader() for _ in range(2)]
    for provider, reader in zip(pair.providers, late, strict=True):
        provider.add_metric_reader(reader)
    for value in (0.003, 40.0):
        pair.record(value, KEYS[0])
        pair.record(value, KEYS[1])
    pair.compare()
    direct, sdk = (exported(reader) for reader in late)
    assert direct == sdk
    assert [point[7] for point in direct] == [2, 2]


def test_under_a_span_the_value_goes_through_record_and_keeps_its_exemplar() -> None:
    made = Pair(exemplar_filter=TraceBasedExemplarFilter())
    assert made.direct is not None
    tracer = TracerProvider().get_tracer("test")
    try:
        made.record(0.5, KEYS[0])
        with tracer.start_as_current_span("around"):
            made.record(0.7, KEYS[0])
        points = made.compare()
        assert [point[-1] for point in points] == [1]  # the exemplar of the value in the span
        assert trace.get_current_span() is trace.INVALID_SPAN
    finally:
        made.close()


def test_a_disabled_meter_records_nothing_either_way(pair: Pair) -> None:
    pair.record(0.5, KEYS[0])
    for histogram in pair.histograms:
        histogram._meter_config = _Disabled()
    pair.record(0.7, KEYS[0])
    points = pair.compare()
    assert [point[7] for point in points] == [1]


class _Disabled:
    is_enabled = False


@pytest.mark.parametrize(
    "provider",
    [
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[
                    InMemoryMetricReader(
                        preferred_temporality={SdkHistogram: AggregationTemporality.DELTA}
                    )
                ]
            ),
            id="a reader of deltas",
        ),
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[InMemoryMetricReader()],
                views=[View(instrument_name="*", attribute_keys={"saga"})],
            ),
            id="a view keeping some attributes",
        ),
        pytest.param(
            lambda: MeterProvider(
                metric_readers=[InMemoryMetricReader()], exemplar_filter=AlwaysOnExemplarFilter()
            ),
            id="an exemplar filter sampling everything",
        ),
    ],
)
def test_where_the_direct_path_could_differ_it_is_not_chosen(
    provider: Callable[[], MeterProvider],
) -> None:
    made = provider()
    try:
        histogram = made.get_meter("sagakit").create_histogram("h", unit="s")
        assert direct_recorder(histogram, LABELS) is None
    finally:
        made.shutdown()


def test_an_sdk_newer_than_tested_or_an_api_histogram_gets_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    made = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        histogram = made.get_meter("sagakit").create_histogram("h", unit="s")
        assert direct_recorder(histogram, LABELS) is not None
        monkeypatch.setattr(sdk_version, "NEWEST_TESTED_SDK", (1, 0))
        assert direct_recorder(histogram, LABELS) is None
    finally:
        made.shutdown()
    monkeypatch.undo()
    no_op = NoOpMeterProvider().get_meter("sagakit").create_histogram("h", unit="s")
    assert direct_recorder(no_op, LABELS) is None


@pytest.mark.parametrize(
    "names",
    ["_RECORD_NAMES", "_MEASUREMENT_NAMES", "_CONSUMER_NAMES", "_STORAGE_NAMES", "_MATCH_NAMES"],
)
def test_an_sdk_whose_record_goes_another_way_gets_record(
    monkeypatch: pytest.MonkeyPatch, names: str
) -> None:
    """The direct path finds a label set's aggregations as `record` does in the SDKs
    tested: where any function on its way reads other names, it is not chosen."""
    made = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        histogram = made.get_meter("sagakit").create_histogram("h", unit="s")
        assert direct_recorder(histogram, LABELS) is not None
        monkeypatch.setattr(sdk_histograms, names, ("changed",))
        assert direct_recorder(histogram, LABELS) is None
    finally:
        made.shutdown()


def test_metrics_records_its_histograms_without_the_sdks_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an SDK meter provider, `Metrics`' durations go the direct way and export the same."""
    # The SDK's record counted as it is called (on the observers' thread,
    # started after this), not replaced: a replaced record keeps the direct
    # path from being chosen.
    calls: list[float] = []
    record_code = SdkHistogram.record.__code__

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is record_code:
            calls.append(frame.f_locals["amount"])

    saga: Saga[Any] = Saga("order", version="3")

    @saga.step
    def reserve(state: dict[str, Any], ctx: object) -> None:
        return None

    found = []
    threading.setprofile(profile)
    try:
        for direct in (True, False):
            if not direct:
                monkeypatch.setattr(sdk_version, "NEWEST_TESTED_SDK", (1, 0))
            reader = InMemoryMetricReader()
            provider = MeterProvider(metric_readers=[reader])
            with Engine("memory://", observers=[Metrics(meter_provider=provider)]) as engine:
                for i in range(5):
                    engine.run(saga, {}, run_id=f"run-{direct}-{i}")
                assert engine.async_engine.observers is not None
                assert engine.async_engine.observers.flush(10)
            points = exported(reader)
            provider.shutdown()
            # Durations differ run to run: compare what does not depend on them.
            found.append([(p[1], p[2], p[3], p[6], p[7], p[12]) for p in points])
            if direct:
                assert calls == []
    finally:
        threading.setprofile(None)
    assert calls  # the SDK's record, once the direct path is not chosen
    assert found[0] == found[1]
    names = {point[0] for point in found[0]}
    assert names == {"sagakit.attempt.duration", "sagakit.run.duration"}
    assert all(METRICS[name].kind == "histogram" for name in names)


def test_a_record_replaced_on_the_histogram_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `record` the application replaced (a wrapper on the SDK's histogram class,
    or on the instrument itself) is what each value goes through: the direct
    path, which would pass it by, is not chosen."""
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram

    calls: list[float] = []
    sdk_record = _Histogram.record

    def wrapped(self: Any, amount: float, *args: Any, **kwargs: Any) -> None:
        calls.append(amount)
        sdk_record(self, amount, *args, **kwargs)

    made = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        histogram = made.get_meter("sagakit").create_histogram("h", unit="s")
        assert direct_recorder(histogram, LABELS) is not None
        with monkeypatch.context() as patch:
            patch.setattr(_Histogram, "record", wrapped)
            assert direct_recorder(histogram, LABELS) is None
        with monkeypatch.context() as patch:
            patch.setattr(histogram, "record", wrapped.__get__(histogram))
            assert direct_recorder(histogram, LABELS) is None
    finally:
        made.shutdown()


class _Proxy:
    """A wrapper that hands on its function's attributes, its code too (as wrapt's do)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.__wrapped__ = function

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __get__(self, instance: object, owner: type) -> Any:
        return self if instance is None else self.__wrapped__.__get__(instance, owner)


def test_a_function_on_records_way_wrapped_by_a_proxy_keeps_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy hands on the code of the function it wraps, so the names it
    reads look the same: only plain functions are taken as the SDK's."""
    from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage

    made = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        histogram = made.get_meter("sagakit").create_histogram("h", unit="s")
        assert direct_recorder(histogram, LABELS) is not None
        wrapped = _Proxy(MetricReaderStorage.consume_measurement)
        assert wrapped.__code__ is MetricReaderStorage.consume_measurement.__code__
        monkeypatch.setattr(MetricReaderStorage, "consume_measurement", wrapped)
        assert direct_recorder(histogram, LABELS) is None
    finally:
        made.shutdown()


def test_a_bucket_aggregate_wrapped_by_a_proxy_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline count stands for the SDK's own `aggregate` only: one wrapped
    by a proxy (which hands on its code) is handed each value."""
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
    )

    calls: list[float] = []
    aggregate = _ExplicitBucketHistogramAggregation.aggregate

    def counted(self: Any, measurement: Any, *args: Any) -> None:
        calls.append(measurement.value)
        aggregate(self, measurement, *args)

    wrapped = _Proxy(counted)
    monkeypatch.setattr(wrapped, "__code__", aggregate.__code__)  # as a proxy hands it on
    monkeypatch.setattr(_ExplicitBucketHistogramAggregation, "aggregate", wrapped)
    made = Pair()
    try:
        assert made.direct is not None
        for value in (0.1, 2.0):
            made.record(value, KEYS[0])
        assert len(made.compare()) == 1
        assert calls == [0.1, 0.1, 2.0, 2.0]  # both ways
    finally:
        made.close()

"""Histogram values handed straight to the OpenTelemetry SDK's aggregations.

`Histogram.record` in the SDK checks and copies its attributes at every
call (a dataclass cleans them, then each view hashes them, sorted, into a
key), then finds the series' aggregation by that key: about 14 µs a record,
most of what `Metrics` costs with an application's meter provider, for the
same few label sets every time. `direct_recorder` resolves a label set's
aggregations once, the way the SDK would, and afterwards hands each value
to them as ``record`` would: the same series, the same counts, sums, minima
and maxima, exported the same way.

It reads private attributes of the SDK (the measurement consumer, its
reader storages, their views' matches), so it is chosen only where the SDK
is a version the tests compare it with (`sagakit.observe.sdk_version`),
each function on ``record``'s way reads the names it read in those
versions (so the aggregations found here are the ones ``record`` finds),
the instrument and its consumer are the SDK's own (its ``record`` too, not
one the application replaced or wrapped), and the exemplar filter is
one of the SDK's that samples nothing outside a sampled span; a view that
keeps only some attributes, or a reader that takes deltas (whose
aggregations are replaced at every collection), keeps ``record``. Each
value goes through ``record`` all the same where it could differ: a value
``record`` refuses (negative, not finite), a disabled meter, a context
with anything in it (a span an exemplar could be taken from), or readers
added or removed since the label set was resolved (then resolved again).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left as _bisect_left
from collections.abc import Callable, Mapping, Sequence
from types import FunctionType
from typing import Any

__all__ = ["direct_recorder"]

Recorder = Callable[[float, tuple[str, ...]], None]
"""Records a value in the series of a tuple of label values (in the metric's label order)."""

_INF = math.inf
_time_ns = time.time_ns
_set = object.__setattr__  # the measurement is a frozen dataclass


def direct_recorder(histogram: object, labels: Sequence[str]) -> Recorder | None:
    """A recorder for the SDK histogram ``histogram``; None where it could differ from ``record``.

    ``labels`` names the label values a recorder is handed, in their order.
    """
    from sagakit.observe.sdk_version import sdk_tested

    if not sdk_tested():
        return None
    try:
        return _DirectHistogram.of(histogram, tuple(labels))
    except (ImportError, AttributeError):  # an SDK laid out otherwise than tested
        return None


class _DirectHistogram:
    """The direct path of one SDK histogram (see the module's docstring)."""

    __slots__ = (
        "_buckets_class",
        "_clean",
        "_consumer",
        "_current",
        "_direct",
        "_enabled",
        "_hash",
        "_histogram",
        "_labels",
        "_measurement",
        "_record",
        "_storages",
        "_targets",
    )

    def __init__(self, histogram: Any, labels: tuple[str, ...], internals: Any) -> None:
        from opentelemetry.context import get_current

        self._histogram = histogram
        self._labels = labels
        self._record: Callable[[float, Mapping[str, str]], None] = histogram.record
        self._enabled: Callable[[], bool] = histogram._is_enabled
        self._consumer = histogram._measurement_consumer
        self._current = get_current
        self._measurement: Any = internals.Measurement
        self._clean: Callable[[Any, None], Any] = internals.clean
        self._hash: Callable[[Any], Any] = internals.hash_attributes
        self._buckets_class: type | None = internals.buckets_class
        # The reader storages the targets were resolved for (the consumer
        # replaces its mapping, never changes it, when a reader comes or goes).
        self._storages: Mapping[Any, Any] | None = None
        self._direct = False
        # Label values -> (their attributes, as `record` would clean them;
        # the aggregations a value goes to, one per reader and view).
        self._targets: dict[
            tuple[str, ...], tuple[Mapping[str, Any], tuple[Any, ...], tuple[Any, ...]]
        ] = {}

    @classmethod
    def of(cls, histogram: object, labels: tuple[str, ...]) -> Recorder | None:
        """The direct path's recorder for ``histogram``, or None."""
        internals = _Internals()
        if not internals.same_path:
            return None  # `record` goes another way in this SDK: what is found here could differ
        if type(histogram) is not internals.histogram_class:
            return None  # a proxy, a no-op, or a meter provider of another make
        if getattr(getattr(histogram, "record", None), "__func__", None) is not internals.record:
            return None  # a `record` the application replaced: each value must go through it
        consumer: Any = getattr(histogram, "_measurement_consumer", None)
        if type(consumer) is not internals.consumer_class:
            return None
        if type(consumer._sdk_config.exemplar_filter) not in internals.quiet_filters:
            return None  # it may take an exemplar outside a span: `record` asks it
        direct = cls(histogram, labels, internals)
        if not direct._usable(consumer._reader_storages):
            return None
        return direct.record

    def _usable(self, storages: Mapping[Any, Any]) -> bool:
        """Whether every reader's views of the histogram keep all attributes, cumulatively."""
        for storage in storages.values():
            for match in storage._get_or_init_view_instrument_match(self._histogram):
                if match._reset_on_collect or match._view._attribute_keys is not None:
                    return False
        return True

    def record(self, value: float, key: tuple[str, ...]) -> None:
        """Record ``value`` in the series of label values ``key``, as ``record`` would."""
        storages = self._consumer._reader_storages
        if storages is not self._storages:
            # A reader came or went: resolve every label set again.
            self._targets.clear()
            self._direct = self._usable(storages)
            self._storages = storages
        context = self._current()
        if not self._direct or context or not 0.0 <= value < _INF or not self._enabled():
            # Where `record` could do otherwise: it does it. A context with
            # anything in it may hold a span the exemplar filter samples.
            self._record(value, dict(zip(self._labels, key, strict=True)))
            return
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = self._resolve(key)
        attributes, buckets, others = target
        for aggregation in buckets:
            # `_ExplicitBucketHistogramAggregation.aggregate` without an
            # exemplar (the filter samples none outside a sampled span, and
            # the context is empty), inline: its call, the measurement it
            # takes and its `min`/`max` calls were most of what is left.
            # Its code is checked in `_Internals`.
            lock = aggregation._lock
            lock.acquire()
            try:
                counts = aggregation._value
                if counts is None:
                    counts = aggregation._value = aggregation._get_empty_bucket_counts()
                aggregation._sum += value
                if aggregation._record_min_max:
                    # Compared here, not by `min`/`max` calls: the same
                    # results for finite values (checked above), and cheaper.
                    if value < aggregation._min:  # noqa: PLR1730
                        aggregation._min = value
                    if value > aggregation._max:  # noqa: PLR1730
                        aggregation._max = value
                counts[_bisect_left(aggregation._boundaries, value)] += 1
            finally:
                lock.release()
        if others:
            # Another aggregation (a view's): handed the measurement `record`
            # makes, its attributes cleaned once per series.
            measurement = self._measurement(value, _time_ns(), self._histogram, context, None)
            _set(measurement, "attributes", attributes)
            for aggregation in others:
                aggregation.aggregate(measurement, False)

    def _resolve(
        self, key: tuple[str, ...]
    ) -> tuple[Mapping[str, Any], tuple[Any, ...], tuple[Any, ...]]:
        """The cleaned attributes of ``key`` and its aggregations, as ``record`` finds them.

        The aggregations in two parts: the SDK's explicit-bucket histograms
        (aggregated inline), and any other.
        """
        attributes = self._clean(dict(zip(self._labels, key, strict=True)), None)
        buckets: list[Any] = []
        others: list[Any] = []
        assert self._storages is not None
        for storage in self._storages.values():
            for match in storage._get_or_init_view_instrument_match(self._histogram):
                copy = dict(attributes)  # the view match keeps its own copy
                aggregation_key = self._hash(copy)
                with match._lock:
                    aggregation = match._get_or_create_aggregation(aggregation_key, copy)
                inline = type(aggregation) is self._buckets_class
                (buckets if inline else others).append(aggregation)
        return attributes, tuple(buckets), tuple(others)


class _Internals:
    """The SDK's private names the direct path uses, imported when it is chosen."""

    def __init__(self) -> None:
        from opentelemetry.attributes import _clean_attribute_value
        from opentelemetry.sdk.metrics._internal import (
            _view_instrument_match,
            aggregation,
            instrument,
            measurement,
            metric_reader_storage,
        )
        from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
        from opentelemetry.sdk.metrics._internal.exemplar import exemplar_filter
        from opentelemetry.sdk.metrics._internal.measurement_consumer import (
            SynchronousMeasurementConsumer,
        )

        # The way `record` goes, function by function, as the SDK versions
        # tested wrote it (the names their code reads): the direct path finds
        # a label set's aggregations as these do, so only where they read
        # the same.
        path = (
            (instrument.Histogram.record, _RECORD_NAMES),
            (measurement.Measurement.__post_init__, _MEASUREMENT_NAMES),
            (SynchronousMeasurementConsumer.consume_measurement, _CONSUMER_NAMES),
            (metric_reader_storage.MetricReaderStorage.consume_measurement, _STORAGE_NAMES),
            (_view_instrument_match._ViewInstrumentMatch.consume_measurement, _MATCH_NAMES),
        )
        # Plain functions only: a wrapper that hands on its function's code
        # (a proxy) would have the names read while it does something else.
        self.same_path = all(
            type(function) is FunctionType and function.__code__.co_names == names
            for function, names in path
        )
        self.record: object = instrument.Histogram.record
        self.histogram_class: type = instrument._Histogram
        self.consumer_class: Any = SynchronousMeasurementConsumer
        self.quiet_filters: tuple[type, ...] = (
            exemplar_filter.AlwaysOffExemplarFilter,
            exemplar_filter.TraceBasedExemplarFilter,
        )
        self.Measurement: type = measurement.Measurement
        self.clean: Callable[[Any, None], Any] = _clean_attribute_value
        self.hash_attributes: Callable[[Any], Any] = _hash_attributes
        # The explicit-bucket histogram aggregation, which `record` aggregates
        # inline, if its `aggregate` reads and writes what it did when that
        # was written (else each value is handed to its `aggregate`).
        buckets = aggregation._ExplicitBucketHistogramAggregation
        aggregate = buckets.aggregate
        code = aggregate.__code__
        same = (
            type(aggregate) is FunctionType
            and code.co_names == _AGGREGATE_NAMES
            and code.co_varnames == _AGGREGATE_VARIABLES
        )
        self.buckets_class: type | None = buckets if same else None


# What `_ExplicitBucketHistogramAggregation.aggregate` reads and writes, in
# the SDK versions `_DirectHistogram.record` was tested with (its code's names).
_AGGREGATE_NAMES = (
    "_lock",
    "_value",
    "_get_empty_bucket_counts",
    "value",
    "_sum",
    "_record_min_max",
    "min",
    "_min",
    "max",
    "_max",
    "bisect_left",
    "_boundaries",
    "_sample_exemplar",
)
_AGGREGATE_VARIABLES = ("self", "measurement", "should_sample_exemplar", "measurement_value")

# What each function on `Histogram.record`'s way reads (its code's names), in
# the SDK versions `_DirectHistogram` was tested with.
_RECORD_NAMES = (
    "_is_enabled",
    "super",
    "record",
    "math",
    "isfinite",
    "_logger",
    "warning",
    "name",
    "time_ns",
    "_measurement_consumer",
    "consume_measurement",
    "Measurement",
    "get_current",
)
_MEASUREMENT_NAMES = (
    "attributes",
    "isinstance",
    "Mapping",
    "object",
    "__setattr__",
    "_clean_attribute_value",
    "_logger",
    "warning",
    "type",
)
_CONSUMER_NAMES = (
    "_sdk_config",
    "exemplar_filter",
    "should_sample",
    "value",
    "time_unix_nano",
    "attributes",
    "context",
    "_reader_storages",
    "values",
    "consume_measurement",
)
_STORAGE_NAMES = ("_get_or_init_view_instrument_match", "instrument", "consume_measurement")
_MATCH_NAMES = (
    "attributes",
    "dict",
    "_view",
    "_attribute_keys",
    "items",
    "_hash_attributes",
    "_reset_on_collect",
    "_lock",
    "_get_or_create_aggregation",
    "aggregate",
    "_attributes_aggregation",
    "get",
)

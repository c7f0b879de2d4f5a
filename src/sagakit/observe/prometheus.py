"""Serve `Metrics` for Prometheus to scrape (the ``metrics`` extra).

`serve` makes an OpenTelemetry meter provider of its own whose reader is
the Prometheus exporter, and an HTTP server (``prometheus_client``'s) on a
thread of its own that answers scrapes with the text format. What
``sagakit worker --metrics-port`` uses; an application that already exports
metrics its own way gives `Metrics` its meter provider instead.

The duration histograms are kept by `Metrics` itself (``own_histograms``)
and read at each scrape by a collector of this module, written as the
OpenTelemetry exporter writes the SDK's: the same names, help, labels and
buckets. The SDK's histogram record cost several times all the rest of
`Metrics`' work per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from threading import Thread
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from sagakit.observe.metrics import BUCKETS, METRICS, Metrics

__all__ = ["HistogramCollector", "PrometheusEndpoint", "serve", "writes_scope_labels"]


@dataclass(slots=True)
class PrometheusEndpoint:
    """A scrape endpoint being served, and the `Metrics` it reports.

    Attributes:
        metrics: The observer to give the engine, and to `Metrics.sample` the store with.
        provider: The meter provider its instruments come from.
        port: The port it listens on (the one chosen, when 0 was asked).
    """

    metrics: Metrics
    provider: MeterProvider
    port: int
    _server: WSGIServer
    _thread: Thread
    _histograms: HistogramCollector
    _closed: bool = False

    def close(self) -> None:
        """Stop answering scrapes and shut the meter provider down; again: nothing."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
        REGISTRY.unregister(self._histograms)
        self.provider.shutdown()


# What the exporter labels every series with, from the meter's scope
# (sagakit's meter has a name and neither version nor schema).
_SCOPE_LABELS = {
    "otel_scope_name": "sagakit",
    "otel_scope_schema_url": "",
    "otel_scope_version": "",
}
# The exporter's unit suffixes, for the units the histograms have.
_UNITS = {"s": "seconds"}
_BOUNDS = [str(bound) for bound in BUCKETS] + ["+Inf"]


def writes_scope_labels(reader: PrometheusMetricReader) -> bool:
    """Whether ``reader`` labels its series with the meter's scope.

    Exporters from 0.64b0 on do unless told not to (``scope_info_enabled``,
    the flag they added with it); older ones never do. `HistogramCollector`
    must write the same labels as the series the reader writes beside it.
    """
    return bool(getattr(getattr(reader, "_collector", None), "_scope_info_enabled", False))


class HistogramCollector(Collector):
    """The histograms `Metrics` keeps itself, for ``prometheus_client`` to scrape.

    Written as `PrometheusMetricReader` writes the SDK's explicit-bucket
    histograms: a family per histogram that has been recorded, named and
    described as in `METRICS`, its labels (theirs and the scope's) sorted,
    its buckets cumulative.

    Args:
        metrics: The observer whose histograms are written.
        scope_labels: Whether series carry the meter's scope as labels
            (``otel_scope_name`` ...), as exporters from 0.64b0 on write the
            counters and gauges beside them; older ones write none.
    """

    def __init__(self, metrics: Metrics, *, scope_labels: bool = True) -> None:
        self._metrics = metrics
        self._scope = _SCOPE_LABELS if scope_labels else {}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """One family per histogram with at least one series."""
        for name, histogram in self._metrics.histograms.items():
            series = histogram.read()
            if not series:
                continue  # as the SDK: a histogram never recorded is not exported
            spec = METRICS[name]
            keys = sorted([*spec.labels, *self._scope])
            family = HistogramMetricFamily(
                name.replace(".", "_"),
                spec.description,
                labels=keys,
                unit=_UNITS.get(spec.unit, ""),
            )
            for values, counts, total in series:
                labels = dict(zip(spec.labels, values, strict=True)) | self._scope
                family.add_metric(
                    [labels[key] for key in keys],
                    list(zip(_BOUNDS, accumulate(counts), strict=True)),
                    sum_value=total,
                )
            yield family


def serve(port: int, host: str = "127.0.0.1") -> PrometheusEndpoint:
    """Serve the Prometheus text format at ``http://host:port/metrics``.

    Besides sagakit's metrics, the scrape holds ``prometheus_client``'s own
    of the process (CPU, memory, open files) and the Python runtime.

    Raises:
        OSError: the port cannot be listened on (in use, not allowed).
    """
    server, thread = start_http_server(port, addr=host)
    # A reader registers with prometheus_client's global registry as it is
    # made: made only once the port is ours, so a failed start leaves none.
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(meter_provider=provider, own_histograms=True)
    histograms = HistogramCollector(metrics, scope_labels=writes_scope_labels(reader))
    REGISTRY.register(histograms)
    return PrometheusEndpoint(metrics, provider, server.server_port, server, thread, histograms)

"""Serve `Metrics` for Prometheus to scrape (the ``metrics`` extra).

`serve` makes an OpenTelemetry meter provider of its own whose reader is
the Prometheus exporter, and an HTTP server (``prometheus_client``'s) on a
thread of its own that answers scrapes with the text format. What
``sagakit worker --metrics-port`` uses; an application that already exports
metrics its own way gives `Metrics` its meter provider instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from sagakit.observe.metrics import Metrics

__all__ = ["PrometheusEndpoint", "serve"]


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

    def close(self) -> None:
        """Stop answering scrapes and shut the meter provider down."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
        self.provider.shutdown()


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
    return PrometheusEndpoint(
        Metrics(meter_provider=provider), provider, server.server_port, server, thread
    )

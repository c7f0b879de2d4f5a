"""A trace that crosses processes: a run started in a request's span, driven by a worker.

This process starts the run inside a parent span (the in-memory exporter
keeps this side's spans); a real ``sagakit worker --observer`` process
drives it and exports its spans as JSON lines to a file (the exporter is in
the app module). The worker's spans must be in the parent's trace, children
of the run's ``start`` span.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagakit import Engine, RetryPolicy, RunStatus, Saga
from sagakit.observe.otel import Tracing

from .helpers import fails, sagakit, start_worker

pytestmark = pytest.mark.slow

APP = """
import json
import threading
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from sagakit import RetryPolicy, Saga
from sagakit.observe.otel import Tracing

HERE = Path(__file__).parent


class JsonLines(SpanExporter):
    lock = threading.Lock()

    def export(self, spans):
        with self.lock, open(HERE / "spans.jsonl", "a") as out:
            for span in spans:
                parent = span.parent
                out.write(json.dumps({
                    "name": span.name,
                    "trace_id": format(span.context.trace_id, "032x"),
                    "span_id": format(span.context.span_id, "016x"),
                    "parent_id": None if parent is None else format(parent.span_id, "016x"),
                    "attributes": dict(span.attributes or {}),
                }) + "\\n")
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
tracing = Tracing(tracer_provider=provider)

orders = Saga("traced-order")


@orders.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0))
def charge(state, ctx):
    if ctx.attempt == 1:
        raise RuntimeError("the gateway blinked")
    return {"charged": True}


@orders.step
def ship(state, ctx):
    return {"shipped": True}
"""


def the_saga() -> Saga[Any]:
    """The app's saga as this process declares it (the same name, version and steps)."""
    orders: Saga[Any] = Saga("traced-order")

    @orders.step(retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0))
    def charge(state: dict[str, Any], ctx: object) -> None:
        raise AssertionError("run by the worker only")

    @orders.step
    def ship(state: dict[str, Any], ctx: object) -> None:
        raise AssertionError("run by the worker only")

    return orders


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_worker_process_continues_the_trace_of_the_request_that_started_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "traceapp.py").write_text(textwrap.dedent(APP))
    db = tmp_path / "runs.db"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("the-web-app")
    with Engine(f"sqlite:///{db}", observers=[Tracing(tracer_provider=provider)]) as engine:
        with tracer.start_as_current_span("POST /orders") as request:
            engine.start(the_saga(), {}, run_id="order-1")
        proc = start_worker(
            tmp_path, db, "--observer", "traceapp:tracing", "--grace", "5", app="traceapp"
        )
        try:
            run = engine.wait("order-1", timeout=60)
            give_up = time.monotonic() + 30
            # The worker's observers tell the exporter just after each commit.
            while not any(
                s["name"] == "run_finished" for s in read_spans(tmp_path / "spans.jsonl")
            ):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < give_up, "the worker exported no run_finished span"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert run.status is RunStatus.COMPLETED
    provider.shutdown()

    here = {s.name: s for s in exporter.get_finished_spans()}
    start = here["start traced-order"]
    assert start.context is not None
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id
    trace_id = format(request.get_span_context().trace_id, "032x")
    start_id = format(start.context.span_id, "016x")

    there = read_spans(tmp_path / "spans.jsonl")
    assert [(s["name"], s["attributes"].get("sagakit.step.attempt")) for s in there] == [
        ("action charge", 1),
        ("action charge", 2),
        ("action ship", 1),
        ("run_finished", None),
    ]
    assert {s["trace_id"] for s in there} == {trace_id}  # the request's trace
    assert {s["parent_id"] for s in there} == {start_id}  # children of the run's start
    assert there[0]["attributes"]["error.type"] == "RuntimeError"
    assert there[0]["attributes"]["sagakit.step.will_retry"] is True
    assert {s["attributes"]["sagakit.run.id"] for s in there} == {"order-1"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("traceapp", "'traceapp' is not MODULE:ATTR"),
        ("nowhere:tracing", "cannot load 'nowhere:tracing'"),
        ("traceapp:orders", "'traceapp:orders' is not an observer"),
        ("traceapp:HERE", "'traceapp:HERE' is not an observer"),
        ("brokenobserver:Tracing", "cannot load 'brokenobserver:Tracing': RuntimeError: no"),
    ],
)
def test_a_bad_observer_is_one_line_and_nothing_runs(
    tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "traceapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "brokenobserver.py").write_text("raise RuntimeError('no')\n")
    done = sagakit(
        tmp_path,
        "worker",
        "--db",
        f"sqlite:///{tmp_path / 'runs.db'}",
        "--app",
        "traceapp",
        "--observer",
        spec,
        pythonpath=tmp_path,
    )
    err = fails(done, code=2)
    assert message in err
    assert not (tmp_path / "runs.db").exists()

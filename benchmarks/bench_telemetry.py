"""What telemetry costs: steps/s without OpenTelemetry, with it idle, and exporting.

Three settings, side by side in one run, each in a fresh process, rounds
interleaved so that a noisy neighbour slows them all alike:

- ``not installed``: OpenTelemetry and prometheus_client cannot be imported
  (blocked in ``sys.modules`` before sagakit is), as where the extras are absent;
- ``installed, not configured``: they are importable; the engine has no observer;
- ``exporting``: ``Tracing`` and ``Metrics`` observers, with the SDK's
  batching span processor and periodic metric reader handing everything to
  exporters that drop it (the SDK's own work is counted, the network's is not).

The workload: sagas of five no-op async steps, one after the other, on the
memory store (the engine's own cost per step is then all there is) or on
SQLite (``--store sqlite``: each step a durable commit). Real steps that call
a database or a service make every cost here smaller in proportion. Each
setting's time includes delivering what the observers were told
(``observers.flush``).

    .venv/bin/python benchmarks/bench_telemetry.py
    .venv/bin/python benchmarks/bench_telemetry.py --sagas 2000 --rounds 7
    .venv/bin/python benchmarks/bench_telemetry.py --observers-alone   # their own time per step
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

SETTINGS = (
    "not installed",
    "installed, not configured",
    "exporting",
    "exporting metrics only",
    "exporting traces only",
)
STEPS = 5


def child(setting: str, sagas: int, store: str) -> float:
    """Run the workload in this process under ``setting``; return steps/s."""
    if setting == "not installed":
        for name in ("opentelemetry", "prometheus_client"):
            sys.modules[name] = None  # type: ignore[assignment]  # import fails as if absent
    import asyncio

    from sagakit import AsyncEngine, Saga, StepContext

    observers: list[Any] = []
    if setting.startswith("exporting"):
        tracing, metrics = exporting_observers()
        observers = {
            "exporting": [tracing, metrics],
            "exporting metrics only": [metrics],
            "exporting traces only": [tracing],
        }[setting]

    saga: Saga[Any] = Saga("bench-telemetry")
    for i in range(STEPS):

        async def noop(state: dict[str, Any], ctx: StepContext) -> None:
            return None

        saga.add_step(noop, name=f"step{i}")

    url = "memory://"
    if store == "sqlite":
        import tempfile

        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"

    async def main() -> float:
        async with AsyncEngine(url, observers=observers) as engine:
            engine.register(saga)
            for i in range(50):  # warm up
                await engine.run(saga, {}, run_id=f"warm-{i}")
            if engine.observers is not None:
                await asyncio.to_thread(engine.observers.flush, 60)
            began = time.perf_counter()
            for i in range(sagas):
                await engine.run(saga, {}, run_id=f"run-{i}")
            if engine.observers is not None:
                await asyncio.to_thread(engine.observers.flush, 60)
            return sagas * STEPS / (time.perf_counter() - began)

    if setting != "not installed":
        import opentelemetry  # noqa: F401  # importable here, as the setting says

    return asyncio.run(main())


def exporting_observers() -> tuple[Any, Any]:
    """`Tracing` and `Metrics` on SDK providers whose exporters drop everything."""
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from sagakit.observe.metrics import Metrics
    from sagakit.observe.otel import Tracing

    class NoSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class NoMetrics(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NoSpans()))
    reader = PeriodicExportingMetricReader(NoMetrics(), export_interval_millis=1_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    return Tracing(tracer_provider=tracer_provider), Metrics(meter_provider=meter_provider)


def observers_alone(sagas: int) -> dict[str, float]:
    """Microseconds per step the observers take, told on this thread, nothing else running.

    The engine's commits (memory store) are recorded, not told; then each
    setting's observers are told all of them here, timed: their cost with no
    interpreter lock to share and no thread to wake.
    """
    import asyncio

    from sagakit import AsyncEngine, Saga, StepContext
    from sagakit.observe.dispatch import Observers

    saga: Saga[Any] = Saga("bench-telemetry")
    for i in range(STEPS):

        async def noop(state: dict[str, Any], ctx: StepContext) -> None:
            return None

        saga.add_step(noop, name=f"step{i}")
    commits: list[tuple[Any, ...]] = []
    tracing, metrics = exporting_observers()

    async def run() -> float:
        async with AsyncEngine("memory://", observers=[tracing, metrics]) as engine:
            assert engine.observers is not None
            engine.observers._put = commits.append  # type: ignore[method-assign,assignment]  # recorded
            engine.register(saga)
            began = time.perf_counter()
            for i in range(sagas):
                await engine.run(saga, {}, run_id=f"run-{i}")
            return time.perf_counter() - began

    found = {"engine alone": asyncio.run(run())}
    for _ in range(3):  # best of three, each on fresh observers
        for name in ("traces", "metrics", "both"):
            fresh_tracing, fresh_metrics = exporting_observers()
            chosen = {"traces": [fresh_tracing], "metrics": [fresh_metrics]}
            observers = Observers(chosen.get(name, [fresh_tracing, fresh_metrics]))
            began = time.perf_counter()
            for commit in commits:
                observers._deliver(commit)
            took = time.perf_counter() - began
            found[name] = min(found.get(name, took), took)
    return {name: seconds / (sagas * STEPS) * 1e6 for name, seconds in found.items()}


def measure(setting: str, sagas: int, store: str) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--child", setting, "--sagas", str(sagas), "--store", store],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000, help="sagas per measure")
    parser.add_argument("--rounds", type=int, default=5, help="measures per setting")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument(
        "--observers-alone",
        action="store_true",
        help="time the exporting observers alone, on one thread (microseconds per step)",
    )
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.observers_alone:
        for name, us in observers_alone(args.sagas).items():
            print(f"{name:<14}{us:>8.1f} us/step")
        return
    if args.child:
        print(json.dumps({"steps_per_s": child(args.child, args.sagas, args.store)}))
        return
    found: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            found[setting].append(measure(setting, args.sagas, args.store))
    base = max(found["not installed"])
    print(
        f"{args.sagas} sagas x {STEPS} no-op async steps, {args.store} store, {args.rounds} rounds"
    )
    print(f"{'setting':<28}{'best steps/s':>14}{'median':>10}{'cost (best)':>13}")
    for setting in SETTINGS:
        best, median = max(found[setting]), statistics.median(found[setting])
        cost = 1 - best / base
        print(f"{setting:<28}{best:>14,.0f}{median:>10,.0f}{cost:>12.1%}")


if __name__ == "__main__":
    main()

"""What telemetry costs: steps/s without OpenTelemetry, with it idle, and exporting.

Settings side by side in one run, each in a fresh process, rounds
interleaved so that a noisy neighbour slows them all alike:

- ``not installed``: OpenTelemetry and prometheus_client cannot be imported
  (blocked in ``sys.modules`` before sagakit is), as where the extras are absent;
- ``installed, not configured``: they are importable; the engine has no observer;
- ``exporting``: ``Tracing`` and ``Metrics`` observers, with the SDK's
  batching span processor and periodic metric reader handing everything to
  exporters that drop it (the SDK's own work is counted, the network's is
  not); then each alone;
- ``exporting, metrics served``: ``Tracing`` as above, and ``Metrics`` as
  ``sagakit worker --metrics-port`` makes it (``prometheus.serve``: its own
  duration histograms, the Prometheus reader; nothing scrapes it);
- ``one no-op observer``: an `Observer` whose ``on_event`` does nothing:
  what telling observers costs before they do anything (a bare `Observer`,
  which overrides no method that takes events, has no events made at all).

The workload: sagas of five no-op async steps, one after the other, on the
memory store (the engine's own cost per step is then all there is), on
SQLite (``--store sqlite``: each step a durable commit) or on PostgreSQL
(``--store postgresql://...``: a schema per measure, dropped after). Real
steps that call a database or a service make every cost here smaller in
proportion. Each setting's time includes delivering what the observers were
told (``observers.flush``). Besides steps/s (wall clock), the process's CPU
time per step: on a machine shared with other work it wanders less.

    .venv/bin/python benchmarks/bench_telemetry.py
    .venv/bin/python benchmarks/bench_telemetry.py --store sqlite --sagas 500 --rounds 5
    .venv/bin/python benchmarks/bench_telemetry.py --sagas 200 \\
        --store postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/bench_telemetry.py --observers-alone   # their own time per step
    .venv/bin/python benchmarks/bench_telemetry.py --instructions --sagas 20   # their instructions
    .venv/bin/python benchmarks/bench_telemetry.py --instructions --delivery-only --sagas 100
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
    "exporting, metrics served",
    "one no-op observer",
)
STEPS = 5


def child(setting: str, sagas: int, store: str) -> tuple[float, float]:
    """Run the workload here under ``setting``: steps/s, and CPU microseconds per step."""
    if setting == "not installed":
        for name in ("opentelemetry", "prometheus_client"):
            sys.modules[name] = None  # type: ignore[assignment]  # import fails as if absent
    import asyncio

    from sagakit import AsyncEngine, Saga, StepContext

    observers: list[Any] = []
    if setting == "one no-op observer":
        observers = [no_op_observer()]
    elif setting.startswith("exporting"):
        tracing, metrics = exporting_observers(served=setting == "exporting, metrics served")
        observers = {
            "exporting": [tracing, metrics],
            "exporting metrics only": [metrics],
            "exporting traces only": [tracing],
            "exporting, metrics served": [tracing, metrics],
        }[setting]

    saga: Saga[Any] = Saga("bench-telemetry")
    for i in range(STEPS):

        async def noop(state: dict[str, Any], ctx: StepContext) -> None:
            return None

        saga.add_step(noop, name=f"step{i}")

    url = "memory://"
    schema = None
    if store == "sqlite":
        import tempfile

        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    elif store.startswith("postgresql"):
        import uuid

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        url = f"{store}{'&' if '?' in store else '?'}schema={schema}"

    async def main() -> tuple[float, float]:
        async with AsyncEngine(url, observers=observers) as engine:
            engine.register(saga)
            for i in range(50):  # warm up
                await engine.run(saga, {}, run_id=f"warm-{i}")
            if engine.observers is not None:
                await asyncio.to_thread(engine.observers.flush, 60)
            began, cpu = time.perf_counter(), time.process_time()
            for i in range(sagas):
                await engine.run(saga, {}, run_id=f"run-{i}")
            if engine.observers is not None:
                await asyncio.to_thread(engine.observers.flush, 60)
            took, cpu = time.perf_counter() - began, time.process_time() - cpu
            return sagas * STEPS / took, cpu / (sagas * STEPS) * 1e6

    if setting != "not installed":
        import opentelemetry  # noqa: F401  # importable here, as the setting says

    try:
        return asyncio.run(main())
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(store, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def no_op_observer() -> Any:
    """An observer told every event, that does nothing with it."""
    from sagakit import ObservedEvent, Observer

    class NoOp(Observer):
        def on_event(self, event: ObservedEvent) -> None:
            return None

    return NoOp()


def exporting_observers(*, served: bool = False) -> tuple[Any, Any]:
    """`Tracing` and `Metrics` on SDK providers whose exporters drop everything.

    ``served``: `Metrics` as `sagakit.observe.prometheus.serve` makes it
    (its own histograms, the Prometheus reader, the histograms' collector),
    on a registry of its own and with no HTTP server.
    """
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
    if served:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        from sagakit.observe.prometheus import HistogramCollector

        registry = CollectorRegistry()
        meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
        metrics = Metrics(meter_provider=meter_provider, own_histograms=True)
        registry.register(HistogramCollector(metrics))
        return Tracing(tracer_provider=tracer_provider), metrics
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


OBSERVED = (
    "engine alone",
    "no-op observer",
    "traces",
    "metrics",
    "both",
    "metrics served",
    "both, metrics served",
)


def counted_child(what: str, sagas: int, told: bool) -> None:
    """Drive ``sagas`` sagas (memory store), recording their commits; tell ``what`` if ``told``.

    Run twice under callgrind, told and not: the difference is the
    observers' own instructions; or once, told, counting only inside the
    delivery (``--delivery-only``). For ``engine alone``, ``told`` drives
    the sagas at all: the difference is the engine's.
    """
    import asyncio
    import collections
    import itertools

    from sagakit import AsyncEngine, Observer, Saga, StepContext
    from sagakit.observe.dispatch import Observers

    saga: Saga[Any] = Saga("bench-telemetry")
    for i in range(STEPS):

        async def noop(state: dict[str, Any], ctx: StepContext) -> None:
            return None

        saga.add_step(noop, name=f"step{i}")
    commits: list[tuple[Any, ...]] = []
    chosen: list[Any] = [no_op_observer()]
    if what not in ("engine alone", "no-op observer"):
        tracing, metrics = exporting_observers(served="served" in what)
        chosen = {"traces": [tracing], "metrics": [metrics], "metrics served": [metrics]}.get(
            what, [tracing, metrics]
        )

    async def run(count: int, prefix: str) -> None:
        async with AsyncEngine("memory://", observers=[Observer()]) as engine:
            assert engine.observers is not None
            engine.observers._put = commits.append  # type: ignore[method-assign,assignment]  # recorded
            engine.register(saga)
            for i in range(count):
                await engine.run(saga, {}, run_id=f"{prefix}-{i}")

    observers = Observers(chosen)
    asyncio.run(run(20, "warm"))  # the first runs build what later ones reuse
    for commit in commits:
        observers._deliver(commit)
    commits.clear()
    if what == "engine alone":
        if told:
            asyncio.run(run(sagas, "run"))
        return
    asyncio.run(run(sagas, "run"))
    if told:
        # Through itertools.starmap, which nothing else here calls: counting
        # only inside it (--toggle-collect) counts the delivery alone.
        collections.deque(itertools.starmap(observers._deliver, [(c,) for c in commits]), 0)


def instructions(what: str, sagas: int, told: bool, *, delivery_only: bool = False) -> int:
    """The instructions callgrind counts for one `counted_child` (its delivery only, if asked)."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/callgrind.out",
                *(["--toggle-collect=starmap_next"] if delivery_only else []),
                sys.executable,
                __file__,
                "--counted-child",
                what,
                "--sagas",
                str(sagas),
                *(["--told"] if told else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def measure(setting: str, sagas: int, store: str) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", setting, "--sagas", str(sagas), "--store", store],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return float(found["steps_per_s"]), float(found["cpu_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000, help="sagas per measure")
    parser.add_argument("--rounds", type=int, default=5, help="measures per setting")
    parser.add_argument(
        "--store",
        default="memory",
        help="memory, sqlite, or a PostgreSQL URL (each measure in a schema of its own, dropped)",
    )
    parser.add_argument(
        "--observers-alone",
        action="store_true",
        help="time the exporting observers alone, on one thread (microseconds per step)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the engine's and each setting's observers' instructions per step "
        "(valgrind's callgrind: repeatable on a busy machine; --sagas 100 is plenty)",
    )
    parser.add_argument(
        "--delivery-only",
        action="store_true",
        help="with --instructions: count the observers' rows inside their delivery only, "
        "in one run (no difference of two runs, whose noise is thousands a step)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=OBSERVED,
        help="with --instructions: count only these rows (and the engine's, to compare with)",
    )
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--counted-child", choices=OBSERVED, help=argparse.SUPPRESS)
    parser.add_argument("--told", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.counted_child:
        counted_child(args.counted_child, args.sagas, args.told)
        return
    if args.instructions:
        steps = args.sagas * STEPS
        print(f"{args.sagas} sagas x {STEPS} no-op async steps, memory store, callgrind")
        print(f"{'what':<18}{'instructions/step':>18}{'of the engine':>15}")
        engine = 0.0
        for what in OBSERVED:
            if args.only and what != "engine alone" and what not in args.only:
                continue
            if args.delivery_only and what != "engine alone":
                per_step = instructions(what, args.sagas, told=True, delivery_only=True) / steps
            else:
                told = instructions(what, args.sagas, told=True)
                per_step = (told - instructions(what, args.sagas, told=False)) / steps
            engine = engine or per_step
            print(f"{what:<18}{per_step:>18,.0f}{per_step / engine:>14.1%}")
        return
    if args.observers_alone:
        for name, us in observers_alone(args.sagas).items():
            print(f"{name:<14}{us:>8.1f} us/step")
        return
    if args.child:
        steps_per_s, cpu_us = child(args.child, args.sagas, args.store)
        print(json.dumps({"steps_per_s": steps_per_s, "cpu_us": cpu_us}))
        return
    found: dict[str, list[tuple[float, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            found[setting].append(measure(setting, args.sagas, args.store))
    store = "postgresql" if args.store.startswith("postgresql") else args.store
    print(f"{args.sagas} sagas x {STEPS} no-op async steps, {store} store, {args.rounds} rounds")
    print(
        f"{'setting':<28}{'best steps/s':>13}{'median':>9}{'cost (best)':>12}"
        f"{'CPU us/step':>13}{'cost (CPU)':>11}"
    )
    base = max(rate for rate, _ in found["not installed"])
    base_cpu = statistics.median(cpu for _, cpu in found["not installed"])
    for setting in SETTINGS:
        rates = [rate for rate, _ in found[setting]]
        cpu = statistics.median(c for _, c in found[setting])
        best, median = max(rates), statistics.median(rates)
        print(
            f"{setting:<28}{best:>13,.0f}{median:>9,.0f}{1 - best / base:>12.1%}"
            f"{cpu:>13.1f}{cpu / base_cpu - 1:>11.1%}"
        )


if __name__ == "__main__":
    main()

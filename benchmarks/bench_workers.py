"""PostgreSQL with 1, 2 and 4 `sagakit worker` processes: throughput and pickup.

For each number of workers, in a fresh schema:

1. throughput: ``--sagas`` runs of five no-op steps are enqueued with
   `AsyncEngine.start`, then the workers are started and drain the backlog;
   sagas/s and steps/s count from the first step started to the last run
   finished (journal times). Meanwhile this process reads how many runs
   have settled every 0.2 s, one query, as `compare_dbos.py` does for
   DBOS (reading each run in turn, as it once did, made some 2,000 reads
   that competed with the workers for the machine). The workers start from
   Python's bytecode cache, filled before the timing, as an installed
   package's would be (``PYTHONDONTWRITEBYTECODE`` and an editable install
   made each worker compile sagakit again at its start);
2. pickup: with the workers idle, ``--pickups`` runs are started one at a
   time, 20 ms apart; the pickup time of a run is from its ``run_started``
   record to its first ``step_started`` record (LISTEN/NOTIFY wakes an idle
   worker; polling every ``--poll`` seconds is only the fallback).

    .venv/bin/python benchmarks/bench_workers.py
    .venv/bin/python benchmarks/bench_workers.py --workers 1 2 4 --sagas 4000 --concurrency 50

The database is ``$SAGAKIT_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each schema is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from sagakit import AsyncEngine, Saga, StepContext

STEPS = 5
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

SAGA: Saga[Any] = Saga("bench-noop")
# The same saga with plain-function steps, which the worker runs on its
# threads (`compare_dbos.py` measures both step modes).
SAGA_SYNC: Saga[Any] = Saga("bench-noop-sync")


def _add_noop(i: int) -> None:
    async def noop(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    def noop_sync(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    SAGA.add_step(noop, name=f"step{i}")
    SAGA_SYNC.add_step(noop_sync, name=f"step{i}")


for _i in range(STEPS):
    _add_noop(_i)


def saga_named(app: str) -> Saga[Any]:
    """The saga a worker's ``--app`` names: ``"SAGA"`` (async steps) or ``"SAGA_SYNC"``."""
    return SAGA_SYNC if app == "SAGA_SYNC" else SAGA


@dataclass
class Row:
    workers: int
    sagas: int
    seconds: float
    pickups: list[float]

    @property
    def sagas_per_s(self) -> float:
        return self.sagas / self.seconds

    def pickup(self, quantile: float) -> float:
        cuts = statistics.quantiles(self.pickups, n=100, method="inclusive")
        return cuts[round(quantile * 100) - 1] * 1000


def worker_env(logs: Path) -> dict[str, str]:
    """The workers' environment: this directory on the path, and a bytecode cache on.

    The cache is in ``logs`` (`warm_cache` fills it): a worker starts from
    it as from an installed package, whose files pip compiles.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
        "PYTHONPYCACHEPREFIX": str(logs / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_cache(logs: Path) -> None:
    """Compile what a worker imports into the cache of `worker_env`, before any timing."""
    subprocess.run(
        [sys.executable, "-c", "import bench_workers, sagakit.cli.main, sagakit.cli.worker"],
        env=worker_env(logs),
        check=True,
    )


def start_workers(
    url: str, count: int, args: argparse.Namespace, logs: Path, app: str = "SAGA"
) -> list[Any]:
    env = worker_env(logs)
    procs = []
    for i in range(count):
        command = [
            sys.executable,
            "-m",
            "sagakit",
            "worker",
            "--db",
            url,
            "--app",
            f"bench_workers:{app}",
            "--concurrency",
            str(args.concurrency),
            "--poll",
            str(args.poll),
            "--log-level",
            "warning",
        ]
        with (logs / f"worker{i}.log").open("w") as out:
            procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: list[Any]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


def journal_times(conninfo: str, schema: str, prefix: str) -> dict[str, dict[str, float]]:
    """For each run, when it was started and when its first step started and it finished."""
    query = (
        f"SELECT run_id, kind, min(at), max(at) FROM {schema}.events WHERE run_id LIKE %s "
        "AND kind IN ('run_started', 'step_started', 'run_finished') GROUP BY run_id, kind"
    )
    times: dict[str, dict[str, float]] = {}
    with psycopg.connect(conninfo) as conn:
        for run_id, kind, first, last in conn.execute(query.encode(), (prefix + "%",)):
            times.setdefault(run_id, {})[kind] = last if kind == "run_finished" else first
    return times


async def enqueue(url: str, ids: list[str], saga: Saga[Any] = SAGA) -> None:
    async with AsyncEngine(url) as engine:
        for chunk in range(0, len(ids), 500):
            await asyncio.gather(
                *(engine.start(saga, {}, run_id=i) for i in ids[chunk : chunk + 500])
            )


def wait_settled(conninfo: str, schema: str, prefix: str, count: int, timeout: float) -> None:
    """Wait until ``count`` runs whose ids start with ``prefix`` have settled.

    One query every 0.2 s, as for DBOS: what this process reads meanwhile
    competes with the workers for the machine.

    Raises:
        TimeoutError: they had not after ``timeout`` seconds.
    """
    query = (
        f"SELECT count(*) FROM {schema}.runs WHERE id LIKE %s "
        "AND status NOT IN ('pending', 'running', 'compensating')"
    )
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = conn.execute(query.encode(), (prefix + "%",)).fetchone()
            if row is not None and row[0] >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row[0] if row else 0} of {count} runs settled in {timeout}s")
            time.sleep(0.2)


async def pickups(url: str, ids: list[str]) -> None:
    async with AsyncEngine(url) as engine:
        for run_id in ids:
            await engine.start(SAGA, {}, run_id=run_id)
            await asyncio.sleep(0.02)


def measure(base: str, workers: int, args: argparse.Namespace, logs: Path) -> Row:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    conninfo = base
    try:
        ids = [f"t{i}" for i in range(args.sagas)]
        asyncio.run(enqueue(url, ids))
        warm_cache(logs)
        procs = start_workers(url, workers, args, logs)
        try:
            wait_settled(conninfo, schema, "t", len(ids), timeout=600)
            times = journal_times(conninfo, schema, "t")
            began = min(t["step_started"] for t in times.values())
            ended = max(t["run_finished"] for t in times.values())
            picks = [f"p{i}" for i in range(args.pickups)]
            asyncio.run(pickups(url, picks))
            wait_settled(conninfo, schema, "p", len(picks), timeout=120)
            waits = [
                t["step_started"] - t["run_started"]
                for t in journal_times(conninfo, schema, "p").values()
            ]
        finally:
            stop_workers(procs)
        return Row(workers, args.sagas, ended - began, waits)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50, help="runs in flight per worker")
    parser.add_argument("--pickups", type=int, default=200)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    base = os.environ.get("SAGAKIT_BENCH_POSTGRES", DEFAULT_URL)
    table = Table(
        title=f"PostgreSQL: 5 no-op async steps per saga, {args.concurrency} in flight per worker"
    )
    for name in ("workers", "sagas", "sagas/s", "steps/s", "pickup p50 ms", "pickup p99 ms"):
        table.add_column(name, justify="right")
    with tempfile.TemporaryDirectory() as logs:
        for count in args.workers:
            row = measure(base, count, args, Path(logs))
            table.add_row(
                str(row.workers),
                str(row.sagas),
                f"{row.sagas_per_s:,.0f}",
                f"{row.sagas_per_s * STEPS:,.0f}",
                f"{row.pickup(0.5):.1f}",
                f"{row.pickup(0.99):.1f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()

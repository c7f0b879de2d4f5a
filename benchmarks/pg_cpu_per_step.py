"""CPU per step on PostgreSQL: the workers' and the server's, while workers drain a backlog.

On a machine where the server and the workers share the cores, throughput
is about the cores over the CPU a step costs, both sides together; wall
time wanders with whatever else runs, CPU time much less. For each row, in
a fresh schema: ``--sagas`` runs of five no-op async steps are enqueued
(`bench_workers.enqueue`), ``--workers`` `sagakit worker` processes drain
them (`bench_workers.start_workers`, under an application name of their
own), and every 20 ms the CPU time of the workers and of the server
backends serving them (``/proc/PID/stat``; found in ``pg_stat_activity`` by
that name) is sampled. The CPU between the first ``step_started`` and the
last ``run_finished`` (journal times, the samples interpolated) is divided
by the steps. Also: WAL bytes per step (``pg_current_wal_lsn``: the whole
server's, so another client's writes count too) and the schema's row
changes per step (``pg_stat_user_tables``: inserts, updates, HOT updates).

Needs Linux's /proc, and a server on the same machine (its backends' CPU is
read from /proc).

    .venv/bin/python benchmarks/pg_cpu_per_step.py --workers 4 --sagas 4000
    .venv/bin/python benchmarks/pg_cpu_per_step.py --workers 1 4 --repeat 3

The database is ``$SAGAKIT_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each schema is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import bench_workers
import psycopg

TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.02


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class Sampler(threading.Thread):
    """Samples (time, workers' CPU, their backends' CPU) until stopped."""

    def __init__(self, base: str, name: str, workers: list[Any]) -> None:
        super().__init__(daemon=True)
        self.base, self.name, self.workers = base, name, workers
        self.samples: list[tuple[float, float, float]] = []
        self.backends: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        with psycopg.connect(self.base, autocommit=True) as conn:
            while not self.stop.is_set():
                at = time.time()
                workers = sum(cpu_seconds(proc.pid) for proc in self.workers)
                self.backends.update(row[0] for row in conn.execute(query, (self.name,)))
                backends = sum(cpu_seconds(pid) for pid in self.backends)
                self.samples.append((at, workers, backends))
                time.sleep(SAMPLE_EVERY)

    def at(self, moment: float, column: int) -> float:
        """Column ``column`` of the samples at ``moment``, interpolated."""
        before = self.samples[0]
        for sample in self.samples:
            if sample[0] >= moment:
                if sample[0] == before[0]:
                    return sample[column]
                share = (moment - before[0]) / (sample[0] - before[0])
                return before[column] + share * (sample[column] - before[column])
            before = sample
        return self.samples[-1][column]


def measure(base: str, workers: int, sagas: int, logs: Path) -> dict[str, float]:
    schema = f"cpu_{uuid.uuid4().hex[:8]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    name = f"sagakit-bench-{schema}"
    steps = sagas * bench_workers.STEPS
    try:
        ids = [f"t{i}" for i in range(sagas)]
        asyncio.run(bench_workers.enqueue(url, ids))
        with psycopg.connect(base, autocommit=True) as conn:
            wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        options = argparse.Namespace(concurrency=50, poll=1.0)
        os.environ["PGAPPNAME"] = name  # libpq's default application name, for the workers
        try:
            bench_workers.warm_cache(logs)
            procs = bench_workers.start_workers(url, workers, options, logs)
        finally:
            del os.environ["PGAPPNAME"]
        sampler = Sampler(base, name, procs)
        sampler.start()
        try:
            bench_workers.wait_settled(base, schema, "t", len(ids), timeout=600)
            time.sleep(2 * SAMPLE_EVERY)
        finally:
            sampler.stop.set()
            sampler.join()
            bench_workers.stop_workers(procs)
        with psycopg.connect(base, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - %s::pg_lsn", (wal_before[0] if wal_before else 0,)
            ).fetchone()
            wal = float(row[0]) if row else 0.0
            tables = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = 'runs'",
                (schema,),
            ).fetchone() or (0, 0)
        times = bench_workers.journal_times(base, schema, "t")
        began = min(t["step_started"] for t in times.values())
        ended = max(t["run_finished"] for t in times.values())
        client = sampler.at(ended, 1) - sampler.at(began, 1)
        server = sampler.at(ended, 2) - sampler.at(began, 2)
        return {
            "steps/s": steps / (ended - began),
            "client": client / steps * 1e6,
            "server": server / steps * 1e6,
            "wal": wal / steps,
            "updates": tables[0] / steps,
            "hot": tables[1] / steps,
        }
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[4])
    parser.add_argument("--sagas", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    base = os.environ.get("SAGAKIT_BENCH_POSTGRES", bench_workers.DEFAULT_URL)
    print(
        "workers  steps/s  workers µs/step  server µs/step  total  WAL B/step"
        "  runs updates/step (HOT)  load"
    )
    with tempfile.TemporaryDirectory() as logs:
        for _ in range(args.repeat):
            for count in args.workers:
                row = measure(base, count, args.sagas, Path(logs))
                print(
                    f"{count:7d}  {row['steps/s']:7,.0f}  {row['client']:15.1f}  "
                    f"{row['server']:14.1f}  {row['client'] + row['server']:5.1f}  "
                    f"{row['wal']:10,.0f}  {row['updates']:9.2f} ({row['hot']:.2f})"
                    f"  {os.getloadavg()[0]:.1f}"
                )


if __name__ == "__main__":
    main()

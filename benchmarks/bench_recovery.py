"""Recovery after SIGKILL, and a worker's memory, on SQLite.

1. recovery: ``--runs`` sagas of five steps, each step sleeping ``--step-ms``
   so that runs stay in flight, are started; one ``sagakit worker`` process
   takes them all at once (its concurrency is ``--runs``). Once every run
   has started, the worker is killed with SIGKILL and a second worker is
   started, whose steps do not sleep: what it measures is the takeover and
   the re-run, not the steps' own time. Reported: the runs and steps in
   flight at the kill, the time from the kill (and from the second worker's
   start) until every run is settled, and the steps run a second time (a
   step journaled as started twice), which must not exceed the steps that
   were in flight.
2. memory: one worker process drives ``--finished`` sagas of five no-op
   steps, started in batches; its RSS is sampled after each tenth of them.
   Reported: RSS after 10 % and after 100 % of the runs, and their ratio.
   With ``--runs`` sagas in flight (step 1, just before the kill), the
   worker's RSS is reported too.

    .venv/bin/python benchmarks/bench_recovery.py
    .venv/bin/python benchmarks/bench_recovery.py --runs 10000 --finished 100000

Both use a fresh SQLite file (``synchronous=FULL``, WAL) in a temporary
directory. The lease is ``--lease`` seconds: a killed worker's runs are taken
over once it lapses, so recovery can never be quicker than the lease.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit import AsyncEngine, Saga, StepContext

STEPS = 5
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "0"))

SLOW: Saga[Any] = Saga("bench-slow")
NOOP: Saga[Any] = Saga("bench-noop")


def _add_steps(i: int) -> None:
    async def slow(state: dict[str, Any], ctx: StepContext) -> None:
        await asyncio.sleep(STEP_SECONDS)

    async def noop(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    SLOW.add_step(slow, name=f"step{i}")
    NOOP.add_step(noop, name=f"step{i}")


for _i in range(STEPS):
    _add_steps(_i)


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid``, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def worker(
    db: Path, app: str, concurrency: int, args: argparse.Namespace, *, step_ms: float = 0
) -> subprocess.Popen[Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
        "BENCH_STEP_SECONDS": str(step_ms / 1000),
    }
    command = [
        sys.executable, "-m", "sagakit", "worker", "--db", f"sqlite:///{db}",
        "--app", f"bench_recovery:{app}", "--concurrency", str(concurrency),
        "--lease", str(args.lease), "--poll", "0.2", "--log-level", "error",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


async def start_runs(db: Path, saga: Saga[Any], prefix: str, count: int) -> None:
    async with AsyncEngine(f"sqlite:///{db}") as engine:
        for chunk in range(0, count, 1000):
            ids = range(chunk, min(chunk + 1000, count))
            await asyncio.gather(*(engine.start(saga, {}, run_id=f"{prefix}{i}") for i in ids))


def count(db: Path, query: str, *params: Any) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        value: int = conn.execute(query, params).fetchone()[0]
    return value


def settled(db: Path) -> int:
    return count(db, "SELECT count(*) FROM runs WHERE status IN ('completed', 'rolled_back')")


def wait_until(check: Any, timeout: float, poll: float = 0.05) -> float:
    """Seconds until ``check()`` is true; raises after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError("gave up waiting")
        time.sleep(poll)
    return time.monotonic() - began


def recovery(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    db = scratch / "recovery.db"
    asyncio.run(start_runs(db, SLOW, "r", args.runs))
    first = worker(db, "SLOW", args.runs, args, step_ms=args.step_ms)
    started = "SELECT count(DISTINCT run_id) FROM events WHERE kind = 'step_started'"
    wait_until(lambda: count(db, started) >= args.runs, timeout=600)
    in_flight_rss = rss_mb(first.pid)
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    first.wait()
    open_steps = count(
        db,
        "SELECT count(*) FROM events s WHERE s.kind = 'step_started' AND NOT EXISTS "
        "(SELECT 1 FROM events o WHERE o.run_id = s.run_id AND o.step = s.step "
        "AND o.seq > s.seq AND o.kind IN ('step_succeeded', 'step_failed'))",
    )
    done_at_kill = settled(db)
    second = worker(db, "SLOW", args.runs, args)
    restarted = time.monotonic()
    try:
        wait_until(lambda: settled(db) >= args.runs, timeout=600, poll=0.05)
        finished = time.monotonic()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=120)
    repeated = count(
        db,
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM events "
        "WHERE kind = 'step_started' GROUP BY run_id, step)",
    )
    return {
        "in flight at kill": args.runs - done_at_kill,
        "steps in flight at kill": open_steps,
        "RSS with all in flight (MB)": in_flight_rss,
        "settled after kill (s)": finished - killed,
        "settled after restart (s)": finished - restarted,
        "steps run twice": repeated,
    }


def memory(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    db = scratch / "memory.db"
    proc = worker(db, "NOOP", 200, args)
    samples: list[float] = []
    tenth = max(1, args.finished // 10)
    try:
        for part in range(10):
            asyncio.run(start_runs(db, NOOP, f"m{part}-", tenth))
            wait_until(lambda n=part: settled(db) >= (n + 1) * tenth, timeout=900, poll=0.2)
            samples.append(rss_mb(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return {
        f"RSS after {tenth:,} finished (MB)": samples[0],
        f"RSS after {10 * tenth:,} finished (MB)": samples[-1],
        "growth, last / first": samples[-1] / samples[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000, help="runs in flight at the kill")
    parser.add_argument("--step-ms", type=float, default=2000, help="how long each step sleeps")
    parser.add_argument("--finished", type=int, default=100_000, help="runs for the memory test")
    parser.add_argument("--lease", type=float, default=2.0, help="lease seconds of the workers")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    table = Table(title="SQLite (synchronous=FULL, WAL), one sagakit worker process")
    table.add_column("measure")
    table.add_column("value", justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        results = recovery(args, Path(scratch))
        if not args.skip_memory:
            results |= memory(args, Path(scratch))
    for name, value in results.items():
        table.add_row(name, f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)
    print(f"lease {args.lease}s; steps sleep {args.step_ms:g} ms in the recovery test")


if __name__ == "__main__":
    main()

"""How fast `sagakit purge` deletes settled runs, and whether claims stay fast meanwhile.

Fills a store with ``--runs`` settled runs (six journal events each, made
one second apart, the newest 40 days ago) and ``--active`` pending runs,
then purges the settled ones in batches of ``--batch`` (as ``sagakit purge
--older-than 30d`` does) while a worker-like task claims and releases the
active runs in a loop.
Prints the fill time, the purge rate, and the claim latency during the purge
next to the one before it.

    .venv/bin/python benchmarks/bench_purge.py
    .venv/bin/python benchmarks/bench_purge.py --runs 1000000 --archive
    .venv/bin/python benchmarks/bench_purge.py --db postgresql://postgres@127.0.0.1/test?schema=bench
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import Lease, Purged, RunRecord, Store, open_store

DAY = 86_400.0
SETTLED = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED)


def journal(run_id: str, at: float) -> list[Event]:
    return [
        Event(run_id, 1, EventKind.RUN_STARTED, at, data={"state": {"order": run_id}}),
        Event(run_id, 2, EventKind.STEP_STARTED, at, step="reserve", attempt=1),
        Event(run_id, 3, EventKind.STEP_SUCCEEDED, at, step="reserve", attempt=1, data={"r": 1}),
        Event(run_id, 4, EventKind.STEP_STARTED, at, step="charge", attempt=1),
        Event(run_id, 5, EventKind.STEP_SUCCEEDED, at, step="charge", attempt=1, data={"c": 2}),
        Event(run_id, 6, EventKind.RUN_FINISHED, at, data={"status": "completed"}),
    ]


async def fill(store: Store, runs: int, active: int) -> None:
    old = time.time() - 40 * DAY
    chunk = 1000
    for start in range(0, runs + active, chunk):
        made = []
        for i in range(start, min(start + chunk, runs + active)):
            settled = i < runs
            run_id = f"run-{i:08d}"
            status = SETTLED[i % 3] if settled else RunStatus.PENDING
            # One second apart, oldest first, as runs made over days are: a store
            # does not hold a million runs made in the same instant.
            at = old - (runs - i) if settled else time.time()
            record = RunRecord(run_id, "order", "1", status, {"order": run_id}, None, at, at)
            events = journal(run_id, at) if settled else journal(run_id, at)[:1]
            made.append(store.create_run(record, events))
        await asyncio.gather(*made)


def analyze_postgresql(url: str) -> None:
    """Gather the planner's statistics after the fill, as autovacuum would.

    Without them (autovacuum off, or not yet run after a bulk load)
    PostgreSQL plans each purge batch as if few runs were old: it reads and
    sorts every purgeable run for each batch, about 1,000 runs/s with a
    million of them.
    """
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    schema = parse_qs(parts.query).get("schema", ["sagakit"])[0]
    with psycopg.connect(parts._replace(query="").geturl(), autocommit=True) as conn:
        for table in ("runs", "events"):
            conn.execute(
                sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            )


async def claim_loop(store: Store, stop: asyncio.Event, latencies: list[float]) -> None:
    """Claim up to 10 due runs and release them, over and over, timing each claim."""
    while not stop.is_set():
        began = time.perf_counter()
        now = time.time()
        runs = await store.claim_due(owner="bench", now=now, lease_until=now + 30, limit=10)
        latencies.append(time.perf_counter() - began)
        for run in runs:
            lease = Lease("bench", run.lease_epoch)
            await store.release(run.id, lease)
        await asyncio.sleep(0.01)


def summary(latencies: Sequence[float]) -> str:
    if not latencies:
        return "no claims"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered)} claims, median {statistics.median(ordered) * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = open_store(url)
        await store.open()
        try:
            began = time.perf_counter()
            await fill(store, args.runs, args.active)
            if url.startswith("postgresql"):
                analyze_postgresql(url)
            print(
                f"filled {args.runs:,} settled and {args.active:,} active runs "
                f"in {time.perf_counter() - began:.1f} s"
            )

            stop = asyncio.Event()
            quiet: list[float] = []
            task = asyncio.create_task(claim_loop(store, stop, quiet))
            await asyncio.sleep(2)
            stop.set()
            await task

            archived = 0

            def archive(batch: Sequence[Purged]) -> None:
                nonlocal archived
                archived += len(batch)

            stop = asyncio.Event()
            busy: list[float] = []
            task = asyncio.create_task(claim_loop(store, stop, busy))
            purged = 0
            began = time.perf_counter()
            cutoff = time.time() - 30 * DAY
            while True:
                batch = await store.purge(
                    before=cutoff,
                    statuses=SETTLED,
                    limit=args.batch,
                    archive=archive if args.archive else None,
                )
                purged += len(batch)
                if len(batch) < args.batch:
                    break
            took = time.perf_counter() - began
            stop.set()
            await task
            left = await store.list_runs(limit=args.active + 10)
            assert len(left) == args.active, len(left)
            print(
                f"purged {purged:,} runs in {took:.1f} s: {purged / took:,.0f} runs/s "
                f"(batch {args.batch}{', journals read for the archive' if args.archive else ''})"
            )
            print(f"claims before the purge: {summary(quiet)}")
            print(f"claims during the purge: {summary(busy)}")
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="settled runs to purge")
    parser.add_argument("--active", type=int, default=1_000, help="active runs claimed meanwhile")
    parser.add_argument("--batch", type=int, default=500, help="runs per purge transaction")
    parser.add_argument("--archive", action="store_true", help="read journals as for --archive")
    parser.add_argument("--db", help="a store URL (default: a SQLite file in a temporary dir)")
    asyncio.run(main(parser.parse_args()))

"""Does a store stay fast with a million settled runs in its tables?

For SQLite (and PostgreSQL unless ``--skip-postgres``), the same operations
are timed on a store with only the runs they need, then again after
``--settled`` completed runs (default 1,000,000, with their journals of five
steps' events) were written straight into the tables:

- claiming work: `Store.claim_due` with 100 pending runs waiting;
- the operator's query: `Store.list_runs(status="needs_attention")`, which
  ``sagakit list --status needs_attention`` runs, with 20 such runs;
- the newest runs: `Store.list_runs()` (``sagakit list``).

Each is the median of ``--repeat`` calls, in milliseconds; the last column
is the ratio full/empty (1.0 = just as fast).

    .venv/bin/python benchmarks/bench_store_scale.py
    .venv/bin/python benchmarks/bench_store_scale.py --settled 200000 --skip-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit.journal import RunStatus
from sagakit.store import Store, open_store

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
EVENTS = ("run_started", "step_started", "step_succeeded", "run_finished")


def rows(prefix: str, count: int, status: str, now: float) -> Iterator[tuple[Any, ...]]:
    """Run rows as the stores keep them (the columns of the runs table)."""
    for i in range(count):
        at = now - count + i  # one second apart, oldest first
        yield (f"{prefix}{i}", "scale", "1", status, "{}", None, at, at, None, 0, None, None, 4, 0)


def events(prefix: str, count: int, now: float) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        at = now - count + i
        for seq, kind in enumerate(EVENTS, start=1):
            step = None if kind.startswith("run") else "step0"
            yield (f"{prefix}{i}", seq, kind, at, step, 1 if step else None, "{}")


def fill_sqlite(path: Path, settled: int, now: float) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows("done-", settled, "completed", now - 10),
        )
        conn.executemany(
            "INSERT INTO events (run_id, seq, kind, at, step, attempt, data) "
            "VALUES (?,?,?,?,?,?,?)",
            events("done-", settled, now - 10),
        )
        conn.execute("ANALYZE")


def fill_postgres(conninfo: str, schema: str, settled: int, now: float) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {schema}.runs FROM STDIN".encode()) as copy:
            for row in rows("done-", settled, "completed", now - 10):
                copy.write_row(row)
        with cur.copy(
            f"COPY {schema}.events (run_id, seq, kind, at, step, attempt, data) FROM STDIN".encode()
        ) as copy:
            for event in events("done-", settled, now - 10):
                copy.write_row(event)
        cur.execute(f"ANALYZE {schema}.runs".encode())
        cur.execute(f"ANALYZE {schema}.events".encode())


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def claim_ms(store: Store, repeat: int) -> float:
    """Median time of one `claim_due` of the 100 pending runs (releasing them is not timed)."""
    times = []
    for _ in range(repeat):
        now = time.time()
        began = time.perf_counter()
        taken = await store.claim_due(owner="bench", now=now, lease_until=now + 30, limit=100)
        times.append((time.perf_counter() - began) * 1000)
        assert len(taken) == 100, len(taken)
        for record in taken:  # so that the next call finds the same runs
            await store.release(record.id, _lease(record))
    return statistics.median(times)


async def measure(store: Store, repeat: int) -> dict[str, float]:
    async def attention() -> None:
        found = await store.list_runs(status=RunStatus.NEEDS_ATTENTION, limit=50)
        assert len(found) == 20, len(found)

    async def newest() -> None:
        assert len(await store.list_runs(limit=50)) == 50

    return {
        "claim_due (100 pending)": await claim_ms(store, repeat),
        "list --status needs_attention": await median_ms(attention, repeat),
        "list (newest 50)": await median_ms(newest, repeat),
    }


def _lease(record: Any) -> Any:
    from sagakit.store import Lease

    return Lease(record.owner, record.lease_epoch)


async def seed(store: Store) -> None:
    """The runs every measurement needs: 100 pending, 20 needing attention."""
    from sagakit.journal import Event, EventKind
    from sagakit.store import RunRecord

    now = time.time()
    for status, prefix, count in (("pending", "todo-", 100), ("needs_attention", "stuck-", 20)):
        for i in range(count):
            record = RunRecord(
                id=f"{prefix}{i}", saga="scale", version="1", status=RunStatus(status),
                state={}, error=None, created_at=now, updated_at=now - 5, owner=None,
                lease_epoch=0, lease_until=None, last_seq=1,
            )  # fmt: skip
            await store.create_run(record, [Event(record.id, 1, EventKind.RUN_STARTED, now)])


async def run_case(url: str, fill: Callable[[], None], repeat: int) -> tuple[dict[str, float], ...]:
    store = open_store(url)
    await store.open()
    try:
        await seed(store)
        empty = await measure(store, repeat)
        await asyncio.to_thread(fill)
        full = await measure(store, repeat)
    finally:
        await store.close()
    return empty, full


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--settled", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    table = Table(title=f"Store operations, empty vs {args.settled:,} settled runs (median ms)")
    for name in ("store", "operation", "empty", "full", "full/empty"):
        table.add_column(
            name, justify="right" if name in ("empty", "full", "full/empty") else "left"
        )
    now = time.time()
    results: list[tuple[str, dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "scale.db"
        empty, full = asyncio.run(
            run_case(f"sqlite:///{path}", lambda: fill_sqlite(path, args.settled, now), args.repeat)
        )
        results.append(("sqlite", empty, full))
    if not args.skip_postgres:
        import psycopg

        base = os.environ.get("SAGAKIT_BENCH_POSTGRES", DEFAULT_PG)
        schema = f"scale_{uuid.uuid4().hex[:8]}"
        url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
        try:
            empty, full = asyncio.run(
                run_case(url, lambda: fill_postgres(base, schema, args.settled, now), args.repeat)
            )
            results.append(("postgresql", empty, full))
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
    for store, empty, full in results:
        for name, before in empty.items():
            after = full[name]
            table.add_row(store, name, f"{before:.2f}", f"{after:.2f}", f"{after / before:.2f}")
    Console().print(table)
    print(json.dumps({"settled": args.settled, "repeat": args.repeat}))


if __name__ == "__main__":
    main()

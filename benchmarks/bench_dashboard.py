"""Server time of the dashboard's pages with a million runs stored.

Fills a store with ``--runs`` runs (five sagas, two versions each, mostly
completed, one in a hundred needing attention, six journal events each,
made one second apart) through the store's own write path, a thousand at a
time, as ``bench_purge.py`` does; on PostgreSQL, in a schema of its own
that is vacuumed and analyzed after the fill (as autovacuum would) and
dropped at the end. Then renders each
page in process (Starlette's test client: routing, the store's queries,
masking, the templates; no network) ``--repeat`` times and prints the
median and 95th percentile per page.

    .venv/bin/python benchmarks/bench_dashboard.py                    # SQLite, 1,000,000 runs
    .venv/bin/python benchmarks/bench_dashboard.py --runs 100000 \\
        --db 'postgresql://postgres@127.0.0.1/test'
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from starlette.testclient import TestClient

from sagakit.dashboard import create_app
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import RunCursor, RunRecord, Store, open_store

SAGAS = ("order", "refund", "trip", "signup", "payout")
START = 1_750_000_000.0  # 2025-06-15: the oldest run; each next one a second later


def status_of(i: int) -> RunStatus:
    if i % 100 == 7:
        return RunStatus.NEEDS_ATTENTION
    if i % 10 == 3:
        return RunStatus.ROLLED_BACK
    return RunStatus.COMPLETED


def run_id(i: int) -> str:
    return f"run-{i:08d}"


def journal(rid: str, at: float, status: RunStatus) -> list[Event]:
    return [
        Event(rid, 1, EventKind.RUN_STARTED, at, data={"state": {"order": rid}}),
        Event(rid, 2, EventKind.STEP_STARTED, at, step="reserve", attempt=1),
        Event(rid, 3, EventKind.STEP_SUCCEEDED, at + 0.1, step="reserve", attempt=1, data={"r": 1}),
        Event(rid, 4, EventKind.STEP_STARTED, at + 0.1, step="charge", attempt=1),
        Event(rid, 5, EventKind.STEP_SUCCEEDED, at + 0.2, step="charge", attempt=1, data={"c": 2}),
        Event(rid, 6, EventKind.RUN_FINISHED, at + 0.2, data={"status": status.value}),
    ]


async def fill(store: Store, runs: int) -> None:
    chunk = 1000
    for start in range(0, runs, chunk):
        made = []
        for i in range(start, min(start + chunk, runs)):
            rid = run_id(i)
            at = START + i
            status = status_of(i)
            saga = SAGAS[i % len(SAGAS)]
            version = "2" if (i // len(SAGAS)) % 2 else "1"
            record = RunRecord(rid, saga, version, status, {"order": rid}, None, at, at + 0.2)
            made.append(store.create_run(record, journal(rid, at, status)))
        await asyncio.gather(*made)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """The URL with a fresh schema of its own; the schema dropped afterwards."""
    import psycopg

    parts = urlsplit(url)
    schema = f"bench_dash_{uuid.uuid4().hex[:10]}"
    query = parse_qs(parts.query)
    query["schema"] = [schema]
    try:
        yield urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    finally:
        with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def analyze(url: str) -> None:
    """Vacuum and gather the planner's statistics after the bulk load, as autovacuum would."""
    import psycopg

    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        for table in ("runs", "events"):
            conn.execute(f"VACUUM ANALYZE {schema}.{table}".encode())


def pages(runs: int) -> list[tuple[str, str]]:
    """Each page to time: its name and path."""
    middle = runs // 2
    deep = RunCursor(START + middle, run_id(middle)).token()
    near_end = RunCursor(START + 100, run_id(100)).token()
    since = datetime.fromtimestamp(START + middle).isoformat(timespec="seconds")
    until = datetime.fromtimestamp(START + middle + 3600).isoformat(timespec="seconds")
    return [
        ("overview (every run counted)", "/"),
        ("runs list, first page", "/runs"),
        ("runs list, page in the middle (cursor)", f"/runs?after={deep}"),
        ("runs list, last pages (cursor)", f"/runs?after={near_end}"),
        ("runs list, newer from the middle (cursor)", f"/runs?before={deep}"),
        ("runs list, saga + status filter", "/runs?saga=signup&status=rolled_back"),
        ("runs list, needs attention only", "/runs?status=needs_attention"),
        (
            "runs list, saga + version + an hour",
            f"/runs?saga=order&version=2&since={since}&until={until}",
        ),
        ("runs list, search by id", f"/runs?q={run_id(middle)}"),
        ("a run's page", f"/runs/{run_id(middle)}"),
        ("a run's page (needs attention)", f"/runs/{run_id(middle - middle % 100 + 7)}"),
    ]


def time_pages(url: str, runs: int, repeat: int, offset_pages: int) -> None:
    rows = []
    with TestClient(create_app(url)) as client:
        checks = pages(runs)
        if offset_pages:
            checks.append(
                ("(old offset paging, ?page=N, for comparison)", f"/runs?page={offset_pages}")
            )
        for name, path in checks:
            times = []
            for n in range(repeat + 2):
                began = time.perf_counter()
                response = client.get(path)
                took = time.perf_counter() - began
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
                if path.startswith("/runs?") and "/runs/run-" not in response.text:
                    raise SystemExit(f"{path}: no run on the page")
                if n >= 2:  # the first two warm the caches
                    times.append(took * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, round(len(times) * 0.95) - 1)]
            rows.append((name, statistics.median(times), p95))
    print("\n| page | median ms | p95 ms |\n|---|---:|---:|")
    for name, median, p95 in rows:
        print(f"| {name} | {median:.1f} | {p95:.1f} |")


async def prepare(url: str, runs: int) -> float:
    store = open_store(url)
    await store.open()
    try:
        began = time.perf_counter()
        await fill(store, runs)
        return time.perf_counter() - began
    finally:
        await store.close()


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.db and args.db.startswith("postgresql"):
            with postgres_schema(args.db) as url:
                took = asyncio.run(prepare(url, args.runs))
                analyze(url)
                print(f"postgresql: filled {args.runs:,} runs in {took:.1f} s, then VACUUM ANALYZE")
                time_pages(url, args.runs, args.repeat, args.offset_page)
            return
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        took = asyncio.run(prepare(url, args.runs))
        print(f"{url.split(':')[0]}: filled {args.runs:,} runs in {took:.1f} s")
        time_pages(url, args.runs, args.repeat, args.offset_page)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to store")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    parser.add_argument(
        "--offset-page",
        type=int,
        default=10_000,
        help="also time the old ?page=N offset paging at this page (0: not)",
    )
    parser.add_argument("--db", help="a store URL (default: a SQLite file in a temporary dir)")
    main(parser.parse_args())

"""Listing runs by cursor (`Store.page_runs`) reads one range of a creation index;
counting them (`Store.count_runs`) reads a small index on SQLite.

The dashboard's runs list must stay fast with a million runs: a page, however
deep, is read from an index from the cursor on and stops at its size; nothing
sorts every matching run (``benchmarks/bench_dashboard.py`` measures it).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagakit.journal import RunStatus
from sagakit.store import RunCursor, RunFilter, open_store
from sagakit.store.base import page_params
from sagakit.store.sql import load_queries
from sagakit.store.testing import T0

from .helpers import migrated_schema

RUNS = 20_000

CASES = [
    # (query, filter, cursor): the first page, a deep one, filtered ones.
    ("page_runs", RunFilter(), None),
    ("page_runs", RunFilter(), RunCursor(T0 + 100, "r100")),
    ("page_runs", RunFilter(saga="order", version="1", since=T0, until=T0 + 5000), None),
    ("page_runs_by_status", RunFilter(status=RunStatus.COMPLETED), RunCursor(T0 + 100, "r100")),
    ("page_runs_newer", RunFilter(), RunCursor(T0 + 100, "r100")),
    ("page_runs_newer_by_status", RunFilter(status=RunStatus.COMPLETED), RunCursor(T0, "r0")),
]


def params(where: RunFilter, cursor: RunCursor | None, query: str) -> dict[str, Any]:
    newer = "newer" in query
    return page_params(where, None if newer else cursor, cursor if newer else None, 51)


# -- SQLite ---------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "plans.db"

    async def migrate() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(path)
    # Runs a second apart, every fourth completed.
    conn.executemany(
        "INSERT INTO runs (id, saga, version, status, state, created_at, updated_at) "
        "VALUES (?, 'order', '1', ?, '{}', ?, ?)",
        ((f"r{i}", "completed" if i % 4 == 0 else "running", T0 + i, T0 + i) for i in range(RUNS)),
    )
    conn.commit()
    conn.execute("ANALYZE")
    yield conn
    conn.close()


def sqlite_plan(conn: sqlite3.Connection, query: str, values: dict[str, Any]) -> str:
    return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", values))


@pytest.mark.parametrize(("name", "where", "cursor"), CASES)
def test_sqlite_reads_a_page_from_a_creation_index_without_sorting(
    db: sqlite3.Connection, name: str, where: RunFilter, cursor: RunCursor | None
) -> None:
    found = sqlite_plan(db, load_queries("sqlite")[name], params(where, cursor, name))
    index = "runs_status_created (status=? AND" if "status" in name else "runs_created ("
    assert f"SEARCH runs USING INDEX {index}" in found, found
    assert "created_at>? AND created_at<?)" in found, found
    # Only runs created at the same instant are sorted (by id), never all of them.
    assert "USE TEMP B-TREE FOR ORDER BY" not in found, found
    assert "SCAN runs" not in found, found


def test_sqlite_counts_runs_from_a_covering_index(db: sqlite3.Connection) -> None:
    """The overview's counts read the small saga-and-status index, not every run's row."""
    found = sqlite_plan(db, load_queries("sqlite")["count_runs"], {})
    assert "SCAN runs USING COVERING INDEX runs_saga_status" in found, found
    assert "TEMP B-TREE" not in found, found


def steps_for(conn: sqlite3.Connection, query: str, values: dict[str, Any]) -> tuple[int, int]:
    """The rows a query returns and the virtual-machine steps it took (in hundreds)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        rows = conn.execute(query, values).fetchall()
    finally:
        conn.set_progress_handler(None, 100)
    return len(rows), steps


def test_sqlite_reads_a_deep_page_with_the_work_of_the_first(db: sqlite3.Connection) -> None:
    query = load_queries("sqlite")["page_runs"]
    first = steps_for(db, query, params(RunFilter(), None, "page_runs"))
    deep = steps_for(db, query, params(RunFilter(), RunCursor(T0 + 50, "r50"), "page_runs"))
    assert first[0] == 51
    assert deep[0] == 50  # r49 .. r0
    # Skipping 19,950 newer runs would take thousands of hundreds of steps.
    assert deep[1] <= 2 * first[1] + 10, (first, deep)


# -- PostgreSQL -----------------------------------------------------------------------


def test_postgresql_reads_a_page_from_a_creation_index_without_sorting(
    postgres_url: str,
) -> None:
    import psycopg

    conninfo, schema = migrated_schema(postgres_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.runs (id, saga, version, status, state, created_at, "
            f"updated_at) SELECT 'r' || i, 'order', '1', "
            f"CASE WHEN i % 4 = 0 THEN 'completed' ELSE 'running' END, '{{}}', "
            f"{T0} + i, {T0} + i FROM generate_series(0, {RUNS - 1}) AS i".encode()
        )
        conn.execute(f"ANALYZE {schema}.runs".encode())
        queries = load_queries("postgresql")
        for name, where, cursor in CASES:
            query = queries[name].replace("{schema}", schema)
            rows = conn.execute(f"EXPLAIN {query}".encode(), params(where, cursor, name))
            found = "\n".join(row[0] for row in rows)
            index = "runs_status_created" if "status" in name else "runs_created"
            assert f"Index Scan{' Backward' if 'newer' not in name else ''} using {index}" in (
                found
            ), (name, found)
            assert "Sort" not in found, (name, found)
            assert "Seq Scan" not in found, (name, found)

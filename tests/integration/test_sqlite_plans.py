"""SQLite's query plans: the queries an operator and a worker run often use their indexes.

A million settled runs must not slow down ``sagakit list --status ...`` or
claiming work (``benchmarks/bench_store_scale.py`` measures it); a plan that
scans the runs table would.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest

from sagakit.store import open_store
from sagakit.store.sql import load_queries
from sagakit.store.sqlite.connection import _BATCH_OBJECTS


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "plans.db"

    async def migrate() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(path)
    yield conn
    conn.close()


def plan(conn: sqlite3.Connection, query: str, params: Mapping[str, object]) -> str:
    return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", params))


def test_listing_by_status_searches_the_status_index(db: sqlite3.Connection) -> None:
    query = load_queries("sqlite")["list_runs_by_status"]
    params = {"status": "needs_attention", "saga": None, "limit": 50, "offset": 0}
    assert "SEARCH runs USING INDEX runs_status_created (status=?)" in plan(db, query, params)


def test_claiming_work_searches_the_due_index(db: sqlite3.Connection) -> None:
    query = load_queries("sqlite")["due_runs"]
    params = {"now": 0.0, "sagas": None, "limit": 100}
    assert "USING INDEX runs_due" in plan(db, query, params)


@pytest.mark.parametrize("name", ["commit_run", "commit_run_kept"])
def test_writes_find_their_run_by_its_key(db: sqlite3.Connection, name: str) -> None:
    """A lone commit looks its run up by id: a million runs in the table cost it nothing."""
    query = load_queries("sqlite")[name]
    found = plan(db, query, {"1": "[]"})
    assert "SCAN runs" not in found
    assert "USING INDEX sqlite_autoindex_runs_1 (id=?)" in found


def batch_statements(name: str = "batch_trigger") -> list[str]:
    """The statements of the batch writer's trigger (or another trigger of the
    writes, ``name``) that read the runs table, each as a statement of its
    own, the trigger's columns as parameters."""
    trigger = load_queries("sqlite")[name]
    body = trigger[trigger.index(" BEGIN\n") + len(" BEGIN\n") : trigger.rindex("END;")]
    statements = [
        "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
        for text in body.split(";\n")
    ]
    return [re.sub(r"NEW\.(\w+)", r":\1", text) for text in statements if " runs" in text]


def test_every_statement_of_the_batch_writer_on_runs_is_checked() -> None:
    # Finding the ids taken, inserting the new runs, finding the commits
    # fenced out or with mail, and the two updates (moving, keeping the status).
    assert len(batch_statements()) == 5


@pytest.mark.parametrize("statement", batch_statements())
def test_a_batch_finds_its_runs_by_their_key(db: sqlite3.Connection, statement: str) -> None:
    """A group commit looks each of its runs up by id, whatever the table holds."""
    db.executescript(
        "\n".join(
            load_queries("sqlite")[name] for name in ("batch_taken_table", "batch_commits_table")
        )
    )
    params = {"creates": "[]", "commits": "[]", "moves": 1, "keeps": 1, "finishes": 1}
    found = plan(db, statement, params)
    assert "SCAN runs" not in found


def test_every_statement_of_the_lone_writer_on_runs_is_checked() -> None:
    # The run's update, the one that tells of mail, and the events' insert.
    assert len(batch_statements("lone_trigger")) == 3


@pytest.mark.parametrize("statement", batch_statements("lone_trigger"))
def test_a_lone_commit_finds_its_run_by_its_key(db: sqlite3.Connection, statement: str) -> None:
    """A step's commit written alone as one statement looks its run up by id."""
    found = plan(db, statement, {"run_id": "r1", "owner": "w", "epoch": 1, "write": "[]"})
    assert "SCAN runs" not in found
    assert "USING INDEX sqlite_autoindex_runs_1 (id=?)" in found


def test_every_statement_of_the_lone_finishing_writer_on_runs_is_checked() -> None:
    # The events' insert, the reservations' delete, the one that tells of
    # mail and the run's update.
    assert len(batch_statements("lone_finish_trigger")) == 4


@pytest.mark.parametrize("statement", batch_statements("lone_finish_trigger"))
def test_a_lone_finishing_commit_finds_its_run_by_its_key(
    db: sqlite3.Connection, statement: str
) -> None:
    """The commit that finishes a run, written alone, looks its run up by id."""
    found = plan(db, statement, {"run_id": "r1", "owner": "w", "epoch": 1, "write": "[]"})
    assert "SCAN runs" not in found
    assert "USING INDEX sqlite_autoindex_runs_1 (id=?)" in found
    assert "SCAN reservations" not in found


# The writers of a commit alone whose values are bound each on its own.
_SLOTS: Final = ("finish_slots_trigger", "slots_trigger")


def test_every_statement_of_the_bound_lone_writers_on_runs_is_checked() -> None:
    # The run's update and the one that tells of mail (the events' insert
    # looks no run up); the events' insert (joined with their run), the one
    # that tells of mail and the run's update (nor does the reservations' delete).
    assert len(batch_statements("slots_trigger")) == 2
    assert len(batch_statements("finish_slots_trigger")) == 3


@pytest.mark.parametrize("statement", [text for name in _SLOTS for text in batch_statements(name)])
def test_a_lone_commit_bound_finds_its_run_by_its_key(
    db: sqlite3.Connection, statement: str
) -> None:
    """A commit written alone with its values bound each on its own looks its run up by id."""
    names = re.findall(r":(\w+)", statement)
    params: dict[str, object] = dict.fromkeys(names)
    params.update(run_id="r1", owner="w", epoch=1)
    found = plan(db, statement, params)
    assert "SCAN runs" not in found
    assert "USING INDEX sqlite_autoindex_runs_1 (id=?)" in found
    assert "SCAN reservations" not in found


def test_purging_walks_the_creation_index_without_sorting_every_run(
    db: sqlite3.Connection,
) -> None:
    """A batch reads the oldest runs in index order and stops at its size.

    On runs_status_created, SQLite cannot read several statuses in creation
    order: each batch would read and sort every purgeable run, which with a
    million settled runs made a purge 24 times slower (bench_purge.py).
    """
    query = load_queries("sqlite")["purge_runs"]
    found = plan(db, query, {"1": '["completed", "rolled_back"]', "2": 0.0, "3": 500})
    assert "SEARCH runs USING INDEX runs_created (created_at<?)" in found
    assert "USE TEMP B-TREE FOR ORDER BY" not in found


# The TEMP objects the writes need, as the store makes them on each connection.
_TEMP_OBJECTS: Final = _BATCH_OBJECTS
_WRITES: Final = {
    "write_batch": ("[]", "[]", 1, 1, 1, 1),
    "write_lone": ("r1", "w", 1, "[]"),
    "write_lone_new": ("r1", "[]"),
    "write_lone_finish": ("r1", "w", 1, "[]"),
    "insert_events_of": ("[]", "$[12]", "r1"),
}


@pytest.mark.parametrize("name", sorted(_WRITES))
def test_a_write_reads_each_json_each_value_once(db: sqlite3.Connection, name: str) -> None:
    """Each row json_each gives a write has its value column read once.

    SQLite makes that column anew, as JSON text rendered from the parsed
    array, at each place a statement names it: a batch's commit named it
    eighteen times, an event six, which took nearly a quarter of a step's
    instructions with a thousand runs at once (docs/benchmarks.md). The
    listing of EXPLAIN holds the triggers' programs too.
    """
    queries = load_queries("sqlite")
    for temp in _TEMP_OBJECTS:
        db.execute(queries[temp])
    rows = db.execute(f"EXPLAIN {queries[name]}", _WRITES[name]).fetchall()
    # json_each's value is its column 1; a VColumn row is (addr, op, cursor, column, ...).
    reads = Counter(row[2] for row in rows if row[1] == "VColumn" and row[3] == 1)
    assert reads
    assert max(reads.values()) == 1, reads

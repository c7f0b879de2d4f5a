"""SQLite-only store behaviour: URL forms and options, files, schema versions
and migrations, group commit and another process's write lock.

The shared contract runs on SQLite in ``tests/contract``; these tests cover
what only this backend has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import pytest

from sagakit.errors import LeaseLost, SchemaVersionError, StateError, StoreError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.store import ACTIVE_STATUSES, Commit, open_store
from sagakit.store.base import Lease
from sagakit.store.sql import load_queries, migrations
from sagakit.store.sqlite import SQLiteStore, parse_url
from sagakit.store.sqlite import checkpoints as sqlite_checkpoints
from sagakit.store.sqlite import store as sqlite_store
from sagakit.store.sqlite import writes as sqlite_writes
from sagakit.store.sqlite.connection import AUTOCHECKPOINT, SQLITES_AUTOCHECKPOINT
from sagakit.store.testing import T0, A, B, change, due_ids, new_run, opened, record, seqs, steps


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///runs.db", "runs.db", {}),
        ("sqlite:///data/runs.db", "data/runs.db", {}),
        ("sqlite:////srv/data/runs.db", "/srv/data/runs.db", {}),
        ("sqlite:runs.db?synchronous=normal", "runs.db", {"synchronous": "normal"}),
        ("sqlite:///my%20runs.db", "my runs.db", {}),
    ],
)
def test_sqlite_url_forms(url: str, path: str, options: dict[str, str]) -> None:
    assert parse_url(url) == (path, options)


@pytest.mark.parametrize("url", ["sqlite://host/runs.db", "sqlite:///", "sqlite:"])
def test_sqlite_urls_without_a_path_are_refused(url: str) -> None:
    with pytest.raises(StoreError, match=re.escape("sqlite:///relative/path.db")):
        SQLiteStore(url)


def test_sqlite_synchronous_option() -> None:
    assert SQLiteStore("sqlite:///x.db").synchronous == "full"
    assert SQLiteStore("sqlite:///x.db?synchronous=NORMAL").synchronous == "normal"
    assert SQLiteStore("sqlite:///x.db?synchronous=normal", synchronous="full").synchronous == (
        "full"
    )


def test_sqlite_creates_the_schema_and_refuses_a_newer_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    latest = migrations("sqlite")[-1][0]

    async def body() -> None:
        async with opened(url) as store:
            await new_run(store, "r1")
        with sqlite3.connect(tmp_path / "runs.db") as db:
            assert db.execute("SELECT version FROM schema_version").fetchall() == [(latest,)]
            db.execute("UPDATE schema_version SET version = ?", (latest + 1,))
        db.close()
        store = open_store(url)
        with pytest.raises(SchemaVersionError) as caught:
            await store.open()
        assert str(caught.value).startswith(
            f"database schema version {latest + 1} is newer than this sagakit supports "
            f"({latest}); upgrade sagakit"
        )
        await store.close()  # nothing to close: no error

    asyncio.run(body())


def test_sqlite_opened_by_many_at_once_on_a_new_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def body() -> None:
        stores = [open_store(url) for _ in range(8)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            await new_run(stores[0], "r1")
            assert all([await s.get_run("r1") for s in stores])
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    asyncio.run(body())


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n" * 100)

    async def body() -> None:
        store = open_store(f"sqlite:///{path}")
        with pytest.raises(StoreError, match="not a database") as caught:
            await store.open()
        assert str(path) in str(caught.value)

    asyncio.run(body())


def test_sqlite_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "runs.db"
    store = open_store(f"sqlite:///{path}")  # construction does no I/O

    async def body() -> None:
        with pytest.raises(StoreError, match="does not exist") as caught:
            await store.open()
        assert str(path) in str(caught.value)

    asyncio.run(body())
    assert not path.parent.exists()


def test_sqlite_columns_hold_plain_json_text(tmp_path: Path) -> None:
    """A write travels as one JSON document with the state inside it; the
    columns still hold each value's own JSON text, which anything can read."""
    path = tmp_path / "runs.db"
    state: JSON = {"名前": "Zoë", "n": 12345678901234567890, "f": 0.1, "q": '"\\'}

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            await asyncio.gather(new_run(store, "r1"), new_run(store, "r2"))  # a batch
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", data={"result": state})
            await asyncio.gather(
                store.commit(change("r1", events=(event,), state=state, error={"e": [1]})),
                store.commit(change("r2", state=state)),
            )

    asyncio.run(body())
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, state, error FROM runs ORDER BY id").fetchall()
        data = db.execute("SELECT data FROM events WHERE run_id = 'r1' AND seq = 2").fetchone()
    assert [(r[0], json.loads(r[1]), r[2] and json.loads(r[2])) for r in rows] == [
        ("r1", state, {"e": [1]}),
        ("r2", state, None),
    ]
    assert json.loads(data[0]) == {"result": state}


def test_sqlite_refuses_a_time_that_is_not_a_number_and_writes_the_rest(tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(f"sqlite:///{tmp_path / 'runs.db'}") as store:
            await asyncio.gather(new_run(store, "r1"), new_run(store, "r2"))
            results = await asyncio.gather(
                store.commit(change("r1", events=steps("r1", 2), at=float("nan"))),
                store.commit(change("r2", events=steps("r2", 2))),
                return_exceptions=True,
            )
            assert isinstance(results[0], StoreError)
            assert "run 'r1'" in str(results[0])
            assert "not a finite number" in str(results[0])
            assert results[1] is False
            assert await seqs(store, "r1") == [1]
            assert await seqs(store, "r2") == [1, 2, 3]

    asyncio.run(body())


def test_sqlite_older_than_the_writes_need_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    store = SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")
    with pytest.raises(StoreError, match=r"needs SQLite 3\.35\.0 or newer.*uses 3\.34\.1"):
        asyncio.run(store.open())
    assert not (tmp_path / "runs.db").exists()


def test_sqlite_batch_failure_fails_each_commit_and_the_store_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_BUSY_TIMEOUT", 0.05)
    path = tmp_path / "runs.db"

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            for run_id in ("r1", "r2"):
                await new_run(store, run_id)
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                commits = [change(r, events=steps(r, 2)) for r in ("r1", "r2")]
                results = await asyncio.gather(
                    *(store.commit(c) for c in commits), return_exceptions=True
                )
                other.execute("ROLLBACK")
            finally:
                other.close()
            for result in results:
                assert isinstance(result, StoreError)
                assert "locked" in str(result)
                assert str(path) in str(result)
            assert results[0] is not results[1]
            await asyncio.gather(*(store.commit(c) for c in commits))
            assert await seqs(store, "r2") == [1, 2, 3]

    asyncio.run(body())


def test_sqlite_batch_waits_for_another_process_to_release_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
            runs = [f"r{i}" for i in range(5)]
            for run_id in runs:
                await new_run(store, run_id)
            other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            release = threading.Timer(0.3, other.execute, ("ROLLBACK",))
            release.start()
            try:
                commits = [change(r, events=steps(r, 2)) for r in runs]
                flushes = store.flushes
                started = time.monotonic()
                results = await asyncio.gather(*(store.commit(c) for c in commits))
                waited = time.monotonic() - started
            finally:
                release.join()
                other.close()
            assert results == [False] * len(runs)
            assert waited >= 0.25  # it waited for the lock rather than failing
            assert store.flushes - flushes <= 2  # group commits, not one per run
            for run_id in runs:
                assert await seqs(store, run_id) == [1, 2, 3]

    asyncio.run(body())


def test_sqlite_claims_use_the_partial_index_of_active_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def body() -> None:
        async with opened(url):
            pass

    asyncio.run(body())
    query = load_queries("sqlite")["due_runs"]
    with sqlite3.connect(tmp_path / "runs.db") as db:
        params = {"now": T0, "sagas": None, "limit": 10}
        plan = " ".join(str(row) for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))
    db.close()
    assert "runs_due" in plan
    for status in ACTIVE_STATUSES:
        assert f"'{status.value}'" in query


def test_sqlite_migrates_a_version_1_database_on_open(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    steps = migrations("sqlite")
    assert [number for number, _ in steps][:2] == [1, 2]
    db = sqlite3.connect(path)
    try:
        db.executescript(steps[0][1])  # the schema as sagakit 1 left it, with one run
        db.execute("UPDATE schema_version SET version = 1")
        db.execute(
            "INSERT INTO runs (id, saga, version, status, state, created_at, updated_at) "
            "VALUES ('old', 'order', '1', 'completed', '{}', 1.0, 1.0)"
        )
        db.commit()
    finally:
        db.close()

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            assert await store.migrate() == (1, steps[-1][0])
            run = await store.get_run("old")
            assert run is not None
            assert (run.status, run.mail) == (RunStatus.COMPLETED, 0)
            await store.post("old", "cancel", {}, at=T0)
            assert await due_ids(store) == {"old"}
            assert (await store.reserve("x", run_id="old", now=T0, expires_at=T0 + 1)).name == "x"

    asyncio.run(body())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(steps[-1][0],)]
    finally:
        db.close()


def _state_rows(path: Path, run_id: str) -> tuple[str, int, list[int]]:
    """A run's row state, its count of state changes and their seqs, as the file holds them."""
    db = sqlite3.connect(path)
    try:
        state, flag = db.execute(
            "SELECT state, state_changes FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        found = db.execute(
            "SELECT seq FROM state_changes WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return state, flag, [seq for (seq,) in found]
    finally:
        db.close()


def _one_key_commits(
    run_id: str, state: JSON, first_seq: int, count: int
) -> list[tuple[Commit, JSON]]:
    """Commits as the engine makes them: each a new state with one key set."""
    made = []
    for seq in range(first_seq, first_seq + count):
        state = {**state, f"k{seq % 50:02d}": f"{seq}:" + "w" * 500}
        made.append((change(run_id, events=steps(run_id, seq, 1), state=state), state))
    return made


def test_sqlite_writes_a_big_state_by_the_keys_each_commit_sets(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    big: JSON = {f"k{i:02d}": "v" * 500 for i in range(50)}  # some 26 KB

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            assert isinstance(store, SQLiteStore)
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": big})
            await store.create_run(record("r1", state=big), [started])
            sizes = []
            commits = _one_key_commits("r1", big, 2, 120)
            for commit, _ in commits:
                before = store.written
                await store.commit(commit)
                sizes.append(store.written - before)
                if commit.events[0].seq == 20:
                    row_state, flag, seqs_now = _state_rows(path, "r1")
                    # The whole state left the run's row at the first commit;
                    # each commit since added the one key it set.
                    assert (row_state, flag) == ("{}", 1)
                    assert seqs_now == list(range(2, 21))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == commits[-1][1]
            # Written whole again once the changes outweighed it, so the run
            # never keeps more changes than about its size.
            _, _, seqs_left = _state_rows(path, "r1")
            assert 1 <= len(seqs_left) < 60
            assert seqs_left == list(range(seqs_left[0], 122))
            whole = [size for size in sizes if size > 20_000]
            assert 2 <= len(whole) <= 4
            assert sorted(sizes)[len(sizes) // 2] < 2_000

            # A small state stays in the run's row.
            await new_run(store, "r2")
            for commit, _ in _one_key_commits("r2", {"n": 0}, 2, 5):
                await store.commit(commit)
            assert _state_rows(path, "r2")[1:] == (0, [])

    asyncio.run(body())


def test_sqlite_writes_a_big_state_it_did_not_know_out_of_the_run_s_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store that claims a big run knows nothing of its state: its first
    # commit writes it whole. Out of the run's row at once, as the run's one
    # change (and so in pieces, which a column of the row cannot be), not in
    # the row, which the next commit then moved out whole again.
    monkeypatch.setattr(sqlite_writes, "BIG", 2048)
    monkeypatch.setattr(sqlite_store, "BIG", 2048)
    path = tmp_path / "runs.db"
    big: JSON = {f"k{i:02d}": "v" * 500 for i in range(50)}  # some 26 KB

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store, opened(f"sqlite:///{path}") as other:
            assert isinstance(other, SQLiteStore)
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": big})
            await store.create_run(record("r1", state=big), [started])
            for commit, _ in _one_key_commits("r1", big, 2, 5):
                await store.commit(commit)
            claimed = await other.claim("r1", owner=B.owner, now=T0 + 100, lease_until=T0 + 1e6)
            assert claimed is not None
            lease = Lease(B.owner, claimed.lease_epoch)
            state = claimed.state
            sizes = []
            for seq in (7, 8, 9):
                state = {**state, f"k{seq:02d}": f"{seq}:" + "b" * 500}
                events = (Event("r1", seq, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"r": seq}),)
                before = other.written
                await other.commit(change("r1", lease, events, state=state))
                sizes.append(other.written - before)
                if seq == 7:
                    assert _state_rows(path, "r1") == ("{}", 1, [7])
            assert sizes[0] > 20_000  # the whole state, once
            assert max(sizes[1:]) < 2_000  # then the keys each commit sets
            assert _state_rows(path, "r1") == ("{}", 1, [7, 8, 9])
            for reader in (store, other):
                stored = await reader.get_run("r1")
                assert stored is not None
                assert stored.state == state

    asyncio.run(body())


def test_sqlite_migrates_a_version_4_database_with_a_big_state(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    older = [sql_text for number, sql_text in migrations("sqlite") if number <= 4]
    big: JSON = {f"k{i:02d}": "v" * 500 for i in range(50)}
    db = sqlite3.connect(path)
    try:
        for script in older:
            db.executescript(script)
        db.execute("UPDATE schema_version SET version = 4")
        db.execute(
            "INSERT INTO runs (id, saga, version, status, state, created_at, updated_at, "
            "owner, lease_epoch, lease_until, last_seq) "
            "VALUES ('old', 'order', '1', 'running', ?, 1.0, 1.0, 'worker-a', 1, ?, 1)",
            (json.dumps(big), T0 + 30),
        )
        db.commit()
    finally:
        db.close()

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            assert await store.migrate() == (4, migrations("sqlite")[-1][0])
            run = await store.get_run("old")
            assert run is not None
            assert run.state == big
            commits = _one_key_commits("old", big, 2, 30)
            for commit, _ in commits:
                await store.commit(commit)
            run = await store.get_run("old")
            assert run is not None
            assert run.state == commits[-1][1]

    asyncio.run(body())


def test_sqlite_migrates_a_version_6_journal_to_a_table_with_rowids(tmp_path: Path) -> None:
    # WITHOUT ROWID, an event's data lived in the B-tree of its key, and a
    # search of that B-tree read a big event's data whole to compare keys.
    path = tmp_path / "runs.db"
    older = [sql_text for number, sql_text in migrations("sqlite") if number <= 6]
    big: JSON = {"state": {f"k{i:02d}": "v" * 500 for i in range(50)}}
    db = sqlite3.connect(path)
    try:
        for script in older:
            db.executescript(script)
        db.execute("UPDATE schema_version SET version = 6")
        db.execute(
            "INSERT INTO runs (id, saga, version, status, state, created_at, updated_at, "
            "last_seq, state_changes) VALUES ('old', 'order', '1', 'running', '{}', 1.0, 1.0, 2, 1)"
        )
        # A state kept as changes by version 6: each a copy, none naming an event.
        db.execute(
            "INSERT INTO state_changes (run_id, seq, change) VALUES ('old', 2, ?)",
            (json.dumps(big["state"]),),
        )
        db.executemany(
            "INSERT INTO events (run_id, seq, kind, step, attempt, at, data) "
            "VALUES ('old', ?, ?, ?, ?, ?, ?)",
            [
                (1, "run_started", None, None, 1.0, json.dumps(big)),
                (2, "step_started", "s", 1, 2.0, "{}"),
            ],
        )
        db.commit()
    finally:
        db.close()

    async def body() -> None:
        async with opened(f"sqlite:///{path}") as store:
            assert await store.migrate() == (6, migrations("sqlite")[-1][0])
            journal = await store.journal("old")
            assert [(e.seq, str(e.kind), e.step, e.attempt, e.at) for e in journal] == [
                (1, "run_started", None, None, 1.0),
                (2, "step_started", "s", 1, 2.0),
            ]
            assert journal[0].data == big
            run = await store.get_run("old")
            assert run is not None
            assert run.state == big["state"]

    asyncio.run(body())
    db = sqlite3.connect(path)
    try:
        [table] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchall()
        assert "WITHOUT ROWID" not in table[0]
        # The primary key still holds: a seq taken twice is refused.
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO events (run_id, seq, kind, at, data) "
                "VALUES ('old', 2, 'step_started', 3.0, '{}')"
            )
    finally:
        db.close()


def test_sqlite_reads_a_big_state_whole_while_another_store_writes_it(tmp_path: Path) -> None:
    """A read never pairs a run's row with changes of another moment.

    Another store on the file (another process) commits one key at a time,
    writing the state whole again now and then, which replaces its changes;
    each state read must be the very state of the commit its ``last_seq`` names.
    """
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    big: JSON = {f"k{i:02d}": "v" * 500 for i in range(50)}
    commits = _one_key_commits("r1", big, 2, 200)
    states = {1: big} | {commit.events[-1].seq: state for commit, state in commits}

    async def body() -> None:
        async with opened(url) as writer, opened(url) as reader:
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": big})
            await writer.create_run(record("r1", state=big), [started])
            done = False

            async def write() -> None:
                nonlocal done
                for commit, _ in commits:
                    await writer.commit(commit)
                done = True

            async def read() -> int:
                reads = 0
                while not done:
                    run = await reader.get_run("r1")
                    assert run is not None
                    assert run.state == states[run.last_seq], f"at seq {run.last_seq}"
                    [listed] = await reader.list_runs()
                    assert listed.state == states[listed.last_seq]
                    reads += 1
                return reads

            _, reads = await asyncio.gather(write(), read())
            assert reads > 10

    asyncio.run(body())


def test_sqlite_commits_that_keep_the_lease_leave_the_owner_columns_alone(
    tmp_path: Path,
) -> None:
    """A commit that keeps its run's status, timer and lease does not SET
    the owner (nor the status), so SQLite leaves runs_owner (and the status
    indexes) as they are; one that releases the run sets it. Written alone
    (on the event loop) and in a batch, each write path once."""
    path = tmp_path / "runs.db"

    async def create() -> None:
        async with opened(f"sqlite:///{path}"):
            pass

    asyncio.run(create())
    with sqlite3.connect(path) as db:
        # Fires for each row an UPDATE names the owner or status columns of.
        db.executescript(
            """
            CREATE TABLE column_writes (run_id TEXT, what TEXT);
            CREATE TRIGGER owner_set AFTER UPDATE OF owner, lease_until ON runs
            BEGIN INSERT INTO column_writes VALUES (new.id, 'owner'); END;
            CREATE TRIGGER status_set AFTER UPDATE OF status, wake_at ON runs
            BEGIN INSERT INTO column_writes VALUES (new.id, 'status'); END;
            """
        )
    db.close()

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
            runs = ("r1", "r2", "r3")
            for run_id in runs:
                await new_run(store, run_id, status=RunStatus.RUNNING)
            await store.commit(change("r1", events=steps("r1", 2), keeps_status=True))
            flushes = store.flushes
            await asyncio.gather(
                *(store.commit(change(r, events=steps(r, 2), keeps_status=True)) for r in runs[1:])
            )
            assert store.flushes - flushes == 1  # one batch
            await store.commit(change("r3", events=steps("r3", 4), keeps_status=True, release=True))
            for run_id, last in (("r1", 3), ("r2", 3), ("r3", 5)):
                assert await seqs(store, run_id) == list(range(1, last + 1))
            r1, r3 = await store.get_run("r1"), await store.get_run("r3")
            assert r1 is not None
            assert r3 is not None
            assert (r1.owner, r3.owner) == (A.owner, None)

    asyncio.run(body())
    with sqlite3.connect(path) as db:
        writes = db.execute("SELECT run_id, what FROM column_writes ORDER BY rowid").fetchall()
    db.close()
    assert sorted(writes) == [("r3", "owner"), ("r3", "status")]


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_sqlite_on_normal_lets_the_wal_grow_past_sqlites_default_before_a_checkpoint(
    tmp_path: Path, synchronous: str
) -> None:
    """On ``synchronous=normal`` a commit checkpoints the WAL only past
    AUTOCHECKPOINT pages, not SQLite's default 1,000: each checkpoint costs
    two fsyncs, and they were most of a lone saga's. FULL, which fsyncs
    every commit anyway, keeps SQLite's default."""
    path = tmp_path / "runs.db"
    frame = 4096 + 24
    default = SQLITES_AUTOCHECKPOINT

    async def body() -> int:
        async with opened(f"sqlite:///{path}?synchronous={synchronous}") as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            # Each commit rewrites the run's row with a state that takes
            # two pages or so: the WAL passes SQLite's default mark, which
            # (the file reused from its start after a checkpoint) it would
            # never outgrow by 200 pages were it checkpointed there.
            last = 1
            while last < default and os.path.getsize(f"{path}-wal") < (default + 200) * frame:
                last += 1
                state = {"n": last, "text": "x" * 6000}
                await store.commit(change("r1", events=steps("r1", last, 1), state=state))
            assert await seqs(store, "r1") == list(range(1, last + 1))
            return os.path.getsize(f"{path}-wal")

    assert 2 * default <= AUTOCHECKPOINT
    wal = asyncio.run(body())
    if synchronous == "normal":
        assert wal >= (default + 200) * frame
    else:
        assert wal < (default + 200) * frame


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_sqlite_on_normal_checkpoints_the_wal_on_a_thread_of_its_own(
    tmp_path: Path, synchronous: str
) -> None:
    """On ``synchronous=normal`` the loop's commits ask for checkpoints on a
    thread of their own, well before the WAL reaches the store's mark (which
    a commit on the loop would otherwise checkpoint at, waiting for two
    fsyncs and the copy); on FULL there is no such thread. Every commit is
    read back either way."""
    path = tmp_path / "runs.db"

    async def body() -> int:
        async with opened(SQLiteStore(f"sqlite:///{path}?synchronous={synchronous}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            checkpoints = store._connection.checkpoints
            if synchronous == "full":
                assert checkpoints is None
            else:
                assert checkpoints is not None
                assert checkpoints.threshold == AUTOCHECKPOINT // 2
            # About 13 pages a commit, by the estimate: past the threshold
            # in some 150 commits, far from the mark in WAL frames.
            seq = 1
            for seq in range(2, 200):
                state = {"n": seq, "text": "x" * 32_000}
                await store.commit(change("r1", events=steps("r1", seq, 1), state=state))
            for _ in range(500):  # the thread's checkpoint, under way, is waited for
                if checkpoints is None or checkpoints.done:
                    break
                await asyncio.sleep(0.01)
            assert await seqs(store, "r1") == list(range(1, seq + 1))
            return 0 if checkpoints is None else checkpoints.done

    done = asyncio.run(body())
    assert (done >= 1) == (synchronous == "normal")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM events WHERE run_id = 'r1'").fetchone() == (199,)
    db.close()


_KILLED_CHILD = """
import asyncio, sys
from sagakit.journal import RunStatus
from sagakit.store.sqlite import SQLiteStore
from sagakit.store.testing import change, new_run, opened, steps

async def main() -> None:
    async with opened(SQLiteStore(sys.argv[1])) as store:
        await new_run(store, "r1", status=RunStatus.RUNNING)
        checkpoints = store._connection.checkpoints
        seq = 1
        while True:
            seq += 1
            state = {"n": seq, "text": "x" * 32_000}
            await store.commit(change("r1", events=steps("r1", seq, 1), state=state))
            # Told once written: the parent kills this process as soon as
            # a checkpoint is under way on the thread.
            print(seq, int(checkpoints._running), flush=True)

asyncio.run(main())
"""


def test_a_checkpoint_asked_for_while_the_store_closes_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Checkpoints.close` runs on the connection's thread while the loop may
    be counting a commit: a checkpoint thread made as it closes must be
    stopped by it, not left running with its connection open."""
    db = tmp_path / "runs.db"
    sqlite3.connect(db).close()
    checkpoints = sqlite_checkpoints.Checkpoints(f"file:{db}?mode=rw", 8)
    closing: list[threading.Thread] = []

    def executor(workers: int, thread_name_prefix: str) -> ThreadPoolExecutor:
        # close() on another thread, right as the checkpoint's thread is made.
        closing.append(threading.Thread(target=checkpoints.close))
        closing[0].start()
        closing[0].join(0.2)  # long enough for it to finish, unless it waits for wrote()
        return ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix)

    monkeypatch.setattr(sqlite_checkpoints, "ThreadPoolExecutor", executor)
    checkpoints.wrote(10 * sqlite_checkpoints.PAGE_BYTES)
    closing[0].join(10)  # bounds a hang only
    assert not closing[0].is_alive()
    assert checkpoints._executor is None
    for thread in threading.enumerate():
        if thread.name.startswith("sagakit-checkpoint"):
            thread.join(10)  # an executor shut down lets its thread end
            assert not thread.is_alive(), "a checkpoint thread outlived close()"
    checkpoints.wrote(10 * sqlite_checkpoints.PAGE_BYTES)  # closed: starts nothing
    assert checkpoints._executor is None


def test_sqlite_killed_during_a_checkpoint_on_its_thread_loses_no_commit(tmp_path: Path) -> None:
    """A process killed while its store checkpoints on the thread of its
    own (``synchronous=normal``): the file is whole, and every commit it was
    told of is there, by a new process, three times over."""
    path = tmp_path / "runs.db"
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_CHILD, f"sqlite:///{path}?synchronous=normal"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        told = 0
        for line in child.stdout:
            seq, running = map(int, line.split())
            told = seq
            if running:
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=30)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        assert told > 1
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            seqs_found = [r[0] for r in db.execute("SELECT seq FROM events WHERE run_id = 'r1'")]
            assert sorted(seqs_found) == list(range(1, len(seqs_found) + 1))
            assert len(seqs_found) >= told
        db.close()
        # The next child makes the run again: it starts from a new file.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# How a commit written alone on the event loop reaches SQLite: its values
# bound each as a parameter of its own (a step's usual commit or a finishing
# one, with one or two events), or as one JSON array (any other, or any
# commit with more events). The tests of such commits run both ways.
_STATEMENT: Final = {"bound": "INSERT INTO lone_slots", "array": "INSERT INTO lone ("}
_FINISHING: Final = {"bound": "INSERT INTO lone_finish_slots", "array": "INSERT INTO lone_finish ("}
_NEW: Final = {"bound": "INSERT INTO lone_new_slots", "array": "INSERT INTO lone_new ("}


def _as_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have the store write every write alone as one JSON array."""
    monkeypatch.setattr(sqlite_store, "encode_lone", lambda commit: None)
    monkeypatch.setattr(sqlite_store, "encode_lone_create", lambda run, events: None)


@pytest.fixture(params=sorted(_STATEMENT))
def alone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a write alone is written: "bound" or "array"."""
    if request.param == "array":
        _as_arrays(monkeypatch)
    return str(request.param)


def test_sqlite_writes_a_steps_usual_commit_alone_as_one_statement(
    tmp_path: Path, alone: str
) -> None:
    """A commit that keeps its run's status, timer and lease, written on the
    event loop, is one statement (an INSERT into the TEMP view ``lone``), not
    BEGIN, an UPDATE, an INSERT and COMMIT; it writes what they wrote."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                mail = await store.commit(
                    change("r1", events=steps("r1", 2), keeps_status=True, state={"n": 7})
                )
            finally:
                db.set_trace_callback(None)
            assert mail is False
            # sqlite3 reports each statement a trigger runs with its caller's text.
            assert len(set(traced)) == 1
            assert traced[0].startswith(_STATEMENT[alone])
            assert await seqs(store, "r1") == [1, 2, 3]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.status, run.state, run.last_seq, run.owner) == (
                RunStatus.RUNNING,
                {"n": 7},
                3,
                A.owner,
            )

    asyncio.run(body())


def test_sqlite_writes_a_new_run_alone_as_one_statement(tmp_path: Path, alone: str) -> None:
    """A new run with no big part, written on the event loop, is one
    statement (an INSERT into the TEMP view ``lone_new``), not BEGIN,
    two INSERTs and COMMIT; it writes what they wrote."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            await new_run(store, "r0")  # the statements are prepared and cached
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                stored = await new_run(store, "r1", status=RunStatus.RUNNING)
            finally:
                db.set_trace_callback(None)
            # sqlite3 reports each statement a trigger runs with its caller's text.
            assert len(set(traced)) == 1
            assert traced[0].startswith(_NEW[alone])
            assert await seqs(store, "r1") == [1]
            run = await store.get_run("r1")
            assert run == stored
            assert (run.status, run.state, run.last_seq, run.owner) == (
                RunStatus.RUNNING,
                {"n": 0},
                1,
                A.owner,
            )

    asyncio.run(body())


def test_sqlite_a_new_run_alone_whose_id_is_taken_writes_nothing_and_answers_the_run(
    tmp_path: Path, alone: str
) -> None:
    """As the four statements did: a run whose id is taken is left as it is,
    with its journal, and the caller is answered that run; a journal seq
    the new run's events would take twice fails it, writing nothing."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            first = await new_run(store, "r1", status=RunStatus.RUNNING, state={"n": 1})
            again = record("r1", state={"n": 2}, owner=B.owner, lease_epoch=B.epoch)
            started = Event("r1", 1, EventKind.RUN_STARTED, T0 + 1, data={"state": {"n": 2}})
            stored, created = await store.create_run(again, [started])
            assert not created
            assert stored == first
            assert await store.get_run("r1") == first
            journal = await store.journal("r1")
            assert [(e.seq, e.at) for e in journal] == [(1, T0)]
            twice = Event("r2", 1, EventKind.RUN_STARTED, T0, data={})
            with pytest.raises(StoreError, match="r2"):
                await store.create_run(record("r2"), [twice, twice])
            assert await store.get_run("r2") is None
            assert await seqs(store, "r2") == []

    asyncio.run(body())


def test_sqlite_a_steps_commit_alone_is_fenced_tells_of_mail_and_refuses_a_taken_seq(
    tmp_path: Path, alone: str
) -> None:
    """The one-statement commit answers as the four statements did: fenced
    out (nothing written), whether mail waits, and a journal seq taken
    twice (nothing written)."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)

            def step(seq: int, lease: Lease = A) -> Commit:
                return change("r1", lease, steps("r1", seq, 1), keeps_status=True, state={"n": seq})

            with pytest.raises(LeaseLost):
                await store.commit(step(2, B))
            assert await seqs(store, "r1") == [1]
            assert await store.commit(step(2)) is False
            await store.post("r1", "note", {}, at=T0)
            assert await store.commit(step(3)) is True  # the mail is still unread
            with pytest.raises(StoreError, match="r1"):
                await store.commit(step(3))
            assert await seqs(store, "r1") == [1, 2, 3]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.state, run.last_seq, run.mail) == ({"n": 3}, 3, 1)


def _finish(run_id: str, seq: int, lease: Lease = A) -> Commit:
    """The commit that completes a run and lets it go, as a drive makes it."""
    finished = Event(run_id, seq, EventKind.RUN_FINISHED, T0 + seq, data={"status": "completed"})
    return change(
        run_id,
        lease,
        (*steps(run_id, seq - 1, 1), finished),
        status=RunStatus.COMPLETED,
        release=True,
        state={"n": seq},
    )


def test_sqlite_writes_the_commit_that_finishes_a_run_alone_as_one_statement(
    tmp_path: Path, alone: str
) -> None:
    """The commit that finishes a run and releases it, written on the event
    loop, is one statement (an INSERT into the TEMP view ``lone_finish``),
    not BEGIN, an UPDATE, an INSERT, a DELETE and COMMIT; it writes what
    they wrote, and frees the run's reservations (not another run's)."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            await new_run(store, "r2", status=RunStatus.RUNNING)
            await new_run(store, "r3", status=RunStatus.RUNNING)
            await store.reserve("seat", run_id="r1", now=T0, expires_at=T0 + 1e6)
            await store.reserve("desk", run_id="r2", now=T0, expires_at=T0 + 1e6)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                mail = await store.commit(_finish("r1", 3))
            finally:
                db.set_trace_callback(None)
            assert mail is False
            # sqlite3 reports each statement a trigger runs with its caller's
            # text; the run's mail count is read after it (reservations freed).
            # (The loop first turns off the busy timeout the reservations'
            # writes on the connection's thread turned on.)
            traced = [t for t in traced if not t.startswith("PRAGMA busy_timeout")]
            assert traced[0].startswith(_FINISHING[alone])
            assert [t for t in traced if not t.startswith("INSERT INTO lone_finish")] == [
                "SELECT mail FROM runs WHERE id = 'r1';"
            ]
            assert await seqs(store, "r1") == [1, 2, 3]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.status, run.state, run.last_seq, run.owner, run.lease_until) == (
                RunStatus.COMPLETED,
                {"n": 3},
                3,
                None,
                None,
            )
            assert await store.reservations(run_id="r1") == []
            assert [r.name for r in await store.reservations(run_id="r2")] == ["desk"]
            # Without reservations or mail, the statement alone.
            traced = []
            db.set_trace_callback(traced.append)
            try:
                assert await store.commit(_finish("r3", 3)) is False
            finally:
                db.set_trace_callback(None)
            traced = [t for t in traced if not t.startswith("PRAGMA busy_timeout")]
            assert len(set(traced)) == 1
            assert traced[0].startswith(_FINISHING[alone])

    asyncio.run(body())


def test_sqlite_a_finishing_commit_alone_is_fenced_tells_of_mail_and_refuses_a_taken_seq(
    tmp_path: Path, alone: str
) -> None:
    """The one-statement finishing commit answers as the five statements
    did: fenced out (nothing written, the reservations kept), whether mail
    waits (with and without reservations freed beside it), and a journal
    seq taken twice (nothing written)."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            for run_id in ("r1", "r2", "r3", "r4"):
                await new_run(store, run_id, status=RunStatus.RUNNING)
            await store.reserve("seat", run_id="r1", now=T0, expires_at=T0 + 1e6)
            with pytest.raises(LeaseLost):
                await store.commit(_finish("r1", 3, B))
            assert await seqs(store, "r1") == [1]
            assert [r.name for r in await store.reservations(run_id="r1")] == ["seat"]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.status, run.owner) == (RunStatus.RUNNING, A.owner)
            # Reservations freed, no mail: no mail waits.
            assert await store.commit(_finish("r1", 3)) is False
            # Mail, no reservation; mail and a reservation.
            await store.post("r2", "note", {}, at=T0)
            assert await store.commit(_finish("r2", 3)) is True
            await store.reserve("desk", run_id="r3", now=T0, expires_at=T0 + 1e6)
            await store.post("r3", "note", {}, at=T0)
            assert await store.commit(_finish("r3", 3)) is True
            assert await store.reservations(run_id="r3") == []
            # A seq taken twice: the statement fails whole.
            await store.commit(change("r4", events=steps("r4", 2, 1), keeps_status=True))
            with pytest.raises(StoreError, match="r4"):
                await store.commit(_finish("r4", 3))
            run = await store.get_run("r4")
            assert run is not None
            assert (run.status, run.owner, run.last_seq) == (RunStatus.RUNNING, A.owner, 2)
            assert await seqs(store, "r4") == [1, 2]

    asyncio.run(body())


def _varied(run_id: str) -> list[Commit]:
    """Commits alone of every shape a bound write takes: one or two events,
    an error, data and states that are not ASCII, nested, or hold "NaN" as
    text, a step and attempt that are None, a timer; the last finishes."""
    data: list[JSON] = [{}, {"result": None}, {"result": {"é": [1, 2.5, "NaN", None]}}]

    def event(seq: int, kind: EventKind = EventKind.STEP_SUCCEEDED, **more: Any) -> Event:
        fields: dict[str, Any] = {"step": f"s{seq}", "attempt": seq % 3 + 1}
        fields.update(more)
        return Event(run_id, seq, kind, T0 + seq / 7, data=data[seq % 3], **fields)

    usual = [
        change(
            run_id,
            events=tuple(event(seq, kind) for seq, kind in events),
            keeps_status=True,
            state={"n": events[-1][0], "name": "Zoë ☃", "deep": {"a": [{"b": events[0][0]}]}},
            error=None if len(events) > 1 else {"cause": {"type": "Boom", "message": "ünïcode"}},
            at=T0 + events[0][0] / 3,
        )
        for events in (
            [(2, EventKind.STEP_SUCCEEDED), (3, EventKind.STEP_STARTED)],
            [(4, EventKind.STEP_FAILED)],
            [(5, EventKind.STEP_STARTED)],
        )
    ]
    finished = Event(run_id, 7, EventKind.RUN_FINISHED, T0 + 7, data={"status": "completed"})
    last = change(
        run_id,
        events=(event(6, step=None, attempt=None), finished),
        status=RunStatus.COMPLETED,
        release=True,
        state={"n": 7},
        error={"cause": {"type": "Late", "message": "ñ"}},
        wake_at=T0 + 99,
        at=T0 + 8,
    )
    return [*usual, last]


def test_sqlite_a_commit_alone_reads_back_the_same_either_way_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit alone whose values are bound each on its own is read back
    exactly as the same commit written as one JSON array."""

    async def write(name: str) -> tuple[object, ...]:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / name}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                answers = [await store.commit(commit) for commit in _varied("r1")]
            finally:
                db.set_trace_callback(None)
            return answers, await store.get_run("r1"), await store.journal("r1"), traced

    bound = asyncio.run(write("bound.db"))
    _as_arrays(monkeypatch)
    array = asyncio.run(write("array.db"))
    assert bound[:3] == array[:3]
    answers, run, journal, traced = bound
    assert answers == [False] * 4
    assert [e.seq for e in journal] == list(range(1, 8))  # type: ignore[attr-defined]
    assert journal[4].data == {"result": {"é": [1, 2.5, "NaN", None]}}  # type: ignore[index]
    assert run.error == {"cause": {"type": "Late", "message": "ñ"}}  # type: ignore[attr-defined]
    # sqlite3 reports each statement a trigger runs with its caller's text.
    statements = list(dict.fromkeys(t.split(" (")[0] for t in traced))  # type: ignore[attr-defined]
    # The first holds "NaN" as text: written as an array, where the strict
    # parse that tells it from a NaN runs (`writes._encode`).
    assert statements == [
        "INSERT INTO lone",
        "INSERT INTO lone_slots VALUES",
        "INSERT INTO lone_finish_slots VALUES",
    ]


def test_sqlite_a_commit_alone_that_cannot_be_bound_is_written_or_refused_as_before(
    tmp_path: Path,
) -> None:
    """A commit alone with more than two events is written as one JSON array;
    one holding NaN, Infinity or a time that is not finite is refused as
    before, naming what is wrong, and writes nothing."""

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                three = change("r1", events=steps("r1", 2, 3), keeps_status=True)
                assert await store.commit(three) is False
            finally:
                db.set_trace_callback(None)
            assert {t.split(" (")[0] for t in traced} == {"INSERT INTO lone"}
            for state in ({"x": float("nan")}, {"x": [float("inf")]}):
                with pytest.raises(StateError, match="the state of run 'r1' holds NaN"):
                    await store.commit(change("r1", events=steps("r1", 5, 1), state=state))
            nan_data = Event("r1", 5, EventKind.STEP_STARTED, T0, data={"x": float("-inf")})
            with pytest.raises(StateError, match="the event 5 data of run 'r1' holds NaN"):
                await store.commit(change("r1", events=(nan_data,), keeps_status=True))
            for at in (float("nan"), float("inf")):
                with pytest.raises(StoreError, match="not a finite number"):
                    await store.commit(change("r1", events=steps("r1", 5, 1), at=at))
            late = Event("r1", 5, EventKind.STEP_STARTED, float("inf"), step="s5")
            with pytest.raises(StoreError, match="not a finite number"):
                await store.commit(change("r1", events=(late,), keeps_status=True))
            assert await seqs(store, "r1") == [1, 2, 3, 4]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.state, run.last_seq) == ({"n": 3}, 4)
            # New runs alike.
            with pytest.raises(StateError, match="the state of run 'r2' holds NaN"):
                await new_run(store, "r2", state={"x": float("nan")})
            with pytest.raises(StoreError, match="not a finite number"):
                await new_run(store, "r2", lease_until=float("inf"))
            assert await store.get_run("r2") is None
            db.set_trace_callback(traced.append)
            try:
                traced.clear()
                started = (Event("r2", 1, EventKind.RUN_STARTED, T0, data={}), *steps("r2", 2))
                assert (await store.create_run(record("r2"), started))[1]
            finally:
                db.set_trace_callback(None)
            assert {t.split(" (")[0] for t in traced} == {"INSERT INTO lone_new"}
            assert await seqs(store, "r2") == [1, 2, 3]

    asyncio.run(body())


def test_sqlite_a_commit_alone_waits_for_another_process_to_release_the_write_lock(
    tmp_path: Path,
) -> None:
    """A commit the event loop would write there and then, its values bound
    each on its own, finds another process holding the write lock: it is
    queued as any other write instead (one JSON array), waits, and is written."""
    path = tmp_path / "runs.db"

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            other.execute("BEGIN IMMEDIATE")
            release = threading.Timer(0.3, other.execute, ("ROLLBACK",))
            release.start()
            try:
                started = time.monotonic()
                commit = change("r1", events=steps("r1", 2), keeps_status=True, state={"n": 9})
                assert await store.commit(commit) is False
                waited = time.monotonic() - started
            finally:
                release.join()
                other.close()
            assert waited >= 0.25
            assert await seqs(store, "r1") == [1, 2, 3]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.state, run.last_seq, run.owner) == ({"n": 9}, 3, A.owner)

    asyncio.run(body())


def _tables(path: Path) -> list[list[tuple[Any, ...]]]:
    """Every row of the tables a commit writes, as stored (to tell that nothing changed)."""
    db = sqlite3.connect(path)
    try:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("runs", "events", "reservations", "mail", "state_changes")
        ]
    finally:
        db.close()


def _step_then_finish_alone(traced: list[str], alone: str) -> None:
    """``traced`` is a step's commit then a finishing one, each written alone
    as ``alone`` says (sqlite3 reports each statement a trigger runs with
    its caller's text; the loop may first turn the busy timeout off)."""
    traced = [t for t in traced if not t.startswith("PRAGMA busy_timeout")]
    assert traced[0].startswith(_STATEMENT[alone])
    assert traced[-1].startswith(_FINISHING[alone])
    assert all(t.startswith((_STATEMENT[alone], _FINISHING[alone])) for t in traced)


def test_sqlite_a_commit_alone_under_a_lease_taken_over_writes_nothing(
    tmp_path: Path, alone: str
) -> None:
    """A commit alone under the lease this process knows, which another
    process has taken over since (same epoch as far as this store knows, so
    it is written alone), is fenced out whole: a step's commit and a
    finishing one leave the run's row, the journal, the reservations and
    the mail as they were."""
    path = tmp_path / "runs.db"

    async def body() -> None:
        url = f"sqlite:///{path}"
        async with opened(SQLiteStore(url)) as store, opened(SQLiteStore(url)) as other:
            for run_id in ("r1", "r2"):
                await new_run(store, run_id, status=RunStatus.RUNNING)
                await store.post(run_id, "note", {}, at=T0)
            await store.reserve("seat", run_id="r2", now=T0, expires_at=T0 + 1e6)
            for run_id in ("r1", "r2"):
                taken = await other.claim(run_id, owner=B.owner, now=T0 + 100, lease_until=T0 + 1e6)
                assert taken is not None
            before = _tables(path)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                with pytest.raises(LeaseLost):
                    await store.commit(
                        change("r1", events=steps("r1", 2, 1), keeps_status=True, state={"n": 9})
                    )
                with pytest.raises(LeaseLost):
                    await store.commit(_finish("r2", 3))
            finally:
                db.set_trace_callback(None)
            _step_then_finish_alone(traced, alone)
            assert _tables(path) == before

    asyncio.run(body())


def test_sqlite_a_commit_alone_taking_a_seq_twice_writes_nothing(
    tmp_path: Path, alone: str
) -> None:
    """A commit alone whose two events take one seq fails whole: the run's
    update that comes before the events' insert is undone too, and the
    reservations a finishing one would free are kept. The next commit,
    right, is written."""
    path = tmp_path / "runs.db"

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
            for run_id in ("r1", "r2"):
                await new_run(store, run_id, status=RunStatus.RUNNING)
            await store.reserve("seat", run_id="r2", now=T0, expires_at=T0 + 1e6)
            before = _tables(path)
            db = store._connection.db
            assert db is not None
            traced: list[str] = []
            db.set_trace_callback(traced.append)
            try:
                [first] = steps("r1", 2, 1)
                twice = change("r1", events=(first, first), keeps_status=True, state={"n": 9})
                with pytest.raises(StoreError, match="UNIQUE constraint failed"):
                    await store.commit(twice)
                finished = Event("r2", 2, EventKind.RUN_FINISHED, T0 + 2, data={})
                finish = change(
                    "r2",
                    events=(*steps("r2", 2, 1), finished),
                    status=RunStatus.COMPLETED,
                    release=True,
                )
                with pytest.raises(StoreError, match="UNIQUE constraint failed"):
                    await store.commit(finish)
            finally:
                db.set_trace_callback(None)
            _step_then_finish_alone(traced, alone)
            assert _tables(path) == before
            assert await store.commit(change("r1", events=(first,), keeps_status=True)) is False
            assert await seqs(store, "r1") == [1, 2]

    asyncio.run(body())


def test_sqlite_a_write_alone_stores_the_same_bytes_either_way_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new run, a step's commit and a finishing one, bound value by value,
    store the very values, of the very types, the same written as one JSON
    array stores: texts that are not ASCII or hold escapes, ints past 64
    bits and floats at their limits in a state, times that are not round."""
    state: JSON = {
        "é": '\u2028\x00"\\</script>😀',
        "big": 2**70,
        "negative": -(2**64),
        "floats": [1e308, 5e-324, -0.0, 0.1, 1e-7, 123456789.123456789],
        "kéy": {"日本": True},
    }
    error: JSON = {"type": "Boom", "message": "x\ny\t\u0001", "n": 2**63}

    async def write(name: str) -> list[list[tuple[Any, ...]]]:
        path = tmp_path / name
        async with opened(SQLiteStore(f"sqlite:///{path}")) as store:
            run = record(
                "r1",
                status=RunStatus.RUNNING,
                state=state,
                error=error,
                created_at=T0 + 0.1,
                updated_at=1.7e9 + 0.123456789,
                lease_until=T0 + 1 / 3,
                wake_at=T0 + 2 / 3,
            )
            started = Event("r1", 1, EventKind.RUN_STARTED, 1.7e9 + 1 / 7, data={"state": state})
            step = Event("r1", 2, EventKind.STEP_STARTED, 1 / 3, step="ü", attempt=2**62)
            assert (await store.create_run(run, [started, step]))[1]
            done = Event("r1", 3, EventKind.STEP_SUCCEEDED, 1.7e9 + 0.1 + 0.2, data={"r": state})
            kept = change(
                "r1",
                events=(done,),
                keeps_status=True,
                state={**state, "n": 1},
                error=error,
                at=1.7e9 + 0.1 + 0.2,
            )
            assert await store.commit(kept) is False
            finished = Event("r1", 4, EventKind.RUN_FINISHED, 1.7e9 + 0.7, data={})
            finish = change(
                "r1",
                events=(finished,),
                status=RunStatus.COMPLETED,
                release=True,
                state={**state, "n": 2},
                error=error,
                at=1.7e9 + 1 / 3,
                wake_at=1.7e9 + 1 / 9,
            )
            assert await store.commit(finish) is False
        db = sqlite3.connect(path)
        try:
            types = [
                db.execute(
                    "SELECT typeof(created_at), typeof(updated_at), typeof(lease_until),"
                    " typeof(wake_at), typeof(last_seq), typeof(state), typeof(error) FROM runs"
                ).fetchall(),
                db.execute(
                    "SELECT typeof(seq), typeof(step), typeof(attempt), typeof(at), typeof(data)"
                    " FROM events ORDER BY seq"
                ).fetchall(),
            ]
        finally:
            db.close()
        return [*_tables(path), *types]

    bound = asyncio.run(write("bound.db"))
    _as_arrays(monkeypatch)
    assert bound == asyncio.run(write("array.db"))


@pytest.mark.parametrize(
    ("in_event", "in_run"),
    [
        pytest.param({"attempt": 2**63}, {"lease_epoch": 2**63}, id="an int past 64 bits"),
        pytest.param({"step": "s\ud800"}, {"saga": "s\ud800"}, id="a lone surrogate"),
        pytest.param({"step": "s\ud800"}, {"id": "r\ud800"}, id="a lone surrogate first"),
    ],
)
@pytest.mark.parametrize("read_first", [False, True], ids=["", "after a read"])
def test_sqlite_a_write_alone_sqlite_cannot_bind_is_written_or_refused_as_an_array(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_event: dict[str, Any],
    in_run: dict[str, Any],
    read_first: bool,
) -> None:
    """A commit or a new run alone holding a value sqlite3 cannot bind as a
    parameter of its own (it binds 64-bit ints and UTF-8 texts) comes to
    what it comes to written as one JSON array (as it is when queued with
    others): an int past 64 bits written, a lone surrogate refused by the
    JSON encoder, not an error of sqlite3's binding. After a read on the
    loop, sqlite3 reports such a value as the connection's last result
    ("another row available"), the binding's error as its context."""

    async def outcome(write: Awaitable[object]) -> object:
        try:
            return await write
        except Exception as exc:  # what is raised is compared
            return type(exc)

    async def write(name: str) -> list[object]:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / name}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            fields: dict[str, Any] = {"step": "s", "attempt": 1, **in_event}
            event = Event("r1", 2, EventKind.STEP_STARTED, T0 + 2, **fields)
            if read_first:
                await store.journal("r1")
            committed = await outcome(
                store.commit(change("r1", events=(event,), keeps_status=True))
            )
            # The run's id is its first value bound.
            fields = {"id": "r2", **in_run}
            run_id = fields.pop("id")
            started = Event(run_id, 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
            if read_first:
                await store.journal("r1")
            created = await outcome(store.create_run(record(run_id, **fields), [started]))
            if isinstance(created, tuple):
                created = created[1]
            return [committed, await seqs(store, "r1"), created, len(await store.list_runs())]

    bound = asyncio.run(write("bound.db"))
    _as_arrays(monkeypatch)
    assert bound == asyncio.run(write("array.db"))


@pytest.mark.parametrize("wake_at", [float("inf"), float("nan")])
def test_sqlite_a_kept_commit_alone_with_a_timer_not_finite_comes_to_what_an_array_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wake_at: float
) -> None:
    """A step's commit alone whose timer is not finite is refused, as the
    same commit written as one JSON array is (its timer is not written, but
    whether it is refused does not depend on how it is written)."""

    async def write(name: str) -> object:
        async with opened(SQLiteStore(f"sqlite:///{tmp_path / name}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            commit = change("r1", events=steps("r1", 2, 1), keeps_status=True, wake_at=wake_at)
            try:
                return await store.commit(commit), await seqs(store, "r1")
            except Exception as exc:  # what is raised is compared
                return type(exc)

    bound = asyncio.run(write("bound.db"))
    _as_arrays(monkeypatch)
    assert bound == asyncio.run(write("array.db"))


def test_sqlite_reads_a_run_on_an_idle_loop_without_the_connections_thread(
    tmp_path: Path,
) -> None:
    # What a read allocates comes from the memory the loop's thread freed
    # writing (C's allocator keeps freed memory by thread): a read of a big
    # state on the connection's thread after big writes on the loop's took
    # as much again.
    async def body() -> None:
        async with opened(f"sqlite:///{tmp_path / 'runs.db'}") as store:
            assert isinstance(store, SQLiteStore)
            await new_run(store, "r1")
            connection = store._connection
            threads: list[int] = []
            read = sqlite_store.SQLiteStore._get_run

            def noted(self: SQLiteStore, cur: sqlite3.Cursor, run_id: str) -> object:
                threads.append(threading.get_ident())
                return read(self, cur, run_id)

            sqlite_store.SQLiteStore._get_run = noted  # type: ignore[method-assign,assignment]
            try:
                run = await store.get_run("r1")
                assert run is not None
                assert threads == [threading.get_ident()]  # idle: read here
                # The connection busy (another thread holds it): read there.
                connection.lock.acquire()
                waiting = asyncio.ensure_future(store.get_run("r1"))
                await asyncio.sleep(0.05)
                assert not waiting.done()
                connection.lock.release()
                run = await waiting
                assert run is not None
                assert len(threads) == 2
                assert threads[1] != threading.get_ident()
            finally:
                sqlite_store.SQLiteStore._get_run = read  # type: ignore[method-assign]

    asyncio.run(body())


def test_a_read_on_the_loop_that_fails_mid_transaction_leaves_none_open(tmp_path: Path) -> None:
    # A read that failed busy inside its read transaction is done again on the
    # connection's thread: it must not find that transaction still open (it
    # would read its old snapshot, and hold it, keeping checkpoints back).
    async def body() -> None:
        async with opened(f"sqlite:///{tmp_path / 'runs.db'}") as store:
            assert isinstance(store, SQLiteStore)
            await new_run(store, "r1")
            tries: list[bool] = []

            def read(cur: sqlite3.Cursor) -> bool:
                tries.append(cur.connection.in_transaction)
                if len(tries) == 1:
                    cur.execute("BEGIN")
                    cur.execute("SELECT count(*) FROM runs").fetchall()
                    raise sqlite3.OperationalError("database is locked")
                return cur.connection.in_transaction

            assert await store._connection.read("read", read) is False
            assert tries == [False, False]
            # And the connection still writes.
            await new_run(store, "r2")
            assert await store.get_run("r2") is not None

    asyncio.run(body())


def _interrupt_at_first_step_of(db: sqlite3.Connection, statement: str) -> list[bool]:
    """Interrupt the first statement run on ``db`` that starts with ``statement``.

    The trace callback is called as a statement starts; the progress
    handler, called every few virtual machine instructions, then interrupts
    it (as ``sqlite3_interrupt`` would) and lets every later one run.
    Returns a list that holds True once the interrupt was made.
    """
    armed = [False]
    made: list[bool] = []

    def trace(text: str) -> None:
        if text.startswith(statement) and not made:
            armed[0] = True

    def progress() -> int:
        if armed[0]:
            armed[0] = False
            made.append(True)
            return 1
        return 0

    db.set_trace_callback(trace)
    # Every 5 instructions: a BEGIN is interrupted past the point where it
    # has left autocommit mode (at every instruction, before it started).
    db.set_progress_handler(progress, 5)
    return made


@pytest.mark.parametrize("path", ["loop", "taken id", "thread"])
def test_an_interrupted_begin_leaves_no_transaction_open(tmp_path: Path, path: str) -> None:
    """A BEGIN IMMEDIATE that fails part way (here interrupted) can leave its
    connection in a transaction holding the write lock: it is rolled back,
    or every later commit of the store failed ("cannot start a transaction
    within a transaction") and every other process's writer waited for the
    lock until the store closed. Checked on the loop's path for a commit in
    a transaction, on the path a new run whose id is taken takes after its
    one statement, and on the connection's thread."""
    file = tmp_path / "runs.db"

    async def body() -> None:
        async with opened(SQLiteStore(f"sqlite:///{file}")) as store:
            await new_run(store, "r1", status=RunStatus.RUNNING)
            db = store._connection.db
            assert db is not None
            made = _interrupt_at_first_step_of(db, "BEGIN IMMEDIATE")
            try:
                if path == "loop":  # a status change: not one statement, on the loop
                    commit = change("r1", events=steps("r1", 2, 1), status=RunStatus.PAUSED)
                    with contextlib.suppress(StoreError):  # or the thread writes it
                        await store.commit(commit)
                elif path == "taken id":
                    again = record("r1", state={"n": 2})
                    with contextlib.suppress(StoreError):  # or the thread answers it
                        await store.create_run(again, steps("r1", 1, 1))
                else:  # a purge is written on the connection's thread
                    with pytest.raises(StoreError, match="interrupted"):
                        await store.purge(before=T0 + 1e9)
            finally:
                db.set_progress_handler(None, 0)
                db.set_trace_callback(None)
            assert made == [True]
            assert not db.in_transaction
            seq = (await store.get_run("r1")).last_seq  # type: ignore[union-attr]
            commit = change("r1", events=steps("r1", seq + 1, 1), status=RunStatus.RUNNING)
            assert await store.commit(commit) is False
            await new_run(store, "r2")
            # Another process writes: the write lock is not held.
            other = sqlite3.connect(file, timeout=1)
            try:
                other.execute("CREATE TABLE other (x)")
                other.commit()
            finally:
                other.close()

    asyncio.run(body())

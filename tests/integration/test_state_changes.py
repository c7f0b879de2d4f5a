"""Edges of writing a big state by its changes, on the stores that do it.

The store contract (`BigStateContract`) checks that a big state always reads
back whole; these tests place a run exactly at the edge where its changes
would outweigh its snapshot, which only the store's own bookkeeping
(`sagakit.store.changes.StateChanges`) can tell, and commit there.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import secrets
import sqlite3
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pydantic_core
import pytest

from sagakit.journal import Event, EventKind
from sagakit.store import open_store, sql
from sagakit.store.base import Lease
from sagakit.store.changes import SMALLEST, StateChanges
from sagakit.store.postgresql import store as postgresql_store
from sagakit.store.postgresql import writes as postgresql_writes
from sagakit.store.sqlite import store as sqlite_store
from sagakit.store.sqlite import writes as sqlite_writes
from sagakit.store.testing.bigstate import big_state
from sagakit.store.testing.support import T0, A, change, opened, record


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "postgresql":
        found: str = request.getfixturevalue("postgres_url")
        return found
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def small_big(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's `BIG` at 2 KiB, for states past it to stay small in a test."""
    monkeypatch.setattr(sqlite_writes, "BIG", 2048)
    monkeypatch.setattr(sqlite_store, "BIG", 2048)


def sqlite_at(tmp_path: Any) -> sqlite_store.SQLiteStore:
    """A SQLite store in ``tmp_path`` (not opened: see `opened`)."""
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    assert isinstance(store, sqlite_store.SQLiteStore)
    return store


async def big_run_with_changes(store: Any, last_seq: int) -> dict[str, Any]:
    """Run r1 under lease A with a big state, and a change per commit up to ``last_seq``.

    Returns the state as its last commit left it (key ``kNNN`` set to
    ``"change NNN"`` by the commit of seq NNN).
    """
    state = big_state()
    first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
    await store.create_run(record("r1", state=state), [first])
    for seq in range(2, last_seq + 1):
        sets = {f"k{seq:03d}": f"change {seq}"}
        state = {**state, **sets}
        event = Event("r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": sets})
        await store.commit(change("r1", A, (event,), state=state))
    return state


def server_and_schema(postgres_url: str) -> tuple[str, str]:
    """The server's URL without the schema option, and the schema's name."""
    base, _, options = postgres_url.partition("?")
    return base, dict(part.split("=", 1) for part in options.split("&"))["schema"]


def test_a_commit_without_events_at_the_edge_of_the_changes_is_written(url: str) -> None:
    # A timer set or a run released commits no event: its (empty) change
    # writes nothing, so it must not tip the run into a whole write either.
    async def body() -> None:
        store = open_store(url)
        await store.open()
        try:
            state = big_state()
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            await store.create_run(record("r1", state=state), [first])
            seq = 1

            async def step(sets: dict[str, Any]) -> None:
                nonlocal state, seq
                seq += 1
                state = {**state, **sets}
                event = Event(
                    "r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": sets}
                )
                await store.commit(change("r1", A, (event,), state=state))

            await step({"k000": "x" * 400})
            known = store._states._known["r1"]  # type: ignore[attr-defined]
            key = 1
            while True:
                room = known.snapshot - known.pending
                one = len(pydantic_core.to_json({f"k{key:03d}": "y" * 400}))
                if room >= 2 * one:
                    await step({f"k{key:03d}": "y" * 400})
                    key += 1
                    known = store._states._known["r1"]  # type: ignore[attr-defined]
                    continue
                # The last change leaves one byte of room.
                empty = len(pydantic_core.to_json({f"k{key:03d}": ""}))
                await step({f"k{key:03d}": "z" * (room - 1 - empty)})
                break
            known = store._states._known["r1"]  # type: ignore[attr-defined]
            assert known.snapshot - known.pending == 1
            await store.commit(change("r1", A, (), state=dict(state), wake_at=T0 + 100))
            stored = await store.get_run("r1")
            assert stored is not None
            assert (stored.state, stored.wake_at) == (state, T0 + 100)
        finally:
            await store.close()

    asyncio.run(body())


def test_a_key_rotation_keeps_a_change_committed_while_it_waited(postgres_url: str) -> None:
    # rewrite_data locks a page of runs, waiting for a worker's commit in
    # flight; the change that commit inserts must be in the state it folds.
    import threading
    import time

    import psycopg

    base, schema = server_and_schema(postgres_url)

    async def body() -> None:
        async with opened(postgres_url) as store:
            await big_run_with_changes(store, 4)  # three changes, kept as such
            # Another process's commit of one more change, in flight: the
            # run's row is locked until it commits, a second from now.
            worker = psycopg.connect(base)
            worker.execute(f"UPDATE {schema}.runs SET last_seq = 5 WHERE id = 'r1'")
            worker.execute(
                f"INSERT INTO {schema}.state_changes VALUES ('r1', 5, %s)",
                ('{"k010": "latest"}',),
            )

            def commit_soon() -> None:
                time.sleep(1.0)
                worker.commit()

            committer = threading.Thread(target=commit_soon)
            committer.start()
            try:
                await store.rewrite_data(lambda kind, run_id, value: None)
            finally:
                committer.join()
                worker.close()
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state["k010"] == "latest"
            assert [stored.state[f"k{seq:03d}"] for seq in range(2, 5)] == [
                "change 2",
                "change 3",
                "change 4",
            ]

    asyncio.run(body())


def test_a_big_sqlite_write_binds_its_parts_on_their_own_and_then_writes_changes(
    tmp_path: Any, small_big: None
) -> None:
    # Past `BIG`, a write's state and its run_started data are bound on their
    # own (placeholders in its array) and let go once written; the write's
    # size must still count them, or the store would take the run for a
    # small one and write its whole state at every commit.

    async def body() -> None:
        async with opened(sqlite_at(tmp_path)) as store:
            state = big_state()
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            write = sqlite_writes.encode_create(record("r1", state=state), [first])
            assert write.big is not None
            # The state is written once, in the event's data, which the run's
            # first state change names.
            assert write.big.first == (1, pydantic_core.to_json(first.data).decode())
            assert write.big.state is None
            assert write.big.data == []
            assert len(write.text) < 2048 < write.size
            await store.create_run(record("r1", state=state), [first])
            assert store.written == write.size
            handed = []
            for seq in range(2, 6):
                sets = {f"k{seq:03d}": "y" * 400}
                state = {**state, **sets}
                event = Event(
                    "r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": sets}
                )
                before = store.written
                await store.commit(change("r1", A, (event,), state=state))
                handed.append(store.written - before)
            # A big new run's state is written out of its row from the start
            # (`Big.moved`): no commit writes it whole again, each the key it sets.
            assert all(size < 2048 for size in handed), handed
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [started, *_] = await store.journal("r1")
            assert started.data == {"state": big_state()}

    asyncio.run(body())


def test_a_big_sqlite_run_created_with_its_first_result_writes_the_started_state_once(
    tmp_path: Any, small_big: None
) -> None:
    # A run is created with its first commit: its state (with the first
    # step's result) is not the one its run_started event holds. Past `BIG`,
    # the row holds the started state, whose text the event's data is put
    # together around, and the keys the first commit set are its first change:
    # one big text of the state in the write, not two.

    async def body() -> None:
        async with opened(sqlite_at(tmp_path)) as store:
            started = big_state()
            sets = {"k002": "first result", "added": [1, 2]}
            state = {**started, **sets}
            events = [
                Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started}),
                Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets}),
            ]
            write = sqlite_writes.encode_create(record("r1", state=state), events)
            assert write.big is not None
            assert write.big.first == (1, pydantic_core.to_json(events[0].data).decode())
            assert write.big.state is None
            assert write.big.change == (2, pydantic_core.to_json(sets).decode())
            await store.create_run(record("r1", state=state, last_seq=2), events)
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            assert [e.data for e in await store.journal("r1")] == [e.data for e in events]
            [listed] = await store.list_runs()
            assert listed.state == state
            # The next commits write on top of it as of any run.
            more = {"k003": "second"}
            state = {**state, **more}
            event = Event("r1", 3, EventKind.STEP_SUCCEEDED, T0 + 3, "s", 1, {"result": more})
            await store.commit(change("r1", A, (event,), state=state))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state

    asyncio.run(body())


def test_a_big_sqlite_run_created_with_a_key_removed_is_written_whole(
    tmp_path: Any, small_big: None
) -> None:
    # A change only sets keys: a state that lacks one of the started state's
    # is written whole in the run's row, as before.

    async def body() -> None:
        async with opened(sqlite_at(tmp_path)) as store:
            started = big_state()
            state = {key: value for key, value in started.items() if key != "k001"}
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started})
            write = sqlite_writes.encode_create(record("r1", state=state), [first])
            assert write.big is not None
            assert write.big.change is None
            assert write.big.first is None
            await store.create_run(record("r1", state=state), [first])
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [journaled] = await store.journal("r1")
            assert journaled.data == {"state": started}

    asyncio.run(body())


def test_a_big_postgresql_write_sends_its_parts_on_their_own_and_then_writes_changes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past `BIG`, a state, a change or an event's data is sent by a statement
    # of its own (a placeholder in the batch's arrays); the store must still
    # know the state's size, or it would take the run for a small one and
    # write its whole state at every commit.
    monkeypatch.setattr(postgresql_writes, "BIG", 2048)

    async def body() -> None:
        async with opened(postgres_url) as store:
            state = big_state()
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            write = postgresql_writes.create_write(record("r1", state=state), [first])
            # The run_started data holds the state: put together around its
            # pieces in the database, not sent again.
            assert [name for name, _ in write.big] == ["big_state", "big_event_data_around"]
            assert write.size == len(pydantic_core.to_json(state))
            await store.create_run(record("r1", state=state), [first])
            for seq in range(2, 6):
                sets = {f"k{seq:03d}": "y" * 400}
                state = {**state, **sets}
                event = Event(
                    "r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": sets}
                )
                await store.commit(change("r1", A, (event,), state=state))
            known = store._states._known["r1"]  # type: ignore[attr-defined]
            assert known.snapshot == len(pydantic_core.to_json(big_state()))
            assert 0 < known.pending < 2048 * 4  # four changes, not four whole states
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [started, *_] = await store.journal("r1")
            assert started.data == {"state": big_state()}
            # A big change too: a result past `BIG`, sent on its own.
            sets = {"k000": "z" * 3000}
            state = {**state, **sets}
            event = Event("r1", 6, EventKind.STEP_SUCCEEDED, T0 + 6, "s", 1, {"result": sets})
            await store.commit(change("r1", A, (event,), state=state))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            assert (await store.journal("r1"))[-1].data == {"result": sets}

    asyncio.run(body())


def test_a_claim_that_waits_for_a_commit_reads_the_state_it_left(postgres_url: str) -> None:
    # The old owner's commit is in flight when another worker claims the run
    # (its lease lapsed): the claim waits for the row's lock, then must return
    # the state that commit left, its newest change included. The commit is
    # written here by hand, as the store writes one (a change row and the
    # run's count of changes), so that it can be held open mid-way.
    import psycopg

    base, schema = server_and_schema(postgres_url)

    async def body() -> None:
        async with opened(postgres_url) as store:
            state = await big_run_with_changes(store, 2)

            # Watched from a connection of its own: within the holder's
            # transaction, pg_stat_activity would show its first reading again.
            with psycopg.connect(base) as held, psycopg.connect(base, autocommit=True) as watch:
                held.execute(f"SELECT 1 FROM {schema}.runs WHERE id = 'r1' FOR UPDATE")
                held.execute(
                    f"INSERT INTO {schema}.state_changes (run_id, seq, change) "
                    """VALUES ('r1', 3, '{"k001": "in flight"}')"""
                )
                held.execute(
                    f"UPDATE {schema}.runs SET state_changes = state_changes + 1, last_seq = 3 "
                    "WHERE id = 'r1'"
                )
                claim = asyncio.create_task(
                    store.claim("r1", owner="worker-b", now=T0 + 100, lease_until=T0 + 130)
                )
                async with asyncio.timeout(30):  # bounds a hang only
                    while not watch.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND query LIKE %s",
                        (f"%{schema}.runs%",),
                    ).fetchone()[0]:  # type: ignore[index]
                        await asyncio.sleep(0.02)
                held.commit()
            claimed = await claim
            assert claimed is not None
            assert claimed.owner == "worker-b"
            assert claimed.state == {**state, "k001": "in flight"}

    asyncio.run(body())


def test_a_claim_reads_the_state_again_when_a_rotation_folds_its_changes_first(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim reads a big state's changes after it (see the test above); a
    # key rotation that folds them into the row in between must not leave
    # the claimer with the row it had and no changes.
    async def body() -> None:
        async with opened(postgres_url) as store:
            state = await big_run_with_changes(store, 3)
            read_again = store._with_changes  # type: ignore[attr-defined]

            async def rotated_first(rows: list[Any]) -> list[Any]:
                await store.rewrite_data(lambda kind, run_id, value: None)
                return list(await read_again(rows))

            monkeypatch.setattr(store, "_with_changes", rotated_first)
            claimed = await store.claim("r1", owner="worker-b", now=T0 + 100, lease_until=T0 + 130)
            assert claimed is not None
            assert claimed.state == state

    asyncio.run(body())


def test_a_big_postgresql_run_created_with_its_first_result_sends_the_started_state_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The row holds the state its run_started event holds, the keys the first
    # commit set are its first change, and the event's data is put together
    # around the state's pieces in the database: one text of the state sent.
    monkeypatch.setattr(postgresql_writes, "BIG", 2048)
    monkeypatch.setattr(postgresql_writes, "PIECE", 1000)

    async def body() -> None:
        async with opened(postgres_url) as store:
            started = big_state()
            sets = {"k002": "first result", "added": [1, 2]}
            state = {**started, **sets}
            events = [
                Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started}),
                Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets}),
            ]
            write = postgresql_writes.create_write(record("r1", state=state), events)
            assert [name for name, _ in write.big] == [
                "big_state",
                "big_event_data_around",
                "created_change",
            ]
            assert write.big[0][1][0] == pydantic_core.to_json(started).decode()
            await store.create_run(record("r1", state=state, last_seq=2), events)
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            assert [e.data for e in await store.journal("r1")] == [e.data for e in events]
            more = {"k003": "second"}
            state = {**state, **more}
            event = Event("r1", 3, EventKind.STEP_SUCCEEDED, T0 + 3, "s", 1, {"result": more})
            await store.commit(change("r1", A, (event,), state=state))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [listed] = await store.list_runs()
            assert listed.state == state

    asyncio.run(body())


def test_a_big_postgresql_state_is_read_back_in_pieces(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq holds a row whole in a buffer it keeps at its largest: a big
    # state is read in pieces, cut through characters of more than one byte
    # too, and put together before it is decoded, with its changes applied.
    # Its values do not compress: the size that decides is the stored one.
    monkeypatch.setattr(postgresql_store, "READ_FROM", 1000)
    monkeypatch.setattr(postgresql_store, "READ_PIECE", 1000)
    streamed: list[object] = []
    stream = psycopg.AsyncCursor.stream

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        streamed.append(args[0])
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "stream", counted)

    async def body() -> None:
        async with opened(postgres_url) as store:
            state = {f"k{i:03d}": "é€𝄞" + uuid.uuid4().hex * 10 for i in range(40)}
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            await store.create_run(record("r1", state=state), [first])
            sets = {"k001": "changed"}
            state = {**state, **sets}
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0 + 2, "s", 1, {"result": sets})
            await store.commit(change("r1", A, (event,), state=state))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            assert len(streamed) == 1
            assert await store.get_run("nope") is None

    asyncio.run(body())


@pytest.mark.parametrize("per_piece", [1, 5, 64])
def test_a_big_sqlite_run_started_data_is_encoded_in_pieces_as_whole(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, small_big: None, per_piece: int
) -> None:
    # The run_started data is encoded a few keys at a time and put together:
    # the text must be the one the whole would be, whatever the pieces.
    monkeypatch.setattr(sqlite_writes, "_KEYS_PER_PIECE", per_piece)

    async def body() -> None:
        async with opened(sqlite_at(tmp_path)) as store:
            state = {**big_state(), "empty": {}, "n": 1.5, "list": [1, "é"], "none": None}
            data = {"state": state, "deadline": 12.5}
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data=data)
            write = sqlite_writes.encode_create(record("r1", state=state), [first])
            assert write.big is not None
            assert write.big.first == (1, pydantic_core.to_json(data).decode())
            await store.create_run(record("r1", state=state), [first])
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [journaled] = await store.journal("r1")
            assert journaled.data == data

    asyncio.run(body())


def test_a_postgresql_run_created_big_over_a_small_started_state_keeps_its_first_change(
    postgres_url: str,
) -> None:
    # The state is big only with its first result: the state its run_started
    # event holds is small, written in the row as it is, and nothing else is
    # big; the keys the first commit set must still be written as a change.
    async def body() -> None:
        async with opened(postgres_url) as store:
            started = {f"k{i:03d}": "v" * 2000 for i in range(64)}  # 128 KiB
            sets = {"result": "r" * 150_000}  # with it, past postgresql_writes.BIG
            state = {**started, **sets}
            assert len(pydantic_core.to_json(state)) >= postgresql_writes.BIG
            events = [
                Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started}),
                Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets}),
            ]
            await store.create_run(record("r1", state=state, last_seq=2), events)
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [listed] = await store.list_runs()
            assert listed.state == state
            # And the next commit's change, over it, reads back whole too.
            more = {"k003": "second"}
            state = {**state, **more}
            event = Event("r1", 3, EventKind.STEP_SUCCEEDED, T0 + 3, "s", 1, {"result": more})
            await store.commit(change("r1", A, (event,), state=state))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state

    asyncio.run(body())


def test_postgresql_big_parts_leave_no_pieces_behind_in_the_session(postgres_url: str) -> None:
    # The pieces table is the session's, and a pooled session lives long:
    # deleted pieces (TOASTed, out of autovacuum's reach in a temporary
    # table) would keep their space, a big part's worth more at every write.
    async def body() -> None:
        store: Any = open_store(f"{postgres_url}&pool_size=2")
        await store.open()
        try:
            for n in range(8):
                # About 600 KB that does not compress: two pieces, TOASTed.
                state = {f"k{i:02d}": secrets.token_hex(3000) for i in range(100)}
                first = Event(f"r{n}", 1, EventKind.RUN_STARTED, T0, data={"state": state})
                await store.create_run(record(f"r{n}", state=state), [first])

            async def held(conn: Any) -> int:
                cur = await conn.execute(
                    "SELECT coalesce(pg_total_relation_size("
                    "to_regclass('pg_temp.sagakit_big_pieces')), 0)"
                )
                row = await cur.fetchone()
                await asyncio.sleep(0.2)  # so that the other call takes the other connection
                return int(row[0])

            sizes = await asyncio.gather(
                store._with_conn("measure", held), store._with_conn("measure", held)
            )
            # Empty tables (their index's first page, say), not 8 writes' pieces.
            assert sum(sizes) < 200_000, sizes
        finally:
            await store.close()

    asyncio.run(body())


def test_postgresql_big_parts_are_written_whole_by_a_role_refused_temporary_tables(
    postgres_url: str,
) -> None:
    # Hardening guides revoke TEMPORARY from PUBLIC: such a role cannot make
    # the pieces table, and sends each big part whole, as before pieces.
    base, _ = server_and_schema(postgres_url)
    tag = uuid.uuid4().hex[:8]
    database, role = f"sk_notemp_{tag}", f"sk_notemp_{tag}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        host = base.removeprefix("postgresql://").split("@", 1)[-1].rsplit("/", 1)[0]
        with psycopg.connect(f"postgresql://postgres@{host}/{database}", autocommit=True) as db:
            db.execute(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC")
            db.execute(f"CREATE SCHEMA sk AUTHORIZATION {role}")

        async def body() -> None:
            store = open_store(f"postgresql://{role}@{host}/{database}?schema=sk")
            await store.open()
            try:
                started = {f"k{i:03d}": "v" * 5000 for i in range(64)}  # past BIG
                sets = {"k001": "first result"}
                state = {**started, **sets}
                events = [
                    Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started}),
                    Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets}),
                ]
                await store.create_run(record("r1", state=state, last_seq=2), events)
                stored = await store.get_run("r1")
                assert stored is not None
                assert stored.state == state
                assert [e.data for e in await store.journal("r1")] == [e.data for e in events]
                # A commit with a big change and a big event.
                more = {"k003": "w" * 300_000}
                state = {**state, **more}
                event = Event("r1", 3, EventKind.STEP_SUCCEEDED, T0 + 3, "s", 1, {"result": more})
                await store.commit(change("r1", A, (event,), state=state))
                stored = await store.get_run("r1")
                assert stored is not None
                assert stored.state == state
                assert (await store.journal("r1", after_seq=2))[0].data == {"result": more}
            finally:
                await store.close()

        asyncio.run(body())
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE {role}")


def test_a_sqlite_rewrite_of_a_run_started_event_leaves_the_state_named_by_it_as_written(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big new run's first state names its run_started event (from_event).
    # A run created while a rewrite walks the store, after the runs were
    # walked, is "seen as it was written": rewriting its event must not
    # change its state (nor leave it unreadable, as here, where the rewrite
    # makes the event's state a string).
    async def body() -> None:
        async with opened(sqlite_at(tmp_path)) as store:
            started = {f"k{i:03d}": "v" * 5000 for i in range(64)}  # past BIG
            sets = {"k001": "first result"}
            state = {**started, **sets}
            events = [
                Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": started}),
                Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets}),
            ]
            walk = sql.rewrite_tables

            async def created_between(page: Any, batch_size: int) -> Any:
                async def paged(table: str, after: tuple[Any, ...]) -> Any:
                    if table == "events" and await store.get_run("r1") is None:
                        await store.create_run(record("r1", state=state, last_seq=2), events)
                    return await page(table, after)

                return await walk(paged, batch_size)

            monkeypatch.setattr(sql, "rewrite_tables", created_between)

            def scrub(kind: str, run_id: str, value: Any) -> Any:
                if kind == "event" and "state" in value:
                    return {**value, "state": "<removed>"}
                return None

            await store.rewrite_data(scrub)
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == state
            [listed] = await store.list_runs()
            assert listed.state == state
            assert (await store.journal("r1"))[0].data == {"state": "<removed>"}

    asyncio.run(body())


def _non_ascii_big_state() -> dict[str, Any]:
    """A big state whose text is longer in UTF-8 than in characters."""
    return {**big_state(), "accents": "é" * 3000, "kana": "かな" * 1500, "emoji": "😀" * 800}


def test_a_big_sqlite_part_written_in_pieces_is_stored_as_the_text_bound_whole(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A part of `_PIECE` characters or more is written by incremental blob
    # I/O into a zero blob of its size in UTF-8, then made TEXT: what is
    # stored must be the very text a bound parameter would have stored (not
    # a BLOB, which `json_array` refuses and sqlite3 reads back as bytes),
    # whatever its characters, in the run's row, its state changes and its
    # events, on each path that writes a part on its own.
    monkeypatch.setattr(sqlite_writes, "BIG", 2048)
    monkeypatch.setattr(sqlite_writes, "_BIG_PART", 256)
    monkeypatch.setattr(sqlite_store, "BIG", 2048)
    monkeypatch.setattr(sqlite_writes, "_PIECE", 1000)
    path = tmp_path / "runs.db"

    async def body() -> dict[str, int]:
        traced: dict[str, int] = {}

        def trace(statement: str) -> None:
            # sqlite3 passes the statement with its parameters written in.
            if "zeroblob(" in statement:
                name = " ".join(statement.split()[:3])
                traced[name] = traced.get(name, 0) + 1

        store = open_store(f"sqlite:///{path}")
        other = open_store(f"sqlite:///{path}")
        await store.open()
        await other.open()
        try:
            for opened_store in (store, other):
                assert isinstance(opened_store, sqlite_store.SQLiteStore)
                db = opened_store._connection.db
                assert db is not None
                db.set_trace_callback(trace)
            state = _non_ascii_big_state()
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            result = {"result": "ü" * 1500}  # a big event's data, and a big change
            second = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, result)
            state = {**state, **result}
            await store.create_run(record("r1", state=state, last_seq=2), [first, second])
            seq = 2
            for turn in range(150):  # past the snapshot's size: written whole again
                seq += 1
                sets = {f"k{turn % 64:03d}": f"{turn}:" + "ß" * 400}
                state = {**state, **sets}
                event = Event("r1", seq, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": sets})
                await store.commit(change("r1", events=(event,), state=state))
            # A store that does not know the run writes its state whole in its row.
            claimed = await other.claim("r1", owner="B", now=T0 + 100, lease_until=T0 + 1e6)
            assert claimed is not None
            assert claimed.state == state
            lease = Lease("B", claimed.lease_epoch)
            seq += 1
            state = {**state, "k000": "other"}
            event = Event("r1", seq, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": "x"})
            await other.commit(change("r1", lease, (event,), state=state))
            for reader in (store, other):
                stored = await reader.get_run("r1")
                assert stored is not None
                assert stored.state == state
                journals = await reader.journals(["r1"])
                assert journals["r1"][0].data == {"state": _non_ascii_big_state()}
                assert journals["r1"][1].data == result
        finally:
            await store.close()
            await other.close()
        return traced

    traced = asyncio.run(body())
    assert set(traced) == {
        "UPDATE state_changes SET",  # a change written whole again
        "INSERT INTO state_changes",  # a new run's first change
        "UPDATE events SET",  # a big event's data
    }, traced
    with sqlite3.connect(path) as db:
        kinds = db.execute(
            "SELECT typeof(state) FROM runs UNION SELECT typeof(change) FROM state_changes"
            " UNION SELECT typeof(data) FROM events"
        ).fetchall()
        assert kinds == [("text",)]
        data = db.execute("SELECT data FROM events WHERE seq = 1").fetchone()[0]
        assert data == pydantic_core.to_json({"state": _non_ascii_big_state()}).decode()


def _sqlite_memory_used() -> Callable[[], int] | None:
    """SQLite's ``sqlite3_memory_used`` (the bytes it has allocated now), if it can be called."""
    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    used.argtypes = []
    return lambda: int(used())


def test_a_big_sqlite_state_is_not_held_by_python_and_sqlite_at_once(tmp_path: Any) -> None:
    # A new run's 4 MB state: what Python allocated (tracemalloc) and what
    # SQLite allocated (sqlite3_memory_used), summed at each step of SQLite's
    # statements (a progress handler, which samples: the figures are below
    # the true peaks), over what they held before. Bound whole, the state's
    # text was held by Python while SQLite made two copies of it (the
    # parameter, the record): 2.5 times its size as sampled. Written in
    # pieces, SQLite copies it (the value read, the record made) once Python
    # has let go of it: 1.5 times. And read back, the text is read from
    # SQLite's pages into Python's bytes: SQLite makes no copy (1.03 times
    # its size before, 0.03 after).
    used = _sqlite_memory_used()
    if used is None:
        pytest.skip("sqlite3_memory_used cannot be called here")
    state = {f"k{i:04d}": secrets.token_hex(1000) for i in range(2000)}  # 4 MB
    size = len(pydantic_core.to_json(state))

    async def body() -> tuple[int, int]:
        store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
        await store.open()
        try:
            assert isinstance(store, sqlite_store.SQLiteStore)
            db = store._connection.db
            assert db is not None
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            run = record("r1", state=state)
            peak = 0

            def sample() -> int:
                nonlocal peak
                peak = max(peak, tracemalloc.get_traced_memory()[0] + used())
                return 0

            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0] + used()
                db.set_progress_handler(sample, 1)
                await store.create_run(run, [started])
                db.set_progress_handler(None, 1)
                written = peak - base
                before_read = used()
                # SQLite's high-water mark, reset to what it holds now.
                highwater = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_highwater
                highwater.restype = ctypes.c_int64
                highwater.argtypes = [ctypes.c_int]
                highwater(1)
                stored = await store.get_run("r1")
                read = int(highwater(0)) - before_read
            finally:
                tracemalloc.stop()
            assert stored is not None
            assert stored.state == state
            return written, read
        finally:
            await store.close()

    written, read = asyncio.run(body())
    assert written < 2 * size, (written, size)
    assert read < size / 2, (read, size)


def test_a_postgresql_part_is_big_and_cut_in_pieces_by_its_bytes(postgres_url: str) -> None:
    # libpq sends a statement's parameters in one buffer, as UTF-8: whether
    # a part is sent on its own (`BIG`), and how big each of its pieces is
    # (`PIECE`), are counted in bytes. A state of 100,000 kana is 300 KB (not
    # sent in the batch's arrays), and a piece of 512 Ki such characters
    # would be 1.5 MiB.
    state = {"kana": "か" * 100_000, "n": 1}
    encoded = pydantic_core.to_json(state)
    assert len(encoded) >= postgresql_writes.BIG > len(encoded.decode())
    first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
    write = postgresql_writes.create_write(record("r1", state=state), [first])
    assert [name for name, _ in write.big] == ["big_state", "big_event_data_around"]
    for text in ("é" * 600_000, "か" * 600_000, "😀" * 600_000, "a" * 600_000 + "😀"):
        pieces = postgresql_writes._pieces(text)
        assert "".join(piece for _, piece in pieces) == text
        assert [n for n, _ in pieces] == list(range(len(pieces)))
        assert max(len(piece.encode()) for _, piece in pieces) <= postgresql_writes.PIECE

    async def body() -> None:
        async with opened(postgres_url) as store:
            await store.create_run(record("r1", state=state), [first])
            sets = {"kana": "😀" * 200_000}  # a big change, in pieces of 4 bytes a character
            new = {**state, **sets}
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0 + 2, "s", 1, {"result": sets})
            await store.commit(change("r1", A, (event,), state=new))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == new
            started, succeeded = await store.journal("r1")
            assert started.data == {"state": state}
            assert succeeded.data == {"result": sets}

    asyncio.run(body())


@pytest.mark.parametrize(
    "url",
    [
        "sqlite",
        "postgresql",
    ],
    indirect=True,
)
def test_a_state_s_size_is_counted_in_bytes(url: str) -> None:
    # How a state is written (whole, or by its changes once it is big:
    # `sagakit.store.changes`) is decided by its size in bytes, as a change's
    # size is counted. PostgreSQL and SQLite counted a state written whole
    # in characters: a state of 8,000 kana (24 KB in UTF-8) counted as 8 KB,
    # under `SMALLEST`, and each of its commits wrote it whole again.
    state: dict[str, Any] = {"kana": "か" * 8_000, "n": 0}
    assert (
        len(pydantic_core.to_json(state).decode()) < SMALLEST <= len(pydantic_core.to_json(state))
    )

    async def body() -> None:
        async with opened(url) as store:
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            await store.create_run(record("r1", state=state), [first])
            states: StateChanges = store._states  # type: ignore[attr-defined]
            seq, now = 1, state
            for sets in ({"n": 1}, {"kana": "き" * 8_000, "n": 2}, {"n": 3}):
                seq += 1
                now = {**now, **sets}
                event = Event("r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"r": sets})
                await store.commit(change("r1", A, (event,), state=now))
                known = states._known["r1"]
                if seq == 2 and states._moves_out:
                    # SQLite moves a big state out of the run's row, whole,
                    # at its first commit (a small one stays in the row).
                    assert known.pending == 0
                    assert not known.inline
                    assert known.snapshot >= len(pydantic_core.to_json(now))
                elif len(sets) == 1:  # one key of two set: written as a change
                    assert known.pending == len(pydantic_core.to_json(sets))
                else:  # both set: written whole, its size in bytes (its write's, on SQLite)
                    assert known.pending == 0
                    assert known.snapshot >= len(pydantic_core.to_json(now))
            stored = await store.get_run("r1")
            assert stored is not None
            assert stored.state == now

    asyncio.run(body())

"""PostgreSQL-only store behaviour: URLs, schemas and migrations, group commit,
lost connections, SKIP LOCKED claims and LISTEN/NOTIFY, mail and local
transactions on a real server.

The shared contract runs on PostgreSQL in ``tests/contract``; these tests
cover what only this backend has.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from sagakit.errors import SchemaVersionError, StateError, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import Lease, LocalTransaction, open_store
from sagakit.store.postgresql import PostgresLocalTransaction, PostgresStore, parse_url
from sagakit.store.postgresql import connection as pg_connection
from sagakit.store.sql import load_queries, migrations
from sagakit.store.testing import T0, A, change, new_run, record, seqs, steps

LATEST = migrations("postgresql")[-1][0]


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def schema_of(url: str) -> str:
    return parse_url(url)[1]["schema"]


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """Run SQL on the test server outside any store."""
    with psycopg.connect(parse_url(url)[0], autocommit=True) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else []


def terminate_store_backends(url: str) -> int:
    """Kill every server backend of this test's stores (pool and LISTEN)."""
    rows = sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = 'sagakit-test-{schema_of(url)}'",
    )
    return len(rows)


def named(url: str) -> str:
    """The URL with an application name that `terminate_store_backends` finds."""
    return f"{url}&application_name=sagakit-test-{schema_of(url)}"


# -- URLs and options --------------------------------------------------------------


def test_url_options_are_split_from_what_libpq_reads() -> None:
    conninfo, ours = parse_url(
        "postgres://u:pw@db:5433/orders?schema=shop&sslmode=disable&pool_size=4&migrate=false"
    )
    assert conninfo == "postgresql://u:pw@db:5433/orders?sslmode=disable"
    assert ours == {"schema": "shop", "pool_size": "4", "migrate": "false"}
    store = PostgresStore("postgresql://db/orders?schema=shop&pool_size=4&migrate=false")
    assert (store.schema, store.pool_size, store.auto_migrate) == ("shop", 4, False)
    assert PostgresStore("postgresql://db/orders").schema == "sagakit"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db/x?schema=Robert'); DROP TABLE runs;--", "schema must be"),
        ("postgresql://db/x?pool_size=many", "pool_size must be a whole number"),
        ("postgresql://db/x?pool_size=1", "pool_size must be at least 2"),
        ("postgresql://db/x?migrate=perhaps", "migrate must be true or false"),
        ("mysql://db/x", "not a PostgreSQL URL"),
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        PostgresStore(url)


def test_no_server_gives_a_clear_error_without_the_password() -> None:
    async def body() -> None:
        store = open_store("postgresql://app:secret@127.0.0.1:1/orders?connect_timeout=2")
        with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
            await store.open()
        assert "secret" not in str(caught.value)
        assert "app:***@127.0.0.1:1" in str(caught.value)
        with pytest.raises(StoreError, match="not open"):
            await store.get_run("r1")

    asyncio.run(body())


# -- schema and migrations ------------------------------------------------------------


def test_migrate_creates_the_schema_once_and_reports_versions(postgres_url: str) -> None:
    async def body() -> None:
        assert await PostgresStore(postgres_url).migrate() == (0, LATEST)
        assert await PostgresStore(postgres_url).migrate() == (LATEST, LATEST)

    asyncio.run(body())
    tables = sql(
        postgres_url,
        "SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = '{schema_of(postgres_url)}' ORDER BY 1",
    )
    assert [t[0] for t in tables] == [
        "events",
        "mail",
        "reservations",
        "runs",
        "schema_version",
        "state_changes",
    ]


def test_several_processes_may_migrate_a_new_database_at_once(postgres_url: str) -> None:
    async def body() -> None:
        results = await asyncio.gather(*(PostgresStore(postgres_url).migrate() for _ in range(4)))
        assert sorted(results) == [(0, LATEST)] + [(LATEST, LATEST)] * 3

    asyncio.run(body())


def test_without_auto_migrate_an_old_schema_says_to_run_migrate(postgres_url: str) -> None:
    async def body() -> None:
        store = PostgresStore(postgres_url + "&migrate=false")
        with pytest.raises(SchemaVersionError, match="run `sagakit migrate"):
            await store.open()
        await PostgresStore(postgres_url).migrate()
        async with opened(postgres_url + "&migrate=false") as ready:
            assert await ready.get_run("r1") is None

    asyncio.run(body())


def test_a_schema_newer_than_this_sagakit_is_refused(postgres_url: str) -> None:
    asyncio.run(PostgresStore(postgres_url).migrate())
    sql(postgres_url, f"UPDATE {schema_of(postgres_url)}.schema_version SET version = 99")

    async def body() -> None:
        with pytest.raises(SchemaVersionError, match="version 99, newer than this sagakit"):
            await PostgresStore(postgres_url).open()

    asyncio.run(body())


# -- writing ---------------------------------------------------------------------


def test_nan_is_refused_with_a_clear_error_and_nothing_is_lost(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            with pytest.raises(StateError, match="NaN or Infinity"):
                await store.commit(change("r1", state={"price": float("nan")}))
            await store.commit(change("r1", events=steps("r1", 2)))
            assert await seqs(store, "r1") == [1, 2, 3]

    asyncio.run(body())


def test_concurrent_commits_share_transactions(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as store:
            runs = [f"r{i}" for i in range(200)]
            await asyncio.gather(*(new_run(store, run_id) for run_id in runs))
            before = store.flushes
            await asyncio.gather(
                *(store.commit(change(run_id, events=steps(run_id, 2))) for run_id in runs)
            )
            assert store.flushes - before < 20
            for run_id in ("r0", "r199"):
                assert await seqs(store, run_id) == [1, 2, 3]

    asyncio.run(body())


def test_a_commit_retried_after_a_lost_acknowledgement_writes_nothing_twice(
    postgres_url: str,
) -> None:
    # The connection can drop after the server committed but before the
    # client heard so; the driver then sends the same commit again.
    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            commit = change("r1", events=steps("r1", 2), state={"n": 2})
            await store.commit(commit)
            await store.commit(commit)
            assert await seqs(store, "r1") == [1, 2, 3]
            await store.commit(change("r1", events=steps("r1", 4, 1)))
            assert await seqs(store, "r1") == [1, 2, 3, 4]
            with pytest.raises(StoreError, match="do not follow the last recorded event 4"):
                await store.commit(change("r1", events=steps("r1", 4, 2)))

    asyncio.run(body())


def test_terminated_backends_fail_one_call_and_the_next_reconnects(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(named(postgres_url)) as store:
            await new_run(store, "r1")
            assert terminate_store_backends(postgres_url) >= 1
            # The pool checks a connection before lending it, so the dead one
            # is replaced; at worst one call fails, and nothing recorded is lost.
            for attempt in range(3):
                try:
                    await store.commit(change("r1", events=steps("r1", 2)))
                    break
                except StoreError:
                    assert attempt == 0
            assert await seqs(store, "r1") == [1, 2, 3]

    asyncio.run(body())


def test_a_connection_just_handed_back_is_lent_without_a_round_trip(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg's check is an empty query: a round trip more for every batch.
    checks: list[object] = []
    check = AsyncConnectionPool.check_connection

    async def counted(conn: Any) -> None:
        checks.append(conn)
        await check(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))

    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            checks.clear()
            for _ in range(5):
                assert await store.get_run("r1") is not None
            assert checks == []
            # Handed back longer ago than RECENT: checked by a round trip again.
            monkeypatch.setattr(pg_connection, "RECENT", 0.0)
            assert await store.get_run("r1") is not None
            assert len(checks) == 1

    asyncio.run(body())


def test_a_connection_the_server_ended_is_checked_and_replaced(postgres_url: str) -> None:
    # Just used, but its socket holds the server's goodbye: checked, replaced,
    # and the call succeeds (no call fails, unlike a connection lost mid-call).
    async def body() -> None:
        async with opened(named(postgres_url)) as store:
            await new_run(store, "r1")
            assert terminate_store_backends(postgres_url) >= 1
            name = f"sagakit-test-{schema_of(postgres_url)}"
            deadline = time.monotonic() + 10
            while sql(
                postgres_url, f"SELECT 1 FROM pg_stat_activity WHERE application_name = '{name}'"
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            await store.commit(change("r1", events=steps("r1", 2)))
            assert await seqs(store, "r1") == [1, 2, 3]

    asyncio.run(body())


# -- claiming and waking ------------------------------------------------------------------


def unowned(run_id: str) -> Any:
    return record(run_id, owner=None, lease_epoch=0, lease_until=None)


def test_workers_claiming_at_once_take_different_runs(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as setup:
            for i in range(60):
                started = Event(f"r{i}", 1, EventKind.RUN_STARTED, T0, data={})
                await setup.create_run(unowned(f"r{i}"), [started])
        stores = [PostgresStore(postgres_url) for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            claims = await asyncio.gather(
                *(
                    s.claim_due(owner=f"w{i}", now=T0 + 1, lease_until=T0 + 30, limit=25)
                    for i, s in enumerate(stores)
                )
            )
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        ids = [r.id for claim in claims for r in claim]
        assert len(ids) == len(set(ids)) == 60
        assert all(r.lease_epoch == 1 for claim in claims for r in claim)

    asyncio.run(body())


def test_an_idle_worker_wakes_when_a_run_is_started(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as worker, opened(postgres_url) as client:
            await worker.wait_for_work(0.01)  # LISTEN is in place from here on
            waiting = asyncio.ensure_future(worker.wait_for_work(30))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            began = time.monotonic()
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={})
            await client.create_run(unowned("r1"), [started])
            await asyncio.wait_for(waiting, 5)
            assert time.monotonic() - began < 2

    asyncio.run(body())


def test_handing_a_run_back_wakes_idle_workers(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as worker, opened(postgres_url) as owner:
            await new_run(owner, "r1")
            await worker.wait_for_work(0.01)
            waiting = asyncio.ensure_future(worker.wait_for_work(30))
            await asyncio.sleep(0.1)
            await owner.commit(change("r1", release=True))
            await asyncio.wait_for(waiting, 5)
            # A settled run or a parked timer wakes nobody.
            await new_run(owner, "r2")
            waiting = asyncio.ensure_future(worker.wait_for_work(0.5))
            await owner.commit(change("r2", status=RunStatus.COMPLETED, release=True))
            began = time.monotonic()
            await waiting
            assert time.monotonic() - began > 0.3

    asyncio.run(body())


def test_waiting_survives_a_terminated_listener(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(named(postgres_url)) as worker, opened(postgres_url) as client:
            await worker.wait_for_work(0.01)
            terminate_store_backends(postgres_url)
            began = time.monotonic()
            await worker.wait_for_work(0.3)  # polls this time: no error, no hang
            assert time.monotonic() - began < 5
            await worker.wait_for_work(0.01)  # listens again
            waiting = asyncio.ensure_future(worker.wait_for_work(30))
            await asyncio.sleep(0.1)
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={})
            await client.create_run(unowned("r1"), [started])
            await asyncio.wait_for(waiting, 5)
            assert await worker.get_run("r1") is not None

    asyncio.run(body())


def test_leases_of_another_owner_are_not_renewed(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            await new_run(store, "r2")
            lost = await store.renew({"r1": A, "r2": Lease(A.owner, 7)}, lease_until=T0 + 90)
            assert lost == {"r2"}
            r1 = await store.get_run("r1")
            assert r1 is not None
            assert r1.lease_until == T0 + 90

    asyncio.run(body())


# -- mail, the due index and local transactions ---------------------------------------


def test_a_version_1_schema_is_migrated_and_its_runs_keep_working(postgres_url: str) -> None:
    # A database written by the sagakit before mail: the schema as 0001 left it,
    # holding a settled run and an active one.
    schema = schema_of(postgres_url)
    first = dict(migrations("postgresql"))[1].replace("{schema}", schema)
    sql(
        postgres_url,
        f"CREATE SCHEMA {schema}; "
        f"CREATE TABLE {schema}.schema_version (id integer PRIMARY KEY CHECK (id = 1), "
        f"version integer NOT NULL); INSERT INTO {schema}.schema_version VALUES (1, 1); "
        + first
        + f"; INSERT INTO {schema}.runs (id, saga, version, status, state, created_at, "
        f"updated_at, last_seq) VALUES "
        f"('old', 'order', '1', 'needs_attention', '{{}}', {T0}, {T0}, 1), "
        f"('busy', 'order', '1', 'running', '{{}}', {T0}, {T0}, 1); "
        f"INSERT INTO {schema}.events (run_id, seq, kind, at, data) VALUES "
        f"('old', 1, 'run_started', {T0}, '{{}}'), ('busy', 1, 'run_started', {T0}, '{{}}')",
    )

    async def body() -> None:
        assert await PostgresStore(postgres_url).migrate() == (1, LATEST)
        async with opened(postgres_url) as store:
            old = await store.get_run("old")
            assert old is not None
            assert (old.status, old.mail, old.last_seq) == (RunStatus.NEEDS_ATTENTION, 0, 1)
            # Only the active run is due, until the settled one gets mail.
            claimed = await store.claim_due(owner="w", now=T0 + 1, lease_until=T0 + 9, limit=9)
            assert [r.id for r in claimed] == ["busy"]
            posted = await store.post("old", "cancel", {"reason": "stop"}, at=T0 + 1)
            assert posted is not None
            claimed = await store.claim_due(owner="w", now=T0 + 2, lease_until=T0 + 9, limit=9)
            assert [(r.id, r.mail, r.lease_epoch) for r in claimed] == [("old", 1, 1)]
            done = Event("old", 2, EventKind.RUN_FINISHED, T0 + 3, data={})
            read = change(
                "old", Lease("w", 1), (done,), status=RunStatus.CANCELLED, mail_read=(posted.id,)
            )
            assert await store.commit(read) is False
            assert await seqs(store, "old") == [1, 2]

    asyncio.run(body())
    index = sql(
        postgres_url,
        f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' AND indexname = 'runs_due'",
    )
    assert "mail > 0" in index[0][0]


def test_posting_mail_wakes_an_idle_worker(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as worker, opened(postgres_url) as client:
            await new_run(client, "r1")  # owned: starting it woke nobody
            await worker.wait_for_work(0.01)  # LISTEN is in place from here on
            waiting = asyncio.ensure_future(worker.wait_for_work(30))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            began = time.monotonic()
            assert await client.post("r1", "cancel", {"reason": "stop"}, at=T0) is not None
            await asyncio.wait_for(waiting, 5)
            assert time.monotonic() - began < 2

    asyncio.run(body())


def test_handing_back_a_settled_run_with_mail_wakes_idle_workers(postgres_url: str) -> None:
    # Mail that came while the run was owned woke workers for nothing (they
    # could not claim it); when the owner lets go of it, it is due at once.
    async def body() -> None:
        async with opened(postgres_url) as worker, opened(postgres_url) as owner:
            await new_run(owner, "r1")
            await worker.wait_for_work(0.01)
            assert await owner.post("r1", "signal", {"name": "go"}, at=T0) is not None
            await worker.wait_for_work(5)  # the post's own notification
            waiting = asyncio.ensure_future(worker.wait_for_work(30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            paused = change("r1", status=RunStatus.PAUSED, release=True)
            assert await owner.commit(paused) is True
            await asyncio.wait_for(waiting, 5)

    asyncio.run(body())


def test_claim_due_walks_the_partial_index_past_settled_runs(postgres_url: str) -> None:
    schema = schema_of(postgres_url)

    async def body() -> None:
        async with opened(postgres_url) as store:
            # Settled runs dwarf the due ones, as in a database used for a year.
            sql(
                postgres_url,
                f"INSERT INTO {schema}.runs (id, saga, version, status, state, created_at, "
                f"updated_at) SELECT 'done' || i, 'order', '1', 'completed', '{{}}', {T0}, "
                f"{T0} FROM generate_series(1, 20000) AS i; "
                f"INSERT INTO {schema}.runs (id, saga, version, status, state, created_at, "
                f"updated_at, wake_at, mail) VALUES "
                f"('active', 'order', '1', 'pending', '{{}}', {T0 + 3}, {T0}, NULL, 0), "
                f"('timer', 'order', '1', 'paused', '{{}}', {T0}, {T0}, {T0 + 1}, 0), "
                f"('later', 'order', '1', 'paused', '{{}}', {T0}, {T0}, {T0 + 99}, 0), "
                f"('mailed', 'order', '1', 'needs_attention', '{{}}', {T0 + 2}, {T0}, NULL, 1); "
                f"ANALYZE {schema}.runs",
            )
            query = load_queries("postgresql")["claim_due"].replace("{schema}", schema)
            params = {
                "owner": "w",
                "now": T0 + 10,
                "lease_until": T0 + 60,
                "db_clock": True,
                "limit": 10,
                "any_saga": True,
                "names": [],
                "versions": [],
            }
            with psycopg.connect(parse_url(postgres_url)[0]) as conn:
                plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}", params))
            assert "runs_due" in plan, plan
            assert "Seq Scan" not in plan, plan
            claimed = await store.claim_due(owner="w", now=T0 + 10, lease_until=T0 + 60, limit=10)
            assert [r.id for r in claimed] == ["timer", "mailed", "active"]

    asyncio.run(body())


def test_a_lost_ack_retry_with_mail_read_deletes_and_lowers_once(postgres_url: str) -> None:
    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            mails = [await store.post("r1", "signal", {"n": n}, at=T0) for n in range(3)]
            first, second, third = (m.id for m in mails if m is not None)
            read = change("r1", events=steps("r1", 2, 1), mail_read=(first, second))
            assert await store.commit(read) is True
            # The same commit again (its acknowledgement lost): recognised as
            # applied, it deletes nothing and lowers nothing, and says mail waits.
            assert await store.commit(read) is True
            assert [m.id for m in await store.mail("r1")] == [third]
            run = await store.get_run("r1")
            assert run is not None
            assert (run.mail, run.last_seq) == (1, 2)
            # A commit without events is written again; its mail is gone already.
            again = change("r1", mail_read=(first, third))
            assert await store.commit(again) is False
            assert await store.commit(again) is False
            run = await store.get_run("r1")
            assert run is not None
            assert run.mail == 0
            assert await store.mail("r1") == []

    asyncio.run(body())


def user_table() -> str:
    return f"orgs_{uuid.uuid4().hex[:12]}"


def test_a_local_transaction_whose_backend_dies_writes_nothing(postgres_url: str) -> None:
    table = user_table()

    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")

            def step() -> None:
                tx = store.local_transaction()
                try:
                    assert isinstance(tx, PostgresLocalTransaction)
                    tx.connection.execute(f"CREATE TABLE {table} (name text NOT NULL)")
                    tx.connection.execute(f"INSERT INTO {table} VALUES ('acme')")
                    pid = tx.connection.info.backend_pid
                    sql(postgres_url, f"SELECT pg_terminate_backend({pid})")
                    with pytest.raises(StoreError, match="could not commit run 'r1'"):
                        tx.commit(change("r1", events=steps("r1", 2, 1)))
                finally:
                    tx.close()

            await asyncio.to_thread(step)
            assert await seqs(store, "r1") == [1]
            assert sql(postgres_url, f"SELECT to_regclass('public.{table}')") == [(None,)]

            # The dead connection was not lent again: the next step commits.
            def next_step() -> bool:
                tx = store.local_transaction()
                try:
                    tx.connection.execute(f"CREATE TABLE {table} (name text NOT NULL)")
                    return tx.commit(change("r1", events=steps("r1", 2, 1)))
                finally:
                    tx.close()

            assert await asyncio.to_thread(next_step) is False
            assert await seqs(store, "r1") == [1, 2]

    try:
        asyncio.run(body())
    finally:
        sql(postgres_url, f"DROP TABLE IF EXISTS public.{table}")


def test_local_transactions_see_the_users_tables_and_leave_no_session_behind(
    postgres_url: str,
) -> None:
    table = user_table()
    sql(postgres_url, f"CREATE TABLE public.{table} (name text NOT NULL)")

    def step(tx: LocalTransaction) -> tuple[int, str]:
        # Unqualified names resolve as in any session of this database user.
        tx.connection.execute(f"INSERT INTO {table} VALUES ('acme')")
        pid = tx.connection.info.backend_pid
        path = tx.connection.execute("SHOW search_path").fetchone()[0]
        tx.connection.execute("SET search_path = nowhere")  # must not leak into the next step
        return pid, path

    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            default = sql(postgres_url, "SHOW search_path")[0][0]
            for seq in (2, 3):
                tx = store.local_transaction()
                try:
                    _, path = await asyncio.to_thread(step, tx)
                    assert path == default
                    committed = change("r1", events=steps("r1", seq, 1))
                    assert await asyncio.to_thread(tx.commit, committed) is False
                finally:
                    await asyncio.to_thread(tx.close)
            with pytest.raises(StoreError, match="already ended"):
                tx.commit(change("r1", events=steps("r1", 4, 1)))

    try:
        asyncio.run(body())
        assert sql(postgres_url, f"SELECT count(*) FROM public.{table}") == [(2,)]
    finally:
        sql(postgres_url, f"DROP TABLE IF EXISTS public.{table}")


def test_a_steps_own_transaction_blocks_are_savepoints_and_its_own_commit_is_refused(
    postgres_url: str,
) -> None:
    table = user_table()
    sql(postgres_url, f"CREATE TABLE public.{table} (name text NOT NULL)")

    def nested_then_rolled_back(store: PostgresStore) -> None:
        tx = store.local_transaction()
        try:
            # A transaction block in the step is a savepoint of the local
            # transaction: it does not commit on its own.
            with tx.connection.transaction():
                tx.connection.execute(f"INSERT INTO {table} VALUES ('nested')")
            tx.rollback()
        finally:
            tx.close()

    def commits_itself(store: PostgresStore) -> None:
        tx = store.local_transaction()
        try:
            tx.connection.execute(f"INSERT INTO {table} VALUES ('early')")
            tx.connection.commit()
            with pytest.raises(StoreError, match="must not commit or roll back"):
                tx.commit(change("r1", events=steps("r1", 2, 1)))
        finally:
            tx.close()

    async def body() -> None:
        async with opened(postgres_url) as store:
            await new_run(store, "r1")
            await asyncio.to_thread(nested_then_rolled_back, store)
            assert sql(postgres_url, f"SELECT name FROM public.{table}") == []
            await asyncio.to_thread(commits_itself, store)
            # The step's record was not committed apart from the step's writes.
            assert await seqs(store, "r1") == [1]

    try:
        asyncio.run(body())
    finally:
        sql(postgres_url, f"DROP TABLE IF EXISTS public.{table}")


def test_postgresql_writes_a_big_state_by_the_keys_each_commit_sets(postgres_url: str) -> None:
    """The run's row keeps its state as it was; each commit adds the key it set."""
    big = {f"k{i:02d}": "v" * 500 for i in range(50)}  # some 26 KB
    base, options = parse_url(postgres_url)
    schema = options["schema"]

    async def body() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": big})
            await store.create_run(record("r1", state=big), [started])
            state: dict[str, Any] = big
            for seq in range(2, 122):
                state = {**state, f"k{seq % 50:02d}": f"{seq}:" + "w" * 500}
                await store.commit(change("r1", events=steps("r1", seq, 1), state=state))
                if seq == 20:
                    async with await psycopg.AsyncConnection.connect(base) as c:
                        cur = await c.execute(
                            f"SELECT r.state = %s::jsonb, r.state_changes, "
                            f"(SELECT array_agg(seq ORDER BY seq) FROM {schema}.state_changes) "
                            f"FROM {schema}.runs AS r WHERE r.id = 'r1'",
                            (json.dumps(big),),
                        )
                        assert await cur.fetchone() == (True, 1, list(range(2, 21)))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == state
            async with await psycopg.AsyncConnection.connect(base) as c:
                cur = await c.execute(f"SELECT count(*) FROM {schema}.state_changes")
                row = await cur.fetchone()
                assert row is not None
                # Written whole again once the changes outweighed the state.
                assert 1 <= row[0] < 60
        finally:
            await store.close()

    asyncio.run(body())


def test_a_socket_numbered_past_1024_is_looked_at() -> None:
    # The look before lending a connection: select() refuses a descriptor
    # numbered 1024 or more, which a process with many files open reaches.
    import os
    import resource
    import socket

    from sagakit.store.postgresql.connection import _readable

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"descriptors limited to {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    ours, theirs = socket.socketpair()
    high = os.dup2(ours.fileno(), 2000)
    try:
        assert not _readable(high)
        theirs.send(b"x")
        assert _readable(high)
        ours.recv(1)
        assert not _readable(high)
        theirs.close()
        assert _readable(high)  # the end of the stream
    finally:
        os.close(high)
        ours.close()
        theirs.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

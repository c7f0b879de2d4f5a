"""PostgreSQL-only store behaviour: URLs, schemas and migrations, group commit,
lost connections, SKIP LOCKED claims and LISTEN/NOTIFY.

The shared contract runs on PostgreSQL through ``store_url``; these tests
cover what only this backend has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from tests.contract.test_store_contract import T0, A, change, new_run, record, seqs, steps

from sagakit.errors import SchemaVersionError, StateError, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import Lease, open_store
from sagakit.store.postgresql import PostgresStore, parse_url
from sagakit.store.sql import migrations

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
    assert [t[0] for t in tables] == ["events", "runs", "schema_version"]


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

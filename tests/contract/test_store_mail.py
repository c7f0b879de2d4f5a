"""The store contract for mail, timers of settled runs, reservations and local
transactions, run against every store (see ``test_store_contract.py``).

Local-transaction tests skip the memory store, which has no database to share.
Their SQL has no parameters and uses only ``connection.execute``, which both
``sqlite3`` and ``psycopg`` connections have, so they run unchanged on SQLite
and PostgreSQL. SQLite-only tests (the schema migration) are at the end.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sagakit.errors import LeaseLost, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import (
    FINISHED_STATUSES,
    Lease,
    LocalTransaction,
    Mail,
    Reservation,
    RunRecord,
    Store,
)
from sagakit.store.sql import migrations

from .test_store_contract import T0, A, change, contract, new_run, opened, seqs

FREE: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
B = Lease("worker-b", 2)  # the lease a claim by worker-b takes from A's run


async def claim_all(store: Store, now: float = T0 + 10, **options: Any) -> list[RunRecord]:
    """Claim every due run, for good: the leases outlive every ``now`` of these tests."""
    return await store.claim_due(owner="w", now=now, lease_until=T0 + 1e6, limit=100, **options)


async def due_ids(store: Store, now: float = T0 + 10, **options: Any) -> set[str]:
    return {run.id for run in await claim_all(store, now, **options)}


async def mail_count(store: Store, run_id: str) -> int:
    run = await store.get_run(run_id)
    assert run is not None
    return run.mail


# -- mail ---------------------------------------------------------------------------


@contract
async def test_post_to_a_missing_run_returns_none(store: Store) -> None:
    assert await store.post("ghost", "cancel", {"reason": "x"}, at=T0) is None
    assert await store.mail("ghost") == []


@contract
async def test_post_stores_mail_oldest_first_and_counts_it(store: Store) -> None:
    await new_run(store, "r1")
    await new_run(store, "r2")
    payload = {"name": "approve", "payload": {"by": "Zoë 🚀", "n": [1, 2.5, None]}}
    first = await store.post("r1", "cancel", {"reason": "stop", "force": False}, at=T0 + 1)
    other = await store.post("r2", "signal", {"name": "x"}, at=T0 + 2)
    second = await store.post("r1", "signal", payload, at=T0 + 3)
    assert first is not None
    assert other is not None
    assert second is not None
    assert first.id < other.id < second.id
    assert first == Mail(first.id, "r1", "cancel", {"reason": "stop", "force": False}, T0 + 1)
    assert second == Mail(second.id, "r1", "signal", payload, T0 + 3)
    assert await store.mail("r1") == [first, second]
    assert await store.mail("r2") == [other]
    assert (await mail_count(store, "r1"), await mail_count(store, "r2")) == (2, 1)
    run = await store.get_run("r1")
    assert run is not None
    assert run.owner == A.owner  # posting needs no lease and takes none


@contract
async def test_mail_makes_a_settled_unowned_run_due(store: Store) -> None:
    await new_run(store, "done", status=RunStatus.COMPLETED, **FREE)
    await new_run(store, "held", status=RunStatus.COMPLETED)  # A's lease is live
    assert await due_ids(store) == set()
    await store.post("done", "cancel", {"reason": "late"}, at=T0)
    await store.post("held", "cancel", {"reason": "late"}, at=T0)
    claimed = await claim_all(store)
    assert [(r.id, r.status, r.mail, r.owner) for r in claimed] == [
        ("done", RunStatus.COMPLETED, 1, "w")
    ]
    assert claimed[0] == await store.get_run("done")


@contract
async def test_commit_with_mail_read_deletes_exactly_that_mail(store: Store) -> None:
    await new_run(store, "r1")
    await new_run(store, "r2")
    m1, m2, m3 = [await store.post("r1", "signal", {"n": n}, at=T0 + n) for n in (1, 2, 3)]
    theirs = await store.post("r2", "signal", {"n": 9}, at=T0)
    assert m1 is not None
    assert m2 is not None
    assert m3 is not None
    assert theirs is not None
    # Without mail_read the mail stays, and the commit says it waits.
    assert await store.commit(change("r1")) is True
    assert await mail_count(store, "r1") == 3
    read = (m1.id, m3.id)
    assert await store.commit(change("r1", events=steps_of("r1", 2), mail_read=read)) is True
    assert await store.mail("r1") == [m2]
    assert await store.mail("r2") == [theirs]
    assert (await mail_count(store, "r1"), await mail_count(store, "r2")) == (1, 1)
    # Reading m2 empties the box; naming m1 again (already read) lowers nothing.
    assert await store.commit(change("r1", mail_read=(m2.id, m1.id))) is False
    assert await store.mail("r1") == []
    assert await mail_count(store, "r1") == 0
    assert await seqs(store, "r1") == [1, 2]


@contract
async def test_mail_posted_while_owned_makes_the_owners_next_commit_say_so(
    store: Store,
) -> None:
    await new_run(store, "r1")
    assert await store.commit(change("r1")) is False
    posted = await store.post("r1", "cancel", {"reason": "operator"}, at=T0 + 2)
    assert posted is not None
    assert await due_ids(store) == set()  # A still holds the lease
    assert await store.commit(change("r1")) is True
    assert await store.commit(change("r1", mail_read=(posted.id,), release=True)) is False
    assert await due_ids(store) == {"r1"}  # released and active: due without mail


@contract
async def test_a_fenced_out_commit_reads_no_mail(store: Store) -> None:
    await new_run(store, "r1")
    posted = await store.post("r1", "cancel", {}, at=T0)
    assert posted is not None
    taken = await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
    assert taken is not None
    assert taken.mail == 1
    with pytest.raises(LeaseLost):
        await store.commit(change("r1", mail_read=(posted.id,)))
    assert await store.mail("r1") == [posted]
    assert await store.commit(change("r1", B, mail_read=(posted.id,))) is False


# -- what is due --------------------------------------------------------------------


@contract
async def test_a_timer_makes_a_run_due_whatever_its_status(store: Store) -> None:
    await new_run(store, "paused-past", status=RunStatus.PAUSED, wake_at=T0 + 5, **FREE)
    await new_run(store, "paused-future", status=RunStatus.PAUSED, wake_at=T0 + 50, **FREE)
    await new_run(store, "paused-no-timer", status=RunStatus.PAUSED, **FREE)
    await new_run(store, "attention-past", status=RunStatus.NEEDS_ATTENTION, wake_at=T0, **FREE)
    await new_run(store, "running-future", status=RunStatus.RUNNING, wake_at=T0 + 50, **FREE)
    await new_run(store, "running-now", status=RunStatus.RUNNING, wake_at=T0 + 10, **FREE)
    claimed = await claim_all(store, T0 + 10)
    # Oldest timer first.
    assert [r.id for r in claimed] == ["attention-past", "paused-past", "running-now"]
    assert all(r.wake_at is None for r in claimed)  # claiming clears the timer
    assert await due_ids(store, T0 + 49) == set()
    assert await due_ids(store, T0 + 50) == {"paused-future", "running-future"}
    assert await due_ids(store, T0 + 10_000) == set()  # paused-no-timer never is


@contract
async def test_mail_makes_a_run_due_before_its_timer(store: Store) -> None:
    await new_run(store, "sleeping", status=RunStatus.RUNNING, wake_at=T0 + 500, **FREE)
    await new_run(store, "paused", status=RunStatus.PAUSED, **FREE)
    assert await due_ids(store) == set()
    await store.post("sleeping", "cancel", {}, at=T0)
    await store.post("paused", "signal", {"name": "resume"}, at=T0)
    assert await due_ids(store) == {"sleeping", "paused"}


@contract
async def test_claim_due_saga_filter_applies_to_runs_with_mail(store: Store) -> None:
    for run_id, saga in (("o1", "order"), ("t1", "trip")):
        await new_run(store, run_id, saga=saga, status=RunStatus.COMPLETED, **FREE)
        await store.post(run_id, "cancel", {}, at=T0)
    assert await due_ids(store, sagas=[]) == set()
    assert await due_ids(store, sagas=[("trip", "1"), ("order", "2")]) == {"t1"}
    assert await due_ids(store, sagas=None) == {"o1"}


# -- reservations -------------------------------------------------------------------


@contract
async def test_reserve_takes_a_free_name_and_reports_a_live_holder(store: Store) -> None:
    taken = await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
    assert taken == Reservation("room-1", "r1", T0 + 60)
    refused = await store.reserve("room-1", run_id="r2", now=T0 + 59, expires_at=T0 + 120)
    assert refused == Reservation("room-1", "r1", T0 + 60)
    assert await store.reservations() == [taken]


@contract
async def test_reserve_takes_over_an_expired_reservation(store: Store) -> None:
    await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
    # Expired means expires_at <= now: the boundary itself is free.
    took = await store.reserve("room-1", run_id="r2", now=T0 + 60, expires_at=T0 + 90)
    assert took == Reservation("room-1", "r2", T0 + 90)
    assert await store.reservations(run_id="r1") == []


@contract
async def test_reserve_by_the_holder_moves_its_expiry(store: Store) -> None:
    await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
    later = await store.reserve("room-1", run_id="r1", now=T0 + 10, expires_at=T0 + 200)
    assert later == Reservation("room-1", "r1", T0 + 200)
    sooner = await store.reserve("room-1", run_id="r1", now=T0 + 20, expires_at=T0 + 30)
    assert sooner == Reservation("room-1", "r1", T0 + 30)  # moved, even backwards
    assert await store.reservations() == [sooner]


def test_reserve_racing_from_two_stores_has_exactly_one_winner(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url) as a, opened(store_url) as b:
            stores = [a, b]
            results = await asyncio.gather(
                *(
                    stores[i % 2].reserve("seat", run_id=f"r{i}", now=T0, expires_at=T0 + 60)
                    for i in range(20)
                )
            )
            winners = [i for i, r in enumerate(results) if r.run_id == f"r{i}"]
            assert len(winners) == 1
            held = Reservation("seat", f"r{winners[0]}", T0 + 60)
            assert results == [held] * 20
            assert await a.reservations() == [held]
            assert await b.reservations() == [held]

    asyncio.run(body())


@contract
async def test_release_reservations_frees_the_runs_own_names(store: Store) -> None:
    for name, run_id in (("a", "r1"), ("b", "r1"), ("c", "r1"), ("d", "r2")):
        await store.reserve(name, run_id=run_id, now=T0, expires_at=T0 + 60)
    # Only r1's names are freed: "d" is r2's, "zz" is nobody's.
    assert await store.release_reservations("r1", ["a", "d", "zz"]) == 1
    assert [r.name for r in await store.reservations()] == ["b", "c", "d"]
    assert await store.release_reservations("r1", []) == 0
    assert await store.release_reservations("r1") == 2
    assert await store.reservations() == [Reservation("d", "r2", T0 + 60)]
    assert await store.release_reservations("r1") == 0


@contract
async def test_reservations_filter_by_run_and_expiry(store: Store) -> None:
    await store.reserve("c", run_id="r1", now=T0, expires_at=T0 + 10)
    await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 60)
    await store.reserve("b", run_id="r2", now=T0, expires_at=T0 + 60)
    assert [r.name for r in await store.reservations()] == ["a", "b", "c"]  # by name
    assert [r.name for r in await store.reservations(run_id="r1")] == ["a", "c"]
    assert [r.name for r in await store.reservations(now=T0 + 10)] == ["a", "b"]
    assert await store.reservations(run_id="r1", now=T0 + 10) == [Reservation("a", "r1", T0 + 60)]
    assert await store.reservations(run_id="ghost") == []


@contract
async def test_a_commit_to_a_finished_status_frees_the_runs_reservations(store: Store) -> None:
    kept = (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.NEEDS_ATTENTION)
    for status in (*kept, *FINISHED_STATUSES):
        await new_run(store, status.value)
        await store.reserve(f"{status.value}-room", run_id=status.value, now=T0, expires_at=T0 + 60)
    await store.reserve("other", run_id="bystander", now=T0, expires_at=T0 + 60)
    for status in (*kept, *FINISHED_STATUSES):
        await store.commit(change(status.value, status=status))
    names = {r.name for r in await store.reservations()}
    assert names == {f"{s.value}-room" for s in kept} | {"other"}


@contract
async def test_a_fenced_out_finishing_commit_frees_nothing(store: Store) -> None:
    await new_run(store, "r1")
    await store.reserve("room", run_id="r1", now=T0, expires_at=T0 + 60)
    await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
    with pytest.raises(LeaseLost):
        await store.commit(change("r1", status=RunStatus.COMPLETED))
    assert [r.name for r in await store.reservations(run_id="r1")] == ["room"]


# -- local transactions -------------------------------------------------------------


def test_the_memory_store_has_no_local_transactions() -> None:
    async def body() -> None:
        async with opened("memory://") as store:
            with pytest.raises(StoreError, match=r"memory://.*cannot run local transactions"):
                store.local_transaction()

    asyncio.run(body())


def local(test: Callable[[Store, str], Awaitable[None]]) -> Callable[[str], None]:
    """Like ``@contract``, for stores with a database (memory is skipped), and
    with a user table name unique to the test, dropped afterwards."""

    def run(store_url: str) -> None:
        if store_url.startswith("memory:"):
            pytest.skip("the memory store has no local transactions")

        async def body() -> None:
            async with opened(store_url) as store:
                table = f"orgs_{uuid.uuid4().hex[:12]}"
                try:
                    await test(store, table)
                finally:
                    await asyncio.to_thread(drop_table, store, table)

        asyncio.run(body())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@contextmanager
def transaction(store: Store) -> Iterator[LocalTransaction]:
    tx = store.local_transaction()
    try:
        yield tx
    finally:
        tx.close()


def drop_table(store: Store, table: str) -> None:
    with transaction(store) as tx:
        tx.connection.execute(f"DROP TABLE IF EXISTS {table}")
        tx.connection.commit()  # the DB-API commit: cleanup has no step record


def rows_of(store: Store, table: str) -> list[tuple[Any, ...]] | None:
    """The rows of a user table seen from a fresh connection; None if it does not exist."""
    with transaction(store) as tx:
        try:
            cursor = tx.connection.execute(f"SELECT name FROM {table} ORDER BY name")
        except Exception as exc:  # sqlite3 and psycopg share no error base class
            if table not in str(exc):
                raise
            return None
        rows = [tuple(row) for row in cursor.fetchall()]
        tx.rollback()
        return rows


def user_writes(tx: LocalTransaction, table: str) -> None:
    tx.connection.execute(f"CREATE TABLE {table} (name TEXT NOT NULL)")
    tx.connection.execute(f"INSERT INTO {table} (name) VALUES ('acme')")


def succeeded(run_id: str, seq: int = 2) -> tuple[Event, ...]:
    return (Event(run_id, seq, EventKind.STEP_SUCCEEDED, T0 + seq, step="s", attempt=1),)


def steps_of(run_id: str, seq: int) -> tuple[Event, ...]:
    return (Event(run_id, seq, EventKind.STEP_STARTED, T0 + seq, step="s", attempt=1),)


@local
async def test_local_transaction_commits_user_writes_with_the_step_record(
    store: Store, table: str
) -> None:
    await new_run(store, "r1")
    # Opened here, used on a worker thread: the connection may change threads.
    tx = store.local_transaction()

    def step() -> bool:
        try:
            user_writes(tx, table)
            return tx.commit(change("r1", events=succeeded("r1"), state={"org": "acme"}))
        finally:
            tx.close()

    assert await asyncio.to_thread(step) is False
    assert await asyncio.to_thread(rows_of, store, table) == [("acme",)]
    assert await seqs(store, "r1") == [1, 2]
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.state, run.last_seq) == (RunStatus.RUNNING, {"org": "acme"}, 2)


@local
async def test_local_transaction_rollback_undoes_the_user_writes(store: Store, table: str) -> None:
    await new_run(store, "r1")

    def step(finish: str) -> None:
        with transaction(store) as tx:
            user_writes(tx, table)
            if finish == "rollback":
                tx.rollback()
            # else: closed without a commit, which rolls back too

    for finish in ("rollback", "close"):
        await asyncio.to_thread(step, finish)
        assert await asyncio.to_thread(rows_of, store, table) is None
    assert await seqs(store, "r1") == [1]
    # The store writes on as before: no lock was left behind.
    assert await store.commit(change("r1", events=succeeded("r1"))) is False


@local
async def test_local_transaction_fenced_out_is_lease_lost_and_writes_nothing(
    store: Store, table: str
) -> None:
    await new_run(store, "r1")
    await store.reserve("room", run_id="r1", now=T0, expires_at=T0 + 60)
    # Another worker took the run over before the step's transaction began
    # (on SQLite the transaction's write lock holds a later claim off).
    taken = await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
    assert taken is not None
    tx = await asyncio.to_thread(store.local_transaction)
    try:

        def step() -> bool:
            user_writes(tx, table)
            return tx.commit(change("r1", events=succeeded("r1"), status=RunStatus.COMPLETED))

        with pytest.raises(LeaseLost) as caught:
            await asyncio.to_thread(step)
        assert caught.value.run_id == "r1"
    finally:
        await asyncio.to_thread(tx.close)
    assert await asyncio.to_thread(rows_of, store, table) is None
    assert await seqs(store, "r1") == [1]
    assert await store.get_run("r1") == taken
    assert [r.name for r in await store.reservations()] == ["room"]


@local
async def test_local_transaction_database_error_is_a_store_error_and_writes_nothing(
    store: Store, table: str
) -> None:
    before = await new_run(store, "r1")

    def step() -> bool:
        with transaction(store) as tx:
            user_writes(tx, table)
            return tx.commit(change("r1", events=succeeded("r1", 1)))  # seq 1 is taken

    with pytest.raises(StoreError, match="r1"):
        await asyncio.to_thread(step)
    assert await asyncio.to_thread(rows_of, store, table) is None
    assert await store.get_run("r1") == before


@local
async def test_local_transaction_reads_mail_and_frees_reservations(
    store: Store, table: str
) -> None:
    await new_run(store, "r1")
    first = await store.post("r1", "signal", {"name": "a"}, at=T0)
    second = await store.post("r1", "signal", {"name": "b"}, at=T0)
    assert first is not None
    assert second is not None
    await store.reserve("room", run_id="r1", now=T0, expires_at=T0 + 60)

    def step(commit: Any) -> bool:
        with transaction(store) as tx:
            tx.connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (name TEXT NOT NULL)")
            return tx.commit(commit)

    read_one = change("r1", events=succeeded("r1", 2), mail_read=(first.id,))
    assert await asyncio.to_thread(step, read_one) is True
    assert await store.mail("r1") == [second]
    assert await store.reservations() != []  # still running: kept
    finish = change(
        "r1", events=succeeded("r1", 3), status=RunStatus.COMPLETED, mail_read=(second.id,)
    )
    assert await asyncio.to_thread(step, finish) is False
    assert await store.mail("r1") == []
    assert await mail_count(store, "r1") == 0
    assert await store.reservations() == []
    assert await seqs(store, "r1") == [1, 2, 3]


# -- SQLite only ---------------------------------------------------------------------


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

"""The contract for local transactions.

A step's own writes to the store's database are committed in one transaction
with the step's record. A store without a database to share (the memory
store) sets ``local_transactions = False`` on its test class, and these tests
are skipped. Their SQL has no parameters and uses only ``connection.execute``, which both
``sqlite3`` and ``psycopg`` connections have, so they run unchanged on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest

from sagakit.errors import LeaseLost, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import LocalTransaction, Store
from sagakit.store.testing.support import (
    T0,
    B,
    StoreFactory,
    change,
    mail_count,
    new_run,
    opened,
    seqs,
)


def local(
    test: Callable[[LocalTransactionContract, Store, str], Awaitable[None]],
) -> Callable[[LocalTransactionContract, StoreFactory], None]:
    """Like ``@contract``, for stores with a database (others are skipped).

    The test also gets a user table name unique to it, dropped afterwards.
    """

    def run(self: LocalTransactionContract, make_store: StoreFactory) -> None:
        if not self.local_transactions:
            pytest.skip(f"{type(self).__name__}: the store has no local transactions")

        async def body() -> None:
            async with opened(make_store()) as store:
                table = f"orgs_{uuid.uuid4().hex[:12]}"
                try:
                    await test(self, store, table)
                finally:
                    await asyncio.to_thread(drop_table, store, table)

        asyncio.run(body())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@contextmanager
def transaction(store: Store) -> Iterator[LocalTransaction]:
    """A local transaction of the store, closed after the block."""
    tx = store.local_transaction()
    try:
        yield tx
    finally:
        tx.close()


def drop_table(store: Store, table: str) -> None:
    """Drop a user table if it exists."""
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
    """A step's own writes: create a user table and insert one row."""
    tx.connection.execute(f"CREATE TABLE {table} (name TEXT NOT NULL)")
    tx.connection.execute(f"INSERT INTO {table} (name) VALUES ('acme')")


def succeeded(run_id: str, seq: int = 2) -> tuple[Event, ...]:
    """One step-succeeded event of a run, at ``seq``."""
    return (Event(run_id, seq, EventKind.STEP_SUCCEEDED, T0 + seq, step="s", attempt=1),)


class LocalTransactionContract:
    """What every store with a database does with a step's local transaction."""

    local_transactions: ClassVar[bool] = True
    """Whether the store runs local transactions; a test class sets it False
    for a store that has no database to share, and these tests are skipped."""

    @local
    async def test_local_transaction_commits_user_writes_with_the_step_record(
        self, store: Store, table: str
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
    async def test_local_transaction_commits_a_big_state_with_the_user_writes(
        self, store: Store, table: str
    ) -> None:
        # A store may write a big state apart from the rest of a commit (in
        # statements of its own): in the local transaction all the same.
        await new_run(store, "r1")
        tx = store.local_transaction()
        state = {f"k{i:03d}": "v" * 400 for i in range(64)}
        data = {"result": state}
        events = (Event("r1", 2, EventKind.STEP_SUCCEEDED, T0 + 2, "s", 1, data),)

        def step() -> bool:
            try:
                user_writes(tx, table)
                return tx.commit(change("r1", events=events, state=state))
            finally:
                tx.close()

        assert await asyncio.to_thread(step) is False
        assert await asyncio.to_thread(rows_of, store, table) == [("acme",)]
        run = await store.get_run("r1")
        assert run is not None
        assert (run.state, run.last_seq) == (state, 2)
        assert (await store.journal("r1"))[-1].data == data

    @local
    async def test_local_transaction_rollback_undoes_the_user_writes(
        self, store: Store, table: str
    ) -> None:
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
        self, store: Store, table: str
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
        self, store: Store, table: str
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
        self, store: Store, table: str
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

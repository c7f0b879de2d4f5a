"""A PostgreSQL step's local transaction, on a blocking connection.

The connection comes from a small pool of its own; on it the step's own
writes and its journal record commit together.

The pool is created the first time a step asks for a connection: local
transactions run on worker threads, never on the event loop, so they cannot
share the store's asynchronous pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import psycopg
from psycopg_pool import ConnectionPool

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.base import Commit, LocalTransaction
from sagakit.store.postgresql import arrays
from sagakit.store.postgresql.connection import CONNECT_WAIT, SyncConn, store_error
from sagakit.store.postgresql.writes import (
    LOST,
    commit_params,
    commit_write,
    verdict,
    write_big_now,
)


class LocalPool:
    """The pool of blocking connections for local transactions, opened at the first.

    Several worker threads may ask at once: one pool for all of them.

    Args:
        conninfo: The URL libpq reads.
        shown: The URL for messages: never the password.
        schema: The schema holding sagakit's tables (it names the pool).
        pool_size: The most connections the pool opens.
        queries: The store's named queries; a local transaction commits with
            ``commit_runs`` and explains a refusal with ``fence_state``.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        shown: str,
        schema: str,
        pool_size: int,
        queries: dict[str, str],
    ) -> None:
        self._conninfo = conninfo
        self._shown = shown
        self._name = f"sagakit-{schema}-local"
        self._pool_size = pool_size
        self._queries = queries
        self._pool: ConnectionPool[SyncConn] | None = None
        self._lock = threading.Lock()

    def begin(self) -> PostgresLocalTransaction:
        """A connection from the pool, in a transaction already begun.

        See `PostgresStore.local_transaction`.

        Raises:
            StoreError: no connection could be had, or it is broken.
        """
        try:
            pool = self._connections()
            conn = pool.getconn()
        except psycopg.Error as exc:  # PoolTimeout included
            raise store_error(
                self._shown, "open a local transaction on", exc, conninfo=self._conninfo
            ) from exc
        try:
            # Begin now rather than at the step's first statement: a step's
            # `with connection.transaction():` is then a savepoint inside this
            # transaction, not a transaction of its own that commits early,
            # and a step that commits the connection itself can be told.
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            pool.putconn(conn)  # broken: the pool discards it
            raise store_error(
                self._shown, "open a local transaction on", exc, conninfo=self._conninfo
            ) from exc
        return PostgresLocalTransaction(pool, conn, shown=self._shown, queries=self._queries)

    async def close(self) -> None:
        """Close the pool, if it was opened."""
        with self._lock:
            local, self._pool = self._pool, None
        if local is not None:
            # Blocking (it joins the pool's threads): not on the event loop.
            await asyncio.to_thread(local.close)

    def _connections(self) -> ConnectionPool[SyncConn]:
        with self._lock:
            if self._pool is None:
                pool: ConnectionPool[SyncConn] = ConnectionPool(
                    self._conninfo,
                    min_size=0,  # no connection until a step needs one
                    max_size=self._pool_size,
                    open=False,
                    timeout=CONNECT_WAIT,
                    # No prepared statements: each return to the pool runs
                    # DISCARD ALL, which drops them on the server, and psycopg
                    # forgets its own list of them only the first time.
                    kwargs={"autocommit": False, "prepare_threshold": None},
                    check=ConnectionPool.check_connection,
                    configure=arrays.register,
                    reset=_reset_local,
                    name=self._name,
                )
                pool.open()
                self._pool = pool
            return self._pool


class PostgresLocalTransaction(LocalTransaction):
    """A step's transaction on a blocking psycopg connection; see `LocalTransaction`.

    Made by `LocalPool.begin`, for `PostgresStore.local_transaction`. The step
    writes through `connection`; `commit` then writes the step's record with
    the store's own fenced commit statement, in the same transaction, and
    commits both.

    Attributes:
        connection: The psycopg `Connection` (not in autocommit mode), inside
            a transaction already begun. The step must not commit or roll it
            back itself; `connection.transaction()` blocks are savepoints.
    """

    connection: SyncConn

    def __init__(
        self,
        pool: ConnectionPool[SyncConn],
        conn: SyncConn,
        *,
        shown: str,
        queries: dict[str, str],
    ) -> None:
        self.connection = conn
        self._shown = shown
        self._queries = queries
        self._pool: ConnectionPool[SyncConn] | None = pool
        self._ended = False  # committed or rolled back: commit may not run again

    def commit(self, commit: Commit) -> bool:
        """See `LocalTransaction.commit`."""
        if self._pool is None or self._ended:
            raise StoreError(f"run {commit.run_id!r}: the local transaction has already ended")
        write = commit_write(commit)
        queries = self._queries
        conn = self.connection
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # The step committed or rolled back the connection itself: the
            # step's record must not be committed apart from its writes.
            self.rollback()
            raise StoreError(
                f"the local transaction on PostgreSQL database {self._shown} ended "
                f"before run {commit.run_id!r} committed; a step must not commit or roll "
                "back its connection"
            )
        try:
            cur = conn.execute(queries["commit_runs"], commit_params([write]))
            row = cur.fetchone()
            if row is not None:
                write_big_now(conn, queries, write)
                conn.commit()
                self._ended = True
                return bool(row[1])
            cur = conn.execute(queries["fence_state"], ([commit.run_id],))
            found = cur.fetchone()
        except psycopg.Error as exc:
            # Failed before COMMIT: nothing stands. Failed in it: the server
            # may have committed (an ack lost); the driver's retry of the same
            # commit then finds it applied.
            self.rollback()
            raise store_error(self._shown, f"commit run {commit.run_id!r} to", exc) from exc
        # Not written, so the step's writes must not stand either.
        self.rollback()
        outcome = verdict(write, None if found is None else found[1:])
        if outcome is LOST:
            raise LeaseLost(commit.run_id)
        if isinstance(outcome, StoreError):
            raise outcome
        # The events are recorded already. Group commit takes that for the
        # resend of a commit whose acknowledgement was lost; a local
        # transaction cannot be such a resend (the lost one is gone, and this
        # one carries writes of its own), so it is an error, as on SQLite,
        # where the journal's key refuses the seqs. Nothing of it stands.
        first, last = write.events[0][1], write.events[-1][1]
        raise StoreError(
            f"run {commit.run_id!r}: journal events {first}..{last} are already recorded; "
            "the local transaction was rolled back (reload the run)"
        )

    def rollback(self) -> None:
        """See `LocalTransaction.rollback`."""
        self._ended = True
        if self._pool is None:
            return
        # On a broken connection the server has rolled back already.
        with contextlib.suppress(psycopg.Error):
            self.connection.rollback()

    def close(self) -> None:
        """See `LocalTransaction.close`. Safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self._ended = True
        with contextlib.suppress(psycopg.Error):
            self.connection.rollback()
        # The pool discards a broken connection and resets a good one.
        pool.putconn(self.connection)


def _reset_local(conn: SyncConn) -> None:
    # A step may have changed its session (SET, temporary tables, session
    # advisory locks): the next step gets a clean one. DISCARD ALL cannot run
    # inside a transaction, hence autocommit for this one statement.
    conn.autocommit = True
    try:
        conn.execute("DISCARD ALL")
    finally:
        conn.autocommit = False

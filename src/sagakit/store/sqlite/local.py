"""A SQLite step's local transaction: a connection of its own to the store's file.

On it, the step's own writes and its success record commit together.
"""

from __future__ import annotations

import contextlib
import sqlite3

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.base import Commit, LocalTransaction
from sagakit.store.sqlite.connection import SYNCHRONOUS, SQLiteConnection, wal_autocheckpoint
from sagakit.store.sqlite.writes import LOST, encode_commit, write_one


def begin(connection: SQLiteConnection) -> SQLiteLocalTransaction:
    """A new connection to ``connection``'s file, in an immediate transaction.

    See `SQLiteStore.local_transaction`.

    Args:
        connection: The store's connection, whose file, settings and queries
            the local transaction shares (not its ``sqlite3`` connection).

    Raises:
        StoreError: the store is an in-memory database, or the file cannot be opened.
    """
    if connection.path == ":memory:" or connection.path.startswith("file::memory:"):
        raise StoreError(
            f"the store {connection.url} is an in-memory SQLite database, which another "
            "connection cannot share; use a database file for local transactions"
        )
    try:
        conn = connection.connect()
    except sqlite3.Error as exc:
        raise connection.error("open a local transaction on", exc) from exc
    try:
        conn.execute(SYNCHRONOUS[connection.synchronous])
        # As the store's own connection: with SQLite's default, this commit
        # would checkpoint a WAL that the store may let grow four times longer.
        conn.execute(wal_autocheckpoint(connection.synchronous)).fetchall()
        # IMMEDIATE: a deferred transaction that reads first and writes
        # later fails at once in WAL mode if another write landed between.
        # The price is that other writers wait while the step runs, so
        # local-transaction steps should be short database work.
        conn.execute("BEGIN IMMEDIATE")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise connection.error("open a local transaction on", exc) from exc
        raise
    return SQLiteLocalTransaction(conn, connection.queries, connection.path)


class SQLiteLocalTransaction(LocalTransaction):
    """A transaction on a connection of its own to a `SQLiteStore`'s file.

    Made by `SQLiteStore.local_transaction`. The connection has
    ``isolation_level=None`` (sqlite3 issues no BEGIN or COMMIT of its own) and
    may be used from any thread, one at a time.

    Attributes:
        connection: The ``sqlite3.Connection``, inside the open transaction.
    """

    def __init__(self, connection: sqlite3.Connection, queries: dict[str, str], path: str) -> None:
        self.connection: sqlite3.Connection = connection
        self._q = queries
        self._path = path

    def commit(self, commit: Commit) -> bool:
        """See `LocalTransaction.commit`."""
        conn = self.connection
        try:
            if not conn.in_transaction:
                # The step committed or rolled back itself (or SQLite rolled back
                # after an error): the step record must not commit without its writes.
                raise StoreError(
                    f"the local transaction on SQLite database {self._path} ended before "
                    f"run {commit.run_id!r} committed; a step must not COMMIT or ROLLBACK it"
                )
            mail = write_one(conn.cursor(), self._q, encode_commit(commit))
            if mail is LOST:
                raise LeaseLost(commit.run_id)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon()
            raise StoreError(
                f"could not commit run {commit.run_id!r} to SQLite database {self._path}: {exc}"
            ) from exc
        except BaseException:
            # LeaseLost, or a state that is not JSON: the step's writes go too.
            self._abandon()
            raise
        return mail is True

    def _abandon(self) -> None:
        # Roll back after a failure; the failure says more than a failed rollback
        # would, and closing the connection rolls back anyway.
        with contextlib.suppress(sqlite3.Error):
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")

    def rollback(self) -> None:
        """See `LocalTransaction.rollback`. Does nothing if the transaction ended.

        Raises:
            StoreError: the connection is closed or the rollback failed.
        """
        try:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(
                f"could not roll back a local transaction on SQLite database {self._path}: {exc}"
            ) from exc

    def close(self) -> None:
        """See `LocalTransaction.close`. Closing twice is harmless."""
        # sqlite3 rolls back an open transaction when the connection closes.
        self.connection.close()

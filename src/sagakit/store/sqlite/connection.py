"""Opening a SQLite store's file: the SQLite version it needs, the connection,
WAL mode, and the schema's migrations.

Run on the store's thread by `SQLiteStore.open`; several processes may open
(and migrate) a new file at once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Final

from sagakit.errors import SchemaVersionError, StoreError
from sagakit.store import sql

if TYPE_CHECKING:
    from sagakit.store.sqlite.store import SQLiteStore

SYNCHRONOUS: Final = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}
# The TEMP objects `write_batch` needs (see sql/sqlite/queries.sql).
_BATCH_OBJECTS: Final = ("batch_taken_table", "batch_commits_table", "batch_view", "batch_trigger")
# RETURNING, which the writes use, came with SQLite 3.35.
_OLDEST_SQLITE: Final = (3, 35, 0)


def open_file(store: SQLiteStore) -> None:
    """Connect ``store`` to its file, put it in WAL mode and migrate it."""
    if sqlite3.sqlite_version_info < _OLDEST_SQLITE:
        raise StoreError(
            f"cannot open SQLite database {store.path}: sagakit needs SQLite "
            f"{'.'.join(map(str, _OLDEST_SQLITE))} or newer, and this Python's sqlite3 "
            f"module uses {sqlite3.sqlite_version}"
        )
    folder = os.path.dirname(store.path)
    if store.path != ":memory:" and folder and not os.path.isdir(folder):
        raise StoreError(
            f"cannot open SQLite database {store.path}: the folder {folder} does not exist"
        )
    try:
        conn = connect(store)
    except sqlite3.Error as exc:
        raise store._error("open", exc) from exc
    try:
        store._conn = conn
        store._patient = True  # connected with timeout=busy_timeout
        store._q = sql.load_queries("sqlite")
        cur = conn.cursor()
        _enter_wal(cur, store.busy_timeout)
        cur.execute(SYNCHRONOUS[store.synchronous])
        _migrate(cur, store)
        # The batch writer's view and scratch tables: TEMP, this connection's own.
        for name in _BATCH_OBJECTS:
            cur.execute(store._q[name])
    except BaseException as exc:
        store._conn = None
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise store._error("open", exc) from exc
        raise


def connect(store: SQLiteStore) -> sqlite3.Connection:
    """A new connection to ``store``'s file, in autocommit mode (the store
    says BEGIN itself), waiting up to busy_timeout for another's lock.

    Not tied to one thread: the event loop may write a lone commit on the
    store's connection, under `_conn_lock` (see
    `sqlite_group_commit._write_here`), and a local transaction's connection
    is used on the thread its step runs on.
    """
    return sqlite3.connect(
        store.path, timeout=store.busy_timeout, isolation_level=None, check_same_thread=False
    )


def _enter_wal(cur: sqlite3.Cursor, busy_timeout: float) -> None:
    # Switching a new file to WAL needs it to itself, and SQLite may answer
    # "database is locked" at once, without waiting, while another process
    # opening the same new file holds it: so wait here, up to busy_timeout.
    give_up = time.monotonic() + busy_timeout
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.01)


def _schema_version(cur: sqlite3.Cursor, q: dict[str, str]) -> int:
    if not cur.execute(q["schema_version_exists"]).fetchall()[0][0]:
        return 0
    rows = cur.execute(q["get_schema_version"]).fetchall()
    return int(rows[0][0]) if rows else 0


def _migrate(cur: sqlite3.Cursor, store: SQLiteStore) -> None:
    steps = sql.migrations("sqlite")
    latest = steps[-1][0]
    store._versions = (_schema_version(cur, store._q), latest)
    if store._versions[0] == latest:
        return  # the common case: no write lock needed
    store._transaction(cur, _apply_migrations, store, steps, latest)


def _apply_migrations(
    cur: sqlite3.Cursor, store: SQLiteStore, steps: list[tuple[int, str]], latest: int
) -> None:
    # Read again under the write lock: another process may have migrated.
    version = _schema_version(cur, store._q)
    if version > latest:
        raise SchemaVersionError(
            f"database schema version {version} is newer than this sagakit supports "
            f"({latest}); upgrade sagakit to use {store.path}"
        )
    store._versions = (version, latest)
    for number, script in steps:
        if number > version:
            for statement in _statements(script):
                cur.execute(statement)
            cur.execute(store._q["set_schema_version"], (number,))


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover[0]!r}")
    return statements

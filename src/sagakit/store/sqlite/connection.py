"""The SQLite store's connection, the one thread that uses it, and opening the file.

`SQLiteConnection` owns the thread, the connection, the lock and the
busy-timeout switch around it, the named queries and the transaction
helpers; and it opens the file: checks the SQLite version it needs, enters
WAL mode and runs the schema's migrations. Opened for reading only, it
creates and changes nothing: it reads a file that holds a sagakit store of
the current version, and refuses any other with one line (`_probe`).

All SQLite work happens on one thread that owns the connection; coroutines
hand their work to it (`SQLiteConnection.call`). The event loop may borrow
the connection for a lone commit, holding `SQLiteConnection.lock` (see
`sagakit.store.sqlite.group_commit`). Several processes may open (and
migrate) a new file at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from threading import Lock
from typing import Any, Final, TypeVar
from urllib.parse import quote

from sagakit.errors import SchemaVersionError, StoreError
from sagakit.store import sql
from sagakit.store.base import not_open_error
from sagakit.store.sqlite.checkpoints import Checkpoints

_T = TypeVar("_T")

SYNCHRONOUS: Final = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}
# The TEMP objects `write_batch`, `write_alone`, `write_new_alone` and
# `write_finish_alone` need (see sql/sqlite/queries.sql).
_BATCH_OBJECTS: Final = (
    "batch_taken_table",
    "batch_commits_table",
    "batch_view",
    "batch_trigger",
    "lone_view",
    "lone_trigger",
    "lone_new_view",
    "lone_new_trigger",
    "lone_finish_view",
    "lone_finish_trigger",
    "slots_view",
    "slots_trigger",
    "finish_slots_view",
    "finish_slots_trigger",
    "new_slots_view",
    "new_slots_trigger",
)
# RETURNING, which the writes use, came with SQLite 3.35.
_OLDEST_SQLITE: Final = (3, 35, 0)
AUTOCHECKPOINT: Final = 4000
"""Pages in the WAL past which a commit checkpoints it on ``synchronous=normal``
(SQLite's default, which FULL keeps: 1,000).

A checkpoint copies the WAL's pages into the database file and syncs both
(two fsyncs), in the commit that crossed the mark: a lone commit on the
event loop waits for it. A step's commit writes four to five pages, so at
1,000 a saga run alone paid a checkpoint every 200 commits or so, which on
``synchronous=normal`` were most of its fsyncs (docs/benchmarks.md). Four
times as many pages make checkpoints four times rarer, and each copies
less than four times as much: a page rewritten many times between two
checkpoints (a run's row, the journal's last leaf, an index's) is copied
once. The WAL file grows to some 16 MiB (at 4 KiB a page) and stays so.
On FULL every commit fsyncs anyway, the checkpoints' were one in a hundred,
and a saga alone measured slower with the longer WAL: FULL keeps SQLite's.
On normal, most of each checkpoint is made beforehand on a thread of its
own (`sagakit.store.sqlite.checkpoints`)."""


SQLITES_AUTOCHECKPOINT: Final = 1000
"""SQLite's own mark (``SQLITE_DEFAULT_WAL_AUTOCHECKPOINT``), which FULL keeps."""


def wal_autocheckpoint(synchronous: str) -> str:
    """The PRAGMA that sets a connection's checkpoint mark (`AUTOCHECKPOINT`)."""
    pages = AUTOCHECKPOINT if synchronous == "normal" else SQLITES_AUTOCHECKPOINT
    return f"PRAGMA wal_autocheckpoint = {pages}"


def begin_or_roll_back(cur: sqlite3.Cursor) -> None:
    """BEGIN IMMEDIATE; if it fails, leave no transaction open.

    A BEGIN that fails part way (interrupted, say) can leave the connection
    in a transaction that holds the write lock: every later BEGIN on it would
    then fail ("cannot start a transaction within a transaction"), and every
    other process's writer wait for the lock, until the store closed. So it
    is rolled back before the error is raised. (One that fails busy, as
    usual, leaves none open, and costs no ROLLBACK.)
    """
    try:
        cur.execute("BEGIN IMMEDIATE")
    except BaseException:
        conn = cur.connection
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


class SQLiteConnection:
    """A SQLite file's connection and the one thread that uses it.

    Construction does no I/O; `open` connects, puts the file in WAL mode and
    migrates it. A `SQLiteStore` hands this one object to each of its parts.

    Args:
        url: The store's URL, as messages name it.
        path: The database file.
        synchronous: ``"full"`` or ``"normal"`` (validated by the store).
        busy_timeout: Seconds a write waits for another process's lock.
        read_only: Open for reading only: never create, migrate or write.

    Attributes:
        url: As given.
        path: As given.
        synchronous: As given.
        busy_timeout: As given.
        read_only: As given.
        versions: The schema version found at open, and the current one.
        accepting: Whether it takes new work: open, and not closing. The
            owner clears it when it starts closing, so that new work is
            refused while queued work drains.
        loop: The event loop it was opened on.
        db: The ``sqlite3.Connection``; None until open and after close. Used
            only by whichever thread holds `lock`.
        lock: Held by whichever thread uses `db`: the connection's thread, or
            the event loop writing a lone commit itself.
        patient: Whether `db` waits busy_timeout for another process's lock
            (the connection's thread) or not at all (a lone commit on the
            loop). The setting is switched only when the other side uses the
            connection next, not at every commit: a PRAGMA costs as much as a
            small write.
        queries: The named queries of ``sql/sqlite/queries.sql``, loaded by `open`.
        checkpoints: The WAL's checkpoints off the event loop, which the
            loop's own commits are counted into, on ``synchronous=normal``;
            None on FULL, for ``:memory:`` and when opened to read only.
    """

    def __init__(
        self,
        url: str,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        self.versions = (0, 0)
        self.accepting = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Touched only by the holder of `lock`.
        self.db: sqlite3.Connection | None = None
        self.lock = Lock()
        self.patient = True
        self.queries: dict[str, str] = {}
        self.checkpoints: Checkpoints | None = None
        self.forked_from: int | None = None
        """The process that opened the connection, in a child it forked (`_disown_in_child`)."""
        _MADE.add(self)

    # -- the thread -----------------------------------------------------------------

    async def open(self) -> None:
        """Start the thread, connect and migrate; does nothing if already open.

        Raises:
            StoreError: the file cannot be opened, or SQLite is too old; read
                only, also: it holds no sagakit store.
            SchemaVersionError: the file's schema is newer than this sagakit's;
                read only, also: older.
        """
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagakit-sqlite")
        self.loop = asyncio.get_running_loop()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open_file)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        self.accepting = True

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread.

        Refuses new work at once; work already queued on the thread runs first.
        """
        self.accepting = False
        executor = self._executor
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            self._executor = None
            executor.shutdown(wait=True)

    def _close(self) -> None:
        checkpoints, self.checkpoints = self.checkpoints, None
        if checkpoints is not None:
            # First, so that the store's connection is the file's last: it
            # checkpoints the WAL whole as it closes, as it always did.
            checkpoints.close()
        with self.lock:
            conn, self.db = self.db, None
            if conn is not None:
                conn.close()

    def submit(self, fn: Callable[..., object], *args: Any) -> Future[object]:
        """Queue ``fn(*args)`` on the connection's thread, as it is (no lock taken).

        Raises:
            RuntimeError: the thread is shut down.
        """
        assert self._executor is not None
        return self._executor.submit(fn, *args)

    async def call(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(cursor, *args)`` on the connection's thread (see `guard`).

        Raises:
            StoreError: the connection is not open, or SQLite failed to
                ``action`` (``"read runs from"``) the file.
        """
        if not self.accepting:
            raise self.not_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self.guard, action, fn, *args))

    async def read(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run the read ``fn(cursor, *args)`` here, on the event loop, if nothing else waits there.

        As a lone commit is written (`GroupCommit`): when the loop has no
        other callback ready and the connection is free, the read is done
        at once on the loop's thread, else on the connection's (`call`).
        What a read allocates (SQLite's copy of a big value, its text, what
        is decoded from it) then comes from the memory the loop's thread
        has used and freed, writing the same run's big state: C's allocator
        keeps freed memory by thread, and a read on the connection's thread
        after big writes on the loop's would take as much again.

        A read in WAL mode does not wait for writers; if SQLite answers
        busy all the same, the read is done on the connection's thread,
        which waits for it.

        Raises:
            StoreError: as `call`.
        """
        lock = self.lock
        if self.accepting and loop_idle(self.loop) and lock.acquire(blocking=False):
            try:
                conn = self.db
                if conn is not None:
                    cur = conn.cursor()
                    try:
                        # Never wait here for another process: that would stall the loop.
                        if self.patient:
                            cur.execute("PRAGMA busy_timeout = 0")
                            self.patient = False
                        return fn(cur, *args)
                    except sqlite3.OperationalError:
                        # Busy, say: on the connection's thread, which waits;
                        # not inside a read transaction left open here, whose
                        # old snapshot it would read and keep.
                        self.rollback()
                    except sqlite3.Error as exc:
                        self.rollback()
                        raise self.error(action, exc) from exc
            finally:
                lock.release()
        return await self.call(action, fn, *args)

    def guard(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(cursor, *args)`` holding `lock`, patient for others' locks.

        Raises:
            StoreError: the connection is closed, or SQLite failed (see `error`).
        """
        with self.lock:
            if self.db is None:
                raise StoreError(f"the store {self.url} is closed")
            try:
                cur = self.db.cursor()
                if not self.patient:
                    cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                    self.patient = True
                return fn(cur, *args)
            except sqlite3.Error as exc:
                raise self.error(action, exc) from exc

    def not_open(self) -> StoreError:
        """The error for work asked of a connection that is not open (or is the parent's)."""
        return not_open_error(
            self.url, self.forked_from, "SQLite's connections cannot be shared across a fork"
        )

    def error(self, action: str, exc: sqlite3.Error) -> StoreError:
        """The `StoreError` for SQLite's ``exc`` while trying to ``action`` the file."""
        return StoreError(f"could not {action} SQLite database {self.path}: {exc}")

    def transaction(self, cur: sqlite3.Cursor, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(cur, *args)`` in an immediate transaction; roll back if it raises."""
        # IMMEDIATE takes the write lock up front: a deferred transaction that
        # reads and then writes can fail at once when another process wrote.
        begin_or_roll_back(cur)
        try:
            result = fn(cur, *args)
            cur.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        return result

    def rollback(self) -> None:
        """Roll back the open transaction, if any, keeping quiet if that fails."""
        conn = self.db
        if conn is not None and conn.in_transaction:
            # The original error says more; the connection rolls back on close anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- the file -------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection to the file, waiting up to busy_timeout for another's lock.

        In autocommit mode: the store says BEGIN itself. Not tied to one
        thread: the event loop may write a lone commit on `db`, holding
        `lock`, and a local transaction's connection is used on the thread its
        step runs on.
        """
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _open_file(self) -> None:
        """Connect to the file, put it in WAL mode and migrate it (on the thread)."""
        if sqlite3.sqlite_version_info < _OLDEST_SQLITE:
            raise StoreError(
                f"cannot open SQLite database {self.path}: sagakit needs SQLite "
                f"{'.'.join(map(str, _OLDEST_SQLITE))} or newer, and this Python's sqlite3 "
                f"module uses {sqlite3.sqlite_version}"
            )
        if self.read_only:
            self._open_for_reading()
            return
        folder = os.path.dirname(self.path)
        if self.path != ":memory:" and folder and not os.path.isdir(folder):
            raise StoreError(
                f"cannot open SQLite database {self.path}: the folder {folder} does not exist"
            )
        if self.path != ":memory:":
            _create_private(self.path)
        try:
            conn = self.connect()
        except sqlite3.Error as exc:
            raise self.error("open", exc) from exc
        try:
            self.db = conn
            self.patient = True  # connected with timeout=busy_timeout
            self.queries = sql.load_queries("sqlite")
            cur = conn.cursor()
            _enter_wal(cur, self.busy_timeout)
            cur.execute(SYNCHRONOUS[self.synchronous])
            cur.execute(wal_autocheckpoint(self.synchronous)).fetchall()
            self._migrate(cur)
            # The batch writer's view and scratch tables: TEMP, this connection's own.
            for name in _BATCH_OBJECTS:
                cur.execute(self.queries[name])
            if self.path != ":memory:" and self.synchronous == "normal":
                # Opened by URI, read-write: should the file be gone, or the
                # process's directory change, it never makes an empty one.
                self.checkpoints = Checkpoints(_uri(self.path, "mode=rw"), AUTOCHECKPOINT)
        except BaseException as exc:
            self.db = None
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self.error("open", exc) from exc
            raise

    def _open_for_reading(self) -> None:
        """Connect to a current sagakit store without creating or changing anything.

        The file is first looked at through a read-only connection (`_probe`);
        only a sagakit store of the current version is then opened. A file we
        may write is opened read-write, so that the last connection to close
        takes the -wal and -shm files away as usual, but with query_only set:
        no statement can write through it.
        """
        path = self.path
        if path == ":memory:" or not os.path.isfile(path):
            raise StoreError(f"no sagakit store at {path}: there is no such file")
        self.queries = sql.load_queries("sqlite")
        folder = os.path.dirname(os.path.abspath(path))
        # False on a read-only mount too (access() says EROFS).
        writable = os.access(path, os.W_OK) and os.access(folder, os.W_OK)
        self._probe(writable=writable)
        try:
            if writable:
                conn = sqlite3.connect(
                    _uri(path, "mode=rw"),
                    uri=True,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = self._reader(writable=False)
        except sqlite3.Error as exc:
            raise self._read_error(exc, writable=writable) from exc
        try:
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise self._read_error(exc, writable=writable) from exc
        self.db = conn
        self.patient = True

    def _reader(self, *, writable: bool) -> sqlite3.Connection:
        """A read-only connection that creates no -wal or -shm file.

        A read-only connection to a WAL file makes the -shm file (and an empty
        -wal) when they are missing, and cannot remove them. Without a -wal,
        the whole database is in the file itself: it is read as immutable,
        which touches nothing beside it. So is a file no one may write (not
        ``writable``) beside an empty -wal, a leftover nothing can add to.
        """
        try:
            wal_size: int | None = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal_size = None
        immutable = wal_size is None or (wal_size == 0 and not writable)
        options = "mode=ro&immutable=1" if immutable else "mode=ro"
        return sqlite3.connect(
            _uri(self.path, options),
            uri=True,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )

    def _read_error(self, exc: sqlite3.Error, *, writable: bool) -> StoreError:
        """The error for a file opened to read only, which says so when that is the cause."""
        # SQLite's primary codes for "cannot open" and "read-only": a -wal
        # holding data needs a -shm file, which a read-only folder cannot get.
        if writable or getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (8, 14):
            return self.error("read", exc)
        return StoreError(
            f"could not read SQLite database {self.path}: it is read-only here, and SQLite "
            f"cannot read it so ({exc}); read it as a user who may write it, or from a copy"
        )

    def _probe(self, *, writable: bool) -> None:
        """Check that the file holds a sagakit store of this sagakit's version.

        Raises:
            StoreError: it holds no sagakit store (another application's
                database, an empty file), or it cannot be read.
            SchemaVersionError: its schema is older or newer than this sagakit's.
        """
        latest = sql.migrations("sqlite")[-1][0]
        try:
            conn = self._reader(writable=writable)
        except sqlite3.Error as exc:
            raise self._read_error(exc, writable=writable) from exc
        try:
            cur = conn.cursor()
            tables = {
                row[0]
                for row in cur.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
            version = 0
            if {"schema_version", "runs"} <= tables:
                # Another application may have a schema_version table of its own.
                with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
                    version = _schema_version(cur, self.queries)
        except sqlite3.Error as exc:
            raise self._read_error(exc, writable=writable) from exc
        finally:
            conn.close()
        self.versions = (version, latest)
        if version <= 0:
            what = "it is empty" if not tables else "it has no sagakit tables"
            raise StoreError(
                f"no sagakit store in SQLite database {self.path}: {what} "
                "(opened to read only, so nothing is created; `sagakit migrate` creates a store)"
            )
        if version > latest:
            raise SchemaVersionError(
                f"database schema version {version} is newer than this sagakit supports "
                f"({latest}); upgrade sagakit to use {self.path}"
            )
        if version < latest:
            raise SchemaVersionError(
                f"the sagakit store in {self.path} is at schema version {version}, older "
                f"than this sagakit needs ({latest}); run `sagakit migrate --db URL` to upgrade it"
            )

    def _migrate(self, cur: sqlite3.Cursor) -> None:
        steps = sql.migrations("sqlite")
        latest = steps[-1][0]
        self.versions = (_schema_version(cur, self.queries), latest)
        if self.versions[0] == latest:
            return  # the common case: no write lock needed
        self.transaction(cur, self._apply_migrations, steps, latest)

    def _apply_migrations(
        self, cur: sqlite3.Cursor, steps: list[tuple[int, str]], latest: int
    ) -> None:
        # Read again under the write lock: another process may have migrated.
        version = _schema_version(cur, self.queries)
        if version > latest:
            raise SchemaVersionError(
                f"database schema version {version} is newer than this sagakit supports "
                f"({latest}); upgrade sagakit to use {self.path}"
            )
        self.versions = (version, latest)
        for number, script in steps:
            if number > version:
                for statement in _statements(script):
                    cur.execute(statement)
                cur.execute(self.queries["set_schema_version"], (number,))


def loop_idle(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` has no callback ready to run besides the current one.

    Reads the ready queue of asyncio's own loops; another loop (uvloop) has
    none to read, and is never taken as idle.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


def _create_private(path: str) -> None:
    """Create the database file, if it is missing, readable by its owner only.

    SQLite would create it 0644 (less the umask): anyone on the host could
    read every run's state. Its -wal and -shm files take the database file's
    mode, so they are 0600 too. An existing file's mode is left as it is;
    O_EXCL makes this safe when several processes create the file at once
    (an empty file is an empty database to SQLite).
    """
    if os.path.exists(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first
    except OSError:
        return  # a read-only folder, say: SQLite's own error says what is wrong
    os.close(fd)


def _uri(path: str, options: str) -> str:
    """A ``file:`` URI for ``path`` with ``options``: ``?`` or ``#`` in the name stay literal."""
    return f"file://{quote(os.path.abspath(path))}?{options}"


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


# Every connection made, to be disowned in a forked child (`_disown_in_child`).
_MADE: weakref.WeakSet[SQLiteConnection] = weakref.WeakSet()
# What a forked child inherited of its parent's connections: kept, never
# closed nor collected there (closing would act on the parent's database).
_INHERITED: list[object] = []


def _disown_in_child() -> None:
    """In a child just forked: every open connection is its parent's, not this process's.

    SQLite's connections must not be used across a fork, and the thread each
    one's work goes to was not copied: a close would wait on it for ever.
    The child keeps the inherited objects alive untouched, and each
    connection refuses work with an error that says so; closing it does
    nothing.
    """
    parent = os.getppid()
    for connection in list(_MADE):
        if connection._executor is None and connection.db is None:
            continue  # not open: nothing of the parent's to keep
        _INHERITED.append((connection.db, connection._executor, connection.checkpoints))
        connection.db = None
        connection._executor = None
        connection.checkpoints = None
        connection.accepting = False
        connection.forked_from = parent
        connection.lock = Lock()  # may have been held by a thread that is not here


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_disown_in_child)

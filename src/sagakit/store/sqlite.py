"""The SQLite store: one database file in WAL mode, shared by any number of
processes on one host.

All SQLite work happens on one thread that owns the connection; coroutines
hand their work to it. Commits from concurrent coroutines are batched (group
commit): while one transaction is being written, new commits queue up, and the
next transaction takes them all, so a thousand runs stepping at once cost a
few fsyncs rather than a thousand. A batch is written by one statement that
takes all its writes at once, as JSON, and is a transaction of its own (see
`sagakit.store.sqlite_writes`); a commit refused by fencing is left out, and
the others are written. Should one write of a batch be invalid, the batch is
written again one write at a time, each in its own savepoint, so only that
write fails.

`SQLiteStore.local_transaction` opens a second connection to the same file, on
which a step's own writes and its success record commit together.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
``sqlite:path.db``, with an optional ``?synchronous=normal`` (faster; the last
commits may be lost in a power cut, never corrupted) instead of the default
``full``, and ``?busy_timeout=SECONDS`` (default 5): how long a write waits for
another process's lock before it fails with `StoreError`. SQLite 3.35 or
newer is needed (Python's ``sqlite3.sqlite_version`` tells which one it uses).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl, unquote

from sagakit import jsonutil
from sagakit.errors import LeaseLost, SchemaVersionError, StoreError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.store import sql
from sagakit.store.base import (
    Commit,
    Lease,
    LocalTransaction,
    Mail,
    Reservation,
    RunRecord,
    Store,
)
from sagakit.store.encoding import encode_json
from sagakit.store.sqlite_writes import (
    LOST,
    Write,
    encode_commit,
    encode_create,
    record,
    write_batch,
    write_each,
    write_one,
)

_T = TypeVar("_T")
_Row = tuple[Any, ...]

_SYNCHRONOUS: Final = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}
_BUSY_TIMEOUT: Final = 5.0
# The most commits one group-commit transaction takes, and how many
# transactions the store's thread writes before it lets queued reads run.
_BATCH: Final = 2000
# The TEMP objects `write_batch` needs (see sql/sqlite/queries.sql).
_BATCH_OBJECTS: Final = ("batch_taken_table", "batch_answers_table", "batch_view", "batch_trigger")
_BATCHES_PER_TURN: Final = 4
# RETURNING, which the writes use, came with SQLite 3.35.
_OLDEST_SQLITE: Final = (3, 35, 0)
_URL_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:path.db"


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a SQLite URL into the database path and its query options.

    Raises:
        StoreError: the URL is not one of the accepted forms.
    """
    if not url.startswith("sqlite:"):
        raise StoreError(f"not a SQLite URL: {url!r}; use {_URL_FORMS}")
    rest, _, query = url.removeprefix("sqlite:").partition("?")
    if rest.startswith("//"):
        # As in SQLAlchemy: three slashes, then the path (a fourth one makes it absolute).
        if not rest.startswith("///"):
            raise StoreError(f"SQLite URL {url!r} names a host; use {_URL_FORMS}")
        rest = rest[3:]
    path = unquote(rest)
    if not path:
        raise StoreError(f"SQLite URL {url!r} has no file path; use {_URL_FORMS}")
    return path, dict(parse_qsl(query, keep_blank_values=True))


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


def _mail(row: _Row) -> Mail:
    mail_id, run_id, kind, data, at = row
    return Mail(mail_id, run_id, kind, jsonutil.loads(data), at)


class SQLiteStore(Store):
    """Runs and journals in one SQLite file.

    Construction does no I/O; `open` creates or upgrades the file. Use one
    store object from one event loop (each process or engine opens its own).

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
            ``sqlite:path.db``, optionally with ``?synchronous=normal``.
        synchronous: ``"full"`` (the default: a commit survives a power cut)
            or ``"normal"`` (faster; a power cut may lose the last commits).
            Overrides the URL's option.

    Attributes:
        path: The database file, as the URL names it.
        flushes: Group-commit transactions written so far (for tests and metrics).

    Raises:
        StoreError: the URL or an option is invalid.
    """

    def __init__(
        self, url: str, *, synchronous: str | None = None, busy_timeout: float | None = None
    ) -> None:
        self.url = url
        self.path, options = parse_url(url)
        chosen = synchronous if synchronous is not None else options.pop("synchronous", "full")
        options.pop("synchronous", None)
        wait = options.pop("busy_timeout", None)
        try:
            self.busy_timeout = float(
                busy_timeout if busy_timeout is not None else wait or _BUSY_TIMEOUT
            )
        except ValueError:
            raise StoreError(f"busy_timeout must be a number of seconds, got {wait!r}") from None
        if options:
            raise StoreError(f"unknown option(s) in SQLite URL {url!r}: {', '.join(options)}")
        if not isinstance(chosen, str) or chosen.lower() not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be 'full' or 'normal', got {chosen!r}")
        self.synchronous = chosen.lower()
        self.flushes = 0
        self._versions = (0, 0)  # the schema version found at open, and the current one
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False  # open, and not closing
        # Touched only on the executor's thread.
        self._conn: sqlite3.Connection | None = None
        self._q: dict[str, str] = {}
        # Shared by the event loop (which appends) and the store's thread
        # (which takes batches); `_busy` is guarded by `_lock`.
        self._pending: collections.deque[Write] = collections.deque()
        self._lock = threading.Lock()
        self._busy = False  # a drain is submitted to the store's thread or running
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held by whichever thread uses the connection: the store's thread, or
        # the event loop writing a lone commit itself (see `_write_here`).
        self._conn_lock = threading.Lock()
        # Whether the connection waits busy_timeout for another process's lock
        # (the store's thread) or not at all (a lone commit on the loop). The
        # setting is switched only when the other side uses the connection
        # next, not at every commit: a PRAGMA costs as much as a small write.
        self._patient = True
        # Touched only on the event loop.
        self._drained: asyncio.Future[None] | None = None  # close() waits on it

    # -- plumbing ---------------------------------------------------------------

    async def _call(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(cursor, *args)`` on the store's thread."""
        if not self._accepting:
            raise StoreError(f"the store {self.url} is not open; call `await store.open()` first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._guard, action, fn, *args))

    def _guard(self, action: str, fn: Callable[..., _T], *args: Any) -> _T:
        with self._conn_lock:
            if self._conn is None:
                raise StoreError(f"the store {self.url} is closed")
            try:
                cur = self._conn.cursor()
                if not self._patient:
                    cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                    self._patient = True
                return fn(cur, *args)
            except sqlite3.Error as exc:
                raise self._error(action, exc) from exc

    def _error(self, action: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"could not {action} SQLite database {self.path}: {exc}")

    def _transaction(self, cur: sqlite3.Cursor, fn: Callable[..., _T], *args: Any) -> _T:
        # IMMEDIATE takes the write lock up front: a deferred transaction that
        # reads and then writes can fail at once when another process wrote.
        cur.execute("BEGIN IMMEDIATE")
        try:
            result = fn(cur, *args)
            cur.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return result

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            # The original error says more; the connection rolls back on close anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`. Several processes may open a new file at once."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagakit-sqlite")
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        self._accepting = True

    def _open(self) -> None:
        if sqlite3.sqlite_version_info < _OLDEST_SQLITE:
            raise StoreError(
                f"cannot open SQLite database {self.path}: sagakit needs SQLite "
                f"{'.'.join(map(str, _OLDEST_SQLITE))} or newer, and this Python's sqlite3 "
                f"module uses {sqlite3.sqlite_version}"
            )
        folder = os.path.dirname(self.path)
        if self.path != ":memory:" and folder and not os.path.isdir(folder):
            raise StoreError(
                f"cannot open SQLite database {self.path}: the folder {folder} does not exist"
            )
        try:
            # Not tied to one thread: the event loop may write a lone commit
            # itself, under `_conn_lock` (see `_write_here`).
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        try:
            self._conn = conn
            self._patient = True  # connected with timeout=busy_timeout
            self._q = sql.load_queries("sqlite")
            cur = conn.cursor()
            self._enter_wal(cur)
            cur.execute(_SYNCHRONOUS[self.synchronous])
            self._migrate(cur)
            # The batch writer's view and scratch tables: TEMP, this connection's own.
            for name in _BATCH_OBJECTS:
                cur.execute(self._q[name])
        except BaseException as exc:
            self._conn = None
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open", exc) from exc
            raise

    def _enter_wal(self, cur: sqlite3.Cursor) -> None:
        # Switching a new file to WAL needs it to itself, and SQLite may answer
        # "database is locked" at once, without waiting, while another process
        # opening the same new file holds it: so wait here, up to busy_timeout.
        give_up = time.monotonic() + self.busy_timeout
        while True:
            try:
                cur.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > give_up:
                    raise
                time.sleep(0.01)

    def _schema_version(self, cur: sqlite3.Cursor) -> int:
        if not cur.execute(self._q["schema_version_exists"]).fetchall()[0][0]:
            return 0
        rows = cur.execute(self._q["get_schema_version"]).fetchall()
        return int(rows[0][0]) if rows else 0

    def _migrate(self, cur: sqlite3.Cursor) -> None:
        steps = sql.migrations("sqlite")
        latest = steps[-1][0]
        self._versions = (self._schema_version(cur), latest)
        if self._versions[0] == latest:
            return  # the common case: no write lock needed
        self._transaction(cur, self._apply_migrations, steps, latest)

    async def migrate(self) -> tuple[int, int]:
        """See `Store.migrate`. Opening the file migrates it; this says from what."""
        await self.open()
        return self._versions

    def _apply_migrations(
        self, cur: sqlite3.Cursor, steps: list[tuple[int, str]], latest: int
    ) -> None:
        # Read again under the write lock: another process may have migrated.
        version = self._schema_version(cur)
        if version > latest:
            raise SchemaVersionError(
                f"database schema version {version} is newer than this sagakit supports "
                f"({latest}); upgrade sagakit to use {self.path}"
            )
        self._versions = (version, latest)
        for number, script in steps:
            if number > version:
                for statement in _statements(script):
                    cur.execute(statement)
                cur.execute(self._q["set_schema_version"], (number,))

    async def close(self) -> None:
        """See `Store.close`. Waits for queued commits; safe to call twice."""
        executor = self._executor
        if executor is None or not self._accepting:
            return
        self._accepting = False
        if self._busy:
            self._drained = asyncio.get_running_loop().create_future()
            if self._busy:  # the store's thread may have gone idle in between
                await self._drained
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            self._executor = None
            executor.shutdown(wait=True)

    def _close(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # -- group commit -------------------------------------------------------------

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        write = encode_create(run, events)
        existing = await self._write(write)
        if existing is not None:
            return existing, False
        # A new run has no mail yet, whatever the record passed in says.
        last_seq = events[-1].seq if events else run.last_seq
        stored = dataclasses.replace(run, status=RunStatus(run.status), last_seq=last_seq, mail=0)
        return stored, True

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`. Concurrent commits share one transaction."""
        mail: bool = await self._write(encode_commit(commit))
        return mail

    def _write(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write`` (or write it here and now); the future is its answer.

        A plain function, not a coroutine: awaiting a future that is already
        done returns at once, and one coroutine fewer per commit is worth it.
        """
        if not self._accepting:
            raise StoreError(f"the store {self.url} is not open; call `await store.open()` first")
        future = write.future = asyncio.get_running_loop().create_future()
        if not self._pending and not self._busy and self._write_here(write):
            return future
        self._pending.append(write)
        with self._lock:
            idle, self._busy = not self._busy, True
        if idle:
            self._submit_drain()
        return future

    def _write_here(self, write: Write) -> bool:
        """Write a lone commit on the event loop's own thread, when nothing else
        waits to run there; return whether it was written (or failed for good).

        One saga run alone would otherwise pay two thread hand-offs per commit,
        more than the commit itself. Blocking the loop for one fsync delays no
        other coroutine, as none is ready to run; when some are, or the store's
        thread is busy, or another process holds the write lock, the commit
        goes to the store's thread as usual, to be batched with others.
        """
        if not _loop_idle(self._loop) or not self._conn_lock.acquire(blocking=False):
            return False
        try:
            conn = self._conn
            if conn is None:
                return False
            cur = conn.cursor()
            try:
                # Never wait for another process's lock here: that would stall
                # the loop. The store's thread waits for it instead.
                if self._patient:
                    cur.execute("PRAGMA busy_timeout = 0")
                    self._patient = False
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False
            result: list[object] | BaseException
            try:
                try:
                    result = [write_one(cur, self._q, write)]
                    cur.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                self.flushes += 1
            except sqlite3.OperationalError as exc:
                result = self._error("commit to", exc)
            except sqlite3.Error as exc:
                result = [exc]  # this write alone is wrong; rolled back as a whole
        finally:
            self._conn_lock.release()
        self._flushed([write], result)
        return True

    def _submit_drain(self) -> None:
        assert self._executor is not None
        try:
            self._executor.submit(self._drain)
        except RuntimeError as exc:  # the thread is gone; never leave a caller waiting
            batch = self._take()
            with self._lock:
                self._busy = False
            self._flushed(batch, StoreError(f"the store {self.url} is closed: {exc}"))

    def _take(self) -> list[Write]:
        batch: list[Write] = []
        pending = self._pending
        while pending and len(batch) < _BATCH:
            batch.append(pending.popleft())
        return batch

    def _drain(self) -> None:
        """Write what is pending, batch after batch (on the store's thread).

        The store's thread takes the commits itself, rather than the event loop
        handing each batch over: the loop may be busy for a long while running
        the steps of a thousand runs, and meanwhile the commits they make are
        written in the background and their callers woken in bulk.
        """
        assert self._loop is not None
        for _ in range(_BATCHES_PER_TURN):
            batch = self._take()
            if not batch:
                with self._lock:
                    if self._pending:
                        continue
                    self._busy = False
                if self._drained is not None:  # close() waits (it looks at _busy after)
                    self._loop.call_soon_threadsafe(self._idle)
                return
            result: list[object] | BaseException
            try:
                result = self._apply(batch)
            except BaseException as exc:
                result = exc
            self._loop.call_soon_threadsafe(self._flushed, batch, result)
        # Let reads queued on the store's thread (claims, get_run) have a turn.
        self._loop.call_soon_threadsafe(self._submit_drain)

    def _idle(self) -> None:
        if not self._busy and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _flushed(self, batch: list[Write], done: list[object] | BaseException) -> None:
        failure = done if isinstance(done, BaseException) else None
        for i, write in enumerate(batch):
            assert write.future is not None  # only a local transaction's write has none
            if write.future.done():
                continue  # its caller was cancelled; the write stands or not, as it went
            if failure is not None:
                # One exception object per caller: a shared one would chain tracebacks.
                error = StoreError(str(failure))
                error.__cause__ = failure
                write.future.set_exception(error)
                continue
            result = cast(list[object], done)[i]
            if result is LOST:
                write.future.set_exception(LeaseLost(write.run_id))
            elif isinstance(result, sqlite3.Error):
                action = f"write run {write.run_id!r} to"
                write.future.set_exception(self._error(action, result))
            else:
                write.future.set_result(result)

    def _apply(self, batch: list[Write]) -> list[object]:
        """Write a batch in one transaction (on the store's thread)."""
        return self._guard("commit to", self._apply_counted, batch)

    def _apply_counted(self, cur: sqlite3.Cursor, batch: list[Write]) -> list[object]:
        # A batch of one is as quick written on its own; a batch naming a run
        # twice must be, as the batch statement takes each run once.
        batchable = len(batch) > 1 and len({write.run_id for write in batch}) == len(batch)
        if batchable and not any(write.mail_read for write in batch):
            results = self._apply_alone(cur, batch)
        else:
            results = self._transaction(cur, self._apply_all, batch, batchable)
        self.flushes += 1  # under _conn_lock, as on the loop's lone-commit path
        return results

    def _apply_alone(self, cur: sqlite3.Cursor, batch: list[Write]) -> list[object]:
        """Write a batch as one statement outside BEGIN and COMMIT.

        One statement is a transaction of its own: it takes the write lock
        when it starts (waiting for another process's, up to busy_timeout),
        as BEGIN IMMEDIATE would, and is durable when it returns. Each
        statement fewer saves the store's thread a wait for the GIL.
        """
        try:
            return write_batch(cur, self._q, batch)
        except sqlite3.OperationalError:
            raise  # the database itself failed (I/O, full disk): the whole batch fails
        except sqlite3.Error:
            # One write is wrong (a journal seq taken twice), and the
            # statement wrote nothing: write the batch one write at a time,
            # to drop only that one.
            return self._transaction(cur, write_each, self._q, batch)

    def _apply_all(self, cur: sqlite3.Cursor, batch: list[Write], batchable: bool) -> list[object]:
        if batchable:
            try:
                return write_batch(cur, self._q, batch)
            except sqlite3.OperationalError:
                raise
            except sqlite3.Error:
                # As in _apply_alone, but inside a transaction: undo the batch
                # (a savepoint would cost the store's thread a wait for the
                # GIL at every batch, and such a write is rare).
                cur.execute("ROLLBACK")
                cur.execute("BEGIN IMMEDIATE")
        return write_each(cur, self._q, batch)

    # -- reads and leases -----------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        return await self._call(f"read run {run_id!r} from", self._get_run, run_id)

    def _get_run(self, cur: sqlite3.Cursor, run_id: str) -> RunRecord | None:
        rows = cur.execute(self._q["get_run"], (run_id,)).fetchall()
        return record(rows[0]) if rows else None

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """See `Store.list_runs`. Newest first: by ``created_at``, then id, descending."""
        if limit <= 0:
            return []
        params = {
            "status": None if status is None else str(status),
            "saga": saga,
            "limit": limit,
            "offset": max(offset, 0),
        }
        return await self._call("list runs of", self._list_runs, params)

    def _list_runs(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> list[RunRecord]:
        query = self._q["list_runs" if params["status"] is None else "list_runs_by_status"]
        return [record(row) for row in cur.execute(query, params).fetchall()]

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        return await self._call(
            f"read the journal of run {run_id!r} from", self._journal, run_id, after_seq
        )

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """See `Store.journals`: one query."""
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            return {}
        return await self._call("read journals from", self._journals, wanted)

    def _journals(self, cur: sqlite3.Cursor, run_ids: list[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {run_id: [] for run_id in run_ids}
        # One row of JSON rather than a row per event (see insert_runs).
        text = cur.execute(self._q["journals"], (jsonutil.dumps(run_ids),)).fetchone()[0]
        for run, seq, kind, at, step, attempt, data in jsonutil.loads(text):
            found[run].append(
                Event(run, seq, EventKind(kind), at, step, attempt, jsonutil.loads(data))
            )
        return found

    def _journal(self, cur: sqlite3.Cursor, run_id: str, after_seq: int) -> list[Event]:
        rows = cur.execute(self._q["journal"], (run_id, after_seq)).fetchall()
        return [
            Event(run, seq, EventKind(kind), at, step, attempt, jsonutil.loads(data))
            for run, seq, kind, at, step, attempt, data in rows
        ]

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        params = {"id": run_id, "owner": owner, "now": now, "lease_until": lease_until}
        action = f"claim run {run_id!r} in"
        return await self._call(action, self._transaction, self._claim, params)

    def _claim(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> RunRecord | None:
        rows = cur.execute(self._q["claim"], params).fetchall()
        return record(rows[0]) if rows else None

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_due`. Ordered by ``wake_at``, or ``updated_at`` when unset."""
        if limit <= 0:
            return []
        wanted = None if sagas is None else jsonutil.dumps([list(pair) for pair in sagas])
        due = {"now": now, "sagas": wanted, "limit": limit}
        claim = {"owner": owner, "now": now, "lease_until": lease_until}
        return await self._call("claim due runs in", self._transaction, self._claim_due, due, claim)

    def _claim_due(
        self, cur: sqlite3.Cursor, due: dict[str, Any], claim: dict[str, Any]
    ) -> list[RunRecord]:
        ids = [row[0] for row in cur.execute(self._q["due_runs"], due).fetchall()]
        claimed = []
        for run_id in ids:
            record = self._claim(cur, {**claim, "id": run_id})
            if record is not None:
                claimed.append(record)
        return claimed

    async def renew(self, leases: dict[str, Lease], *, lease_until: float) -> set[str]:
        """See `Store.renew`."""
        if not leases:
            return set()
        rows = [(lease_until, run_id, lease.owner, lease.epoch) for run_id, lease in leases.items()]
        return await self._call("renew leases in", self._transaction, self._renew, rows)

    def _renew(self, cur: sqlite3.Cursor, rows: list[_Row]) -> set[str]:
        lost = set()
        renew = self._q["renew"]
        for row in rows:
            cur.execute(renew, row)
            if cur.rowcount == 0:
                lost.add(row[1])
        return lost

    async def release(self, run_id: str, lease: Lease) -> None:
        """See `Store.release`."""
        row = (run_id, lease.owner, lease.epoch)
        await self._call(f"release run {run_id!r} in", self._transaction, self._release, row)

    def _release(self, cur: sqlite3.Cursor, row: _Row) -> None:
        cur.execute(self._q["release"], row)

    # -- mail and reservations ------------------------------------------------------

    async def post(self, run_id: str, kind: str, data: JSON, *, at: float) -> Mail | None:
        """See `Store.post`. Other processes see the mail at their next `claim_due`."""
        row = (run_id, kind, encode_json(data, f"{kind} mail", run_id), at)
        return await self._call(
            f"post mail to run {run_id!r} in", self._transaction, self._post, row
        )

    def _post(self, cur: sqlite3.Cursor, row: _Row) -> Mail | None:
        if not cur.execute(self._q["count_mail"], (row[0],)).fetchall():
            return None  # no such run
        mail_id = cur.execute(self._q["insert_mail"], row).fetchall()[0][0]
        return _mail((mail_id, *row))

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        return await self._call(f"read the mail of run {run_id!r} from", self._read_mail, run_id)

    def _read_mail(self, cur: sqlite3.Cursor, run_id: str) -> list[Mail]:
        return [_mail(row) for row in cur.execute(self._q["mail"], (run_id,)).fetchall()]

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`. One upsert under the write lock: atomic across processes."""
        params = {"name": name, "run_id": run_id, "now": now, "expires_at": expires_at}
        action = f"reserve {name!r} in"
        return await self._call(action, self._transaction, self._reserve, params)

    def _reserve(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> Reservation:
        cur.execute(self._q["reserve"], params)
        row = cur.execute(self._q["get_reservation"], (params["name"],)).fetchall()[0]
        return Reservation(*row)

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        wanted = None if names is None else jsonutil.dumps(list(names))
        params = {"run_id": run_id, "names": wanted}
        action = f"release the reservations of run {run_id!r} in"
        return await self._call(action, self._transaction, self._release_reservations, params)

    def _release_reservations(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> int:
        return cur.execute(self._q["release_reservations"], params).rowcount

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        params = {"run_id": run_id, "now": now}
        return await self._call("read reservations from", self._reservations, params)

    def _reservations(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> list[Reservation]:
        rows = cur.execute(self._q["reservations"], params).fetchall()
        return [Reservation(*row) for row in rows]

    # -- local transactions ----------------------------------------------------------

    def local_transaction(self) -> SQLiteLocalTransaction:
        """See `Store.local_transaction`: a new connection to the same file, in an
        immediate transaction (the write lock is taken at once and held until
        `SQLiteLocalTransaction.commit` or `rollback`).

        While it holds the write lock, this store's own writes wait for it (up
        to ``busy_timeout``), as another process's would.

        Raises:
            StoreError: the store is not open, is an in-memory database (which
                no second connection can see), or the file cannot be opened.
        """
        if not self._accepting:
            raise StoreError(f"the store {self.url} is not open; call `await store.open()` first")
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise StoreError(
                f"the store {self.url} is an in-memory SQLite database, which another "
                "connection cannot share; use a database file for local transactions"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._error("open a local transaction on", exc) from exc
        try:
            conn.execute(_SYNCHRONOUS[self.synchronous])
            # IMMEDIATE: a deferred transaction that reads first and writes
            # later fails at once in WAL mode if another write landed between.
            # The price is that other writers wait while the step runs, so
            # local-transaction steps should be short database work.
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open a local transaction on", exc) from exc
            raise
        return SQLiteLocalTransaction(conn, self._q, self.path)


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


def _loop_idle(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` has no callback ready to run besides the current one.

    Reads the ready queue of asyncio's own loops; another loop (uvloop) has
    none to read, and is never taken as idle.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready

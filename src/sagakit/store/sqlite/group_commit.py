"""The SQLite store's group-commit writer: the queue of writes and its drain.

The queue is drained batch after batch on the connection's thread; a lone
commit may be written on the event loop itself.

Commits from concurrent coroutines are queued (`GroupCommit.queue_write`);
while one transaction is being written, new commits queue up, and the
connection's thread takes them all into the next one, so a thousand runs
stepping at once cost a few fsyncs rather than a thousand. How each batch is
written is `sagakit.store.sqlite.writes`'s part. A commit made while nothing
else waits to run on the event loop is written there and then
(`GroupCommit._write_here`), sparing one saga run alone two thread hand-offs
per commit; a step's usual commit is then one statement (`write_alone`), and
so is the commit that finishes a run (`write_finish_alone`), its values bound
each on its own when its caller knew it would be written there
(`GroupCommit.writes_here`, `sagakit.store.sqlite.writes.encode_lone`).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
from typing import Any, Final

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.sqlite.connection import SQLiteConnection, begin_or_roll_back, loop_idle
from sagakit.store.sqlite.writes import (
    LOST,
    Write,
    write_alone,
    write_batch,
    write_each,
    write_finish_alone,
    write_new_alone,
    write_one,
)

# The most commits one group-commit transaction takes, and how many
# transactions the connection's thread writes before it lets queued reads run.
_BATCH: Final = 2000
_BATCHES_PER_TURN: Final = 4

# What sqlite3 raises for a value it cannot bind as a parameter of its own.
_UNBINDABLE: Final = (OverflowError, UnicodeEncodeError)


class GroupCommit:
    """The queue of writes to one SQLite connection, written in groups.

    Args:
        connection: The connection written to; its thread drains the queue.

    Attributes:
        flushes: Transactions written so far (for tests and metrics).
    """

    def __init__(self, connection: SQLiteConnection) -> None:
        self._connection = connection
        self.flushes = 0
        # Shared by the event loop (which appends) and the connection's
        # thread (which takes batches); `_busy` is guarded by `_lock`.
        self._pending: collections.deque[Write] = collections.deque()
        self._lock = threading.Lock()
        self._busy = False  # a drain is submitted to the connection's thread or running
        # Touched only on the event loop.
        self._drained: asyncio.Future[None] | None = None  # wait_drained() waits on it

    def queue_write(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write`` (or write it here and now); the future is its answer.

        A plain method, not a coroutine: awaiting a future that is already
        done returns at once, and one coroutine fewer per commit is worth it.

        Raises:
            StoreError: the connection is not open, or is closing.
        """
        if not self._connection.accepting:
            raise self._connection.not_open()
        future = write.future = asyncio.get_running_loop().create_future()
        if not self._pending and not self._busy and self._write_here(write):
            return future
        if write.lone is not None:
            # Not written here after all (another process holds the file's
            # write lock, a new run's id is taken, or a value could not be
            # bound): queued as any other write, as one JSON array.
            write = write.as_text()
        self._pending.append(write)
        with self._lock:
            idle, self._busy = not self._busy, True
        if idle:
            self._submit_drain()
        return future

    def writes_here(self) -> bool:
        """Whether a write queued now would be written on the event loop there and then.

        So its caller may encode it for that (`encode_lone`). Most likely,
        not certain: `_write_here` may still find another process holding
        the file's write lock, and the write is then queued after all.
        """
        return not self._pending and not self._busy and loop_idle(self._connection.loop)

    async def wait_drained(self) -> None:
        """Wait until every queued write is written (or has failed).

        Call once the connection accepts no new work, so nothing more is queued.
        """
        if self._busy:
            self._drained = asyncio.get_running_loop().create_future()
            if self._busy:  # the connection's thread may have gone idle in between
                await self._drained

    def _write_here(self, write: Write) -> bool:
        """Write a lone commit on the event loop's thread, if nothing else waits there.

        Returns whether it was written (or failed for good). One saga run
        alone would otherwise pay two thread hand-offs per commit, more than
        the commit itself. Blocking the loop for one fsync delays no other
        coroutine, as none is ready to run; when some are, or the
        connection's thread is busy, or another process holds the write lock,
        the commit goes to the connection's thread as usual, to be batched
        with others. A step's usual commit (`Write.alone`), a new run with
        no big part (`Write.new_alone`) and the commit that finishes a run
        (`Write.finish_alone`) are written as one statement each, any other
        between BEGIN IMMEDIATE and COMMIT.
        """
        connection = self._connection
        lock = connection.lock
        if not loop_idle(connection.loop) or not lock.acquire(blocking=False):
            return False
        try:
            conn = connection.db
            if conn is None:
                return False
            alone = write.alone or write.new_alone or write.finish_alone
            # A cursor only for the statements run here: a write alone runs
            # its one statement by `sqlite3.Connection.execute`, and a cursor
            # made besides, at every step, cost some 3,700 instructions.
            if connection.patient or not alone:
                cur = conn.cursor()
                try:
                    # Never wait for another process's lock here: that would
                    # stall the loop. The connection's thread waits for it instead.
                    if connection.patient:
                        cur.execute("PRAGMA busy_timeout = 0")
                        connection.patient = False
                    if not alone:
                        begin_or_roll_back(cur)
                except sqlite3.OperationalError:
                    return False
            result = self._alone(conn, write) if alone else self._in_transaction(cur, write)
            if result is None:
                return False
        finally:
            lock.release()
        checkpoints = connection.checkpoints
        if checkpoints is not None:
            # The checkpoint this commit would bring SQLite to make on the
            # loop, some commits later, is made on its own thread instead.
            checkpoints.wrote(write.size)
        self._flushed([write], result)
        return True

    def _alone(self, conn: sqlite3.Connection, write: Write) -> list[object] | BaseException | None:
        """Write ``write`` as one statement; None if nothing was written and it is to be queued.

        A step's commit is written by `write_alone`, the commit that
        finishes a run by `write_finish_alone`, a new run by
        `write_new_alone`; if the new run's id is taken, nothing was written,
        and it is written as before, in a transaction (which reads that run),
        or, bound value by value (`Write.lone`), queued as one JSON array.

        A statement that finds another process's write lock writes nothing,
        and the write goes to the connection's thread, which waits for it;
        so does a write bound value by value (`Write.lone`) with a value
        sqlite3 cannot bind, as one JSON array.
        """
        connection = self._connection
        try:
            if not write.create:
                write_lone = write_alone if write.kept else write_finish_alone
                result = [write_lone(conn, connection.queries, write)]
            elif write_new_alone(conn, connection.queries, write):
                result = [None]
            elif write.lone is not None:
                return None  # the id is taken, and nothing was written: queued as text
            else:
                # The id is taken, and nothing was written: read the run that
                # holds it as the four statements did, in a transaction of
                # their own (which writes the run after all if it is gone).
                cur = conn.cursor()
                begin_or_roll_back(cur)
                return self._in_transaction(cur, write)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                return None
            return connection.error("commit to", exc)
        except sqlite3.Error as exc:
            if write.lone is not None and isinstance(exc.__context__, _UNBINDABLE):
                # A value not bound (below), which sqlite3 reports as the
                # connection's last result when it is not OK (after a read).
                return None
            return [exc]  # this write alone is wrong (a journal seq taken), and wrote nothing
        except _UNBINDABLE:
            if write.lone is None:
                raise
            # A value sqlite3 cannot bind on its own (an int past 64 bits, a
            # string with a lone surrogate), and nothing was written: queued
            # as one JSON array, as it would be with others, which writes it
            # or names what is wrong.
            return None
        self.flushes += 1
        return result

    def _in_transaction(self, cur: sqlite3.Cursor, write: Write) -> list[object] | BaseException:
        """Write ``write`` in the transaction just begun, and commit it."""
        connection = self._connection
        try:
            try:
                result: list[object] = [write_one(cur, connection.queries, write)]
                cur.execute("COMMIT")
            except BaseException:
                connection.rollback()
                raise
            self.flushes += 1
        except sqlite3.OperationalError as exc:
            return connection.error("commit to", exc)
        except sqlite3.Error as exc:
            return [exc]  # this write alone is wrong; rolled back as a whole
        return result

    def _submit_drain(self) -> None:
        try:
            self._connection.submit(self._drain)
        except RuntimeError as exc:  # the thread is gone; never leave a caller waiting
            batch = self._take()
            with self._lock:
                self._busy = False
            self._flushed(batch, StoreError(f"the store {self._connection.url} is closed: {exc}"))

    def _take(self) -> list[Write]:
        batch: list[Write] = []
        pending = self._pending
        while pending and len(batch) < _BATCH:
            batch.append(pending.popleft())
        return batch

    def _drain(self) -> None:
        """Write what is pending, batch after batch (on the connection's thread).

        The connection's thread takes the commits itself, rather than the
        event loop handing each batch over: the loop may be busy for a long
        while running the steps of a thousand runs, and meanwhile the commits
        they make are written in the background and their callers woken in
        bulk.
        """
        loop = self._connection.loop
        assert loop is not None
        for _ in range(_BATCHES_PER_TURN):
            batch = self._take()
            if not batch:
                with self._lock:
                    if self._pending:
                        continue
                    self._busy = False
                if self._drained is not None:  # wait_drained() looks at _busy after
                    loop.call_soon_threadsafe(self._idle)
                return
            result: list[object] | BaseException
            try:
                result = self._apply(batch)
            except BaseException as exc:
                result = exc
            loop.call_soon_threadsafe(self._flushed, batch, result)
        # Let reads queued on the connection's thread (claims, get_run) have a turn.
        loop.call_soon_threadsafe(self._submit_drain)

    def _idle(self) -> None:
        if not self._busy and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _flushed(self, batch: list[Write], done: list[object] | BaseException) -> None:
        if isinstance(done, BaseException):
            for write in batch:
                future = write.future
                assert future is not None  # only a local transaction's write has none
                if not future.done():  # (done: its caller was cancelled)
                    # One exception object per caller: a shared one would chain tracebacks.
                    error = StoreError(str(done))
                    error.__cause__ = done
                    future.set_exception(error)
            return
        for write, result in zip(batch, done, strict=True):
            future = write.future
            assert future is not None
            if future.done():
                continue  # its caller was cancelled; the write stands or not, as it went
            if result is LOST:
                future.set_exception(LeaseLost(write.run_id))
            elif isinstance(result, sqlite3.Error):
                action = f"write run {write.run_id!r} to"
                future.set_exception(self._connection.error(action, result))
            else:
                future.set_result(result)

    def _apply(self, batch: list[Write]) -> list[object]:
        """Write a batch in one transaction (on the connection's thread)."""
        return self._connection.guard("commit to", self._apply_counted, batch)

    def _apply_counted(self, cur: sqlite3.Cursor, batch: list[Write]) -> list[object]:
        # A batch of one is as quick written on its own; a batch naming a run
        # twice must be, as the batch statement takes each run once.
        # A big write's parts are written by statements of their own (`Big`).
        batchable = (
            len(batch) > 1
            and len({write.run_id for write in batch}) == len(batch)
            and not any(write.big for write in batch)
        )
        if batchable and not any(write.mail_read for write in batch):
            results = self._apply_alone(cur, batch)
        else:
            results = self._connection.transaction(cur, self._apply_all, batch, batchable)
        self.flushes += 1  # holding the connection's lock, as on the loop's lone-commit path
        return results

    def _apply_alone(self, cur: sqlite3.Cursor, batch: list[Write]) -> list[object]:
        """Write a batch as one statement outside BEGIN and COMMIT.

        One statement is a transaction of its own: it takes the write lock
        when it starts (waiting for another process's, up to busy_timeout),
        as BEGIN IMMEDIATE would, and is durable when it returns. Each
        statement fewer saves the connection's thread a wait for the GIL.
        """
        connection = self._connection
        try:
            return write_batch(cur, connection.queries, batch)
        except sqlite3.OperationalError:
            raise  # the database itself failed (I/O, full disk): the whole batch fails
        except sqlite3.Error:
            # One write is wrong (a journal seq taken twice), and the
            # statement wrote nothing: write the batch one write at a time,
            # to drop only that one.
            return connection.transaction(cur, write_each, connection.queries, batch)

    def _apply_all(self, cur: sqlite3.Cursor, batch: list[Write], batchable: bool) -> list[object]:
        queries = self._connection.queries
        if batchable:
            try:
                return write_batch(cur, queries, batch)
            except sqlite3.OperationalError:
                raise
            except sqlite3.Error:
                # As in _apply_alone, but inside a transaction: undo the batch
                # (a savepoint would cost the connection's thread a wait for
                # the GIL at every batch, and such a write is rare).
                cur.execute("ROLLBACK")
                cur.execute("BEGIN IMMEDIATE")
        return write_each(cur, queries, batch)

"""The SQLite store's group-commit writer: the queue of writes, the store's
thread that drains it batch after batch, and lone commits written on the
event loop itself.

Commits from concurrent coroutines are queued (`queue_write`); while one
transaction is being written, new commits queue up, and the store's thread
takes them all into the next one, so a thousand runs stepping at once cost a
few fsyncs rather than a thousand. How each batch is written is
`sagakit.store.sqlite.store.writes`'s part. A commit made while nothing else waits
to run on the event loop is written there and then (`_write_here`), sparing
one saga run alone two thread hand-offs per commit.

These functions take the `SQLiteStore` whose queue and connection they use;
the store's methods call them as they would their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any, Final, cast

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.sqlite.writes import LOST, Write, write_batch, write_each, write_one

if TYPE_CHECKING:
    from sagakit.store.sqlite.store import SQLiteStore

# The most commits one group-commit transaction takes, and how many
# transactions the store's thread writes before it lets queued reads run.
_BATCH: Final = 2000
_BATCHES_PER_TURN: Final = 4


def queue_write(store: SQLiteStore, write: Write) -> asyncio.Future[Any]:
    """Queue ``write`` (or write it here and now); the future is its answer.

    A plain function, not a coroutine: awaiting a future that is already
    done returns at once, and one coroutine fewer per commit is worth it.
    """
    if not store._accepting:
        raise StoreError(f"the store {store.url} is not open; call `await store.open()` first")
    future = write.future = asyncio.get_running_loop().create_future()
    if not store._pending and not store._busy and _write_here(store, write):
        return future
    store._pending.append(write)
    with store._lock:
        idle, store._busy = not store._busy, True
    if idle:
        _submit_drain(store)
    return future


def _write_here(store: SQLiteStore, write: Write) -> bool:
    """Write a lone commit on the event loop's own thread, when nothing else
    waits to run there; return whether it was written (or failed for good).

    One saga run alone would otherwise pay two thread hand-offs per commit,
    more than the commit itself. Blocking the loop for one fsync delays no
    other coroutine, as none is ready to run; when some are, or the store's
    thread is busy, or another process holds the write lock, the commit
    goes to the store's thread as usual, to be batched with others.
    """
    if not _loop_idle(store._loop) or not store._conn_lock.acquire(blocking=False):
        return False
    try:
        conn = store._conn
        if conn is None:
            return False
        cur = conn.cursor()
        try:
            # Never wait for another process's lock here: that would stall
            # the loop. The store's thread waits for it instead.
            if store._patient:
                cur.execute("PRAGMA busy_timeout = 0")
                store._patient = False
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        result: list[object] | BaseException
        try:
            try:
                result = [write_one(cur, store._q, write)]
                cur.execute("COMMIT")
            except BaseException:
                store._rollback()
                raise
            store.flushes += 1
        except sqlite3.OperationalError as exc:
            result = store._error("commit to", exc)
        except sqlite3.Error as exc:
            result = [exc]  # this write alone is wrong; rolled back as a whole
    finally:
        store._conn_lock.release()
    _flushed(store, [write], result)
    return True


def _submit_drain(store: SQLiteStore) -> None:
    assert store._executor is not None
    try:
        store._executor.submit(_drain, store)
    except RuntimeError as exc:  # the thread is gone; never leave a caller waiting
        batch = _take(store)
        with store._lock:
            store._busy = False
        _flushed(store, batch, StoreError(f"the store {store.url} is closed: {exc}"))


def _take(store: SQLiteStore) -> list[Write]:
    batch: list[Write] = []
    pending = store._pending
    while pending and len(batch) < _BATCH:
        batch.append(pending.popleft())
    return batch


def _drain(store: SQLiteStore) -> None:
    """Write what is pending, batch after batch (on the store's thread).

    The store's thread takes the commits itself, rather than the event loop
    handing each batch over: the loop may be busy for a long while running
    the steps of a thousand runs, and meanwhile the commits they make are
    written in the background and their callers woken in bulk.
    """
    assert store._loop is not None
    for _ in range(_BATCHES_PER_TURN):
        batch = _take(store)
        if not batch:
            with store._lock:
                if store._pending:
                    continue
                store._busy = False
            if store._drained is not None:  # close() waits (it looks at _busy after)
                store._loop.call_soon_threadsafe(_idle, store)
            return
        result: list[object] | BaseException
        try:
            result = _apply(store, batch)
        except BaseException as exc:
            result = exc
        store._loop.call_soon_threadsafe(_flushed, store, batch, result)
    # Let reads queued on the store's thread (claims, get_run) have a turn.
    store._loop.call_soon_threadsafe(_submit_drain, store)


def _idle(store: SQLiteStore) -> None:
    if not store._busy and store._drained is not None and not store._drained.done():
        store._drained.set_result(None)


def _flushed(store: SQLiteStore, batch: list[Write], done: list[object] | BaseException) -> None:
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
            write.future.set_exception(store._error(action, result))
        else:
            write.future.set_result(result)


def _apply(store: SQLiteStore, batch: list[Write]) -> list[object]:
    """Write a batch in one transaction (on the store's thread)."""
    return store._guard("commit to", _apply_counted, store, batch)


def _apply_counted(cur: sqlite3.Cursor, store: SQLiteStore, batch: list[Write]) -> list[object]:
    # A batch of one is as quick written on its own; a batch naming a run
    # twice must be, as the batch statement takes each run once.
    batchable = len(batch) > 1 and len({write.run_id for write in batch}) == len(batch)
    if batchable and not any(write.mail_read for write in batch):
        results = _apply_alone(cur, store, batch)
    else:
        results = store._transaction(cur, _apply_all, store, batch, batchable)
    store.flushes += 1  # under _conn_lock, as on the loop's lone-commit path
    return results


def _apply_alone(cur: sqlite3.Cursor, store: SQLiteStore, batch: list[Write]) -> list[object]:
    """Write a batch as one statement outside BEGIN and COMMIT.

    One statement is a transaction of its own: it takes the write lock
    when it starts (waiting for another process's, up to busy_timeout),
    as BEGIN IMMEDIATE would, and is durable when it returns. Each
    statement fewer saves the store's thread a wait for the GIL.
    """
    try:
        return write_batch(cur, store._q, batch)
    except sqlite3.OperationalError:
        raise  # the database itself failed (I/O, full disk): the whole batch fails
    except sqlite3.Error:
        # One write is wrong (a journal seq taken twice), and the
        # statement wrote nothing: write the batch one write at a time,
        # to drop only that one.
        return store._transaction(cur, write_each, store._q, batch)


def _apply_all(
    cur: sqlite3.Cursor, store: SQLiteStore, batch: list[Write], batchable: bool
) -> list[object]:
    if batchable:
        try:
            return write_batch(cur, store._q, batch)
        except sqlite3.OperationalError:
            raise
        except sqlite3.Error:
            # As in _apply_alone, but inside a transaction: undo the batch
            # (a savepoint would cost the store's thread a wait for the
            # GIL at every batch, and such a write is rare).
            cur.execute("ROLLBACK")
            cur.execute("BEGIN IMMEDIATE")
    return write_each(cur, store._q, batch)


def _loop_idle(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether ``loop`` has no callback ready to run besides the current one.

    Reads the ready queue of asyncio's own loops; another loop (uvloop) has
    none to read, and is never taken as idle.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready

"""Checkpoints of the SQLite store's WAL on ``synchronous=normal``, off the event loop.

SQLite checkpoints the WAL in the commit that takes it past
``wal_autocheckpoint`` pages (`AUTOCHECKPOINT`, 4,000 on normal): it syncs
the WAL, copies its pages into the database file and syncs that, inside
that commit's call. A lone commit is written on the event loop
(`sagakit.store.sqlite.group_commit`), so a saga run alone on normal, whose
commits sync nothing, waited 12 to 17 ms at such a commit, some 800
commits apart: about a tenth of its time (docs/benchmarks.md).

`Checkpoints` counts the pages the loop's own commits write (an estimate:
a commit's bytes and the pages every small commit writes) and, at half the
mark, asks for a ``PASSIVE`` checkpoint on its own thread and connection,
while the loop goes on. ``PASSIVE`` takes no lock a writer or a reader
waits for. The commits made meanwhile keep the WAL from being started
again from its first frame, so SQLite still checkpoints at the mark in a
commit on the loop; but by then the WAL is synced and copied but for its
last frames, and that checkpoint syncs and copies only those, then syncs
the database file (1 to 3 ms measured, against 12 to 17). The mark stays
where it was: the WAL grows no longer than it did, also when the estimate
falls short or the thread lags. (A checkpoint that does not reach the
WAL's last frame leaves the database file unsynced, safely: the WAL keeps
every frame until a whole checkpoint has synced it.)

Not on FULL: there every commit syncs the WAL anyway, the checkpoint at
the mark (which still comes) copies a few dozen pages, and a saga alone
measured no faster with checkpoints on a thread.

A checkpoint is SQLite's own, crash-safe at any point; another process's
connections to the file checkpoint as they always do.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final

PAGES_PER_COMMIT: Final = 5
"""What a small commit writes to the WAL, in pages (5.08 measured by
``benchmarks/sqlite_commit_cost.py``: the run's row, the journal and its
key, the indexes a new or finished run touches)."""

PAGE_BYTES: Final = 4096
"""SQLite's default page size, which the store's files keep."""


class Checkpoints:
    """Background checkpoints of one SQLite file's WAL.

    Construction does no I/O: the connection is made on the thread, at the
    first checkpoint. `wrote` is called by the event loop only.

    Args:
        uri: The database file as a ``file:`` URI (not ``:memory:``, whose
            WAL no other connection sees).
        mark: The pages at which the writing connection checkpoints by
            itself (its ``wal_autocheckpoint``); a checkpoint is asked for
            at `EARLY` of it.

    Attributes:
        uri: As given.
        threshold: The estimated pages at which a checkpoint is asked for.
        done: Checkpoints run so far (for tests and benchmarks).
    """

    EARLY: Final = 0.5
    """The share of the mark at which a checkpoint is asked for. Half: the
    estimate may fall short (a commit whose journal leaf splits), and the
    checkpoint takes a while; at the mark SQLite would do it in the commit."""

    def __init__(self, uri: str, mark: int) -> None:
        self.uri = uri
        self.threshold = max(1, int(mark * self.EARLY))
        self.done = 0
        self._pages = 0  # estimated pages written since the last checkpoint was asked for
        self._running = False  # a checkpoint is queued or running
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # used on the thread only
        self._lock = threading.Lock()  # guards _running against the thread
        self._closed = False  # no thread is started again once closed

    def wrote(self, size: int) -> None:
        """Count a commit of ``size`` bytes written; ask for a checkpoint past the threshold.

        Called by whoever holds the store's connection after a commit it wrote
        (the event loop, for a lone commit): never waits.
        """
        self._pages += PAGES_PER_COMMIT + size // PAGE_BYTES
        if self._pages < self.threshold or self._closed:
            return
        with self._lock:
            # Under the lock: `close` may run on another thread meanwhile, and
            # a thread started after it would never be stopped.
            if self._running or self._closed:
                return  # counted on: the next commit asks again once this one is done
            self._running = True
            self._pages = 0
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagakit-checkpoint")
            self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """Checkpoint what the WAL holds, waiting for nobody (on the thread)."""
        try:
            if self._db is None:
                # No busy timeout: PASSIVE waits for no lock, and neither should opening.
                self._db = sqlite3.connect(
                    self.uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.done += 1
        except sqlite3.Error:
            # Busy, or the file is gone: nothing is lost, the WAL keeps its
            # frames and SQLite's own checkpoint at the mark still runs.
            pass
        finally:
            with self._lock:
                self._running = False

    def close(self) -> None:
        """Wait for a checkpoint under way, then close the connection and stop the thread."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.submit(self._close)
        executor.shutdown(wait=True)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

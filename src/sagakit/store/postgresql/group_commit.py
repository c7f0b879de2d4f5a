"""The PostgreSQL store's group commit.

Commits queue up while one transaction is being written, and the next
transaction takes them all. A batch is a handful of statements that unnest
one array per column (see `sagakit.store.postgresql.writes`); fencing is
part of the batch's commit statement, so a commit whose lease moved on is
refused alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any, Final

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.base import RunRecord
from sagakit.store.postgresql.connection import Conn, PostgresConnection
from sagakit.store.postgresql.writes import (
    LOST,
    RUN_COLUMNS,
    Write,
    batch_params,
    commit_params,
    record,
    verdict,
    write_big,
)

# The largest number of commits one group-commit transaction takes.
_BATCH: Final = 1000


class GroupCommit:
    """The queue of writes waiting for the next transaction, and the task writing them.

    Args:
        connection: The store's connection, whose pool the transactions use.

    Attributes:
        flushes: Group-commit transactions written so far (for tests and metrics).
    """

    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection
        self._queries = connection.queries
        self._with_conn = connection.with_conn
        # Queued writes, each with the future its caller awaits.
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0

    async def write(self, write: Write) -> Any:
        """Queue ``write`` for the next group commit; return its answer.

        Raises:
            StoreError: the store is not open, or the transaction failed.
            LeaseLost: fencing refused a commit.
        """
        if self._connection.pool is None:
            raise self._connection.not_open()
        future = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_all())
        return await future

    async def drain(self) -> None:
        """Wait for the transaction being written, if any; its errors went to its callers."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(flusher)

    def drop(self) -> None:
        """Forget the task writing: its event loop is gone."""
        self._flusher = None

    async def _flush_all(self) -> None:
        # Yield once first, so the commits made by other tasks in this same
        # turn of the loop share the transaction.
        await asyncio.sleep(0)
        while self._pending:
            batch = self._take_batch()
            writes = [write for write, _ in batch]
            try:
                results = await self._with_conn("commit to", partial(self._apply, batch=writes))
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        # One exception object per caller: a shared one would chain tracebacks.
                        error = StoreError(str(exc)) if isinstance(exc, Exception) else exc
                        error.__cause__ = exc
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.flushes += 1
            for (write, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # its caller was cancelled; the write stands or not, as it went
                if result is LOST:
                    future.set_exception(LeaseLost(write.run_id))
                elif isinstance(result, StoreError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _take_batch(self) -> list[tuple[Write, asyncio.Future[Any]]]:
        # One commit per run per transaction: a run's commits must apply in order.
        batch: list[tuple[Write, asyncio.Future[Any]]] = []
        rest: list[tuple[Write, asyncio.Future[Any]]] = []
        seen: set[str] = set()
        for item in self._pending:
            run_id = item[0].run_id
            if run_id in seen or len(batch) >= _BATCH:
                rest.append(item)
            else:
                seen.add(run_id)
                batch.append(item)
        self._pending = rest
        return batch

    async def _apply(self, conn: Conn, *, batch: list[Write]) -> list[object]:
        """Write a batch; one result per write, in order.

        New runs take one statement and commits another, each its own
        transaction, so the common batch costs one round trip. A new run's
        result is the run that existed already (or None); a commit's is
        whether mail waits, `LOST` or a `StoreError`. A batch with a big
        write (`Write.big`) is one transaction: its big parts are put in
        place after those statements.
        """
        if any(write.big for write in batch):
            async with conn.transaction():
                return await self._apply_statements(conn, batch)
        return await self._apply_statements(conn, batch)

    async def _apply_statements(self, conn: Conn, batch: list[Write]) -> list[object]:
        q = self._queries
        creates = [w for w in batch if w.create]
        updates = [w for w in batch if not w.create]
        existing: dict[str, RunRecord] = {}
        outcome: dict[str, object] = {}  # by run id: a commit's result
        if creates:
            cur = await conn.execute(q["insert_runs"], batch_params(creates, RUN_COLUMNS))
            inserted = {row[0] for row in await cur.fetchall()}
            for write in creates:
                if write.big and write.run_id in inserted:
                    await write_big(conn, q, write)
            others = [w.run_id for w in creates if w.run_id not in inserted]
            if others:
                cur = await conn.execute(q["get_runs"], (others,))
                existing = {row[0]: record(row) for row in await cur.fetchall()}
        if updates:
            cur = await conn.execute(q["commit_runs"], commit_params(updates))
            outcome = {row[0]: bool(row[1]) for row in await cur.fetchall()}
            for write in updates:
                if write.big and write.run_id in outcome:
                    await write_big(conn, q, write)
            refused = [w for w in updates if w.run_id not in outcome]
            if refused:  # rare: a lost lease, or a retry of a commit that landed
                cur = await conn.execute(q["fence_state"], ([w.run_id for w in refused],))
                rows = {row[0]: row[1:] for row in await cur.fetchall()}
                for write in refused:
                    outcome[write.run_id] = verdict(write, rows.get(write.run_id))
        return [existing.get(w.run_id) if w.create else outcome[w.run_id] for w in batch]

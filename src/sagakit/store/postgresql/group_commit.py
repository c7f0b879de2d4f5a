"""The PostgreSQL store's group commit: commits queue up while one
transaction is being written, and the next transaction takes them all.

A batch is a handful of statements that unnest one array per column (see
`sagakit.store.postgresql.store.writes`); fencing is part of the batch's commit
statement, so a commit whose lease moved on is refused alone. These functions
take the `PostgresStore` whose queue and pool they use.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from sagakit.errors import LeaseLost, StoreError
from sagakit.store.base import RunRecord
from sagakit.store.postgresql.connection import Conn
from sagakit.store.postgresql.writes import (
    LOST,
    RUN_COLUMNS,
    Write,
    batch_params,
    commit_params,
    record,
    verdict,
)

if TYPE_CHECKING:
    from sagakit.store.postgresql.store import PostgresStore

# The largest number of commits one group-commit transaction takes.
_BATCH: Final = 1000


async def queue_write(store: PostgresStore, write: Write) -> Any:
    """Queue ``write`` for the next group commit; return its answer."""
    if store._pool is None:
        raise StoreError(f"the store {store._shown} is not open; call `await store.open()` first")
    future = _new()
    store._pending.append((write, future))
    if store._flusher is None or store._flusher.done():
        store._flusher = asyncio.ensure_future(_flush_all(store))
    return await future


async def _flush_all(store: PostgresStore) -> None:
    # Yield once first, so the commits made by other tasks in this same
    # turn of the loop share the transaction.
    await asyncio.sleep(0)
    while store._pending:
        batch = _takebatch_params(store)
        writes = [write for write, _ in batch]
        try:
            results = await store._with_conn("commit to", partial(_apply, store, batch=writes))
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
        store.flushes += 1
        for (write, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller was cancelled; the write stands or not, as it went
            if result is LOST:
                future.set_exception(LeaseLost(write.run_id))
            elif isinstance(result, StoreError):
                future.set_exception(result)
            else:
                future.set_result(result)


def _takebatch_params(store: PostgresStore) -> list[tuple[Write, asyncio.Future[Any]]]:
    # One commit per run per transaction: a run's commits must apply in order.
    batch: list[tuple[Write, asyncio.Future[Any]]] = []
    rest: list[tuple[Write, asyncio.Future[Any]]] = []
    seen: set[str] = set()
    for item in store._pending:
        run_id = item[0].run_id
        if run_id in seen or len(batch) >= _BATCH:
            rest.append(item)
        else:
            seen.add(run_id)
            batch.append(item)
    store._pending = rest
    return batch


async def _apply(store: PostgresStore, conn: Conn, *, batch: list[Write]) -> list[object]:
    """Write a batch; one result per write, in order.

    New runs take one statement and commits another, each its own
    transaction, so the common batch costs one round trip. A new run's
    result is the run that existed already (or None); a commit's is
    whether mail waits, `LOST` or a `StoreError`.
    """
    q = store._q
    creates = [w for w in batch if w.create]
    updates = [w for w in batch if not w.create]
    existing: dict[str, RunRecord] = {}
    outcome: dict[str, object] = {}  # by run id: a commit's result
    if creates:
        cur = await conn.execute(q["insert_runs"], batch_params(creates, RUN_COLUMNS))
        inserted = {row[0] for row in await cur.fetchall()}
        others = [w.run_id for w in creates if w.run_id not in inserted]
        if others:
            cur = await conn.execute(q["get_runs"], (others,))
            existing = {row[0]: record(row) for row in await cur.fetchall()}
    if updates:
        cur = await conn.execute(q["commit_runs"], commit_params(updates))
        outcome = {row[0]: bool(row[1]) for row in await cur.fetchall()}
        refused = [w for w in updates if w.run_id not in outcome]
        if refused:  # rare: a lost lease, or a retry of a commit that landed
            cur = await conn.execute(q["fence_state"], ([w.run_id for w in refused],))
            rows = {row[0]: row[1:] for row in await cur.fetchall()}
            for write in refused:
                outcome[write.run_id] = verdict(write, rows.get(write.run_id))
    return [existing.get(w.run_id) if w.create else outcome[w.run_id] for w in batch]


def _new() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()

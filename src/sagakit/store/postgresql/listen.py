"""Waking idle PostgreSQL workers: LISTEN on the store's channel.

Starting a run, handing one back or posting mail to one notifies the
channel, so a worker waiting for work wakes at once; when the listening
connection is down, the worker polls instead, and listens again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import psycopg

from sagakit.store.postgresql.connection import CONNECT_WAIT, Conn

if TYPE_CHECKING:
    from sagakit.store.postgresql.store import PostgresStore

logger = logging.getLogger("sagakit")


async def wait_for_notify(store: PostgresStore, timeout: float) -> None:
    """Return on a NOTIFY to ``store``'s channel, or after ``timeout`` seconds."""
    if store._listen_lock is None:
        store._listen_lock = asyncio.Lock()
    async with store._listen_lock:
        conn = await _listening(store)
        if conn is None:
            await asyncio.sleep(timeout)
            return
        try:
            async with contextlib.aclosing(conn.notifies(timeout=timeout, stop_after=1)) as notes:
                async for _ in notes:
                    break
        except psycopg.Error as exc:
            # The server restarted or the backend was terminated: poll this
            # time, and listen on a new connection next time.
            logger.warning("lost the LISTEN connection to PostgreSQL: %s", exc)
            store._listener = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            await asyncio.sleep(min(timeout, 1.0))


async def _listening(store: PostgresStore) -> Conn | None:
    if store._listener is not None and not store._listener.closed:
        return store._listener
    try:
        conn = await psycopg.AsyncConnection.connect(
            store._conninfo, autocommit=True, connect_timeout=int(CONNECT_WAIT)
        )
    except psycopg.Error as exc:
        logger.warning("cannot LISTEN on PostgreSQL (polling instead): %s", exc)
        return None
    try:
        await conn.execute(f"LISTEN {store.channel}")
    except BaseException as exc:
        # Cancelled (a worker stopping) or failed: never leave the connection open.
        await conn.close()
        if not isinstance(exc, psycopg.Error):
            raise
        logger.warning("cannot LISTEN on PostgreSQL (polling instead): %s", exc)
        return None
    store._listener = conn
    return conn

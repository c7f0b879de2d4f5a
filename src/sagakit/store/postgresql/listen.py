"""Waking idle PostgreSQL workers: LISTEN on the store's channel.

Starting a run, handing one back or posting mail to one notifies the
channel, so a worker waiting for work wakes at once; when the listening
connection is down, the worker polls instead, and listens again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from sagakit.store.postgresql.connection import CONNECT_WAIT, Conn, first_line

logger = logging.getLogger("sagakit")


class Listener:
    """A connection of its own that LISTENs on a channel, opened at the first wait.

    Args:
        conninfo: The URL libpq reads.
        channel: The channel to LISTEN on (an SQL name).
    """

    def __init__(self, conninfo: str, *, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._conn: Conn | None = None
        self._lock: asyncio.Lock | None = None

    async def wait(self, timeout: float) -> None:
        """Return on a NOTIFY to the channel, or after ``timeout`` seconds."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = await self._listening()
            if conn is None:
                await asyncio.sleep(timeout)
                return
            try:
                async with contextlib.aclosing(
                    conn.notifies(timeout=timeout, stop_after=1)
                ) as notes:
                    async for _ in notes:
                        break
            except psycopg.Error as exc:
                # The server restarted or the backend was terminated: poll this
                # time, and listen on a new connection next time.
                logger.warning(
                    "lost the LISTEN connection to PostgreSQL: %s", first_line(exc, self._conninfo)
                )
                self._conn = None
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
                await asyncio.sleep(min(timeout, 1.0))

    async def close(self) -> None:
        """Close the listening connection, if there is one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def drop(self) -> None:
        """Forget the listening connection without closing it: its event loop is gone."""
        self._conn = None

    async def _listening(self) -> Conn | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=int(CONNECT_WAIT)
            )
        except psycopg.Error as exc:
            logger.warning(
                "cannot LISTEN on PostgreSQL (polling instead): %s", first_line(exc, self._conninfo)
            )
            return None
        try:
            await conn.execute(f"LISTEN {self._channel}")
        except BaseException as exc:
            # Cancelled (a worker stopping) or failed: never leave the connection open.
            await conn.close()
            if not isinstance(exc, psycopg.Error):
                raise
            logger.warning(
                "cannot LISTEN on PostgreSQL (polling instead): %s", first_line(exc, self._conninfo)
            )
            return None
        self._conn = conn
        return conn

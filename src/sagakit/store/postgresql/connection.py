"""The PostgreSQL store's connection to its database.

The pool, the named queries, opening, and the schema's version check and
migrations. Several processes may open (and migrate) a new database at
once: migrations run under an advisory lock, and the version is read again
once it is held.
"""

from __future__ import annotations

import os
import select
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from sagakit import jsonutil
from sagakit.errors import SchemaVersionError, StoreError
from sagakit.store import redact_text, sql
from sagakit.store.base import not_open_error
from sagakit.store.postgresql import arrays

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
SyncConn = psycopg.Connection[tuple[Any, ...]]

_T = TypeVar("_T")

# Seconds to wait for a connection at open (and from the pool afterwards, by default).
CONNECT_WAIT: Final = 10.0


def first_line(exc: BaseException, conninfo: str = "") -> str:
    """The first line of the driver's error, with any password of ``conninfo`` masked.

    libpq quotes parts of the connection string in some errors (a badly
    percent-encoded password, whole), and adds hint lines of its own.
    """
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return redact_text(line, conninfo) if conninfo else line


def store_error(shown: str, action: str, exc: BaseException, *, conninfo: str = "") -> StoreError:
    """The error for a failed call to the database.

    Args:
        shown: The database's URL without its password.
        action: What failed, as in "could not {action} PostgreSQL database ...".
        exc: The driver's error; its first line ends the message.
        conninfo: The URL the driver was given: its passwords are masked in
            the driver's words.
    """
    return StoreError(
        f"could not {action} PostgreSQL database {shown}: {first_line(exc, conninfo)}"
    )


class PostgresConnection:
    """One store's way to its database: an asynchronous pool and the named queries.

    Construction does no I/O; `connect` opens the pool.

    Args:
        conninfo: The URL libpq reads (without sagakit's options).
        shown: The URL for messages: never the password.
        schema: The schema holding sagakit's tables.
        channel: The channel the queries NOTIFY.
        pool_size: The most connections the pool opens.
        read_only: Every session is read-only (``SET SESSION CHARACTERISTICS``).
        pool_timeout: Seconds a call waits for a connection from the pool.

    Attributes:
        shown: The URL for messages.
        schema: The schema name.
        pool_size: The most connections the pool opens.
        channel: The channel NOTIFY wakes idle workers on.
        read_only: As given.
        pool_timeout: As given.
        queries: Each named query by its name, with its schema and channel filled in.
        pool: The open pool, or None before `connect` and after `close`.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        shown: str,
        schema: str,
        channel: str,
        pool_size: int,
        read_only: bool = False,
        pool_timeout: float = CONNECT_WAIT,
    ) -> None:
        self._conninfo = conninfo
        self.pool_timeout = pool_timeout
        self.read_only = read_only
        self.pool_size = pool_size
        self.shown = shown
        self.schema = schema
        self.channel = channel
        self.queries = {
            name: text.replace("{schema}", schema).replace("{channel}", channel)
            for name, text in sql.load_queries("postgresql").items()
        }
        self.pool: AsyncConnectionPool[Conn] | None = None
        self.forked_from: int | None = None
        """The process that opened the pool, in a child it forked (`_disown_in_child`)."""
        _MADE.add(self)

    def not_open(self) -> StoreError:
        """The error for work asked of a store that is not open (or is the parent's)."""
        return not_open_error(
            self.shown, self.forked_from, "its connections are the parent's sessions"
        )

    def error(self, action: str, exc: BaseException) -> StoreError:
        """See `store_error`."""
        return store_error(self.shown, action, exc, conninfo=self._conninfo)

    async def with_conn(self, action: str, fn: Callable[[Conn], Awaitable[_T]]) -> _T:
        """Call ``fn`` with a connection from the pool; return what it returns.

        Raises:
            StoreError: the store is not open, or a call to the database failed
                (it says it could not ``action`` the database).
        """
        pool = self.pool
        if pool is None:
            raise self.not_open()
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except psycopg.Error as exc:  # PoolTimeout and PoolClosed are psycopg errors too
            raise self.error(action, exc) from exc

    async def fetch(self, action: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of the named ``query``; see `with_conn`."""

        async def go(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(self.queries[query], params)
            return await cur.fetchall()

        return await self.with_conn(action, go)

    async def connect(self) -> None:
        """Open the pool, after one plain connection that shows the server's own words.

        Raises:
            StoreError: the server cannot be reached.
        """
        try:
            # One plain connection first: the pool would retry a refused
            # connection until its timeout, and hide the server's own words.
            probe = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=int(CONNECT_WAIT)
            )
            await probe.close()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.shown}: "
                f"{first_line(exc, self._conninfo)}; is the server "
                "running, and are the host, user and database right?"
            ) from exc
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True},
            configure=_configure_read_only if self.read_only else _configure,
            check=_check,
            reset=_returned,
            name=f"sagakit-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_WAIT)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.shown} within {CONNECT_WAIT:.0f}s "
                f"({first_line(exc, self._conninfo)}); is the server running, and are the "
                "host, user and database right?"
            ) from exc
        self.pool = pool

    def detach(self) -> AsyncConnectionPool[Conn] | None:
        """Take the pool away (None if there is none): the store is closed from now on.

        The caller closes it, when it is ready to (see `PostgresStore.close`).
        """
        pool, self.pool = self.pool, None
        return pool

    def drop(self) -> None:
        """Forget the pool without closing it: its event loop is gone."""
        self.pool = None

    async def check_schema(self, *, apply: bool, must_exist: bool = False) -> tuple[int, int]:
        """Check the schema's version, and migrate it first if ``apply``.

        With ``must_exist`` (and not ``apply``), a schema that is missing or
        holds no sagakit tables is refused, not reported as version 0.

        Returns:
            The version found and the current one.

        Raises:
            SchemaVersionError: the schema is newer than this sagakit, or older
                and ``apply`` is false.
            StoreError: ``must_exist``, and the schema holds no sagakit store.
        """
        latest = sql.migrations("postgresql")[-1][0]
        q = self.queries
        schema = self.schema

        async def current(conn: Conn) -> int:
            cur = await conn.execute(q["schema_version_exists"])
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0
            cur = await conn.execute(q["get_schema_version"])
            found = await cur.fetchone()
            return int(found[0]) if found else 0

        async def check(conn: Conn) -> tuple[int, int]:
            version = await current(conn)
            if version > latest:
                raise SchemaVersionError(
                    f"the sagakit schema {schema!r} in {self.shown} is at version "
                    f"{version}, newer than this sagakit knows ({latest}); upgrade sagakit"
                )
            if version == latest:
                return version, version
            if version == 0 and must_exist and not apply:
                raise StoreError(
                    f"no sagakit store in PostgreSQL database {self.shown}: the schema "
                    f"{schema!r} has no sagakit tables (opened to read only, so nothing is "
                    "created; `sagakit migrate --db URL` creates them)"
                )
            if not apply:
                raise SchemaVersionError(
                    f"the sagakit schema {schema!r} in {self.shown} is at version "
                    f"{version}, older than this sagakit needs ({latest}); run "
                    f"`sagakit migrate --db URL`"
                )
            async with conn.transaction():
                await conn.execute(q["migration_lock"])
                # Read again under the lock: another process may have migrated.
                before = await current(conn)
                if before > latest:
                    raise SchemaVersionError(f"schema {schema!r} moved to {before} meanwhile")
                await conn.execute(q["create_schema"])
                await conn.execute(q["create_schema_version"])
                for number, script in sql.migrations("postgresql"):
                    if number > before:
                        # No parameters: psycopg sends the script as it is, several statements.
                        await conn.execute(script.replace("{schema}", schema).encode())
                        await conn.execute(q["set_schema_version"], (number,))
            return before, latest

        return await self.with_conn("migrate", check)


RECENT: Final = 1.0
"""Seconds since a connection was last handed back to the pool within which
it may be handed out again without a round trip to the server (`_check`)."""

# When each of the pool's connections was last handed back (monotonic time).
_returned_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()


async def _returned(conn: Conn) -> None:
    _returned_at[conn] = time.monotonic()


def _readable(fd: int) -> bool:
    """Whether the socket ``fd`` has something to read (or was closed), without waiting."""
    if hasattr(select, "poll"):
        # poll, not select: select() refuses a descriptor numbered 1024 or more.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # Windows: no poll, no such limit


async def _check(conn: Conn) -> None:
    """The pool's check of a connection it hands out.

    A group commit takes a connection for each batch, and checking each with
    an empty query (psycopg's check) added a round trip to every batch. A
    connection made or handed back less than `RECENT` seconds ago, outside any
    transaction, whose socket has nothing to read, is handed out as it is:
    an idle session is sent nothing, so a server that ended it (a restart,
    ``pg_terminate_backend``) has left its socket readable (its last message,
    or the end of the stream). Any other connection is checked by a round
    trip, as before, and the pool replaces one that fails it.
    """
    returned = _returned_at.get(conn)
    if (
        returned is not None
        and time.monotonic() - returned < RECENT
        and not conn.broken
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        and not _readable(conn.pgconn.socket)
    ):
        return
    await AsyncConnectionPool.check_connection(conn)


async def _configure(conn: Conn) -> None:
    # pydantic-core decodes JSON several times faster than the json module.
    set_json_loads(jsonutil.loads, conn)
    # The batched writes' columns, sent as binary arrays.
    arrays.register(conn)
    # Just made: as good as just handed back (see `_check`).
    _returned_at[conn] = time.monotonic()


async def _configure_read_only(conn: Conn) -> None:
    await _configure(conn)
    # The server then refuses any write, whatever a bug here might send.
    await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")


# Every connection made, to be disowned in a forked child (`_disown_in_child`).
_MADE: weakref.WeakSet[PostgresConnection] = weakref.WeakSet()
# The pools a forked child inherited: kept, never closed nor collected there
# (the pool's finaliser would wait for its workers, tasks of the parent's loop).
_INHERITED: list[object] = []


def _disown_in_child() -> None:
    """In a child just forked: every open pool is its parent's, not this process's.

    Its connections are the parent's sessions and its tasks ran on the
    parent's event loop: the child keeps the pool untouched, never closed
    (psycopg ends a connection's session only in the process that opened
    it), and the store refuses work with an error that says so; closing
    it does nothing.
    """
    parent = os.getppid()
    for connection in list(_MADE):
        if connection.pool is not None:
            _INHERITED.append(connection.pool)
            connection.pool = None
            connection.forked_from = parent


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_disown_in_child)

"""Opening a PostgreSQL store: the connection pool, and the schema's version
check and migrations.

Several processes may open (and migrate) a new database at once: migrations
run under an advisory lock, and the version is read again once it is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from sagakit import jsonutil
from sagakit.errors import SchemaVersionError, StoreError
from sagakit.store import sql

if TYPE_CHECKING:
    from sagakit.store.postgresql.store import PostgresStore

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
SyncConn = psycopg.Connection[tuple[Any, ...]]

# Seconds to wait for a connection (at open, and from the pool afterwards).
CONNECT_WAIT: Final = 10.0


async def connect(store: PostgresStore) -> None:
    """Open ``store``'s pool, after one plain connection that shows the server's own words."""
    try:
        # One plain connection first: the pool would retry a refused
        # connection until its timeout, and hide the server's own words.
        probe = await psycopg.AsyncConnection.connect(
            store._conninfo, connect_timeout=int(CONNECT_WAIT)
        )
        await probe.close()
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at {store._shown}: {exc}; is the server "
            "running, and are the host, user and database right?"
        ) from exc
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        store._conninfo,
        min_size=1,
        max_size=store.pool_size,
        open=False,
        timeout=CONNECT_WAIT,
        kwargs={"autocommit": True},
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        name=f"sagakit-{store.schema}",
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_WAIT)
    except psycopg.Error as exc:
        await pool.close()
        raise StoreError(
            f"cannot connect to PostgreSQL at {store._shown} within {CONNECT_WAIT:.0f}s "
            f"({exc}); is the server running, and are the host, user and database right?"
        ) from exc
    store._pool = pool


async def check_schema(store: PostgresStore, *, apply: bool) -> tuple[int, int]:
    """Check ``store``'s schema version, and migrate it first if ``apply``; return the
    version found and the current one."""
    latest = sql.migrations("postgresql")[-1][0]

    async def current(conn: Conn) -> int:
        cur = await conn.execute(store._q["schema_version_exists"])
        row = await cur.fetchone()
        if row is None or not row[0]:
            return 0
        cur = await conn.execute(store._q["get_schema_version"])
        found = await cur.fetchone()
        return int(found[0]) if found else 0

    async def check(conn: Conn) -> tuple[int, int]:
        version = await current(conn)
        if version > latest:
            raise SchemaVersionError(
                f"the sagakit schema {store.schema!r} in {store._shown} is at version "
                f"{version}, newer than this sagakit knows ({latest}); upgrade sagakit"
            )
        if version == latest:
            return version, version
        if not apply:
            raise SchemaVersionError(
                f"the sagakit schema {store.schema!r} in {store._shown} is at version "
                f"{version}, older than this sagakit needs ({latest}); run "
                f"`sagakit migrate --db URL`"
            )
        async with conn.transaction():
            await conn.execute(store._q["migration_lock"])
            # Read again under the lock: another process may have migrated.
            before = await current(conn)
            if before > latest:
                raise SchemaVersionError(f"schema {store.schema!r} moved to {before} meanwhile")
            await conn.execute(store._q["create_schema"])
            await conn.execute(store._q["create_schema_version"])
            for number, script in sql.migrations("postgresql"):
                if number > before:
                    # No parameters: psycopg sends the script as it is, several statements.
                    await conn.execute(script.replace("{schema}", store.schema).encode())
                    await conn.execute(store._q["set_schema_version"], (number,))
        return before, latest

    return await store._with_conn("migrate", check)


async def _configure(conn: Conn) -> None:
    # pydantic-core decodes JSON several times faster than the json module.
    set_json_loads(jsonutil.loads, conn)

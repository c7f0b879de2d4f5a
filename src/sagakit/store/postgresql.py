"""The PostgreSQL store: one database shared by any number of worker
processes on any number of hosts.

Connections come from a psycopg 3 pool that checks each connection before
lending it, so a backend that was terminated or a server that restarted costs
one failed call (which the driver retries), never a stuck worker. Commits from
concurrent runs are batched (group commit): while one transaction is being
written, new commits queue up and the next transaction takes them all, as a
handful of statements that unnest one array per column. Fencing is part of
the batch's commit statement, so a commit whose lease moved on is refused alone.

Workers that find nothing to do wait on LISTEN/NOTIFY: starting a run,
handing one back or posting mail to one notifies the store's channel, so an
idle worker wakes at once; polling remains the fallback when the listening
connection is down.

Local transactions (a step's own writes committed with its journal record)
use plain blocking connections from a second, small pool that is created the
first time a step asks for one: they run on worker threads, never on the
event loop, so they cannot share the asynchronous pool.

URLs: ``postgresql://user:password@host:port/database`` (``postgres://`` too),
with libpq's own options (``sslmode``, ``connect_timeout``, ...) and these:
``schema`` (default ``sagakit``: the tables live in their own schema),
``pool_size`` (default 10 connections), ``migrate`` (default ``true``: bring
the schema up to date on open; with ``false`` an out-of-date schema is an
error that says to run ``sagakit migrate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sagakit import jsonutil
from sagakit.errors import LeaseLost, SchemaVersionError, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import redact_url, sql
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
from sagakit.store.postgresql_writes import (
    LOST,
    RUN_COLUMNS,
    Write,
    batch_params,
    commit_params,
    commit_write,
    create_write,
    record,
    verdict,
)

_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_SyncConn = psycopg.Connection[tuple[Any, ...]]

logger = logging.getLogger("sagakit")

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}
_POOL_SIZE: Final = 10
# Seconds to wait for a connection (at open, and from the pool afterwards).
_CONNECT_WAIT: Final = 10.0
# The largest number of commits one group-commit transaction takes.
_BATCH: Final = 1000


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a PostgreSQL URL into what libpq reads and sagakit's own options.

    Returns:
        The connection URL without sagakit's options, and those options.

    Raises:
        StoreError: the URL is not a PostgreSQL URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL: {url!r}; use postgresql://user@host/database")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("schema", "pool_size", "migrate"):
            ours[key] = value
        else:
            theirs.append((key, value))
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(theirs)))
    return conninfo, ours


class PostgresStore(Store):
    """Runs and journals in a PostgreSQL database, in a schema of their own.

    Construction does no I/O; `open` connects and (by default) creates or
    upgrades the schema. Use one store object from one event loop.

    Args:
        url: ``postgresql://user:password@host:port/database``, optionally with
            ``?schema=NAME&pool_size=N&migrate=false`` and libpq options.
        schema: The schema holding sagakit's tables; overrides the URL's.
        pool_size: The most connections this store opens; overrides the URL's.
        migrate: Upgrade the schema on open (True) or only check it (False).

    Attributes:
        schema: The schema name.
        flushes: Group-commit transactions written so far (for tests and metrics).

    Raises:
        StoreError: the URL or an option is invalid.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        migrate: bool | None = None,
    ) -> None:
        self.url = url
        self._shown = redact_url(url)  # for messages: never the password
        self._conninfo, options = parse_url(url)
        self.schema = schema if schema is not None else options.get("schema", "sagakit")
        if not _SCHEMA.match(self.schema):
            raise StoreError(
                f"schema must be a lower-case SQL name (letters, digits, _), got {self.schema!r}"
            )
        size = pool_size if pool_size is not None else options.get("pool_size", _POOL_SIZE)
        try:
            self.pool_size = int(size)
        except ValueError:
            raise StoreError(f"pool_size must be a whole number, got {size!r}") from None
        if self.pool_size < 2:
            raise StoreError(f"pool_size must be at least 2, got {self.pool_size}")
        if migrate is None:
            flag = options.get("migrate", "true").lower()
            if flag not in _TRUE | _FALSE:
                raise StoreError(f"migrate must be true or false, got {flag!r}")
            migrate = flag in _TRUE
        self.auto_migrate = migrate
        self.channel = f"sagakit_{self.schema}"
        self.flushes = 0
        self._q = {
            name: text.replace("{schema}", self.schema).replace("{channel}", self.channel)
            for name, text in sql.load_queries("postgresql").items()
        }
        self._pool: AsyncConnectionPool[_Conn] | None = None
        # Queued writes, each with the future its caller awaits.
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listener: _Conn | None = None
        self._listen_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_pool: ConnectionPool[_SyncConn] | None = None
        self._local_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> StoreError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"could not {action} PostgreSQL database {self._shown}: {detail}")

    async def _with_conn(self, action: str, fn: Callable[[_Conn], Awaitable[_T]]) -> _T:
        pool = self._pool
        if pool is None:
            raise StoreError(
                f"the store {self._shown} is not open; call `await store.open()` first"
            )
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except psycopg.Error as exc:  # PoolTimeout and PoolClosed are psycopg errors too
            raise self._error(action, exc) from exc

    async def _fetch(self, action: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def go(conn: _Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(self._q[query], params)
            return await cur.fetchall()

        return await self._with_conn(action, go)

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`. Several processes may open a new database at once."""
        if self._pool is not None:
            return
        self._loop = asyncio.get_running_loop()
        await self._connect()
        try:
            await self._check_schema(apply=self.auto_migrate)
        except BaseException:
            await self._disconnect()
            raise

    async def migrate(self) -> tuple[int, int]:
        """See `Store.migrate`."""
        opened_here = self._pool is None
        if opened_here:
            await self._connect()
        try:
            return await self._check_schema(apply=True)
        finally:
            if opened_here:
                await self._disconnect()

    async def _connect(self) -> None:
        try:
            # One plain connection first: the pool would retry a refused
            # connection until its timeout, and hide the server's own words.
            probe = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=int(_CONNECT_WAIT)
            )
            await probe.close()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._shown}: {exc}; is the server "
                "running, and are the host, user and database right?"
            ) from exc
        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=_CONNECT_WAIT,
            kwargs={"autocommit": True},
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            name=f"sagakit-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=_CONNECT_WAIT)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._shown} within {_CONNECT_WAIT:.0f}s "
                f"({exc}); is the server running, and are the host, user and database right?"
            ) from exc
        self._pool = pool

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        if pool is not None:
            await pool.close()
        await self._close_local_pool()

    async def _close_local_pool(self) -> None:
        with self._local_lock:
            local, self._local_pool = self._local_pool, None
        if local is not None:
            # Blocking (it joins the pool's threads): not on the event loop.
            await asyncio.to_thread(local.close)

    async def _check_schema(self, *, apply: bool) -> tuple[int, int]:
        latest = sql.migrations("postgresql")[-1][0]

        async def current(conn: _Conn) -> int:
            cur = await conn.execute(self._q["schema_version_exists"])
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0
            cur = await conn.execute(self._q["get_schema_version"])
            found = await cur.fetchone()
            return int(found[0]) if found else 0

        async def check(conn: _Conn) -> tuple[int, int]:
            version = await current(conn)
            if version > latest:
                raise SchemaVersionError(
                    f"the sagakit schema {self.schema!r} in {self._shown} is at version "
                    f"{version}, newer than this sagakit knows ({latest}); upgrade sagakit"
                )
            if version == latest:
                return version, version
            if not apply:
                raise SchemaVersionError(
                    f"the sagakit schema {self.schema!r} in {self._shown} is at version "
                    f"{version}, older than this sagakit needs ({latest}); run "
                    f"`sagakit migrate --db URL`"
                )
            async with conn.transaction():
                await conn.execute(self._q["migration_lock"])
                # Read again under the lock: another process may have migrated.
                before = await current(conn)
                if before > latest:
                    raise SchemaVersionError(f"schema {self.schema!r} moved to {before} meanwhile")
                await conn.execute(self._q["create_schema"])
                await conn.execute(self._q["create_schema_version"])
                for number, script in sql.migrations("postgresql"):
                    if number > before:
                        # No parameters: psycopg sends the script as it is, several statements.
                        await conn.execute(script.replace("{schema}", self.schema).encode())
                        await conn.execute(self._q["set_schema_version"], (number,))
            return before, latest

        return await self._with_conn("migrate", check)

    async def close(self) -> None:
        """See `Store.close`. Waits for queued commits; safe to call twice."""
        if self._pool is None:
            return
        if self._loop is not asyncio.get_running_loop():
            # The loop that opened the store died (a step called sys.exit()):
            # its connections cannot be awaited from here. Drop them; the
            # server ends their sessions when the process lets go of the sockets.
            self._pool = self._listener = self._flusher = None
            await self._close_local_pool()  # plain sockets and threads: closable from here
            return
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(flusher)
        await self._disconnect()

    # -- group commit -------------------------------------------------------------

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        existing = await self._write(create_write(run, events))
        if existing is not None:
            return existing, False
        # A new run has no mail yet, whatever the record said (the column's default).
        last_seq = events[-1].seq if events else run.last_seq
        stored = dataclasses.replace(run, status=RunStatus(run.status), last_seq=last_seq, mail=0)
        return stored, True

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`. Concurrent commits share one transaction."""
        return bool(await self._write(commit_write(commit)))

    async def _write(self, write: Write) -> Any:
        if self._pool is None:
            raise StoreError(
                f"the store {self._shown} is not open; call `await store.open()` first"
            )
        future = _new()
        self._pending.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        # Yield once first, so the commits made by other tasks in this same
        # turn of the loop share the transaction.
        await asyncio.sleep(0)
        while self._pending:
            batch = self._takebatch_params()
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

    def _takebatch_params(self) -> list[tuple[Write, asyncio.Future[Any]]]:
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

    async def _apply(self, conn: _Conn, *, batch: list[Write]) -> list[object]:
        """Write a batch; one result per write, in order.

        New runs take one statement and commits another, each its own
        transaction, so the common batch costs one round trip. A new run's
        result is the run that existed already (or None); a commit's is
        whether mail waits, `LOST` or a `StoreError`.
        """
        q = self._q
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

    # -- reads and leases -----------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        rows = await self._fetch(f"read run {run_id!r} from", "get_run", (run_id,))
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
        query = "list_runs" if status is None else "list_runs_by_status"
        return [record(row) for row in await self._fetch("list runs of", query, params)]

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        action = f"read the journal of run {run_id!r} from"
        rows = await self._fetch(action, "journal", (run_id, after_seq))
        return [
            Event(run, seq, EventKind(kind), at, step, attempt, data)
            for run, seq, kind, at, step, attempt, data in rows
        ]

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """See `Store.journals`: one query."""
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            return {}
        rows = await self._fetch("read journals from", "journals", (wanted,))
        found: dict[str, list[Event]] = {run_id: [] for run_id in wanted}
        for run, seq, kind, at, step, attempt, data in rows:
            found[run].append(Event(run, seq, EventKind(kind), at, step, attempt, data))
        return found

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        params = {"id": run_id, "owner": owner, "now": now, "lease_until": lease_until}
        rows = await self._fetch(f"claim run {run_id!r} in", "claim", params)
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
        """See `Store.claim_due`. Workers claiming at once take different runs."""
        if limit <= 0 or (sagas is not None and not sagas):
            return []
        params = {
            "owner": owner,
            "now": now,
            "lease_until": lease_until,
            "limit": limit,
            "any_saga": sagas is None,
            "names": [name for name, _ in sagas or ()],
            "versions": [version for _, version in sagas or ()],
        }
        rows = await self._fetch("claim due runs in", "claim_due", params)
        # UPDATE ... RETURNING has no order: restore the due order (the last
        # column, read before the claim cleared wake_at).
        rows.sort(key=lambda row: (row[-1], row[0]))
        return [record(row[:-1]) for row in rows]

    async def renew(self, leases: dict[str, Lease], *, lease_until: float) -> set[str]:
        """See `Store.renew`."""
        if not leases:
            return set()
        params = {
            "lease_until": lease_until,
            "id": list(leases),
            "owner": [lease.owner for lease in leases.values()],
            "epoch": [lease.epoch for lease in leases.values()],
        }
        rows = await self._fetch("renew leases in", "renew", params)
        return set(leases) - {row[0] for row in rows}

    async def release(self, run_id: str, lease: Lease) -> None:
        """See `Store.release`."""

        async def go(conn: _Conn) -> None:
            async with conn.transaction():
                cur = await conn.execute(self._q["release"], (run_id, lease.owner, lease.epoch))
                row = await cur.fetchone()
                if row is not None and row[0]:  # due at once: wake a worker to take it
                    await conn.execute(self._q["notify"])

        await self._with_conn(f"release run {run_id!r} in", go)

    # -- mail and reservations ------------------------------------------------------

    async def post(self, run_id: str, kind: str, data: Any, *, at: float) -> Mail | None:
        """See `Store.post`. Notifies idle workers, as starting a run does."""
        params = {
            "run_id": run_id,
            "kind": kind,
            "data": encode_json(data, f"{kind} mail", run_id),
            "at": at,
        }
        rows = await self._fetch(f"post mail to run {run_id!r} in", "post", params)
        if not rows:
            return None
        mail_id, run, stored_kind, payload, posted_at, _ = rows[0]
        return Mail(mail_id, run, stored_kind, payload, posted_at)

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        rows = await self._fetch(f"read the mail of run {run_id!r} from", "mail", (run_id,))
        return [Mail(*row) for row in rows]

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`. One upsert; a second read only when another run holds it."""
        params = {"name": name, "run_id": run_id, "now": now, "expires_at": expires_at}

        async def go(conn: _Conn) -> tuple[Any, ...] | None:
            async with conn.transaction():
                cur = await conn.execute(self._q["reserve"], params)
                row = await cur.fetchone()
                if row is None:
                    # Held by another run: the upsert locked its row without
                    # returning it. A new statement (a new snapshot) sees it
                    # even if its holder committed after the upsert began.
                    cur = await conn.execute(self._q["reserve_holder"], (name,))
                    row = await cur.fetchone()
                return row

        row = await self._with_conn(f"reserve {name!r} in", go)
        if row is None:  # cannot happen: the row is locked until the transaction ends
            raise StoreError(f"reservation {name!r} vanished while being taken; try again")
        return Reservation(*row)

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        params = {"run_id": run_id, "all": names is None, "names": list(names or ())}
        action = f"release the reservations of run {run_id!r} in"
        rows = await self._fetch(action, "release_reservations", params)
        return int(rows[0][0])

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        rows = await self._fetch(
            "list reservations in", "reservations", {"run_id": run_id, "now": now}
        )
        return [Reservation(*row) for row in rows]

    # -- local transactions -----------------------------------------------------------

    def local_transaction(self) -> LocalTransaction:
        """See `Store.local_transaction`: a blocking connection in a transaction.

        Its ``connection`` is a psycopg `Connection` with the server's default
        ``search_path`` (sagakit's own tables are always named with their
        schema), so the step's SQL sees the tables it would see anywhere else.
        """
        if self._pool is None:
            raise StoreError(
                f"the store {self._shown} is not open; call `await store.open()` first"
            )
        try:
            pool = self._local_connections()
            conn = pool.getconn()
        except psycopg.Error as exc:  # PoolTimeout included
            raise self._error("open a local transaction on", exc) from exc
        try:
            # Begin now rather than at the step's first statement: a step's
            # `with connection.transaction():` is then a savepoint inside this
            # transaction, not a transaction of its own that commits early,
            # and a step that commits the connection itself can be told.
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            pool.putconn(conn)  # broken: the pool discards it
            raise self._error("open a local transaction on", exc) from exc
        return PostgresLocalTransaction(self, pool, conn)

    def _local_connections(self) -> ConnectionPool[_SyncConn]:
        # Several worker threads may ask at once: one pool for all of them.
        with self._local_lock:
            if self._local_pool is None:
                pool: ConnectionPool[_SyncConn] = ConnectionPool(
                    self._conninfo,
                    min_size=0,  # no connection until a step needs one
                    max_size=self.pool_size,
                    open=False,
                    timeout=_CONNECT_WAIT,
                    # No prepared statements: each return to the pool runs
                    # DISCARD ALL, which drops them on the server, and psycopg
                    # forgets its own list of them only the first time.
                    kwargs={"autocommit": False, "prepare_threshold": None},
                    check=ConnectionPool.check_connection,
                    reset=_reset_local,
                    name=f"sagakit-{self.schema}-local",
                )
                pool.open()
                self._local_pool = pool
            return self._local_pool

    # -- waking idle workers --------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:
        """See `Store.wait_for_work`: returns on a NOTIFY, or after ``timeout``."""
        if self._listen_lock is None:
            self._listen_lock = asyncio.Lock()
        async with self._listen_lock:
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
                logger.warning("lost the LISTEN connection to PostgreSQL: %s", exc)
                self._listener = None
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
                await asyncio.sleep(min(timeout, 1.0))

    async def _listening(self) -> _Conn | None:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=int(_CONNECT_WAIT)
            )
        except psycopg.Error as exc:
            logger.warning("cannot LISTEN on PostgreSQL (polling instead): %s", exc)
            return None
        try:
            await conn.execute(f"LISTEN {self.channel}")
        except BaseException as exc:
            # Cancelled (a worker stopping) or failed: never leave the connection open.
            await conn.close()
            if not isinstance(exc, psycopg.Error):
                raise
            logger.warning("cannot LISTEN on PostgreSQL (polling instead): %s", exc)
            return None
        self._listener = conn
        return conn


class PostgresLocalTransaction(LocalTransaction):
    """A step's transaction on a blocking psycopg connection; see `LocalTransaction`.

    Made by `PostgresStore.local_transaction`. The step writes through
    `connection`; `commit` then writes the step's record with the store's
    own fenced commit statement, in the same transaction, and commits both.

    Attributes:
        connection: The psycopg `Connection` (not in autocommit mode), inside
            a transaction already begun. The step must not commit or roll it
            back itself; `connection.transaction()` blocks are savepoints.
    """

    connection: _SyncConn

    def __init__(
        self, store: PostgresStore, pool: ConnectionPool[_SyncConn], conn: _SyncConn
    ) -> None:
        self.connection = conn
        self._store = store
        self._pool: ConnectionPool[_SyncConn] | None = pool
        self._ended = False  # committed or rolled back: commit may not run again

    def commit(self, commit: Commit) -> bool:
        """See `LocalTransaction.commit`."""
        if self._pool is None or self._ended:
            raise StoreError(f"run {commit.run_id!r}: the local transaction has already ended")
        write = commit_write(commit)
        queries = self._store._q
        conn = self.connection
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # The step committed or rolled back the connection itself: the
            # step's record must not be committed apart from its writes.
            self.rollback()
            raise StoreError(
                f"the local transaction on PostgreSQL database {self._store._shown} ended "
                f"before run {commit.run_id!r} committed; a step must not commit or roll "
                "back its connection"
            )
        try:
            cur = conn.execute(queries["commit_runs"], commit_params([write]))
            row = cur.fetchone()
            if row is not None:
                conn.commit()
                self._ended = True
                return bool(row[1])
            cur = conn.execute(queries["fence_state"], ([commit.run_id],))
            found = cur.fetchone()
        except psycopg.Error as exc:
            # Failed before COMMIT: nothing stands. Failed in it: the server
            # may have committed (an ack lost); the driver's retry of the same
            # commit then finds it applied.
            self.rollback()
            raise self._store._error(f"commit run {commit.run_id!r} to", exc) from exc
        # Not written, so the step's writes must not stand either.
        self.rollback()
        outcome = verdict(write, None if found is None else found[1:])
        if outcome is LOST:
            raise LeaseLost(commit.run_id)
        if isinstance(outcome, StoreError):
            raise outcome
        # The events are recorded already. Group commit takes that for the
        # resend of a commit whose acknowledgement was lost; a local
        # transaction cannot be such a resend (the lost one is gone, and this
        # one carries writes of its own), so it is an error, as on SQLite,
        # where the journal's key refuses the seqs. Nothing of it stands.
        first, last = write.events[0][1], write.events[-1][1]
        raise StoreError(
            f"run {commit.run_id!r}: journal events {first}..{last} are already recorded; "
            "the local transaction was rolled back (reload the run)"
        )

    def rollback(self) -> None:
        """See `LocalTransaction.rollback`."""
        self._ended = True
        if self._pool is None:
            return
        # On a broken connection the server has rolled back already.
        with contextlib.suppress(psycopg.Error):
            self.connection.rollback()

    def close(self) -> None:
        """See `LocalTransaction.close`. Safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self._ended = True
        with contextlib.suppress(psycopg.Error):
            self.connection.rollback()
        # The pool discards a broken connection and resets a good one.
        pool.putconn(self.connection)


def _reset_local(conn: _SyncConn) -> None:
    # A step may have changed its session (SET, temporary tables, session
    # advisory locks): the next step gets a clean one. DISCARD ALL cannot run
    # inside a transaction, hence autocommit for this one statement.
    conn.autocommit = True
    try:
        conn.execute("DISCARD ALL")
    finally:
        conn.autocommit = False


async def _configure(conn: _Conn) -> None:
    # pydantic-core decodes JSON several times faster than the json module.
    set_json_loads(jsonutil.loads, conn)


def _new() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()

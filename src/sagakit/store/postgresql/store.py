"""The PostgreSQL store.

One database shared by any number of worker processes on any number of
hosts. Connections come from a psycopg 3 pool that checks each connection
before lending it (by a round trip, or, for one handed back within the last
second, by a look at its socket: `sagakit.store.postgresql.connection`), so
a backend that was terminated or a server that restarted costs at most one
failed call (which the driver retries), never a stuck worker. Commits from
concurrent runs are batched (group commit): while one transaction is being
written, new commits queue up and the next transaction takes them all, as a
handful of statements that unnest one array per column.
Fencing is part of the batch's commit statement, so a commit whose lease
moved on is refused alone.

Workers that find nothing to do wait on LISTEN/NOTIFY: starting a run,
handing one back or posting mail to one notifies the store's channel, so an
idle worker wakes at once; polling remains the fallback when the listening
connection is down.

Local transactions (a step's own writes committed with its journal record)
use plain blocking connections from a second, small pool that is created the
first time a step asks for one: they run on worker threads, never on the
event loop, so they cannot share the asynchronous pool.

`PostgresStore` composes the parts that live beside this module: a
`PostgresConnection` (the pool, the named queries, opening and migrating;
`sagakit.store.postgresql.connection`), `GroupCommit` on that connection
(`sagakit.store.postgresql.group_commit`, its statements' parameters in
`sagakit.store.postgresql.writes`), a `Listener` for LISTEN
(`sagakit.store.postgresql.listen`) and a `LocalPool` for local transactions
(`sagakit.store.postgresql.local`). It keeps the options, reads, claims, mail
and reservations.

URLs: ``postgresql://user:password@host:port/database`` (``postgres://`` too),
with libpq's own options (``sslmode``, ``connect_timeout``, ...) and these:
``schema`` (default ``sagakit``: the tables live in their own schema),
``pool_size`` (default 10 connections, 2 to 1000), ``pool_timeout`` (default
10 seconds: how long a call waits for a free connection, or for one to be
made, before it fails; a lease renewal waits at most a third of a lease
whatever this says), ``lease_clock`` (default ``database``: leases on the
server's clock; ``local``: on the callers'), ``migrate`` (default ``true``: bring
the schema up to date on open; with ``false`` an out-of-date schema is an
error that says to run ``sagakit migrate``). Opened with ``read_only=True``
the store creates and migrates nothing, and its sessions are read-only: a
schema that is missing or holds no sagakit tables is refused with one line.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from sagakit import jsonutil
from sagakit.errors import LeaseLost, ReservationLapsed, StoreError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.jsonutil import encode_json
from sagakit.store import redact_url, sql
from sagakit.store.base import (
    FINISHED_STATUSES,
    Backlog,
    Commit,
    DataRewrite,
    Lease,
    LocalTransaction,
    Mail,
    Purged,
    Reservation,
    Rewritten,
    RunCounts,
    RunCursor,
    RunFilter,
    RunRecord,
    Store,
    created_record,
    page_params,
    page_query,
    purge_statuses,
)
from sagakit.store.changes import StateChanges, utf8_size
from sagakit.store.postgresql.connection import Conn, PostgresConnection
from sagakit.store.postgresql.group_commit import GroupCommit
from sagakit.store.postgresql.listen import Listener
from sagakit.store.postgresql.local import LocalPool
from sagakit.store.postgresql.writes import (
    LOST,
    Write,
    commit_params,
    commit_write,
    create_write,
    record,
    verdict,
    write_big,
)

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}
_POOL_SIZE: Final = 10
# More connections than this from one store is a typo, not a plan: PostgreSQL
# allows 100 connections in all by default.
_MOST_POOL_SIZE: Final = 1000
_OPTIONS: Final = ("schema", "pool_size", "migrate", "pool_timeout", "lease_clock")
_LEASE_CLOCKS: Final = ("database", "local")
# Seconds a call waits for a free connection from the pool (the default, and the most).
_POOL_TIMEOUT: Final = 10.0
_MOST_POOL_TIMEOUT: Final = 3600.0
READ_FROM: Final = 32 * 1024
"""`get_run` reads a state stored in this many bytes or more in pieces
(`READ_PIECE`). Stored as PostgreSQL stores it, compressed: a state of JSON
text that compresses well is many times bigger once read."""
READ_PIECE: Final = 256 * 1024
"""The bytes of each piece of a state `get_run` reads in pieces."""
# A page of `rewrite_data` that loses a deadlock is taken again this many times at most.
_REWRITE_ATTEMPTS: Final = 5


def _same(value: Any) -> Any:
    """A jsonb column as psycopg gives it: already decoded."""
    return value


def _fold_changes(rows: list[Any]) -> tuple[list[Any], dict[str, JSON]]:
    """A page of ``rewrite_runs_page`` as (id, state): each state whole.

    Returns:
        The rows, and the whole state of each run that had state changes, by id.
    """
    folded: dict[str, JSON] = {}
    for run_id, state, changes in rows:
        if changes:
            for change in changes:
                state.update(change)
            folded[run_id] = state
    return [row[:2] for row in rows], folded


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a PostgreSQL URL into what libpq reads and sagakit's own options.

    Returns:
        The connection URL without sagakit's options, and those options.

    Raises:
        StoreError: the URL is not a PostgreSQL URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(
            f"not a PostgreSQL URL: {redact_url(url)!r}; use postgresql://user@host/database"
        )
    ours: dict[str, str] = {}
    theirs: list[str] = []
    # libpq's options pass through as written: decoding and encoding them again
    # would turn a "+" (which libpq keeps) into a space.
    for field in parts.query.split("&"):
        if not field:
            continue  # "?" alone, or "&&"
        key, _, value = field.partition("=")
        if unquote(key) in _OPTIONS:
            if unquote(key) in ours:
                raise StoreError(f"the option {unquote(key)!r} is given twice in the store URL")
            ours[unquote(key)] = unquote(value)
        else:
            theirs.append(field)
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query="&".join(theirs)))
    return conninfo, ours


def _pool_timeout(value: object) -> float:
    """``value`` as a pool timeout: seconds, more than 0 and at most an hour.

    Raises:
        StoreError: it is not one.
    """
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not 0 < number <= _MOST_POOL_TIMEOUT:
        raise StoreError(
            f"pool_timeout must be a number of seconds, more than 0 and at most "
            f"{_MOST_POOL_TIMEOUT:.0f}, got {value!r}"
        )
    return number


def _pool_size(size: object) -> int:
    """``size`` as a pool size: a whole number from 2 to `_MOST_POOL_SIZE`.

    Raises:
        StoreError: it is not one (a bool, a fraction, NaN, a negative number...).
    """
    number: int | None = None
    if isinstance(size, int) and not isinstance(size, bool):
        number = size
    elif isinstance(size, str) and size.strip().isdecimal():
        number = int(size)
    if number is None:
        raise StoreError(f"pool_size must be a whole number, got {size!r}")
    if not 2 <= number <= _MOST_POOL_SIZE:
        raise StoreError(
            f"pool_size must be at least 2 and at most {_MOST_POOL_SIZE}, got {number}"
        )
    return number


class PostgresStore(Store):
    """Runs and journals in a PostgreSQL database, in a schema of their own.

    Construction does no I/O; `open` connects and (by default) creates or
    upgrades the schema. Use one store object from one event loop.

    Args:
        url: ``postgresql://user:password@host:port/database``, optionally with
            ``?schema=NAME&pool_size=N&pool_timeout=SECONDS&migrate=false`` and
            libpq options.
        schema: The schema holding sagakit's tables; overrides the URL's.
        pool_size: The most connections this store opens; overrides the URL's.
        pool_timeout: Seconds a call waits for a connection from the pool
            before it fails (default 10); overrides the URL's.
        lease_clock: ``database`` (the default): leases are taken, renewed
            and judged lapsed on the database server's clock, for as long
            as the caller asks (``lease_until - now``), so that a host whose
            clock is off cannot take a live run; ``local``: on the callers'
            clocks, as given (for tests whose clock skips time). Overrides
            the URL's.
        migrate: Upgrade the schema on open (True) or only check it (False).
        read_only: Only read: never create or migrate the schema (whatever
            ``migrate`` says), refuse one that is missing, and open read-only
            sessions.

    Attributes:
        url: The URL given.
        schema: The schema name.
        pool_size: The most connections this store opens.
        auto_migrate: Whether `open` upgrades the schema.
        lease_clock: ``database`` or ``local``: whose clock leases are on.
        channel: The channel NOTIFY wakes idle workers on.

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
        read_only: bool = False,
        pool_timeout: float | None = None,
        lease_clock: str | None = None,
    ) -> None:
        self.url = url
        shown = redact_url(url)  # for messages: never the password
        conninfo, options = parse_url(url)
        schema = schema if schema is not None else options.get("schema", "sagakit")
        if not isinstance(schema, str) or not _SCHEMA.match(schema):
            raise StoreError(
                f"schema must be a lower-case SQL name (letters, digits, _), got {schema!r}"
            )
        pool_size = _pool_size(
            pool_size if pool_size is not None else options.get("pool_size", _POOL_SIZE)
        )
        pool_timeout = _pool_timeout(
            pool_timeout if pool_timeout is not None else options.get("pool_timeout", _POOL_TIMEOUT)
        )
        lease_clock = lease_clock if lease_clock is not None else options.get("lease_clock")
        if lease_clock is None:
            lease_clock = "database"
        if lease_clock not in _LEASE_CLOCKS:
            raise StoreError(f"lease_clock must be database or local, got {lease_clock!r}")
        self.lease_clock = lease_clock
        if migrate is None:
            flag = options.get("migrate", "true").lower()
            if flag not in _TRUE | _FALSE:
                raise StoreError(f"migrate must be true or false, got {flag!r}")
            migrate = flag in _TRUE
        elif not isinstance(migrate, bool):
            raise StoreError(f"migrate must be True or False, got {migrate!r}")
        if not isinstance(read_only, bool):
            raise StoreError(f"read_only must be True or False, got {read_only!r}")
        self.auto_migrate = migrate and not read_only
        channel = f"sagakit_{schema}"
        self._connection = connection = PostgresConnection(
            conninfo,
            shown=shown,
            schema=schema,
            channel=channel,
            pool_size=pool_size,
            read_only=read_only,
            pool_timeout=pool_timeout,
        )
        self._group_commit = group_commit = GroupCommit(connection)
        self._states = StateChanges(moves_out=False)
        self._listener = Listener(conninfo, channel=channel)
        self._local = LocalPool(
            conninfo, shown=shown, schema=schema, pool_size=pool_size, queries=connection.queries
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bound once: the reads and commits below are the hot path.
        self._q = connection.queries
        self._with_conn = connection.with_conn
        self._fetch = connection.fetch
        self._queue_write = group_commit.write

    # The settings live in the parts that use them; the store shows them
    # read-only, so that what it shows is what its parts do.

    @property
    def schema(self) -> str:
        """The schema holding sagakit's tables."""
        return self._connection.schema

    @property
    def pool_size(self) -> int:
        """The most connections this store opens."""
        return self._connection.pool_size

    @property
    def pool_timeout(self) -> float:
        """Seconds a call waits for a connection from the pool before it fails."""
        return self._connection.pool_timeout

    @property
    def channel(self) -> str:
        """The channel NOTIFY wakes idle workers on."""
        return self._connection.channel

    @property
    def flushes(self) -> int:
        """Group-commit transactions written so far (for tests and metrics)."""
        return self._group_commit.flushes

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`. Several processes may open a new database at once."""
        connection = self._connection
        if connection.pool is not None:
            return
        self._loop = asyncio.get_running_loop()
        await connection.connect()
        try:
            await connection.check_schema(apply=self.auto_migrate, must_exist=connection.read_only)
        except BaseException:
            await self._disconnect()
            raise

    async def migrate(self) -> tuple[int, int]:
        """See `Store.migrate`."""
        connection = self._connection
        opened_here = connection.pool is None
        if opened_here:
            await connection.connect()
        try:
            return await connection.check_schema(apply=True)
        finally:
            if opened_here:
                await self._disconnect()

    async def _disconnect(self) -> None:
        # The pool is taken before anything is awaited, so a second close returns
        # at once; the LISTEN connection closes before the pool, as it always has.
        pool = self._connection.detach()
        await self._listener.close()
        if pool is not None:
            await pool.close()
        await self._local.close()

    async def close(self) -> None:
        """See `Store.close`. Waits for queued commits; safe to call twice."""
        if self._connection.pool is None:
            return
        if self._loop is not asyncio.get_running_loop():
            # The loop that opened the store died (a step called sys.exit()):
            # its connections cannot be awaited from here. Drop them; the
            # server ends their sessions when the process lets go of the sockets.
            self._connection.drop()
            self._listener.drop()
            self._group_commit.drop()
            await self._local.close()  # plain sockets and threads: closable from here
            return
        await self._group_commit.drain()
        await self._disconnect()

    # -- group commit -------------------------------------------------------------

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        write = create_write(run, events)
        # A first change written over the state (`create_write`): read now,
        # as the parts are let go once written.
        changed = sum(
            utf8_size(params[0]) for name, params in write.big if name == "created_change"
        )
        existing = await self._queue_write(write)
        if existing is not None:
            return existing, False
        if run.owner is not None and events:
            size = write.size  # the state's JSON text
            self._states.created(
                run.id, run.lease_epoch, events[-1].seq, run.state, size, pending=changed
            )
        return created_record(run, events), True

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`. Concurrent commits share one transaction.

        A commit that requires reservations (seldom) has one of its own, in
        which it locks their rows and reads their holders before it writes.

        Of a big state, a commit writes only the keys it sets while the
        changes written since the whole state was last written stay smaller
        than it (`sagakit.store.changes`).
        """
        states = self._states
        run_id = commit.run_id
        change, clears = states.change(commit)
        if change is not None and not clears:
            write = commit_write(commit, change=change, clears=False)
            size = write.size if change else 0  # the change's JSON text
            # An empty change (a commit without events) writes nothing: see SQLite's.
            if change and not states.affords(run_id, size):
                change, clears = states.whole(commit)  # in place of its changes
        if change is None or clears:
            write = commit_write(commit, change=change, clears=clears)
            size = write.size
        try:
            if commit.requires:
                mail = await self._commit_requiring(commit, write)
            else:
                mail = bool(await self._queue_write(write))
        except BaseException:
            states.forget(run_id)  # what it wrote, if anything, is unknown
            raise
        states.written(commit, size, change=change, clears=clears)
        return mail

    async def _commit_requiring(self, commit: Commit, write: Write) -> bool:
        q = self._q

        async def go(conn: Conn) -> object:
            async with conn.transaction():
                cur = await conn.execute(q["lock_reservations"], (list(commit.requires),))
                held = {row[0]: row for row in await cur.fetchall()}
                for name in commit.requires:
                    _, holder, expires_at = held.get(name, (name, None, 0.0))
                    if holder is not None and expires_at <= commit.at:
                        holder = None  # expired: nobody holds it
                    if holder != commit.run_id:
                        raise ReservationLapsed(commit.run_id, name, holder)
                cur = await conn.execute(q["commit_runs"], commit_params([write]))
                row = await cur.fetchone()
                if row is not None:
                    await write_big(conn, q, write)
                    return bool(row[1])
                cur = await conn.execute(q["fence_state"], ([commit.run_id],))
                found = await cur.fetchone()
                return verdict(write, None if found is None else found[1:])

        outcome = await self._with_conn(f"commit run {commit.run_id!r} to", go)
        if outcome is LOST:
            raise LeaseLost(commit.run_id)
        if isinstance(outcome, StoreError):
            raise outcome
        return bool(outcome)

    # -- reads and leases -----------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`.

        A big state is read in pieces (`READ_FROM`), with the run's row
        again, in one read-only snapshot: libpq holds a row whole in a
        buffer that it keeps at its largest for as long as the connection
        lives (16 MiB for a 10 MB state), and psycopg copies a value as
        bytes before it is decoded.
        """
        q = self._q
        params = {"id": run_id, "big": READ_FROM, "piece": READ_PIECE}

        async def go(conn: Any) -> RunRecord | None:
            cur = await conn.execute(q["get_run"], params)
            row = await cur.fetchone()
            if row is None or not row[15]:
                return None if row is None else record(row)
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur = await conn.execute(q["get_run"], params)
                row = await cur.fetchone()
                if row is None or not row[15]:
                    return None if row is None else record(row)
                # Binary: bytea as it is, not as hex; streamed: one piece at a time.
                stream = conn.cursor(binary=True).stream(q["state_pieces"], params)
                text = b"".join([piece async for (piece,) in stream])
            state = jsonutil.loads(text)
            del text
            return record((*row[:4], state, *row[5:]))

        return await self._with_conn(f"read run {run_id!r} from", go)

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

    async def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        where: RunFilter | None = None,
    ) -> list[RunRecord]:
        """See `Store.page_runs`: one query, one range of a creation index."""
        params = page_params(where or RunFilter(), after, before, limit)
        if limit <= 0:
            return []
        newer = after is None and before is not None
        query = page_query(params, newer=newer)
        found = [record(row) for row in await self._fetch("list runs of", query, params)]
        return found[::-1] if newer else found

    async def count_runs(self) -> RunCounts:
        """See `Store.count_runs`: one GROUP BY query."""
        counts: RunCounts = {}
        for saga, status, count in await self._fetch("count the runs of", "count_runs", None):
            counts.setdefault(saga, {})[RunStatus(status)] = count
        return counts

    async def backlog(self, *, now: float) -> Backlog:
        """See `Store.backlog`: two queries, on the status and due indexes."""
        attention: dict[str, int] = {}
        owed = 0
        for saga, count, with_timer in await self._fetch(
            "count the backlog of", "backlog_attention", None
        ):
            attention[saga] = count
            owed += with_timer
        params = {"now": now, "db_clock": self.lease_clock == "database"}
        rows = await self._fetch("count the backlog of", "backlog_due", params)
        due, oldest = rows[0]
        return Backlog(attention, owed, due, oldest)

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
        params = {
            "id": run_id,
            "owner": owner,
            "now": now,
            "lease_until": lease_until,
            "db_clock": self.lease_clock == "database",
        }
        rows = await self._with_changes(
            await self._fetch(f"claim run {run_id!r} in", "claim", params)
        )
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
            "db_clock": self.lease_clock == "database",
            "limit": limit,
            "any_saga": sagas is None,
            "names": [name for name, _ in sagas or ()],
            "versions": [version for _, version in sagas or ()],
        }
        rows = await self._with_changes(await self._fetch("claim due runs in", "claim_due", params))
        # UPDATE ... RETURNING has no order: restore the due order (the last
        # column, read before the claim cleared wake_at).
        rows.sort(key=lambda row: (row[-1], row[0]))
        return [record(row[:-1]) for row in rows]

    async def _with_changes(self, rows: list[Any]) -> list[Any]:
        """Claimed rows with their state and its changes read again (see ``claimed_changes``).

        Only runs that had state changes (big states) cost the extra query.
        """
        counted = [row[0] for row in rows if row[14]]
        if not counted:
            return rows  # a count of 0 reads as no changes
        found = {
            run_id: (state, changes)
            for run_id, state, changes in await self._fetch(
                "read state changes of", "claimed_changes", (counted,)
            )
        }
        fresh: list[Any] = []
        for row in rows:
            again = found.get(row[0])
            # The 5th column is the state, the 15th its changes.
            fresh.append(
                row if again is None else (*row[:4], again[0], *row[5:14], again[1], *row[15:])
            )
        return fresh

    async def owners(self) -> set[str]:
        """See `Store.owners`: one query on the index of owners."""
        rows = await self._fetch("read the lease owners of", "owners", None)
        return {row[0] for row in rows}

    async def claim_held(
        self,
        owners: Sequence[str],
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_held`: one statement, found on the index of owners."""
        if limit <= 0 or not owners or (sagas is not None and not sagas):
            return []
        params = {
            "owners": list(owners),
            "owner": owner,
            "now": now,
            "lease_until": lease_until,
            "db_clock": self.lease_clock == "database",
            "limit": limit,
            "any_saga": sagas is None,
            "names": [name for name, _ in sagas or ()],
            "versions": [version for _, version in sagas or ()],
        }
        rows = await self._with_changes(
            await self._fetch("take over runs in", "claim_held", params)
        )
        found = [record(row) for row in rows]
        found.sort(key=lambda run: (run.created_at, run.id))  # RETURNING has no order
        return found

    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """See `Store.renew`: on the database's clock when ``now`` is given (``lease_clock``)."""
        if not leases:
            return set()
        params = {
            "lease_until": lease_until,
            "now": now,
            "db_clock": self.lease_clock == "database",
            "id": list(leases),
            "owner": [lease.owner for lease in leases.values()],
            "epoch": [lease.epoch for lease in leases.values()],
        }
        rows = await self._fetch("renew leases in", "renew", params)
        return set(leases) - {row[0] for row in rows}

    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """See `Store.release`."""
        params = {"id": run_id, "owner": lease.owner, "epoch": lease.epoch, "hold": hold_until}

        async def go(conn: Conn) -> None:
            async with conn.transaction():
                cur = await conn.execute(self._q["release"], params)
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

        async def go(conn: Conn) -> tuple[Any, ...] | None:
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

    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """See `Store.reserve_all`. One transaction, taking the names in sorted order.

        Two runs reserving overlapping sets lock their rows in the same order,
        so neither waits for the other in a cycle.
        """
        wanted = list(dict.fromkeys(names))
        q = self._q

        async def go(conn: Conn) -> list[Reservation]:
            rows: dict[str, Reservation] = {}
            try:
                async with conn.transaction():
                    for name in sorted(wanted):
                        params = {"name": name, "run_id": run_id, "now": now}
                        params["expires_at"] = expires_at
                        cur = await conn.execute(q["reserve"], params)
                        row = await cur.fetchone()
                        if row is None:  # another run's: read it (locked), then roll back
                            cur = await conn.execute(q["reserve_holder"], (name,))
                            held = await cur.fetchone()
                            if held is None:
                                raise StoreError(
                                    f"reservation {name!r} vanished while being taken; try again"
                                )
                            raise _Refused(Reservation(*held))
                        rows[name] = Reservation(*row)
            except _Refused as refused:
                return [refused.held]
            return [rows[name] for name in wanted]

        return await self._with_conn(f"reserve {', '.join(map(repr, wanted))} in", go)

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

    # -- rewriting stored data --------------------------------------------------------

    async def rewrite_data(self, rewrite: DataRewrite, *, batch_size: int = 500) -> Rewritten:
        """See `Store.rewrite_data`. Each page in a transaction that locks its rows."""

        async def page(table: str, after: tuple[Any, ...]) -> sql.Page:
            go = functools.partial(self._rewrite_page, table, after, batch_size, rewrite)
            return await self._with_conn(f"rewrite the {table} of", go)

        return await sql.rewrite_tables(page, batch_size)

    async def _rewrite_page(
        self,
        table: str,
        after: tuple[Any, ...],
        size: int,
        rewrite: DataRewrite,
        conn: Conn,
    ) -> tuple[int, int, tuple[Any, ...]]:
        """Rewrite one page of ``table`` after the key ``after``: rows read, rewritten, last key."""
        q = self._q
        for attempt in range(_REWRITE_ATTEMPTS):
            try:
                async with conn.transaction():
                    folded: dict[str, JSON] = {}
                    if table == "runs":
                        # Locked, then read in a statement of its own (see the queries).
                        cur = await conn.execute(q["rewrite_runs_lock"], (*after, size))
                        ids = [row[0] for row in await cur.fetchall()]
                        cur = await conn.execute(q["rewrite_runs_page"], (ids,))
                        rows, folded = _fold_changes(await cur.fetchall())
                    else:
                        cur = await conn.execute(q[f"rewrite_{table}_page"], (*after, size))
                        rows = await cur.fetchall()
                    updates, last = sql.rewrite_page(table, rows, rewrite, _same)
                    if folded:
                        # A state kept as its row and changes is rewritten
                        # whole (the rewrite sees the state, never a part of
                        # it), and its changes go: none is left as it was.
                        done = {update[1] for update in updates}
                        updates += [
                            (encode_json(state, "state", run_id), run_id)
                            for run_id, state in folded.items()
                            if run_id not in done
                        ]
                        await conn.execute(q["clear_state_changes"], (list(folded),))
                    if updates:
                        async with conn.cursor() as writer:
                            await writer.executemany(q[f"rewrite_{table.rstrip('s')}"], updates)
                return len(rows), len(updates), last
            except psycopg.errors.DeadlockDetected:
                # A renewal locks its runs in no set order: it goes through
                # once this page gave way, and the page is taken again.
                if attempt == _REWRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # the last attempt returns or raises

    # -- purging settled runs -------------------------------------------------------

    async def purge(
        self,
        *,
        before: float,
        statuses: Sequence[RunStatus] = FINISHED_STATUSES,
        limit: int = 500,
        archive: Callable[[Sequence[Purged]], None] | None = None,
    ) -> list[Purged]:
        """See `Store.purge`. One transaction per call; rows locked by others are skipped."""
        wanted = [str(status) for status in purge_statuses(statuses)]
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        params = {"statuses": wanted, "before": before, "limit": limit}

        async def go(conn: Conn) -> list[Purged]:
            q = self._q
            async with conn.transaction():
                cur = await conn.execute(q["purge_runs"], params)
                runs = [record(row) for row in await cur.fetchall()]
                if not runs:
                    return []
                ids = [run.id for run in runs]
                if archive is None:
                    await conn.execute(q["purge_events_quietly"], (ids,))
                    purged = [Purged(run) for run in runs]
                else:
                    cur = await conn.execute(q["purge_events"], (ids,))
                    found: dict[str, list[Event]] = {run_id: [] for run_id in ids}
                    for run, seq, kind, at, step, attempt, data in await cur.fetchall():
                        found[run].append(Event(run, seq, EventKind(kind), at, step, attempt, data))
                    purged = [
                        Purged(run, tuple(sorted(found[run.id], key=lambda e: e.seq)))
                        for run in runs
                    ]
                    # Before the transaction commits: it may refuse the batch.
                    await asyncio.to_thread(archive, purged)
                await conn.execute(q["purge_mail"], (ids,))
                await conn.execute(q["purge_state_changes"], (ids,))
                await conn.execute(q["purge_reservations"], (ids,))
            return purged

        return await self._with_conn("purge runs from", go)

    # -- local transactions -----------------------------------------------------------

    def local_transaction(self) -> LocalTransaction:
        """See `Store.local_transaction`: a blocking connection in a transaction.

        Its ``connection`` is a psycopg `Connection` with the server's default
        ``search_path`` (sagakit's own tables are always named with their
        schema), so the step's SQL sees the tables it would see anywhere else.
        """
        connection = self._connection
        if connection.pool is None:
            raise StoreError(
                f"the store {connection.shown} is not open; call `await store.open()` first"
            )
        return self._local.begin()

    # -- waking idle workers --------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:
        """See `Store.wait_for_work`: returns on a NOTIFY, or after ``timeout``."""
        await self._listener.wait(timeout)


class _Refused(Exception):
    """`reserve_all` met a name another run holds: its transaction is rolled back."""

    def __init__(self, held: Reservation) -> None:
        super().__init__(held.name)
        self.held = held

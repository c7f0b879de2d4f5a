"""The SQLite store: one database file in WAL mode.

Any number of processes on one host may share the file.

All SQLite work happens on one thread that owns the connection; coroutines
hand their work to it. Commits from concurrent coroutines are batched (group
commit): while one transaction is being written, new commits queue up, and the
next transaction takes them all, so a thousand runs stepping at once cost a
few fsyncs rather than a thousand. A batch is written by one statement that
takes all its writes at once, as JSON, and is a transaction of its own (see
`sagakit.store.sqlite.writes`); a commit refused by fencing is left out, and
the others are written. Should one write of a batch be invalid, the batch is
written again one write at a time, each in its own savepoint, so only that
write fails.

`SQLiteStore` composes the parts: a `SQLiteConnection` (the thread, the
connection, its lock and the queries; opening and migrating the file: see
`sagakit.store.sqlite.connection`) and a `GroupCommit` on it (the queue and
its writer: `sagakit.store.sqlite.group_commit`), and keeps the store's
contract: options, reads, claims, mail and reservations.

`SQLiteStore.local_transaction` opens a second connection to the same file, on
which a step's own writes and its success record commit together (see
`sagakit.store.sqlite.local`).

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
``sqlite:path.db``, with an optional ``?synchronous=normal`` (faster; the last
commits may be lost in a power cut, never corrupted) instead of the default
``full``, and ``?busy_timeout=SECONDS`` (default 5, at most 86400): how long a
write waits for another process's lock before it fails with `StoreError`. A
new file is created readable by its owner only (0600; see
`sagakit.store.sqlite.connection`). Opened with ``read_only=True``, the
store never creates, migrates or writes the file: one that holds no
sagakit store, or one of another schema version, is refused. SQLite 3.35 or
newer is needed (Python's ``sqlite3.sqlite_version`` tells which one it uses).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

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
from sagakit.store.sqlite.connection import SYNCHRONOUS, SQLiteConnection
from sagakit.store.sqlite.group_commit import GroupCommit
from sagakit.store.sqlite.local import SQLiteLocalTransaction, begin
from sagakit.store.sqlite.writes import (
    BIG,
    LOST,
    Write,
    changes_of,
    encode_commit,
    encode_create,
    encode_lone,
    encode_lone_create,
    records,
    write_one,
)

_Row = tuple[Any, ...]

_BUSY_TIMEOUT: Final = 5.0
# A day: longer and a waiting worker looks hung; SQLite's own limit is 24 days.
_LONGEST_BUSY_TIMEOUT: Final = 86400.0
_URL_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:path.db"


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a SQLite URL into the database path and its query options.

    Raises:
        StoreError: the URL is not one of the accepted forms.
    """
    if not url.startswith("sqlite:"):
        raise StoreError(f"not a SQLite URL: {redact_url(url)!r}; use {_URL_FORMS}")
    rest, _, query = url.removeprefix("sqlite:").partition("?")
    if rest.startswith("//"):
        # As in SQLAlchemy: three slashes, then the path (a fourth one makes it absolute).
        if not rest.startswith("///"):
            raise StoreError(f"SQLite URL {redact_url(url)!r} names a host; use {_URL_FORMS}")
        rest = rest[3:]
    path = unquote(rest)
    if not path:
        raise StoreError(f"SQLite URL {redact_url(url)!r} has no file path; use {_URL_FORMS}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in options:
            raise StoreError(f"the option {key!r} is given twice in SQLite URL {path!r}")
        options[key] = value
    return path, options


def _busy_timeout(value: object) -> float:
    """``value`` (None for the default) as a busy timeout: 0 to `_LONGEST_BUSY_TIMEOUT` seconds.

    Raises:
        StoreError: it is not a number of seconds in that range (NaN,
            infinite, negative, a bool, empty...).
    """
    if value is None:
        return _BUSY_TIMEOUT
    seconds = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            seconds = float(value)
    # NaN fails both comparisons, so it is refused here too.
    if not 0 <= seconds <= _LONGEST_BUSY_TIMEOUT:
        raise StoreError(
            f"busy_timeout must be a number of seconds from 0 to {_LONGEST_BUSY_TIMEOUT:.0f}, "
            f"got {value!r}"
        )
    return seconds


def _mail(row: _Row) -> Mail:
    mail_id, run_id, kind, data, at = row
    return Mail(mail_id, run_id, kind, jsonutil.loads(data), at)


class SQLiteStore(Store):
    """Runs and journals in one SQLite file.

    Construction does no I/O; `open` creates or upgrades the file. Use one
    store object from one event loop (each process or engine opens its own).

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
            ``sqlite:path.db``, optionally with ``?synchronous=normal``.
        synchronous: ``"full"`` (the default: a commit survives a power cut)
            or ``"normal"`` (faster; a power cut may lose the last commits).
            Overrides the URL's option.
        busy_timeout: Seconds (0 to 86400) a write waits for another
            process's lock; overrides the URL's ``?busy_timeout=``.
        read_only: Only read: `open` creates and migrates nothing, and
            refuses a file that holds no sagakit store of this version.

    Attributes:
        path: The database file, as the URL names it.
        flushes: Group-commit transactions written so far (for tests and metrics).
        busy_timeout: Seconds a write waits for another process's lock.
        synchronous: ``"full"`` or ``"normal"``.

    Raises:
        StoreError: the URL or an option is invalid.
    """

    def __init__(
        self,
        url: str,
        *,
        synchronous: str | None = None,
        busy_timeout: float | None = None,
        read_only: bool = False,
    ) -> None:
        self.url = url
        path, options = parse_url(url)
        chosen = synchronous if synchronous is not None else options.pop("synchronous", "full")
        options.pop("synchronous", None)
        wait = options.pop("busy_timeout", None)
        busy = _busy_timeout(busy_timeout if busy_timeout is not None else wait)
        if options:
            raise StoreError(
                f"unknown option(s) in SQLite URL {redact_url(url)!r}: {', '.join(options)}"
            )
        if not isinstance(chosen, str) or chosen.lower() not in SYNCHRONOUS:
            raise StoreError(f"synchronous must be 'full' or 'normal', got {chosen!r}")
        if not isinstance(read_only, bool):
            raise StoreError(f"read_only must be True or False, got {read_only!r}")
        self._connection = SQLiteConnection(
            url, path, synchronous=chosen.lower(), busy_timeout=busy, read_only=read_only
        )
        self._group_commit = GroupCommit(self._connection)
        self._states = StateChanges(moves_out=True)
        self.written = 0
        """Bytes of JSON handed to SQLite by new runs and commits so far (for benchmarks)."""

    # The settings live in the connection, which uses them; the store shows them
    # read-only, so that what it shows is what the connection does.

    @property
    def path(self) -> str:
        """The database file, as the URL names it."""
        return self._connection.path

    @property
    def busy_timeout(self) -> float:
        """Seconds a write waits for another process's lock."""
        return self._connection.busy_timeout

    @property
    def synchronous(self) -> str:
        """``"full"`` or ``"normal"``."""
        return self._connection.synchronous

    @property
    def flushes(self) -> int:
        """Group-commit transactions written so far (for tests and metrics)."""
        return self._group_commit.flushes

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """See `Store.open`. Several processes may open a new file at once."""
        await self._connection.open()

    async def migrate(self) -> tuple[int, int]:
        """See `Store.migrate`. Opening the file migrates it; this says from what."""
        await self.open()
        return self._connection.versions

    async def close(self) -> None:
        """See `Store.close`. Waits for queued commits; safe to call twice."""
        connection = self._connection
        if not connection.accepting:
            return
        connection.accepting = False
        await self._group_commit.wait_drained()
        await connection.close()

    # -- group commit -------------------------------------------------------------

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        # About to be written on the event loop: its values bound each on
        # its own, if it can be (`encode_lone_create`).
        lone = encode_lone_create(run, events) if self._group_commit.writes_here() else None
        write = encode_create(run, events) if lone is None else lone
        self.written += write.size
        big = write.big
        # A big state written as the run's changes (`Big.moved`): read now,
        # as the parts are let go once written.
        moved = big is not None and big.moved is not None
        changed = utf8_size(big.change[1]) if big is not None and big.change is not None else 0
        existing = await self._group_commit.queue_write(write)
        if existing is not None:
            return existing, False
        if run.owner is not None and events:
            self._states.created(
                run.id,
                run.lease_epoch,
                events[-1].seq,
                run.state,
                write.size - changed,
                pending=changed,
                inline=not moved,
            )
        return created_record(run, events), True

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`. Concurrent commits share one transaction.

        A commit that requires reservations (seldom) has one of its own, in
        which it reads their holders under the write lock before it writes.

        Of a big state, a commit writes only the keys it sets while the
        changes written since the whole state was last written stay smaller
        than it (`sagakit.store.changes`).
        """
        states = self._states
        run_id = commit.run_id
        change, clears = states.change(commit)
        # About to be written on the event loop: its values bound each on
        # its own, if it is a commit that can be (`encode_lone`).
        lone = (
            encode_lone(commit)
            if change is None and not clears and self._group_commit.writes_here()
            else None
        )
        if lone is not None:
            write = lone
            size = write.size
        elif change is not None and not clears:
            size = len(jsonutil.to_json(change)) if change else 0
            # An empty change (a commit without events: a timer, a release)
            # writes nothing, so it never tips the run into a whole write.
            if change and not states.affords(run_id, size):
                change, clears = states.whole(commit)  # in place of its changes
            else:
                write = encode_commit(commit, change=change, clears=False)
        if lone is None and (change is None or clears):
            # A state that may be big is encoded alone first: if it is, it is
            # written on its own, the rest of the write without it (`BIG`).
            part = None
            if states.may_exceed(run_id, BIG):
                whole = commit.state if change is None else change
                part = encode_json(whole, "state", run_id)
                if change is None and clears and commit.events and len(part) >= BIG:
                    # Big, and not known (after a claim or a restart): out of
                    # the run's row at once, as the run's one change, as the
                    # next commit would otherwise move it (writing it whole
                    # twice); and so written in pieces (`writes._fill`),
                    # which a column of the row cannot be.
                    change = commit.state
            write = encode_commit(commit, change=change, clears=clears, part=part)
            part = None  # held by the write alone, which lets it go once written
            size = write.size
        self.written += write.size
        try:
            if commit.requires:
                action = f"commit run {run_id!r} to"
                connection = self._connection
                mail: bool = await connection.call(
                    action, connection.transaction, self._commit_requiring, commit, write
                )
            else:
                mail = await self._group_commit.queue_write(write)
        except BaseException:
            states.forget(run_id)  # what it wrote, if anything, is unknown
            raise
        states.written(commit, size, change=change, clears=clears)
        return mail

    def _commit_requiring(self, cur: sqlite3.Cursor, commit: Commit, write: Write) -> bool:
        q = self._connection.queries
        names = jsonutil.dumps(list(commit.requires))
        held = {row[0]: row for row in cur.execute(q["reservation_holders"], (names,)).fetchall()}
        for name in commit.requires:
            _, holder, expires_at = held.get(name, (name, None, 0.0))
            if holder is not None and expires_at <= commit.at:
                holder = None  # expired: nobody holds it
            if holder != commit.run_id:
                raise ReservationLapsed(commit.run_id, name, holder)
        mail = write_one(cur, q, write)
        if mail is LOST:
            raise LeaseLost(commit.run_id)
        return mail is True

    # -- reads and leases -----------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        # Here on the loop if it is idle: see `SQLiteConnection.read`.
        return await self._connection.read(f"read run {run_id!r} from", self._get_run, run_id)

    def _get_run(self, cur: sqlite3.Cursor, run_id: str) -> RunRecord | None:
        found = self._read_runs(cur, self._connection.queries["get_run"], (run_id,))
        return found[0] if found else None

    def _read_runs(self, cur: sqlite3.Cursor, query: str, params: Any) -> list[RunRecord]:
        """The runs ``query`` selects, each with its whole state, read consistently.

        A run whose state is kept as changes is read from two tables: outside
        a transaction, another process's commit could land between the two
        reads (and replace the changes read second). Then both are read
        again in one read transaction; a run without changes needs no more
        than its row.
        """
        q = self._connection.queries
        rows = cur.execute(query, params).fetchall()
        if cur.connection.in_transaction or not any(row[14] for row in rows):
            return records(cur, q, rows)
        cur.execute("BEGIN")
        try:
            return records(cur, q, cur.execute(query, params).fetchall())
        finally:
            cur.execute("COMMIT")

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
        return await self._connection.call("list runs of", self._list_runs, params)

    def _list_runs(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> list[RunRecord]:
        q = self._connection.queries
        query = q["list_runs" if params["status"] is None else "list_runs_by_status"]
        return self._read_runs(cur, query, params)

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
        return await self._connection.call("list runs of", self._page_runs, params, newer)

    def _page_runs(
        self, cur: sqlite3.Cursor, params: dict[str, Any], newer: bool
    ) -> list[RunRecord]:
        query = self._connection.queries[page_query(params, newer=newer)]
        found = self._read_runs(cur, query, params)
        return found[::-1] if newer else found

    async def count_runs(self) -> RunCounts:
        """See `Store.count_runs`: one GROUP BY query."""
        return await self._connection.call("count the runs of", self._count_runs)

    def _count_runs(self, cur: sqlite3.Cursor) -> RunCounts:
        counts: RunCounts = {}
        for saga, status, count in cur.execute(self._connection.queries["count_runs"]):
            counts.setdefault(saga, {})[RunStatus(status)] = count
        return counts

    async def backlog(self, *, now: float) -> Backlog:
        """See `Store.backlog`: two queries, on the status and due indexes."""
        return await self._connection.call("count the backlog of", self._backlog, now)

    def _backlog(self, cur: sqlite3.Cursor, now: float) -> Backlog:
        q = self._connection.queries
        attention: dict[str, int] = {}
        owed = 0
        for saga, count, with_timer in cur.execute(q["backlog_attention"]).fetchall():
            attention[saga] = count
            owed += with_timer
        due, oldest = cur.execute(q["backlog_due"], {"now": now}).fetchone()
        return Backlog(attention, owed, due, oldest)

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        return await self._connection.call(
            f"read the journal of run {run_id!r} from", self._journal, run_id, after_seq
        )

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """See `Store.journals`: one query."""
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            return {}
        return await self._connection.call("read journals from", self._journals, wanted)

    def _journals(self, cur: sqlite3.Cursor, run_ids: list[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {run_id: [] for run_id in run_ids}
        # One row of JSON rather than a row per event (see insert_runs).
        query = self._connection.queries["journals"]
        text = cur.execute(query, (jsonutil.dumps(run_ids),)).fetchone()[0]
        for run, seq, kind, at, step, attempt, data in jsonutil.loads(text):
            found[run].append(
                Event(run, seq, EventKind(kind), at, step, attempt, jsonutil.loads(data))
            )
        return found

    def _journal(self, cur: sqlite3.Cursor, run_id: str, after_seq: int) -> list[Event]:
        rows = cur.execute(self._connection.queries["journal"], (run_id, after_seq)).fetchall()
        return [
            Event(run, seq, EventKind(kind), at, step, attempt, jsonutil.loads(data))
            for run, seq, kind, at, step, attempt, data in rows
        ]

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        params = {"id": run_id, "owner": owner, "now": now, "lease_until": lease_until}
        action = f"claim run {run_id!r} in"
        return await self._connection.call(
            action, self._connection.transaction, self._claim, params
        )

    def _claim(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> RunRecord | None:
        q = self._connection.queries
        rows = cur.execute(q["claim"], params).fetchall()
        return records(cur, q, rows)[0] if rows else None

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_due`. Ordered by ``wake_at``, or ``updated_at`` when unset."""
        if limit <= 0:
            return []
        wanted = None if sagas is None else jsonutil.dumps([list(pair) for pair in sagas])
        due = {"now": now, "sagas": wanted, "limit": limit}
        claim = {"owner": owner, "now": now, "lease_until": lease_until}
        return await self._connection.call(
            "claim due runs in", self._connection.transaction, self._claim_due, due, claim
        )

    def _claim_due(
        self, cur: sqlite3.Cursor, due: dict[str, Any], claim: dict[str, Any]
    ) -> list[RunRecord]:
        ids = [row[0] for row in cur.execute(self._connection.queries["due_runs"], due).fetchall()]
        claimed = []
        for run_id in ids:
            record = self._claim(cur, {**claim, "id": run_id})
            if record is not None:
                claimed.append(record)
        return claimed

    async def owners(self) -> set[str]:
        """See `Store.owners`: one query on the index of owners."""
        return await self._connection.call("read the lease owners of", self._owners)

    def _owners(self, cur: sqlite3.Cursor) -> set[str]:
        return {row[0] for row in cur.execute(self._connection.queries["owners"])}

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
        """See `Store.claim_held`: one transaction, found on the index of owners."""
        if limit <= 0 or not owners:
            return []
        wanted = None if sagas is None else jsonutil.dumps([list(pair) for pair in sagas])
        held = {
            "owners": jsonutil.dumps(list(owners)),
            "now": now,
            "sagas": wanted,
            "limit": limit,
        }
        claim = {"owner": owner, "lease_until": lease_until}
        return await self._connection.call(
            "take over runs in", self._connection.transaction, self._claim_held, held, claim
        )

    def _claim_held(
        self, cur: sqlite3.Cursor, held: dict[str, Any], claim: dict[str, Any]
    ) -> list[RunRecord]:
        q = self._connection.queries
        ids = [row[0] for row in cur.execute(q["held_runs"], held).fetchall()]
        if not ids:
            return []
        rows = cur.execute(q["claim_held"], {**claim, "ids": jsonutil.dumps(ids)}).fetchall()
        order = {run_id: place for place, run_id in enumerate(ids)}
        rows.sort(key=lambda row: order[row[0]])  # held_runs' order: oldest first
        return records(cur, q, rows)  # big states read with their changes, in one query

    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """See `Store.renew`."""
        if not leases:
            return set()
        rows = [(lease_until, run_id, lease.owner, lease.epoch) for run_id, lease in leases.items()]
        return await self._connection.call(
            "renew leases in", self._connection.transaction, self._renew, rows
        )

    def _renew(self, cur: sqlite3.Cursor, rows: list[_Row]) -> set[str]:
        lost = set()
        renew = self._connection.queries["renew"]
        for row in rows:
            cur.execute(renew, row)
            if cur.rowcount == 0:
                lost.add(row[1])
        return lost

    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """See `Store.release`."""
        row = (run_id, lease.owner, lease.epoch, hold_until)
        await self._connection.call(
            f"release run {run_id!r} in", self._connection.transaction, self._release, row
        )

    def _release(self, cur: sqlite3.Cursor, row: _Row) -> None:
        cur.execute(self._connection.queries["release"], row)

    # -- mail and reservations ------------------------------------------------------

    async def post(self, run_id: str, kind: str, data: JSON, *, at: float) -> Mail | None:
        """See `Store.post`. Other processes see the mail at their next `claim_due`."""
        row = (run_id, kind, encode_json(data, f"{kind} mail", run_id), at)
        return await self._connection.call(
            f"post mail to run {run_id!r} in", self._connection.transaction, self._post, row
        )

    def _post(self, cur: sqlite3.Cursor, row: _Row) -> Mail | None:
        q = self._connection.queries
        if not cur.execute(q["count_mail"], (row[0],)).fetchall():
            return None  # no such run
        mail_id = cur.execute(q["insert_mail"], row).fetchall()[0][0]
        return _mail((mail_id, *row))

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        return await self._connection.call(
            f"read the mail of run {run_id!r} from", self._read_mail, run_id
        )

    def _read_mail(self, cur: sqlite3.Cursor, run_id: str) -> list[Mail]:
        query = self._connection.queries["mail"]
        return [_mail(row) for row in cur.execute(query, (run_id,)).fetchall()]

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`. One upsert under the write lock: atomic across processes."""
        params = {"name": name, "run_id": run_id, "now": now, "expires_at": expires_at}
        action = f"reserve {name!r} in"
        return await self._connection.call(
            action, self._connection.transaction, self._reserve, params
        )

    def _reserve(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> Reservation:
        q = self._connection.queries
        cur.execute(q["reserve"], params)
        row = cur.execute(q["get_reservation"], (params["name"],)).fetchall()[0]
        return Reservation(*row)

    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """See `Store.reserve_all`. One transaction under the write lock."""
        wanted = list(dict.fromkeys(names))
        action = f"reserve {', '.join(map(repr, wanted))} in"
        connection = self._connection
        try:
            return await connection.call(
                action, connection.transaction, self._reserve_all, wanted, run_id, now, expires_at
            )
        except _Refused as refused:  # rolled back: nothing was taken
            return [refused.held]

    def _reserve_all(
        self, cur: sqlite3.Cursor, names: list[str], run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        taken = []
        for name in names:
            params = {"name": name, "run_id": run_id, "now": now, "expires_at": expires_at}
            held = self._reserve(cur, params)
            if held.run_id != run_id:
                raise _Refused(held)
            taken.append(held)
        return taken

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        wanted = None if names is None else jsonutil.dumps(list(names))
        params = {"run_id": run_id, "names": wanted}
        action = f"release the reservations of run {run_id!r} in"
        return await self._connection.call(
            action, self._connection.transaction, self._release_reservations, params
        )

    def _release_reservations(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> int:
        return cur.execute(self._connection.queries["release_reservations"], params).rowcount

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        params = {"run_id": run_id, "now": now}
        return await self._connection.call("read reservations from", self._reservations, params)

    def _reservations(self, cur: sqlite3.Cursor, params: dict[str, Any]) -> list[Reservation]:
        rows = cur.execute(self._connection.queries["reservations"], params).fetchall()
        return [Reservation(*row) for row in rows]

    # -- rewriting stored data ------------------------------------------------------

    async def rewrite_data(self, rewrite: DataRewrite, *, batch_size: int = 500) -> Rewritten:
        """See `Store.rewrite_data`. Each page in an immediate transaction (the write lock)."""

        async def page(table: str, after: tuple[Any, ...]) -> sql.Page:
            return await self._connection.call(
                f"rewrite the {table} of",
                self._connection.transaction,
                self._rewrite_page,
                table,
                after,
                batch_size,
                rewrite,
            )

        return await sql.rewrite_tables(page, batch_size)

    def _rewrite_page(
        self,
        cur: sqlite3.Cursor,
        table: str,
        after: tuple[Any, ...],
        size: int,
        rewrite: DataRewrite,
    ) -> tuple[int, int, tuple[Any, ...]]:
        """Rewrite one page of ``table`` after the key ``after``: rows read, rewritten, last key."""
        q = self._connection.queries
        rows = cur.execute(q[f"rewrite_{table}_page"], (*after, size)).fetchall()
        folded: dict[str, str] = {}
        if table == "runs":
            rows, folded = self._fold_changes(cur, rows)
        updates, last = sql.rewrite_page(table, rows, rewrite, jsonutil.loads)
        if folded:
            # A state kept as a snapshot and its changes is rewritten whole
            # (the rewrite sees the state, never a part of it), and its
            # changes go: none is left as it was (in clear, say).
            rewritten = {update[1] for update in updates}
            updates += [
                (text, run_id) for run_id, text in folded.items() if run_id not in rewritten
            ]
            cur.executemany(q["clear_state_changes"], [(run_id,) for run_id in folded])
        if table == "events" and updates:
            self._fold_named(cur, updates)
        if updates:
            cur.executemany(q[f"rewrite_{table.rstrip('s')}"], updates)
        return len(rows), len(updates), last

    def _fold_named(self, cur: sqlite3.Cursor, updates: list[tuple[Any, ...]]) -> None:
        """Fold into its row the state of each run that names an event ``updates`` rewrites.

        A big new run's first state is its ``run_started`` event's
        (``from_event``, migration 0007). A run created after the runs were
        walked keeps the state it was written with, as any row written
        after its page was read: its state is written whole into its row,
        in this page's transaction, before its event is rewritten.
        """
        q = self._connection.queries
        rewritten = {(run_id, seq) for _, run_id, seq in updates}
        ids = jsonutil.dumps(sorted({run_id for run_id, _ in rewritten}))
        named = [
            run_id
            for run_id, seq in cur.execute(q["events_named_by_changes"], (ids,))
            if (run_id, seq) in rewritten
        ]
        if not named:
            return
        rows = cur.execute(q["rewrite_runs_of"], (jsonutil.dumps(named),)).fetchall()
        _, folded = self._fold_changes(cur, rows)
        cur.executemany(q["rewrite_run"], [(text, run_id) for run_id, text in folded.items()])
        cur.executemany(q["clear_state_changes"], [(run_id,) for run_id in folded])

    def _fold_changes(
        self, cur: sqlite3.Cursor, rows: list[_Row]
    ) -> tuple[list[_Row], dict[str, str]]:
        """A page of ``rewrite_runs_page`` as (id, state): each state whole.

        Returns:
            The rows, and the whole state (as JSON text) of each run that
            had state changes, by id.
        """
        changed = [row for row in rows if row[2]]
        if not changed:
            return [row[:2] for row in rows], {}
        found = changes_of(cur, self._connection.queries, [row[0] for row in changed])
        folded: dict[str, str] = {}
        for run_id, state, _ in changed:
            value = jsonutil.loads(state)
            for change in found.get(run_id, ()):
                value.update(change)
            folded[run_id] = jsonutil.dumps(value)
        return [(row[0], folded.get(row[0], row[1])) for row in rows], folded

    # -- purging settled runs -------------------------------------------------------

    async def purge(
        self,
        *,
        before: float,
        statuses: Sequence[RunStatus] = FINISHED_STATUSES,
        limit: int = 500,
        archive: Callable[[Sequence[Purged]], None] | None = None,
    ) -> list[Purged]:
        """See `Store.purge`. One immediate transaction (the write lock) per call."""
        wanted = jsonutil.dumps([str(status) for status in purge_statuses(statuses)])
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return await self._connection.call(
            "purge runs from",
            self._connection.transaction,
            self._purge,
            wanted,
            before,
            limit,
            archive,
        )

    def _purge(
        self,
        cur: sqlite3.Cursor,
        wanted: str,
        before: float,
        limit: int,
        archive: Callable[[Sequence[Purged]], None] | None,
    ) -> list[Purged]:
        q = self._connection.queries
        runs = records(cur, q, cur.execute(q["purge_runs"], (wanted, before, limit)).fetchall())
        if not runs:
            return []
        ids = [run.id for run in runs]
        if archive is None:
            purged = [Purged(run) for run in runs]
        else:
            found: dict[str, list[Event]] = {run_id: [] for run_id in ids}
            for run, seq, kind, at, step, attempt, data in cur.execute(
                q["purge_journals"], (jsonutil.dumps(ids),)
            ):
                found[run].append(
                    Event(run, seq, EventKind(kind), at, step, attempt, jsonutil.loads(data))
                )
            purged = [Purged(run, tuple(found[run.id])) for run in runs]
            archive(purged)  # before anything is deleted: it may refuse the batch
        gone = jsonutil.dumps(ids)
        for table in ("events", "mail", "reservations", "state_changes", "rows"):
            cur.execute(q[f"purge_{table}"], (gone,))
        return purged

    # -- local transactions ----------------------------------------------------------

    def local_transaction(self) -> SQLiteLocalTransaction:
        """See `Store.local_transaction`: a new connection to the same file.

        It is in an immediate transaction: the write lock is taken at once and
        held until `SQLiteLocalTransaction.commit` or `rollback`.

        While it holds the write lock, this store's own writes wait for it (up
        to ``busy_timeout``), as another process's would.

        Raises:
            StoreError: the store is not open, is an in-memory database (which
                no second connection can see), or the file cannot be opened.
        """
        if not self._connection.accepting:
            raise self._connection.not_open()
        return begin(self._connection)


class _Refused(Exception):
    """`reserve_all` met a name another run holds: its transaction is rolled back."""

    def __init__(self, held: Reservation) -> None:
        super().__init__(held.name)
        self.held = held

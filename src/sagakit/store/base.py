"""The store contract: what every backend (memory, SQLite, PostgreSQL) provides.

A store keeps runs and their journals. It knows nothing of sagas: it stores
what the engine hands it, checks leases, and makes each `Commit` atomic. The
one contract test suite (`sagakit.store.testing`) runs against every store.

Leases and fencing: a run is driven by one process at a time, the owner of its
lease. Every claim bumps the run's ``lease_epoch``; every commit names the
epoch it was made under and is refused (`LeaseLost`) if the epoch moved on,
so a process that lost its lease can never write to that run again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from sagakit.errors import StoreError
from sagakit.frozen import fast_init
from sagakit.journal import JSON, Event, RunStatus

# Runs in these statuses are driven by some process; the others wait for a
# person (needs_attention, paused) or are finished.
ACTIVE_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.PENDING,
    RunStatus.RUNNING,
    RunStatus.COMPENSATING,
)

# A commit that leaves a run in one of these statuses also frees every
# reservation the run holds, in the same transaction.
FINISHED_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.COMPLETED,
    RunStatus.ROLLED_BACK,
    RunStatus.CANCELLED,
    RunStatus.FAILED,
)


@fast_init
@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's row: its derived status and state, and who drives it.

    Attributes:
        id: The run id.
        saga: The saga's name.
        version: The saga's version.
        status: The status derived from the journal.
        state: The state derived from the journal (JSON).
        error: The error that made the run roll back or fail (JSON), if any.
        created_at: When the run was created (seconds since the epoch).
        updated_at: When the run last changed.
        owner: The process holding the lease, if any.
        lease_epoch: Bumped by every claim; commits are fenced on it.
        lease_until: When the lease lapses unless renewed.
        wake_at: An unowned active run is not claimed for work before this
            time (a durable timer: the next retry). On a paused run, its
            deadline; on a run that needs attention, when its owed alert is
            due (a worker claims it then, to deliver the alert).
        last_seq: The seq of the run's last journal event.
        mail: How many `Mail` items wait for the run (cancel requests, signals).
    """

    id: str
    saga: str
    version: str
    status: RunStatus
    state: JSON
    error: JSON | None
    created_at: float
    updated_at: float
    owner: str | None = None
    lease_epoch: int = 0
    lease_until: float | None = None
    wake_at: float | None = None
    last_seq: int = 0
    mail: int = 0


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in a store, counted across every process: `Store.backlog`.

    Attributes:
        needs_attention: Runs that need attention, by saga name.
        alerts_owed: Runs that need attention whose alert is not yet delivered
            (their timer is set: see `RunRecord.wake_at`).
        due: Runs due for work that no process holds (what `Store.claim_due`
            would claim now, any saga).
        oldest_due: When the longest-waiting of them became due: its timer,
            or its creation when it has none; None when none is due.
    """

    needs_attention: dict[str, int]
    alerts_owed: int
    due: int
    oldest_due: float | None


@dataclass(frozen=True, slots=True)
class RunCursor:
    """A run's place in the newest-first listing of runs: `Store.page_runs`.

    Runs are listed by ``created_at``, then id, both descending; a cursor
    names the run a page ends (or starts) at, so the next page is read from
    an index where the last one stopped, however deep, instead of skipping
    rows as an offset does.

    Attributes:
        created_at: The run's creation time, exactly as stored.
        id: The run's id.
    """

    created_at: float
    id: str

    @classmethod
    def of(cls, run: RunRecord | Any) -> RunCursor:
        """The cursor of a run (anything with ``created_at`` and ``id``)."""
        return cls(float(run.created_at), str(run.id))

    def token(self) -> str:
        """The cursor as opaque URL-safe text (`from_token` reads it back exactly)."""
        text = json.dumps([self.created_at, self.id], ensure_ascii=False, separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> RunCursor:
        """Read a cursor written by `token`.

        Raises:
            ValueError: the text is not a cursor (one line saying so).
        """
        try:
            if len(token) > 4000:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            at, run_id = json.loads(raw.decode())
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValueError("not a cursor of the runs list") from None
        valid_time = isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at)
        if not valid_time or not isinstance(run_id, str) or not run_id:
            raise ValueError("not a cursor of the runs list")
        return cls(float(at), run_id)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs `Store.page_runs` lists: each field set narrows the list.

    Attributes:
        saga: Only runs of this saga.
        version: Only runs of this saga version.
        status: Only runs in this status.
        since: Only runs created at or after this time.
        until: Only runs created before this time.
    """

    saga: str | None = None
    version: str | None = None
    status: RunStatus | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, run: RunRecord) -> bool:
        """Whether ``run`` is one the filter lists."""
        return (
            (self.saga is None or run.saga == self.saga)
            and (self.version is None or run.version == self.version)
            and (self.status is None or run.status == self.status)
            and (self.since is None or run.created_at >= self.since)
            and (self.until is None or run.created_at < self.until)
        )


RunCounts = dict[str, dict[RunStatus, int]]
"""`Store.count_runs`: how many runs each saga has in each status (only counts above 0)."""


def not_open_error(shown: str, forked_from: int | None, why: str) -> StoreError:
    """The error for work asked of a store that is not open, or was opened by a parent process.

    ``why`` says why a child cannot use its parent's connections.
    """
    if forked_from is not None:
        return StoreError(
            f"the store {shown} was opened by process {forked_from}, which forked this "
            f"one: open a store of its own in this process ({why})"
        )
    return StoreError(f"the store {shown} is not open; call `await store.open()` first")


def created_record(run: RunRecord, events: Sequence[Event]) -> RunRecord:
    """What `Store.create_run` answers for ``run``, just created with ``events``.

    Its status a `RunStatus`, its last seq its last event's, no mail (a new
    run has none, whatever the record passed in says): ``run`` itself when
    it is so already, as the engine's records are, rather than a copy made
    for every run started.
    """
    last_seq = events[-1].seq if events else run.last_seq
    if type(run.status) is RunStatus and run.last_seq == last_seq and run.mail == 0:
        return run
    return replace(run, status=RunStatus(run.status), last_seq=last_seq, mail=0)


def newest_first(
    runs: Sequence[RunRecord],
    *,
    after: RunCursor | None,
    before: RunCursor | None,
    limit: int,
) -> list[RunRecord]:
    """One page of ``runs`` (already filtered) as `Store.page_runs` returns it."""

    def key(run: RunRecord) -> tuple[float, str]:
        return (run.created_at, run.id)

    found = [
        run
        for run in runs
        if (after is None or key(run) < (after.created_at, after.id))
        and (before is None or key(run) > (before.created_at, before.id))
    ]
    if after is None and before is not None:
        # The page just newer than ``before``: the oldest of those, newest first.
        found.sort(key=key)
        return sorted(found[:limit], key=key, reverse=True)
    found.sort(key=key, reverse=True)
    return found[:limit]


def page_params(
    where: RunFilter, after: RunCursor | None, before: RunCursor | None, limit: int
) -> dict[str, Any]:
    """The parameters of the SQL stores' page queries (see ``page_runs`` in their queries.sql).

    ``lo`` and ``hi`` bound ``created_at`` inclusively, the cursor folded
    in, so that the database reads one range of its creation index.

    Raises:
        ValueError: both ``after`` and ``before`` are given.
    """
    if after is not None and before is not None:
        raise ValueError("page_runs takes after= or before=, not both")
    cursor = after or before
    lo, hi = where.since, where.until
    if after is not None:
        hi = after.created_at if hi is None else min(hi, after.created_at)
    if before is not None:
        lo = before.created_at if lo is None else max(lo, before.created_at)
    return {
        "saga": where.saga,
        "version": where.version,
        "status": None if where.status is None else str(where.status),
        "lo": lo,
        "hi": hi,
        "until": where.until,
        "since": where.since,
        "at": None if cursor is None else cursor.created_at,
        "id": None if cursor is None else cursor.id,
        "limit": limit,
    }


def page_query(params: dict[str, Any], *, newer: bool) -> str:
    """The name of the SQL stores' page query for `page_params`'s ``params``.

    ``newer`` (a page before a cursor) reads upwards, oldest first: the
    caller reverses its rows to list them newest first, as every page is.
    """
    name = "page_runs_newer" if newer else "page_runs"
    return name + ("_by_status" if params["status"] is not None else "")


@dataclass(frozen=True, slots=True)
class Purged:
    """A run `Store.purge` deleted, as it was stored.

    Attributes:
        run: The run's row.
        journal: Its whole journal, if the purge was given an ``archive``
            function; None otherwise.
    """

    run: RunRecord
    journal: tuple[Event, ...] | None = None


def purge_statuses(statuses: Sequence[RunStatus | str]) -> tuple[RunStatus, ...]:
    """Check that every status may be purged: only settled runs ever are.

    Returns:
        The statuses, each once, as `RunStatus`.

    Raises:
        ValueError: a status is unknown, or not one of `FINISHED_STATUSES`
            (active, paused and needs_attention runs are never purged).
    """
    checked: list[RunStatus] = []
    for status in statuses:
        try:
            known = RunStatus(status)
        except ValueError:
            raise ValueError(f"unknown run status {status!r}") from None
        if known not in FINISHED_STATUSES:
            allowed = ", ".join(str(s) for s in FINISHED_STATUSES)
            raise ValueError(
                f"runs that are {known} are never purged; only settled runs are ({allowed})"
            )
        checked.append(known)
    if not checked:
        raise ValueError("no status to purge")
    return tuple(dict.fromkeys(checked))


@dataclass(frozen=True, slots=True)
class Mail:
    """A request left for a run by a process that does not hold its lease.

    Attributes:
        id: Unique within the store, increasing in the order mail was posted.
        run_id: The run it is for.
        kind: ``"cancel"`` or ``"signal"``.
        data: The request as JSON (a cancel's reason and force flag; a
            signal's name and payload).
        at: When it was posted.
    """

    id: int
    run_id: str
    kind: str
    data: JSON
    at: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """A named resource held by one run until it expires or the run finishes."""

    name: str
    run_id: str
    expires_at: float


@fast_init
@dataclass(frozen=True, slots=True)
class Lease:
    """The right to write to one run: its owner and the epoch of the claim."""

    owner: str
    epoch: int


@fast_init
@dataclass(frozen=True, slots=True)
class Commit:
    """One atomic change to one run: new journal events and the derived row.

    Attributes:
        run_id: The run.
        lease: The lease this change is made under (fencing).
        events: Events to append; their seqs continue the journal without gaps.
        status: The run's status after these events.
        state: The run's state after these events: a dict that its
            committer never changes once committed (a commit that sets
            nothing may hand the dict of the commit before it), whose
            values are never changed in place (a key that changes gets a
            new value). A store may then find the keys a commit set by
            comparing it with the previous commit's, value by value, by
            identity, and write only those (`sagakit.store.changes`).
        error: The run's error after these events.
        at: The time of the change (becomes ``updated_at``).
        wake_at: Set the run's timer (see `RunRecord.wake_at`).
        release: Give the lease up in the same transaction.
        mail_read: Ids of mail this commit has turned into journal events;
            they are deleted in the same transaction (and the run's ``mail``
            count lowered), so a request is journaled exactly once.
        keeps_status: The committer knows that ``status`` and ``wake_at``
            are what the run's row holds already (only the lease holder
            changes them). A store may then leave those columns, and the
            indexes on them, untouched; False always writes them.
        requires: Names of reservations the run must hold, unexpired at
            ``at``, for the commit to apply: a step's success is recorded
            only if the reservations it took still stand. Checked in the
            same transaction; if one does not, nothing is written and
            `ReservationLapsed` is raised. Empty (the usual case): no check.
    """

    run_id: str
    lease: Lease
    events: tuple[Event, ...]
    status: RunStatus
    state: JSON
    error: JSON | None
    at: float
    wake_at: float | None = None
    release: bool = False
    mail_read: tuple[int, ...] = ()
    keeps_status: bool = False
    requires: tuple[str, ...] = ()
    sets: tuple[str, ...] | None = None


DataKind = Literal["state", "event", "mail"]
"""Where a stored JSON value lives: a run's state, an event's data, a mail's data."""

DataRewrite = Callable[[DataKind, str, JSON], "JSON | None"]
"""`Store.rewrite_data`'s function: given where a value lives, the id of the
run it belongs to and the value, its replacement, or None to leave it as it is."""


@dataclass(frozen=True, slots=True)
class Rewritten:
    """How many rows `Store.rewrite_data` rewrote, by table."""

    runs: int = 0
    events: int = 0
    mail: int = 0


class LocalTransaction(ABC):
    """A transaction on the store's own database, open while a step runs.

    The step writes its local effects through `connection`; the driver then
    calls `commit` with the step's success record, and both become durable in
    one database transaction, or neither does. Used from one thread at a time.
    """

    connection: Any
    """A DB-API connection inside the open transaction."""

    @abstractmethod
    def commit(self, commit: Commit) -> bool:
        """Apply ``commit`` (fenced, as `Store.commit`) in this transaction and commit it.

        Returns:
            Whether mail waits for the run (as `Store.commit`).

        Raises:
            LeaseLost: the lease moved on; the whole transaction is rolled back.
            StoreError: the database failed; the whole transaction is rolled back.
        """

    @abstractmethod
    def rollback(self) -> None:
        """Undo everything written in the transaction and end it."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (rolling back whatever is not committed)."""


class Store(ABC):
    """A place where runs and journals are kept. All methods are coroutines.

    Implementations must make each `Commit` atomic, may batch concurrent
    commits into one transaction (group commit), and must report a refused
    commit through `LeaseLost` without affecting other commits of the batch.
    """

    url: str

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or upgrade the schema if needed.

        A store opened for reading only (``open_store(url, read_only=True)``)
        creates and upgrades nothing: it refuses a missing store, or one of
        another schema version, with a `StoreError`.

        Raises:
            StoreError: the store cannot be opened; the message says why.
            SchemaVersionError: the schema is newer than this sagakit knows.
        """

    @abstractmethod
    async def close(self) -> None:
        """Flush pending commits and release connections."""

    @abstractmethod
    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """Insert a run with its first events, unless its id exists.

        The new run is owned as ``run.owner`` / ``run.lease_epoch`` say.

        Returns:
            The stored run, and True if it was created (False: it existed and
            is returned unchanged, which makes starts idempotent).
        """

    @abstractmethod
    async def commit(self, commit: Commit) -> bool:
        """Apply one change atomically, or not at all.

        If ``commit.status`` is one of `FINISHED_STATUSES`, the run's
        reservations are deleted in the same transaction.

        Returns:
            Whether unread mail waits for the run after this commit (mail
            posted meanwhile that ``commit.mail_read`` did not cover).

        Raises:
            LeaseLost: the run's lease epoch or owner is not the commit's.
            ReservationLapsed: a reservation of ``commit.requires`` is not
                the run's at ``commit.at`` (expired, freed or taken by
                another run); nothing was written.
        """

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""

    @abstractmethod
    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered by status and saga name."""

    async def backlog(self, *, now: float) -> Backlog:
        """Count what waits: runs needing attention, alerts owed, runs due at ``now``.

        For gauges that must agree across workers (metrics): read from the
        store, not from one process's memory. This default pages through
        `list_runs` (every run of the statuses that matter); stores override
        it with one query that uses their indexes.
        """
        attention: dict[str, int] = {}
        owed = due = 0
        oldest: float | None = None
        statuses = (*ACTIVE_STATUSES, RunStatus.NEEDS_ATTENTION, RunStatus.PAUSED)
        for status in statuses:
            offset = 0
            while True:
                page = await self.list_runs(status=status, limit=500, offset=offset)
                for run in page:
                    if run.status is RunStatus.NEEDS_ATTENTION:
                        attention[run.saga] = attention.get(run.saga, 0) + 1
                        owed += run.wake_at is not None
                    if _due(run, now):
                        due += 1
                        since = run.created_at if run.wake_at is None else run.wake_at
                        oldest = since if oldest is None else min(oldest, since)
                if len(page) < 500:
                    break
                offset += 500
        return Backlog(attention, owed, due, oldest)

    async def page_runs(
        self,
        *,
        after: RunCursor | None = None,
        before: RunCursor | None = None,
        limit: int = 50,
        where: RunFilter | None = None,
    ) -> list[RunRecord]:
        """One page of runs, newest first (by ``created_at``, then id, descending).

        Keyset pagination: a page is named by where it starts, not by how
        many runs come before it, so the millionth run is read as fast as
        the first, and runs created meanwhile do not shift the pages.

        Args:
            after: Only runs listed after this one (older): the next page
                from a page's last run.
            before: Only runs listed before this one (newer): the ``limit``
                runs just newer than it (the previous page, from a page's
                first run), still newest first. Not with ``after``.
            limit: At most this many runs.
            where: Which runs to list (saga, version, status, creation
                time); None: every run.

        This default reads every matching run through `list_runs`; stores
        override it with one query on their indexes.

        Raises:
            ValueError: both ``after`` and ``before`` are given.
        """
        if after is not None and before is not None:
            raise ValueError("page_runs takes after= or before=, not both")
        if limit <= 0:
            return []
        where = where or RunFilter()
        found: list[RunRecord] = []
        offset = 0
        while True:
            batch = await self.list_runs(
                status=where.status, saga=where.saga, limit=500, offset=offset
            )
            found.extend(run for run in batch if where.matches(run))
            if len(batch) < 500:
                break
            offset += 500
        return newest_first(found, after=after, before=before, limit=limit)

    async def count_runs(self) -> RunCounts:
        """How many runs each saga has in each status: the whole store, no cap.

        This default reads every run through `list_runs`; stores override it
        with one query (SQL stores: one ``GROUP BY``).
        """
        counts: RunCounts = {}
        offset = 0
        while True:
            batch = await self.list_runs(limit=500, offset=offset)
            for run in batch:
                per = counts.setdefault(run.saga, {})
                per[run.status] = per.get(run.status, 0) + 1
            if len(batch) < 500:
                return counts
            offset += 500

    @abstractmethod
    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """The run's events with seq greater than ``after_seq``, in order."""

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """The whole journals of several runs, by run id.

        A run with no events, or none of that id, maps to an empty list.

        A worker reads the journals of the runs it has just claimed with one
        call; stores override this to make it one query.
        """
        return {run_id: await self.journal(run_id) for run_id in dict.fromkeys(run_ids)}

    @abstractmethod
    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """Take the lease of one run if nobody holds it or the lease lapsed.

        Any status may be claimed (an operator acting on a settled run claims
        it too), and so may a run held back by `release` (``hold_until``).
        Claiming bumps ``lease_epoch`` and clears ``wake_at``, except on a
        run that needs attention: there the timer says when its owed alert
        is due, and a claimer that dies before delivering it must leave it
        due for the next one (`claim_due` keeps it likewise).

        Returns:
            The run as claimed, or None if another owner's lease is live or
            the run does not exist.
        """

    @abstractmethod
    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """Claim up to ``limit`` active runs that are due for work.

        A run is due when nobody holds its lease (or the lease lapsed before
        ``now``), it is not held back past ``now`` (see `release`), and one
        of these holds: it has mail; its ``wake_at`` is set
        and not after ``now`` (whatever its status: a paused run's deadline
        is such a timer); or its status is one of `ACTIVE_STATUSES` and its
        ``wake_at`` is unset. ``sagas`` restricts the claim to these
        ``(name, version)`` pairs. Oldest ``wake_at`` first, or ``created_at``
        when the timer is unset (a run's creation time never changes, so stores
        need not re-index a run at each of its commits).
        """

    async def owners(self) -> set[str]:
        """The owners named by runs' leases now, each once (lapsed leases included).

        A process that starts looks among them for an earlier incarnation of
        itself (`claim_held`). Stores override this with one query on an
        index of owners; this default knows none, so nothing is taken over
        before its lease lapses.
        """
        return set()

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
        """Take over up to ``limit`` runs whose lease one of ``owners`` holds, lapsed or not.

        For a process that knows those owners are gone (an earlier incarnation
        of itself): their runs are taken at once instead of once their leases
        lapse. Taken are the runs held by one of ``owners`` that `claim_due`
        would take were their lease lapsed: mail waits, or their timer is due
        whatever the status, or they are active with no timer running (a run
        waiting on a retry timer is left until it is due). Each claim bumps
        ``lease_epoch`` and clears the timer as `claim_due`'s do, so an owner
        that is somehow alive is fenced out. ``sagas`` restricts the claim to
        these ``(name, version)`` pairs. Oldest ``created_at`` first; a run
        claimed meanwhile by anyone else is left alone.

        This default takes nothing (see `owners`).
        """
        return []

    @abstractmethod
    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """Extend the leases held, in one round trip.

        Args:
            leases: The leases to extend, by run id.
            lease_until: Until when, on the caller's clock.
            now: The caller's time as it renews (if known): a store that
                keeps leases on its own clock (PostgreSQL, see
                ``lease_clock``) extends them by ``lease_until - now`` from
                its own now. Stores on one host's clock ignore it.

        Returns:
            The ids of runs whose lease was lost (epoch or owner changed).
        """

    @abstractmethod
    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """Give up the lease of a run without changing it (no-op if lost).

        Args:
            run_id: The run.
            lease: The lease held.
            hold_until: Hand the run back *held*: `claim_due` takes it at this
                time and not before, even with mail waiting, and its timer
                (``wake_at``) is set to it so that it is due then. For a
                process that cannot drive the run (its definition does not
                fit the journal): mail would otherwise make the run due at
                once, and the same process claim it again at every poll. A
                `claim` by id (an operator acting on the run) still takes it.
        """

    @abstractmethod
    async def post(self, run_id: str, kind: str, data: JSON, *, at: float) -> Mail | None:
        """Leave mail for a run; no lease is needed.

        Raises the run's ``mail`` count, which makes it due for `claim_due`
        (whatever its status) and makes its owner's next `commit` say so.
        Stores that can wake other processes do so, as for a new run.

        Returns:
            The mail as stored, or None if the run does not exist.
        """

    @abstractmethod
    async def mail(self, run_id: str) -> list[Mail]:
        """The run's unread mail, oldest first."""

    @abstractmethod
    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """Take the reservation ``name`` for ``run_id`` if it is free.

        It is free when nobody holds it, its holder's reservation expired
        (``expires_at <= now``), or ``run_id`` holds it already (then its
        expiry is moved to ``expires_at``). Atomic across processes.

        Returns:
            The reservation as it stands afterwards: held by ``run_id`` if
            taken, else by the run that holds it.
        """

    @abstractmethod
    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """Take every reservation of ``names`` for ``run_id``, or none of them.

        Each is free as `reserve` says; those ``run_id`` holds are refreshed.
        Atomic across processes, and it never waits holding some of them, so
        runs that reserve overlapping sets this way cannot deadlock.

        Returns:
            If all were free: every one, held by ``run_id`` until
            ``expires_at``, in the order of ``names`` (each name once).
            Otherwise nothing changed, and the list holds one reservation:
            one that another run holds.
        """

    @abstractmethod
    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """Free the run's reservations (only ``names``, if given).

        Returns:
            How many were freed.
        """

    @abstractmethod
    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """Reservations by name, optionally of one run.

        With ``now``, only those not expired at that time.
        """

    def local_transaction(self) -> LocalTransaction:
        """Open a transaction on the store's database for a step's local writes.

        Blocking: call it on a worker thread, not on the event loop.

        Raises:
            StoreError: this store has no database to share (the default).
        """
        from sagakit.store import redact_url  # the package imports this module first

        raise StoreError(
            f"the store {redact_url(self.url)} cannot run local transactions; "
            "use a SQLite or PostgreSQL store"
        )

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be due, or after ``timeout`` seconds.

        A worker calls this when it found nothing to claim. Stores that can
        hear other processes (PostgreSQL's LISTEN/NOTIFY) return as soon as a
        run is started or handed back; the default simply sleeps, so workers
        on such stores poll.
        """
        await asyncio.sleep(timeout)

    async def rewrite_data(self, rewrite: DataRewrite, *, batch_size: int = 500) -> Rewritten:
        """Rewrite stored JSON in place: every run's state, event's data and mail's data.

        A maintenance pass (re-encrypting with a new key, say) that may run
        while workers write: rows are read and rewritten a batch at a time,
        each batch in a transaction of its own that keeps the rows it
        rewrites from changing under it, so no concurrent write is lost. A
        row written after its batch was read is seen as it was then written.
        Errors, leases, timers and everything else are never touched.

        Args:
            rewrite: Called with each value (``"state"``, ``"event"`` or
                ``"mail"``, its run's id, and the JSON); returns the value to store instead,
                or None to leave it. An exception it raises rolls back the
                batch under way (those before it stay rewritten) and is raised.
            batch_size: Rows per transaction.

        Returns:
            How many rows of each table were rewritten.

        Raises:
            StoreError: the store cannot rewrite its data (the default), or failed.
        """
        from sagakit.store import redact_url  # the package imports this module first

        raise StoreError(f"the store {redact_url(self.url)} cannot rewrite its data in place")

    async def purge(
        self,
        *,
        before: float,
        statuses: Sequence[RunStatus] = FINISHED_STATUSES,
        limit: int = 500,
        archive: Callable[[Sequence[Purged]], None] | None = None,
    ) -> list[Purged]:
        """Delete one batch of settled runs last changed before ``before``.

        A run is purged, with its journal, mail and reservations, when its
        status is one of ``statuses``, its ``updated_at`` is before
        ``before``, and nobody holds its lease: its owner is unset, or its
        lease lapsed before ``before`` too (a live claim, an operator acting
        on the run, keeps it). Each call is one short transaction; call it
        again until it returns fewer than ``limit`` runs.

        Args:
            before: The cutoff, in seconds since the epoch.
            statuses: Which settled statuses to purge; each must be one of
                `FINISHED_STATUSES` (see `purge_statuses`).
            limit: At most this many runs (oldest first, by creation).
            archive: Called with the batch, each run with its whole journal,
                as stored, inside the transaction and before it commits: the
                runs are deleted only if it returns. An exception it raises
                rolls the batch back and is raised. (If the commit itself
                fails after it returned, the batch was archived and is still
                there: a reader of the archive takes a run's last copy.)

        Returns:
            The runs deleted, as stored (with their journals if ``archive``).

        Raises:
            ValueError: a status that is not settled, or ``limit`` below 1.
            StoreError: the store cannot purge (the default), or failed.
        """
        from sagakit.store import redact_url  # the package imports this module first

        raise StoreError(f"the store {redact_url(self.url)} cannot purge runs")

    async def migrate(self) -> tuple[int, int]:
        """Open the store and bring its schema up to date.

        Returns:
            The schema version before and after; ``(0, 0)`` for stores
            without a schema.

        Raises:
            SchemaVersionError: the schema is newer than this sagakit knows.
        """
        await self.open()
        return (0, 0)


def _due(run: RunRecord, now: float) -> bool:
    """Whether `Store.claim_due` would claim ``run`` at ``now`` (any saga)."""
    if run.lease_until is not None and run.lease_until >= now:
        return False
    if run.mail > 0:
        return True
    if run.wake_at is not None:
        return run.wake_at <= now
    return run.status in ACTIVE_STATUSES

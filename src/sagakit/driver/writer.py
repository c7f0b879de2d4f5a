"""Journaling one run and committing it under its lease: `RunWriter`.

A `RunWriter` numbers each event the drive journals, folds it into the run's
progress and keeps it until the next commit. `flush` makes one commit of what
was journaled since the last one, with the run's derived row; it retries
while the store fails for a passing reason, carries on under a lease the
drive's own process took again, commits through a step's local transaction,
and creates a run not yet stored with its first events. Each commit, once
durable, is told to the engine's observers (if it has any).
"""

from __future__ import annotations

import asyncio
import copy
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sagakit import core
from sagakit.clock import Clock
from sagakit.context import run_logger
from sagakit.errors import LeaseLost, ReservationLapsed, StoreError
from sagakit.journal import JSON, Event, EventKind
from sagakit.observe import Observers
from sagakit.store import Commit, Lease, LocalTransaction, Mail, RunRecord, Store
from sagakit.store.encrypted import refuse_encrypted_mail

# How many of the latest compensation errors the run's row keeps.
_ROW_ERRORS = 50

Entry = tuple[EventKind, str | None, int | None, JSON | None]
"""An event to journal, not yet numbered or timed: kind, step, attempt, data
(the arguments of `RunWriter.append`, in order)."""


class RunExists(Exception):
    """The run a drive was to create was already stored: nothing was run."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(record.id)
        self.record = record


class Hold(enum.Enum):
    """How a drive holds its run's row: the stages of its lease, in order."""

    UNBORN = "unborn"
    """The run is not stored yet: the first commit creates it with its events
    (see `RunWriter.create_with`)."""
    HELD = "held"
    """The run is stored and leased to this drive: commits are made under its lease."""
    RELEASED = "released"
    """A commit gave the lease up: the run is no longer this drive's."""


# Bound once: an enum member read through its class costs several times a
# global, and `flush` asks at every commit.
_UNBORN = Hold.UNBORN
_HELD = Hold.HELD
_RELEASED = Hold.RELEASED


class RunWriter:
    """The journal of one run as one drive writes it, and its commits.

    It owns the events journaled since the last commit, the ids of the mail
    they turn into events (consumed by the same commit), the run's row as
    this drive's commits left it, and the lease that fences those commits.

    Args:
        store: The store the run lives in.
        record: The run's row as claimed (or as it is to be created).
        lease: The lease this drive holds the run under.
        plan: The run's plan, to fold each event into ``progress``.
        progress: The run's progress, which each journaled event advances.
        clock: The engine's clock (the time of each event and commit).
        commit_patience: Seconds to keep retrying a commit the store refused
            for a passing reason.
        in_thread: Runs a blocking function off the event loop (a local
            transaction's commit and close).
        observers: Told of the events of each commit once it is durable.
        sensitive: The saga's sensitive field names (masked in what
            observers are told).
    """

    __slots__ = (
        "_buffer",
        "_in_thread",
        "_last_state",
        "_mail_read",
        "_now",
        "_row_status",
        "_row_wake_at",
        "clock",
        "closed",
        "commit_patience",
        "hold",
        "last_commit",
        "lease",
        "lease_lost",
        "mail_waiting",
        "observers",
        "on_stored",
        "plan",
        "progress",
        "record",
        "run_id",
        "sensitive",
        "store",
    )

    # Not keyword-only: the `Driver` passes the arguments by position, for every
    # run; tests/unit/test_field_order.py pins the order.
    def __init__(  # noqa: PLR0917
        self,
        store: Store,
        record: RunRecord,
        lease: Lease,
        plan: core.Plan,
        progress: core.Progress,
        clock: Clock,
        commit_patience: float,
        in_thread: Callable[..., Awaitable[Any]],
        observers: Observers | None = None,
        sensitive: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.observers = observers
        self.sensitive = sensitive
        self.record = record
        self.run_id = record.id
        self.lease = lease
        self.lease_lost = False
        """The lease was found taken (by a renewal or a fenced commit): the
        next commit first checks whether this process took it (`adopt`)."""
        self.hold = _HELD
        """How this drive holds the run (see `Hold`)."""
        self.closed = False
        """The drive is over: nothing more is written, no newer lease is adopted."""
        self.mail_waiting = record.mail > 0
        """The store said mail waits for the run that this drive has not read."""
        self.plan = plan
        self.progress = progress
        self.clock = clock
        # The clock's reading, bound once: for the system clock, `time.time`
        # itself (calling the clock object costs a lookup of its __call__).
        self._now = clock.__call__
        self.commit_patience = commit_patience
        self.last_commit: Commit | None = None
        """The last commit, once it released the run (see `settled_record`);
        the others are let go as soon as they land, with their events."""
        self.on_stored: Callable[[], None] | None = None
        """Called once the first commit has created an unborn run, then let go
        (it may refer back to the drive: holding it longer would make a cycle
        that only the garbage collector frees)."""
        self._in_thread = in_thread
        self._buffer: list[Event] = []
        self._last_state: JSON | None = None
        """The state of the last commit made while the keys set are tracked
        (None after a commit failed): the next commit may hand it again."""
        self._mail_read: list[int] = []
        # What the run's row holds now (only the lease holder changes these):
        # the claim this drive started from, then this drive's last commit.
        self._row_status: str = record.status
        self._row_wake_at: float | None = record.wake_at

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """The run's logger (made when something is logged, which is seldom)."""
        return run_logger(self.run_id, self.record.saga, version=self.record.version)

    def create_with(self, first: Event) -> None:
        """Have the first flush create the run, with ``first`` (already applied)."""
        self.hold = _UNBORN
        self._buffer = [first]

    def append(
        self,
        kind: EventKind,
        step: str | None = None,
        attempt: int | None = None,
        data: JSON | None = None,
    ) -> Event:
        """Record an event in memory; it reaches the store with the next flush."""
        # Positional: this runs twice per step, and keywords cost a frozen
        # dataclass half as much again. (Order: run_id, seq, kind, at, step,
        # attempt, data.)
        event = Event(
            self.run_id,
            self.progress.last_seq + 1,
            kind,
            self._now(),
            step,
            attempt,
            data if data is not None else {},
        )
        core.apply(self.plan, self.progress, event)
        self._buffer.append(event)
        return event

    async def unread_mail(self) -> list[Mail]:
        """The run's mail this drive has not read yet, now counted as read.

        The commit that journals what it does consumes it (deletes it).

        Raises:
            EncryptionError: some of it is encrypted and the store has no key.
        """
        self.mail_waiting = False
        read = self._mail_read
        with self.clock.busy():
            mail = await self.store.mail(self.run_id)
        fresh = [m for m in mail if m.id not in read]
        for each in fresh:
            # Read through a store without keys: refused before any is counted
            # read, so the mail stays for a process that has the key.
            refuse_encrypted_mail(each)
        self._mail_read.extend(each.id for each in fresh)
        return fresh

    def adopt(self, claimed: RunRecord) -> bool:
        """Carry on under the lease of ``claimed``; whether it did (see `Driver.adopt`)."""
        if (
            self.closed
            or self.hold is _RELEASED
            or claimed.owner != self.lease.owner
            # The same epoch: adopted already (see `_reclaimed_here`).
            or claimed.lease_epoch not in (self.lease.epoch, self.lease.epoch + 1)
        ):
            return False
        self.lease = Lease(self.lease.owner, claimed.lease_epoch)
        self.lease_lost = False  # a renewal under the old lease may have said so
        if claimed.mail > 0:
            self.mail_waiting = True
        return True

    def settled_commit(self) -> Commit | None:
        """The last commit, if the run's row is as it left it (see `settled_record`)."""
        commit = self.last_commit
        if commit is None or self.hold is not _RELEASED or self.lease_lost or self.mail_waiting:
            return None
        return commit

    def settled_record(self) -> RunRecord | None:
        """The run's row as the last commit left it, if known here.

        Known if that commit released the run, the lease was not found lost,
        and no mail waits.
        """
        commit = self.settled_commit()
        if commit is None:
            return None
        record = self.record
        # Positional, in field order: made for every run, and dataclasses.replace
        # costs several times as much.
        return RunRecord(
            record.id,
            record.saga,
            record.version,
            commit.status,
            commit.state,
            commit.error,
            record.created_at,
            commit.at,  # updated_at
            None,  # owner
            self.lease.epoch,
            None,  # lease_until
            commit.wake_at,
            self.progress.last_seq,
            0,  # mail
        )

    async def _reclaimed_here(self) -> bool:
        """Whether the lease this drive lost went to its own process (then adopted).

        The answer to the claim that took the run again may reach this
        process after the renewal or commit that found the old lease gone (on
        PostgreSQL they travel on different connections); the run's row
        already tells. One read, and only once the lease is found lost.
        """
        try:
            row = await self.store.get_run(self.run_id)
        except StoreError:
            return False
        # Only a newer lease: a commit refused under the very lease this drive
        # holds (a retry whose first try landed unacknowledged) is not ours
        # to make again. (No flush runs while the drive sleeps, so nothing
        # waits to be woken by the mail an adopted claim may bring.)
        return row is not None and row.lease_epoch == self.lease.epoch + 1 and self.adopt(row)

    async def flush(
        self,
        *,
        release: bool = False,
        wake_at: float | None = None,
        via: LocalTransaction | None = None,
        requires: tuple[str, ...] = (),
    ) -> None:
        """Commit buffered events with the run's derived row, in one transaction.

        With ``via``, the commit goes through that local transaction, so the
        step's own writes and these events become durable together. With
        ``requires``, the store applies it only if the run holds those
        reservations (`Commit.requires`).

        Raises:
            LeaseLost: another process holds the run's lease.
            ReservationLapsed: a reservation of ``requires`` is not the run's.
            RunExists: the run to be created was stored already.
            StoreError: the store failed past ``commit_patience``.
        """
        if not self._buffer and not release and wake_at is None and not self._mail_read:
            return
        # Busy while the commit is under way: a skipping clock must not pass
        # time over a commit in flight on the store's thread or connection.
        with self.clock.busy():
            await self.flush_unheld(release=release, wake_at=wake_at, via=via, requires=requires)

    async def flush_unheld(
        self,
        *,
        release: bool = False,
        wake_at: float | None = None,
        via: LocalTransaction | None = None,
        requires: tuple[str, ...] = (),
    ) -> None:
        """`flush` without holding the clock, for a clock whose hold does nothing.

        The drive calls this one then (see `sagakit.clock.holds_nothing`): a
        ``with`` of a hold that does nothing costs three Python calls, at
        every step.
        """
        if not self._buffer and not release and wake_at is None and not self._mail_read:
            return
        progress = self.progress
        error: JSON | None = None
        if progress.error is not None or progress.compensation_errors:
            # The row carries a summary (the journal keeps every error whole), so
            # a compensation retried many times does not make each commit bigger.
            error = {
                "cause": progress.error,
                "compensation": [
                    {**e, "traceback": ""} for e in progress.compensation_errors[-_ROW_ERRORS:]
                ],
            }
        # The keys set since the last commit that landed (`Commit.sets`), for
        # a big state: the store then looks at those values alone.
        touched = progress.touched
        sets: tuple[str, ...] | None
        state: JSON | None
        if touched is not None:
            if touched:
                sets = tuple(touched)
                touched.clear()
                state = None
            else:
                # Nothing set since the last commit (a step's start, mostly):
                # its state, which nothing changes, is this one's.
                sets = ()
                state = self._last_state
            if state is None:
                state = dict(progress.state)
            self._last_state = state
        else:
            sets = None
            state = dict(progress.state)
            if len(state) > 16:
                progress.touched = set()  # tracked from this commit on
                self._last_state = state
        # Positional, in field order: this runs at every step.
        commit = Commit(
            self.run_id,
            self.lease,
            tuple(self._buffer),
            progress.status,
            state,
            error,
            self._now(),
            wake_at,
            release,
            tuple(self._mail_read),
            progress.status == self._row_status and wake_at == self._row_wake_at,  # keeps_status
            requires,
            sets,
        )
        # (Written out, not a coroutine of its own: each await a commit goes
        # through is one more frame to suspend and resume, at every step.)
        try:
            if self.lease_lost:
                if await self._reclaimed_here():
                    commit = replace(commit, lease=self.lease)
                else:
                    if via is not None:
                        await self._in_thread(via.close)
                    raise LeaseLost(self.run_id)
            if self.hold is _UNBORN:
                await self._create(commit)
                return
            if via is not None:
                # No retry here: once this transaction fails, the step's local
                # writes are gone with it. Like a crash, the step then runs again.
                try:
                    waiting = await self._in_thread(via.commit, commit)
                    self.mail_waiting = waiting or self.mail_waiting
                finally:
                    await self._in_thread(via.close)
                self._committed(commit)
                return
            # The buffer is kept until the commit lands, so a passing failure (a
            # lock held too long, a dropped connection) can be retried: commits are
            # fenced and event seqs are unique, so a retry cannot write twice.
            give_up = time.monotonic() + self.commit_patience
            pause = 0.05
            while True:
                try:
                    self.mail_waiting = await self.store.commit(commit) or self.mail_waiting
                    break
                except LeaseLost:
                    if commit.lease == self.lease and not await self._reclaimed_here():
                        raise
                    # The drive adopted a newer lease of its own while this commit
                    # was under way (see `adopt`): fenced out, it wrote nothing.
                    commit = replace(commit, lease=self.lease)
                except StoreError as exc:
                    if time.monotonic() + pause > give_up:
                        raise
                    self.log.warning(
                        "run %s: the store failed (%s); retrying in %.2fs", self.run_id, exc, pause
                    )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
            self._committed(commit)
        except BaseException:
            # Whether it landed is unknown: the next commit says it does not
            # know what changed since (the store then compares every value).
            progress.touched = self._last_state = None
            raise

    async def commit_requiring(
        self, entry: Entry, requires: tuple[str, ...]
    ) -> ReservationLapsed | None:
        """Journal ``entry`` (a success) in a commit of its own that requires reservations.

        What was journaled before goes in a commit first, so that a refusal
        takes back ``entry`` alone.

        Returns:
            None once it is committed; the store's refusal if it found a
            reservation lapsed: then nothing of it was written, and the run's
            progress is as it was before.

        Raises:
            LeaseLost: another process holds the run's lease.
            StoreError: the store failed past ``commit_patience``.
        """
        await self.flush()
        # Seldom, and the fold cannot be undone: a copy to go back to.
        before = copy.deepcopy(self.progress)
        self.append(*entry)
        try:
            await self.flush(requires=requires)
        except ReservationLapsed as lapse:
            self._buffer = []
            progress = self.progress  # shared with the drive: restored in place
            for name in progress.__slots__:
                setattr(progress, name, getattr(before, name))
            progress.touched = None  # its values are copies: compared again
            return lapse
        return None

    async def _create(self, commit: Commit) -> None:
        """Store the run with the commit's events, as the commit leaves its row.

        Not retried as commits are: if the store fails, nothing was run yet
        and the caller hears of it, as of any failed start.
        """
        assert commit.events, "a run is created with its first event"
        first = self.record
        record = RunRecord(  # positional, as in `settled_record`
            first.id,
            first.saga,
            first.version,
            commit.status,
            commit.state,
            commit.error,
            first.created_at,
            commit.at,  # updated_at
            None if commit.release else self.lease.owner,
            first.lease_epoch,
            None if commit.release else first.lease_until,
            commit.wake_at,
            commit.events[-1].seq,
            first.mail,
        )
        stored, created = await self.store.create_run(record, commit.events)
        if not created:
            raise RunExists(stored)
        self.hold = _HELD
        self._committed(commit)
        on_stored, self.on_stored = self.on_stored, None
        if on_stored is not None:
            on_stored()

    def _committed(self, commit: Commit) -> None:
        if self.observers is not None and commit.events:
            progress = self.progress
            self.observers.committed(
                self.record.saga,
                self.record.version,
                commit.events,
                state=commit.state,
                sensitive=self.sensitive,
                trace=progress.trace,
                run_started_at=progress.started_at,
            )
        # Emptied in place rather than replaced (the commit holds a tuple of
        # its own): new lists at every commit would live until the next one,
        # and with many runs in flight those are the young objects the
        # garbage collector walks again and again. Mail read is seldom.
        self._buffer.clear()
        if self._mail_read:
            self._mail_read = []
        self._row_status = commit.status
        self._row_wake_at = commit.wake_at
        if commit.release:
            self.hold = _RELEASED
            self.last_commit = commit

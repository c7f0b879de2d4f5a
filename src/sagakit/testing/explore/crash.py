"""A process that dies at a chosen record: a store wrapper for the engine that crashes.

`CrashingStore` hands every call to the engine's real store until a commit
holds the record a crash fault names (the write-ahead record of a call, or
the record of its success). It then dies as a process does: before the
commit (nothing of it is written) or after it (it is durable, nothing after
it is done), and from then on it refuses everything, so the dead engine's
heartbeat, drives and timers can write nothing more. The next engine, on the
same data, finds the run as the crash left it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sagakit.errors import LeaseLost
from sagakit.journal import JSON, STARTED, SUCCEEDED, Event, RunStatus
from sagakit.store import (
    Commit,
    Lease,
    LocalTransaction,
    Mail,
    Reservation,
    RunRecord,
    Store,
)
from sagakit.testing.explore.plan import Fault, FaultKind, Record, When


class ProcessCrashed(LeaseLost):
    """The simulated death of the process driving a run.

    A `LeaseLost`, so that the dead engine's drive stops as one fenced out
    does: it writes nothing more.
    """

    def __init__(self, run_id: str, fault: Fault | None) -> None:
        super().__init__(run_id)
        self.fault = fault
        self.args = (f"explore: the process died ({fault.describe() if fault else 'dead'})",)


class Crashes:
    """The crash faults of a scenario, shared by every engine it starts.

    Each fires once: the engine that recovers the run does not die again at
    the same record (a pair may hold a second crash, elsewhere).
    """

    def __init__(self, run_id: str, faults: Sequence[Fault]) -> None:
        self.run_id = run_id
        self.waiting = [f for f in faults if f.kind is FaultKind.CRASH]
        self.fired: list[Fault] = []

    def match(self, run_id: str, events: Sequence[Event]) -> Fault | None:
        """The crash fault a commit of these events triggers, if any (it fires now)."""
        if run_id != self.run_id or not self.waiting:
            return None
        for fault in self.waiting:
            kinds = STARTED if fault.record is Record.STARTED else SUCCEEDED
            wanted = kinds[fault.phase]
            if any(e.kind is wanted and e.step == fault.step for e in events):
                self.waiting.remove(fault)
                self.fired.append(fault)
                return fault
        return None


class CrashingStore(Store):
    """The store of one engine (one process), which dies when a crash fault fires.

    The store underneath is shared by the engines of an exploration (one
    process dies, the data stays): it is opened and closed by its owner, never
    by an engine.

    Args:
        inner: The real store, open.
        crashes: The scenario's crash faults.
    """

    def __init__(self, inner: Store, crashes: Crashes) -> None:
        self.inner = inner
        self.url = inner.url
        self.crashes = crashes
        self.dead: Fault | None = None
        self.died = False

    def _alive(self) -> None:
        if self.died:
            raise ProcessCrashed(self.crashes.run_id, self.dead)

    def _die(self, fault: Fault) -> ProcessCrashed:
        self.died = True
        self.dead = fault
        return ProcessCrashed(self.crashes.run_id, fault)

    async def open(self) -> None:
        """Nothing: the store underneath is opened once for every engine (see `Runner`)."""
        self._alive()

    async def close(self) -> None:
        """Nothing: the store underneath outlives the engines that use it."""

    async def create_run(self, run: RunRecord, events: Sequence[Event]) -> tuple[RunRecord, bool]:
        """See `Store.create_run`."""
        self._alive()
        return await self.inner.create_run(run, events)

    async def commit(self, commit: Commit) -> bool:
        """See `Store.commit`."""
        self._alive()
        fault = self.crashes.match(commit.run_id, commit.events)
        if fault is None:
            return await self.inner.commit(commit)
        if fault.when is When.BEFORE:
            raise self._die(fault)
        await self.inner.commit(commit)
        raise self._die(fault)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """See `Store.get_run`."""
        self._alive()
        return await self.inner.get_run(run_id)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        saga: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """See `Store.list_runs`."""
        self._alive()
        return await self.inner.list_runs(status=status, saga=saga, limit=limit, offset=offset)

    async def journal(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """See `Store.journal`."""
        self._alive()
        return await self.inner.journal(run_id, after_seq=after_seq)

    async def journals(self, run_ids: Sequence[str]) -> dict[str, list[Event]]:
        """See `Store.journals`."""
        self._alive()
        return await self.inner.journals(run_ids)

    async def claim(
        self, run_id: str, *, owner: str, now: float, lease_until: float
    ) -> RunRecord | None:
        """See `Store.claim`."""
        self._alive()
        return await self.inner.claim(run_id, owner=owner, now=now, lease_until=lease_until)

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        sagas: Sequence[tuple[str, str]] | None = None,
    ) -> list[RunRecord]:
        """See `Store.claim_due`."""
        self._alive()
        return await self.inner.claim_due(
            owner=owner, now=now, lease_until=lease_until, limit=limit, sagas=sagas
        )

    async def owners(self) -> set[str]:
        """See `Store.owners`."""
        self._alive()
        return await self.inner.owners()

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
        """See `Store.claim_held`."""
        self._alive()
        return await self.inner.claim_held(
            owners, owner=owner, now=now, lease_until=lease_until, limit=limit, sagas=sagas
        )

    async def renew(
        self, leases: dict[str, Lease], *, lease_until: float, now: float | None = None
    ) -> set[str]:
        """See `Store.renew`."""
        self._alive()
        return await self.inner.renew(leases, lease_until=lease_until, now=now)

    async def release(self, run_id: str, lease: Lease, *, hold_until: float | None = None) -> None:
        """See `Store.release`."""
        self._alive()
        await self.inner.release(run_id, lease, hold_until=hold_until)

    async def post(self, run_id: str, kind: str, data: JSON, *, at: float) -> Mail | None:
        """See `Store.post`."""
        self._alive()
        return await self.inner.post(run_id, kind, data, at=at)

    async def mail(self, run_id: str) -> list[Mail]:
        """See `Store.mail`."""
        self._alive()
        return await self.inner.mail(run_id)

    async def reserve(
        self, name: str, *, run_id: str, now: float, expires_at: float
    ) -> Reservation:
        """See `Store.reserve`."""
        self._alive()
        return await self.inner.reserve(name, run_id=run_id, now=now, expires_at=expires_at)

    async def reserve_all(
        self, names: Sequence[str], *, run_id: str, now: float, expires_at: float
    ) -> list[Reservation]:
        """See `Store.reserve_all`."""
        self._alive()
        return await self.inner.reserve_all(names, run_id=run_id, now=now, expires_at=expires_at)

    async def release_reservations(self, run_id: str, names: Sequence[str] | None = None) -> int:
        """See `Store.release_reservations`."""
        self._alive()
        return await self.inner.release_reservations(run_id, names)

    async def reservations(
        self, *, run_id: str | None = None, now: float | None = None
    ) -> list[Reservation]:
        """See `Store.reservations`."""
        self._alive()
        return await self.inner.reservations(run_id=run_id, now=now)


class _CrashingTransaction(LocalTransaction):
    """A step's local transaction, which dies with its process at a crash fault."""

    def __init__(self, inner: LocalTransaction, store: CrashingLocalStore) -> None:
        self.inner = inner
        self.store = store
        self.connection = inner.connection

    def commit(self, commit: Commit) -> bool:
        """See `LocalTransaction.commit`."""
        self.store._alive()
        fault = self.store.crashes.match(commit.run_id, commit.events)
        if fault is None:
            return self.inner.commit(commit)
        if fault.when is When.BEFORE:
            raise self.store._die(fault)  # closing rolls the step's writes back
        self.inner.commit(commit)
        raise self.store._die(fault)

    def rollback(self) -> None:
        """See `LocalTransaction.rollback`."""
        self.inner.rollback()

    def close(self) -> None:
        """See `LocalTransaction.close`."""
        self.inner.close()


class CrashingLocalStore(CrashingStore):
    """A `CrashingStore` over a store that runs local transactions (SQLite, PostgreSQL)."""

    def local_transaction(self) -> LocalTransaction:
        """See `Store.local_transaction`."""
        self._alive()
        return _CrashingTransaction(self.inner.local_transaction(), self)


def crashing(inner: Store, crashes: Crashes) -> CrashingStore:
    """``inner`` wrapped to die at ``crashes``, keeping whether it runs local transactions."""
    if type(inner).local_transaction is Store.local_transaction:
        return CrashingStore(inner, crashes)
    return CrashingLocalStore(inner, crashes)

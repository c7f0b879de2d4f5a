"""What the contract's tests share.

Fixed times and leases, records and commits built from a few changes, and
the decorator that runs a test on an open store.

They are public so that a backend's own tests can build the same records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import Commit, Lease, RunRecord, Store, open_store

StoreFactory = Callable[[], Store]
"""Makes a new store, not yet opened, on the storage of the test under way."""

T0 = 1_000.0
"""The time every record and event of the suite is dated from."""

A = Lease("worker-a", 1)
"""The lease `record` gives a run: worker-a's, until ``T0 + 30``."""

B = Lease("worker-b", 2)
"""The lease a claim by worker-b takes from `A`'s run."""

FREE: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
"""The changes to `record` that make a run nobody has ever claimed."""

_Case = TypeVar("_Case")
_S = TypeVar("_S", bound=Store)


@asynccontextmanager
async def _opened(store: _S) -> AsyncIterator[_S]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@overload
def opened(store: _S) -> AbstractAsyncContextManager[_S]: ...
@overload
def opened(store: str, **options: Any) -> AbstractAsyncContextManager[Store]: ...
def opened(store: Store | str, **options: Any) -> AbstractAsyncContextManager[Store]:
    """Open a store for an ``async with`` block and close it after.

    Args:
        store: The store, or a URL for `open_store` to make it from.
        options: Backend options, passed to `open_store` with a URL.

    Returns:
        The context manager; ``async with`` gives the open store.
    """
    return _opened(open_store(store, **options) if isinstance(store, str) else store)


def contract(
    test: Callable[[_Case, Store], Awaitable[None]],
) -> Callable[[_Case, StoreFactory], None]:
    """Turn ``async def test_x(self, store)`` into a test run on an open store.

    The store comes from the ``make_store`` fixture of the test's class, is
    opened before the test and closed after it, in an event loop of its own.
    """

    def run(self: _Case, make_store: StoreFactory) -> None:
        async def body() -> None:
            async with opened(make_store()) as store:
                await test(self, store)

        asyncio.run(body())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


def record(run_id: str, **changes: Any) -> RunRecord:
    """A pending run of saga ``order`` held under lease `A`, with some fields changed."""
    fields: dict[str, Any] = {
        "id": run_id,
        "saga": "order",
        "version": "1",
        "status": RunStatus.PENDING,
        "state": {"n": 0},
        "error": None,
        "created_at": T0,
        "updated_at": T0,
        "owner": A.owner,
        "lease_epoch": A.epoch,
        "lease_until": T0 + 30,
        "last_seq": 1,
    }
    fields.update(changes)
    return RunRecord(**fields)


def steps(run_id: str, first_seq: int, count: int = 2) -> tuple[Event, ...]:
    """``count`` step-started events of a run, from seq ``first_seq`` on."""
    return tuple(
        Event(run_id, seq, EventKind.STEP_STARTED, T0 + seq, step=f"s{seq}", attempt=1)
        for seq in range(first_seq, first_seq + count)
    )


def change(run_id: str, lease: Lease = A, events: tuple[Event, ...] = (), **changes: Any) -> Commit:
    """A commit that leaves a run running, under lease `A` unless told otherwise."""
    fields: dict[str, Any] = {
        "status": RunStatus.RUNNING,
        "state": {"n": len(events)},
        "error": None,
        "at": T0 + 1,
    }
    fields.update(changes)
    return Commit(run_id=run_id, lease=lease, events=events, **fields)


async def new_run(store: Store, run_id: str, **changes: Any) -> RunRecord:
    """Create a run like `record` with its run-started event; it must be new."""
    started = Event(run_id, 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
    stored, created = await store.create_run(record(run_id, **changes), [started])
    assert created
    return stored


async def seqs(store: Store, run_id: str, after_seq: int = 0) -> list[int]:
    """The seqs of a run's journal after ``after_seq``."""
    return [e.seq for e in await store.journal(run_id, after_seq=after_seq)]


async def claim_all(store: Store, now: float = T0 + 10, **options: Any) -> list[RunRecord]:
    """Claim every due run, for good: the leases outlive every ``now`` of these tests."""
    return await store.claim_due(owner="w", now=now, lease_until=T0 + 1e6, limit=100, **options)


async def due_ids(store: Store, now: float = T0 + 10, **options: Any) -> set[str]:
    """The ids of the runs `claim_all` claims."""
    return {run.id for run in await claim_all(store, now, **options)}


async def mail_count(store: Store, run_id: str) -> int:
    """The count of mail waiting that a run's row holds."""
    run = await store.get_run(run_id)
    assert run is not None
    return run.mail

"""The contract for big states: read back whole, however a store wrote them.

A store may write a big state by its changes (the keys each commit sets)
and the whole state only now and then (`sagakit.store.changes`). Whatever
it does, every read (a run, a list, a page, a claim, a purge's archive, a
rewrite) gives the state as the last commit left it: after many commits
that each change one key, across the points where the whole state is
written again, after another process took the run, after a key was removed.

The commits are built as the engine builds them: each state a new dict whose
unchanged values are the very objects of the commit before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sagakit.errors import LeaseLost
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.store import Lease, RunCursor, Store
from sagakit.store.encrypted import is_envelope
from sagakit.store.testing.support import (
    T0,
    A,
    B,
    StoreFactory,
    change,
    contract,
    new_run,
    opened,
    record,
)

KEYS = 64
"""Keys of a big state: 64 values of about 400 bytes, some 26 KB in all."""


def big_state() -> dict[str, Any]:
    """A state big enough to be written by its changes."""
    return {f"k{i:03d}": "v" * 400 for i in range(KEYS)}


class _Run:
    """A run's state as its commits change it, one key per commit."""

    def __init__(self, run_id: str, lease: Lease = A, *, named: bool = False) -> None:
        self.run_id = run_id
        self.lease = lease
        self.state: JSON = big_state()
        self.seq = 1
        self.turn = 0
        self.named = named
        """Name the keys each commit sets (`Commit.sets`), as the engine does."""
        self.unnamed: set[str] | None = None
        """Keys set since the last commit that landed (None: not known)."""

    async def create(self, store: Store) -> None:
        started = Event(self.run_id, 1, EventKind.RUN_STARTED, T0, data={"state": self.state})
        await store.create_run(record(self.run_id, state=self.state), [started])

    async def step(self, store: Store, *, release: bool = False, **sets: Any) -> None:
        """Commit one step's success that sets one key (or ``sets``)."""
        self.turn += 1
        self.seq += 1
        if not sets:
            sets = {f"k{self.turn % KEYS:03d}": f"{self.turn}:" + "w" * 400}
        self.state = {**self.state, **sets}
        event = Event(
            self.run_id,
            self.seq,
            EventKind.STEP_SUCCEEDED,
            T0 + self.seq,
            step=f"s{self.seq}",
            attempt=1,
            data={"result": sets},
        )
        named = None
        if self.named and self.unnamed is not None:
            named = tuple(self.unnamed | set(sets))
        commit = change(
            self.run_id, self.lease, (event,), state=self.state, release=release, sets=named
        )
        try:
            await store.commit(commit)
        except BaseException:
            self.unnamed = None  # as the engine's writer: not known once a commit fails
            raise
        self.unnamed = set()

    async def steps_read_back(self, store: Store, count: int, *, every: int) -> None:
        """``count`` commits of one key each, the state read back after every ``every``-th."""
        for turn in range(count):
            await self.step(store)
            if turn % every == 0:
                stored = await store.get_run(self.run_id)
                assert stored is not None
                assert stored.state == self.state, f"after {turn + 1} commits"


_Case = TypeVar("_Case")


def two_stores(
    test: Callable[[_Case, Store, Store], Awaitable[None]],
) -> Callable[[_Case, StoreFactory], None]:
    """As `contract`, with two stores on the same storage (two processes)."""

    def run(self: _Case, make_store: StoreFactory) -> None:
        async def body() -> None:
            async with opened(make_store()) as store, opened(make_store()) as other:
                await test(self, store, other)

        asyncio.run(body())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


class BigStateContract:
    """What every store reads back of a big state written commit by commit."""

    @contract
    async def test_a_big_state_changed_key_by_key_reads_back_whole(self, store: Store) -> None:
        run = _Run("r1")
        await run.create(store)
        # Enough commits for the changes to outweigh the state twice over.
        await run.steps_read_back(store, 150, every=10)
        stored = await store.get_run("r1")
        assert stored is not None
        assert (stored.state, stored.last_seq) == (run.state, run.seq)
        assert [r.state for r in await store.list_runs()] == [run.state]
        assert [r.state for r in await store.page_runs(limit=5)] == [run.state]
        after = RunCursor(T0 + 1, "z")
        assert [r.state for r in await store.page_runs(after=after)] == [run.state]

    @two_stores
    async def test_a_big_state_reads_back_whole_in_another_store(
        self, store: Store, other: Store
    ) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(40):
            await run.step(store)
        stored = await other.get_run("r1")
        assert stored is not None
        assert stored.state == run.state

    @two_stores
    async def test_a_big_state_survives_a_claim_by_another_process(
        self, store: Store, other: Store
    ) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(30):
            await run.step(store)
        # Another process takes the run and carries on.
        claimed = await other.claim("r1", owner=B.owner, now=T0 + 100, lease_until=T0 + 1e6)
        assert claimed is not None
        assert claimed.state == run.state
        run.lease = Lease(B.owner, claimed.lease_epoch)
        for _ in range(30):
            await run.step(other)
        # The first store's memory of the run is stale: its next commits,
        # under a lease of its own again, must not build on it.
        claimed = await store.claim("r1", owner=A.owner, now=T0 + 1e7, lease_until=T0 + 2e7)
        assert claimed is not None
        assert claimed.state == run.state
        run.lease = Lease(A.owner, claimed.lease_epoch)
        for _ in range(30):
            await run.step(store)
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == run.state

    @two_stores
    async def test_a_big_state_taken_back_by_a_later_process_reads_back_whole(
        self, store: Store, other: Store
    ) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(30):
            await run.step(store)
        # A later incarnation of the owner takes its runs back at once (`claim_held`).
        [taken] = await other.claim_held(
            [A.owner], owner=B.owner, now=T0 + 1, lease_until=T0 + 1e6, limit=10
        )
        assert taken.state == run.state
        run.lease = Lease(B.owner, taken.lease_epoch)
        for _ in range(10):
            await run.step(other)
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == run.state

    @contract
    async def test_a_big_state_with_keys_added_and_removed(self, store: Store) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(5):
            await run.step(store)
        await run.step(store, extra={"nested": [1, {"a": None}]}, empty=None)
        await run.step(store)
        # A key removed (the engine never does, but a store must not keep it).
        run.state = {key: value for key, value in run.state.items() if key != "extra"}
        await run.step(store)
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == run.state
        assert "extra" not in stored.state
        assert stored.state["empty"] is None

    @contract
    async def test_a_big_state_committed_with_the_keys_it_sets_named_reads_back_whole(
        self, store: Store
    ) -> None:
        # As the engine commits: each commit names the keys it set.
        run = _Run("r1", named=True)
        await run.create(store)
        await run.steps_read_back(store, 150, every=25)
        # Keys added, one set to its own value again, one set to a new object
        # equal to the old: each read back as committed.
        await run.step(store, extra={"nested": [1, {"a": None}]}, k001=run.state["k001"])
        await run.step(store, k002=str(run.state["k002"]), k003=["list"])
        stored = await store.get_run("r1")
        assert stored is not None
        assert (stored.state, list(stored.state)) == (run.state, list(run.state))

    @contract
    async def test_a_named_commit_after_one_fenced_out_reads_back_whole(self, store: Store) -> None:
        run = _Run("r1", named=True)
        await run.create(store)
        for _ in range(5):
            await run.step(store)
        # A commit under a lease the run no longer has writes nothing; the
        # commit after it cannot name what changed since the last that landed.
        before, lease, run.lease = run.state, run.lease, B
        try:
            await run.step(store, k000="fenced out")
        except LeaseLost:
            pass
        else:
            raise AssertionError("a commit under another lease was written")
        run.lease, run.state, run.seq = lease, before, run.seq - 1
        await run.step(store, k001="after")
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == run.state
        assert (stored.state["k000"], stored.state["k001"]) == (before["k000"], "after")

    @contract
    async def test_a_big_state_released_and_claimed_again(self, store: Store) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(10):
            await run.step(store)
        await run.step(store, release=True)
        claimed = await store.claim("r1", owner=A.owner, now=T0 + 100, lease_until=T0 + 1e6)
        assert claimed is not None
        assert claimed.state == run.state
        run.lease = Lease(A.owner, claimed.lease_epoch)
        for _ in range(10):
            await run.step(store)
        due = await store.claim_due(owner="w", now=T0 + 2e6, lease_until=T0 + 3e6, limit=10)
        assert [r.state for r in due] == [run.state]

    @contract
    async def test_a_big_state_in_a_purge_archive(self, store: Store) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(20):
            await run.step(store)
        await store.commit(
            change("r1", A, (), state=run.state, status=RunStatus.COMPLETED, release=True)
        )
        archived: list[JSON] = []

        def archive(batch: Any) -> None:
            archived.extend(purged.run.state for purged in batch)

        try:
            purged = await store.purge(before=T0 + 1e9, archive=archive)
        except Exception as exc:  # a store that cannot purge says so
            if "cannot purge" not in str(exc):
                raise
            return
        # As stored: a wrapping store (encryption) may hand the state back sealed,
        # but whole: one sealed value, not a part of the state.
        [state] = [p.run.state for p in purged]
        assert state == run.state or is_envelope(state)
        assert archived == [state]
        assert await store.get_run("r1") is None
        # A run of the same id is new: nothing of the old one's state is left.
        await new_run(store, "r1")
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == {"n": 0}

    @contract
    async def test_rewrite_data_sees_a_big_state_whole(self, store: Store) -> None:
        run = _Run("r1")
        await run.create(store)
        for _ in range(20):
            await run.step(store)
        seen: list[JSON] = []

        def rewrite(kind: str, run_id: str, value: JSON) -> JSON | None:
            if kind != "state":
                return None
            seen.append(value)
            return {**value, "rewritten": True}

        try:
            await store.rewrite_data(rewrite)
        except Exception as exc:  # a store that cannot rewrite says so
            if "cannot rewrite" not in str(exc):
                raise
            return
        assert seen == [run.state]
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == {**run.state, "rewritten": True}
        # And commits carry on from the rewritten state, as a worker would
        # after reading it back.
        run.state = stored.state
        for _ in range(5):
            await run.step(store)
        stored = await store.get_run("r1")
        assert stored is not None
        assert stored.state == run.state

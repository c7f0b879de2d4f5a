"""The contract for reservations.

A run holds a name until the reservation expires, the run frees it, or the
run finishes.
"""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import LeaseLost
from sagakit.journal import RunStatus
from sagakit.store import FINISHED_STATUSES, Reservation, Store
from sagakit.store.testing.support import (
    T0,
    B,
    StoreFactory,
    change,
    contract,
    new_run,
    opened,
)


class ReservationContract:
    """What every store does with reservations."""

    # -- reservations -------------------------------------------------------------------

    @contract
    async def test_reserve_takes_a_free_name_and_reports_a_live_holder(self, store: Store) -> None:
        taken = await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
        assert taken == Reservation("room-1", "r1", T0 + 60)
        refused = await store.reserve("room-1", run_id="r2", now=T0 + 59, expires_at=T0 + 120)
        assert refused == Reservation("room-1", "r1", T0 + 60)
        assert await store.reservations() == [taken]

    @contract
    async def test_reserve_takes_over_an_expired_reservation(self, store: Store) -> None:
        await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
        # Expired means expires_at <= now: the boundary itself is free.
        took = await store.reserve("room-1", run_id="r2", now=T0 + 60, expires_at=T0 + 90)
        assert took == Reservation("room-1", "r2", T0 + 90)
        assert await store.reservations(run_id="r1") == []

    @contract
    async def test_reserve_by_the_holder_moves_its_expiry(self, store: Store) -> None:
        await store.reserve("room-1", run_id="r1", now=T0, expires_at=T0 + 60)
        later = await store.reserve("room-1", run_id="r1", now=T0 + 10, expires_at=T0 + 200)
        assert later == Reservation("room-1", "r1", T0 + 200)
        sooner = await store.reserve("room-1", run_id="r1", now=T0 + 20, expires_at=T0 + 30)
        assert sooner == Reservation("room-1", "r1", T0 + 30)  # moved, even backwards
        assert await store.reservations() == [sooner]

    def test_reserve_racing_from_two_stores_has_exactly_one_winner(
        self, make_store: StoreFactory
    ) -> None:
        async def body() -> None:
            async with opened(make_store()) as a, opened(make_store()) as b:
                stores = [a, b]
                results = await asyncio.gather(
                    *(
                        stores[i % 2].reserve("seat", run_id=f"r{i}", now=T0, expires_at=T0 + 60)
                        for i in range(20)
                    )
                )
                winners = [i for i, r in enumerate(results) if r.run_id == f"r{i}"]
                assert len(winners) == 1
                held = Reservation("seat", f"r{winners[0]}", T0 + 60)
                assert results == [held] * 20
                assert await a.reservations() == [held]
                assert await b.reservations() == [held]

        asyncio.run(body())

    @contract
    async def test_release_reservations_frees_the_runs_own_names(self, store: Store) -> None:
        for name, run_id in (("a", "r1"), ("b", "r1"), ("c", "r1"), ("d", "r2")):
            await store.reserve(name, run_id=run_id, now=T0, expires_at=T0 + 60)
        # Only r1's names are freed: "d" is r2's, "zz" is nobody's.
        assert await store.release_reservations("r1", ["a", "d", "zz"]) == 1
        assert [r.name for r in await store.reservations()] == ["b", "c", "d"]
        assert await store.release_reservations("r1", []) == 0
        assert await store.release_reservations("r1") == 2
        assert await store.reservations() == [Reservation("d", "r2", T0 + 60)]
        assert await store.release_reservations("r1") == 0

    @contract
    async def test_reservations_filter_by_run_and_expiry(self, store: Store) -> None:
        await store.reserve("c", run_id="r1", now=T0, expires_at=T0 + 10)
        await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.reserve("b", run_id="r2", now=T0, expires_at=T0 + 60)
        assert [r.name for r in await store.reservations()] == ["a", "b", "c"]  # by name
        assert [r.name for r in await store.reservations(run_id="r1")] == ["a", "c"]
        assert [r.name for r in await store.reservations(now=T0 + 10)] == ["a", "b"]
        assert await store.reservations(run_id="r1", now=T0 + 10) == [
            Reservation("a", "r1", T0 + 60)
        ]
        assert await store.reservations(run_id="ghost") == []

    @contract
    async def test_a_commit_to_a_finished_status_frees_the_runs_reservations(
        self, store: Store
    ) -> None:
        kept = (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.NEEDS_ATTENTION)
        for status in (*kept, *FINISHED_STATUSES):
            await new_run(store, status.value)
            await store.reserve(
                f"{status.value}-room", run_id=status.value, now=T0, expires_at=T0 + 60
            )
        await store.reserve("other", run_id="bystander", now=T0, expires_at=T0 + 60)
        for status in (*kept, *FINISHED_STATUSES):
            await store.commit(change(status.value, status=status))
        names = {r.name for r in await store.reservations()}
        assert names == {f"{s.value}-room" for s in kept} | {"other"}

    @contract
    async def test_a_fenced_out_finishing_commit_frees_nothing(self, store: Store) -> None:
        await new_run(store, "r1")
        await store.reserve("room", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
        with pytest.raises(LeaseLost):
            await store.commit(change("r1", status=RunStatus.COMPLETED))
        assert [r.name for r in await store.reservations(run_id="r1")] == ["room"]

"""The contract for reservations.

A run holds a name until the reservation expires, the run frees it, or the
run finishes.
"""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import LeaseLost, ReservationLapsed
from sagakit.journal import RunStatus
from sagakit.store import FINISHED_STATUSES, Reservation, Store
from sagakit.store.testing.support import (
    T0,
    A,
    B,
    StoreFactory,
    change,
    contract,
    new_run,
    opened,
    steps,
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

    # -- commits that require reservations (a step's success) ---------------------------

    @contract
    async def test_a_commit_requiring_held_reservations_applies(self, store: Store) -> None:
        await new_run(store, "r1")
        await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.reserve("b", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.commit(change("r1", A, steps("r1", 2), requires=("a", "b"), at=T0 + 59))
        assert (await store.get_run("r1")).last_seq == 3  # type: ignore[union-attr]

    @contract
    async def test_a_commit_requiring_a_reservation_taken_by_another_run_writes_nothing(
        self, store: Store
    ) -> None:
        await new_run(store, "r1")
        await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.reserve("b", run_id="r1", now=T0, expires_at=T0 + 10)
        await store.reserve("b", run_id="r2", now=T0 + 10, expires_at=T0 + 70)  # took over
        with pytest.raises(ReservationLapsed) as refused:
            await store.commit(change("r1", A, steps("r1", 2), requires=("a", "b"), at=T0 + 20))
        assert (refused.value.run_id, refused.value.name, refused.value.holder) == (
            "r1",
            "b",
            "r2",
        )
        assert "held by run 'r2'" in str(refused.value)
        run = await store.get_run("r1")
        assert run is not None
        assert (run.last_seq, run.state) == (1, {"n": 0})
        assert [e.seq for e in await store.journal("r1")] == [1]
        # Nothing else moved: the run may commit again (its failure) at the same seqs.
        await store.commit(change("r1", A, steps("r1", 2), at=T0 + 21))
        assert (await store.get_run("r1")).last_seq == 3  # type: ignore[union-attr]

    @contract
    async def test_a_commit_requiring_an_expired_or_freed_reservation_is_refused(
        self, store: Store
    ) -> None:
        await new_run(store, "r1")
        await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 10)
        with pytest.raises(ReservationLapsed) as expired:
            await store.commit(change("r1", A, steps("r1", 2), requires=("a",), at=T0 + 10))
        assert expired.value.holder is None
        assert "held by nobody" in str(expired.value)
        with pytest.raises(ReservationLapsed) as never:
            await store.commit(change("r1", A, steps("r1", 2), requires=("zz",), at=T0 + 1))
        assert (never.value.name, never.value.holder) == ("zz", None)
        assert [e.seq for e in await store.journal("r1")] == [1]

    @contract
    async def test_a_fenced_out_commit_requiring_reservations_is_lease_lost(
        self, store: Store
    ) -> None:
        await new_run(store, "r1")
        await store.reserve("a", run_id="r1", now=T0, expires_at=T0 + 60)
        await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
        with pytest.raises(LeaseLost):
            await store.commit(change("r1", A, steps("r1", 2), requires=("a",), at=T0 + 32))
        assert [e.seq for e in await store.journal("r1")] == [1]

    # -- several names at once ----------------------------------------------------------

    @contract
    async def test_reserve_all_takes_every_free_name_or_none(self, store: Store) -> None:
        await store.reserve("b", run_id="r2", now=T0, expires_at=T0 + 60)
        refused = await store.reserve_all(["a", "b", "c"], run_id="r1", now=T0, expires_at=T0 + 30)
        assert refused == [Reservation("b", "r2", T0 + 60)]
        assert await store.reservations(run_id="r1") == []  # none taken, "a" neither
        taken = await store.reserve_all(
            ["c", "a", "b", "a"], run_id="r1", now=T0 + 60, expires_at=T0 + 90
        )
        assert taken == [Reservation(n, "r1", T0 + 90) for n in ("c", "a", "b")]
        # Held already by r1: refreshed, with the others.
        again = await store.reserve_all(["a", "d"], run_id="r1", now=T0 + 61, expires_at=T0 + 120)
        assert again == [Reservation("a", "r1", T0 + 120), Reservation("d", "r1", T0 + 120)]
        assert [r.expires_at for r in await store.reservations(run_id="r1")] == [
            T0 + 120,
            T0 + 90,
            T0 + 90,
            T0 + 120,
        ]

    def test_reserve_all_racing_overlapping_sets_from_two_stores_never_splits_them(
        self, make_store: StoreFactory
    ) -> None:
        async def body() -> None:
            async with opened(make_store()) as a, opened(make_store()) as b:
                stores = (a, b)
                sets = (["x", "y"], ["y", "x"], ["y", "z"], ["z", "x"])

                async def take(i: int) -> list[Reservation]:
                    return await stores[i % 2].reserve_all(
                        sets[i % 4], run_id=f"r{i}", now=T0, expires_at=T0 + 60
                    )

                answers = await asyncio.gather(*(take(i) for i in range(8)))
                held = {r.name: r.run_id for r in await a.reservations()}
                winners = set(held.values())
                for run in winners:  # each winner holds its whole set
                    index = int(run[1:])
                    assert all(held.get(n) == run for n in sets[index % 4])
                    assert [r.run_id for r in answers[index]] == [run] * len(sets[index % 4])
                for i, answer in enumerate(answers):
                    if f"r{i}" not in winners:  # a loser holds nothing and names a holder
                        assert len(answer) == 1
                        assert answer[0].run_id in winners

        asyncio.run(body())

"""The contract for taking runs over from owners known to be gone.

`Store.owners` names every owner of a lease; `Store.claim_held` takes the
runs of some of them at once, live lease or not, fenced as every claim is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagakit.errors import LeaseLost
from sagakit.journal import RunStatus
from sagakit.store import Lease, Store
from sagakit.store.testing.support import (
    FREE,
    T0,
    A,
    StoreFactory,
    change,
    contract,
    new_run,
    opened,
    steps,
)

# The lease of the process that died: live until T0 + 30, as `record`'s is.
GONE = A.owner


class TakeoverContract:
    """`Store.owners` and `Store.claim_held`."""

    @contract
    async def test_owners_names_each_lease_owner_once(self, store: Store) -> None:
        assert await store.owners() == set()
        await new_run(store, "r1")
        await new_run(store, "r2")
        await new_run(store, "r3", owner="other", lease_until=T0 + 5)  # lapsed: named too
        await new_run(store, "free", **FREE)
        assert await store.owners() == {GONE, "other"}
        await store.release("r3", Lease("other", A.epoch))
        assert await store.owners() == {GONE}

    @contract
    async def test_claim_held_takes_live_leases_of_those_owners_only(self, store: Store) -> None:
        await new_run(store, "mine", status=RunStatus.RUNNING)
        await new_run(store, "compensating", status=RunStatus.COMPENSATING)
        await new_run(store, "retried", wake_at=T0 + 1)  # a retry due: taken
        await new_run(store, "timer", wake_at=T0 + 500)  # a retry not yet due: left for later
        await new_run(store, "theirs", owner="alive")
        await new_run(store, "free", **FREE)
        taken = await store.claim_held(
            [GONE], owner="new", now=T0 + 1, lease_until=T0 + 300, limit=100
        )
        assert {r.id for r in taken} == {"mine", "compensating", "retried"}
        for run in taken:
            # Claimed as claim_due claims: epoch bumped, timer cleared.
            assert (run.owner, run.lease_epoch, run.lease_until) == ("new", A.epoch + 1, T0 + 300)
            assert run.wake_at is None
            assert run == await store.get_run(run.id)
        theirs = await store.get_run("theirs")
        assert theirs is not None
        assert theirs.owner == "alive"
        assert await store.owners() == {"new", "alive", GONE}  # GONE holds the timer still
        assert (
            await store.claim_held([GONE], owner="new", now=T0 + 1, lease_until=T0 + 300, limit=100)
            == []
        )
        # Once its timer is due, as claim_due would (its lease still live).
        [later] = await store.claim_held(
            [GONE], owner="new", now=T0 + 500, lease_until=T0 + 900, limit=100
        )
        assert (later.id, later.owner, later.wake_at) == ("timer", "new", None)

    @contract
    async def test_claim_held_fences_the_earlier_owner_out(self, store: Store) -> None:
        await new_run(store, "r1")
        await store.commit(change("r1", events=steps("r1", 2)))
        [taken] = await store.claim_held(
            [GONE], owner="new", now=T0 + 2, lease_until=T0 + 300, limit=10
        )
        with pytest.raises(LeaseLost):
            await store.commit(change("r1", events=steps("r1", 4)))
        assert await store.renew({"r1": A}, lease_until=T0 + 90) == {"r1"}
        await store.commit(change("r1", Lease("new", taken.lease_epoch), events=steps("r1", 4)))
        run = await store.get_run("r1")
        assert run is not None
        assert run.last_seq == 5

    @contract
    async def test_claim_held_leaves_settled_and_idle_runs(self, store: Store) -> None:
        for status in RunStatus:
            await new_run(store, status.value, status=status)
        await new_run(store, "alert", status=RunStatus.NEEDS_ATTENTION, wake_at=T0 + 1)
        await new_run(store, "mail", status=RunStatus.PAUSED)
        await store.post("mail", "cancel", {"reason": "x"}, at=T0)
        taken = await store.claim_held(
            [GONE], owner="new", now=T0 + 2, lease_until=T0 + 300, limit=100
        )
        # Active runs, and what claim_due would take were the lease lapsed: an
        # owed alert that is due (its timer kept), a run with mail.
        assert {r.id for r in taken} == {"pending", "running", "compensating", "alert", "mail"}
        assert {r.id: r.wake_at for r in taken}["alert"] == T0 + 1
        for name in ("completed", "paused", "needs_attention", "failed"):
            left = await store.get_run(name)
            assert left is not None
            assert left.owner == GONE

    @contract
    async def test_claim_held_takes_the_oldest_first_up_to_the_limit(self, store: Store) -> None:
        for i in (3, 1, 4, 2):
            await new_run(store, f"r{i}", created_at=T0 + i, updated_at=T0 + 9)
        claim: dict[str, Any] = {"owner": "new", "now": T0 + 10, "lease_until": T0 + 300}
        assert await store.claim_held([GONE], **claim, limit=0) == []
        assert await store.claim_held([], **claim, limit=10) == []
        first = await store.claim_held([GONE], **claim, limit=3)
        assert [r.id for r in first] == ["r1", "r2", "r3"]
        assert [r.id for r in await store.claim_held([GONE, "x"], **claim, limit=3)] == ["r4"]

    @contract
    async def test_claim_held_can_be_restricted_to_some_sagas(self, store: Store) -> None:
        await new_run(store, "o1", saga="order", version="1")
        await new_run(store, "o2", saga="order", version="2")
        await new_run(store, "t1", saga="trip", version="1")
        claim: dict[str, Any] = {
            "owner": "new",
            "now": T0 + 1,
            "lease_until": T0 + 300,
            "limit": 10,
        }
        assert await store.claim_held([GONE], **claim, sagas=[]) == []
        picked = await store.claim_held([GONE], **claim, sagas=[("order", "2"), ("trip", "1")])
        assert {r.id for r in picked} == {"o2", "t1"}
        assert [r.id for r in await store.claim_held([GONE], **claim)] == ["o1"]

    def test_two_stores_taking_over_at_once_take_each_run_once(
        self, make_store: StoreFactory
    ) -> None:
        async def body() -> None:
            async with opened(make_store()) as a, opened(make_store()) as b:
                ids = [f"r{i:02}" for i in range(40)]
                for run_id in ids:
                    await new_run(a, run_id)

                async def take(store: Store, owner: str) -> list[str]:
                    found: list[str] = []
                    while True:
                        batch = await store.claim_held(
                            [GONE], owner=owner, now=T0 + 1, lease_until=T0 + 300, limit=3
                        )
                        found += [run.id for run in batch]
                        if not batch:
                            return found
                        await asyncio.sleep(0)

                took_a, took_b = await asyncio.gather(take(a, "a"), take(b, "b"))
                assert sorted(took_a + took_b) == ids  # every run, none twice
                for run_id in ids:
                    run = await a.get_run(run_id)
                    assert run is not None
                    assert run.owner == ("a" if run_id in took_a else "b")
                    assert run.lease_epoch == A.epoch + 1

        asyncio.run(body())

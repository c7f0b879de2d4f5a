"""The contract for mail and for what is due.

Posting and reading mail, and the runs that mail or a timer makes due
whatever their status.
"""

from __future__ import annotations

import pytest

from sagakit.errors import LeaseLost
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import Lease, Mail, Store
from sagakit.store.testing.support import (
    FREE,
    T0,
    A,
    B,
    change,
    claim_all,
    contract,
    due_ids,
    mail_count,
    new_run,
    seqs,
)


class MailContract:
    """What every store does with mail, timers and the runs they make due."""

    # -- mail ---------------------------------------------------------------------------

    @contract
    async def test_post_to_a_missing_run_returns_none(self, store: Store) -> None:
        assert await store.post("ghost", "cancel", {"reason": "x"}, at=T0) is None
        assert await store.mail("ghost") == []

    @contract
    async def test_post_stores_mail_oldest_first_and_counts_it(self, store: Store) -> None:
        await new_run(store, "r1")
        await new_run(store, "r2")
        payload = {"name": "approve", "payload": {"by": "Zoë 🚀", "n": [1, 2.5, None]}}
        first = await store.post("r1", "cancel", {"reason": "stop", "force": False}, at=T0 + 1)
        other = await store.post("r2", "signal", {"name": "x"}, at=T0 + 2)
        second = await store.post("r1", "signal", payload, at=T0 + 3)
        assert first is not None
        assert other is not None
        assert second is not None
        assert first.id < other.id < second.id
        assert first == Mail(first.id, "r1", "cancel", {"reason": "stop", "force": False}, T0 + 1)
        assert second == Mail(second.id, "r1", "signal", payload, T0 + 3)
        assert await store.mail("r1") == [first, second]
        assert await store.mail("r2") == [other]
        assert (await mail_count(store, "r1"), await mail_count(store, "r2")) == (2, 1)
        run = await store.get_run("r1")
        assert run is not None
        assert run.owner == A.owner  # posting needs no lease and takes none

    @contract
    async def test_mail_makes_a_settled_unowned_run_due(self, store: Store) -> None:
        await new_run(store, "done", status=RunStatus.COMPLETED, **FREE)
        await new_run(store, "held", status=RunStatus.COMPLETED)  # A's lease is live
        assert await due_ids(store) == set()
        await store.post("done", "cancel", {"reason": "late"}, at=T0)
        await store.post("held", "cancel", {"reason": "late"}, at=T0)
        claimed = await claim_all(store)
        assert [(r.id, r.status, r.mail, r.owner) for r in claimed] == [
            ("done", RunStatus.COMPLETED, 1, "w")
        ]
        assert claimed[0] == await store.get_run("done")

    @contract
    async def test_commit_with_mail_read_deletes_exactly_that_mail(self, store: Store) -> None:
        await new_run(store, "r1")
        await new_run(store, "r2")
        m1, m2, m3 = [await store.post("r1", "signal", {"n": n}, at=T0 + n) for n in (1, 2, 3)]
        theirs = await store.post("r2", "signal", {"n": 9}, at=T0)
        assert m1 is not None
        assert m2 is not None
        assert m3 is not None
        assert theirs is not None
        # Without mail_read the mail stays, and the commit says it waits.
        assert await store.commit(change("r1")) is True
        assert await mail_count(store, "r1") == 3
        read = (m1.id, m3.id)
        assert await store.commit(change("r1", events=steps_of("r1", 2), mail_read=read)) is True
        assert await store.mail("r1") == [m2]
        assert await store.mail("r2") == [theirs]
        assert (await mail_count(store, "r1"), await mail_count(store, "r2")) == (1, 1)
        # Reading m2 empties the box; naming m1 again (already read) lowers nothing.
        assert await store.commit(change("r1", mail_read=(m2.id, m1.id))) is False
        assert await store.mail("r1") == []
        assert await mail_count(store, "r1") == 0
        assert await seqs(store, "r1") == [1, 2]

    @contract
    async def test_mail_posted_while_owned_makes_the_owners_next_commit_say_so(
        self,
        store: Store,
    ) -> None:
        await new_run(store, "r1")
        assert await store.commit(change("r1")) is False
        posted = await store.post("r1", "cancel", {"reason": "operator"}, at=T0 + 2)
        assert posted is not None
        assert await due_ids(store) == set()  # A still holds the lease
        assert await store.commit(change("r1")) is True
        assert await store.commit(change("r1", mail_read=(posted.id,), release=True)) is False
        assert await due_ids(store) == {"r1"}  # released and active: due without mail

    @contract
    async def test_a_fenced_out_commit_reads_no_mail(self, store: Store) -> None:
        await new_run(store, "r1")
        posted = await store.post("r1", "cancel", {}, at=T0)
        assert posted is not None
        taken = await store.claim("r1", owner=B.owner, now=T0 + 31, lease_until=T0 + 60)
        assert taken is not None
        assert taken.mail == 1
        with pytest.raises(LeaseLost):
            await store.commit(change("r1", mail_read=(posted.id,)))
        assert await store.mail("r1") == [posted]
        assert await store.commit(change("r1", B, mail_read=(posted.id,))) is False

    # -- what is due --------------------------------------------------------------------

    @contract
    async def test_a_timer_makes_a_run_due_whatever_its_status(self, store: Store) -> None:
        await new_run(store, "paused-past", status=RunStatus.PAUSED, wake_at=T0 + 5, **FREE)
        await new_run(store, "paused-future", status=RunStatus.PAUSED, wake_at=T0 + 50, **FREE)
        await new_run(store, "paused-no-timer", status=RunStatus.PAUSED, **FREE)
        await new_run(store, "attention-past", status=RunStatus.NEEDS_ATTENTION, wake_at=T0, **FREE)
        await new_run(store, "running-future", status=RunStatus.RUNNING, wake_at=T0 + 50, **FREE)
        await new_run(store, "running-now", status=RunStatus.RUNNING, wake_at=T0 + 10, **FREE)
        claimed = await claim_all(store, T0 + 10)
        # Oldest timer first.
        assert [r.id for r in claimed] == ["attention-past", "paused-past", "running-now"]
        # Claiming clears the timer, but for the owed alert of a run that needs attention.
        assert {r.id: r.wake_at for r in claimed} == {
            "attention-past": T0,
            "paused-past": None,
            "running-now": None,
        }
        assert await due_ids(store, T0 + 49) == set()
        assert await due_ids(store, T0 + 50) == {"paused-future", "running-future"}
        assert await due_ids(store, T0 + 10_000) == set()  # paused-no-timer never is

    @contract
    async def test_an_owed_alert_outlives_a_claimer_that_died(self, store: Store) -> None:
        # A run that needs attention is due at its timer (its owed alert). A
        # claim keeps the timer, so that when the claimer dies before it
        # delivers the alert, the run is due again once the lease lapses.
        await new_run(store, "halted", status=RunStatus.NEEDS_ATTENTION, wake_at=T0 + 5, **FREE)
        claimed = await store.claim_due(owner="w1", now=T0 + 10, lease_until=T0 + 20, limit=10)
        assert [(r.id, r.wake_at) for r in claimed] == [("halted", T0 + 5)]
        assert await store.claim_due(owner="w2", now=T0 + 15, lease_until=T0 + 100, limit=10) == []
        again = await store.claim_due(owner="w2", now=T0 + 21, lease_until=T0 + 100, limit=10)
        assert [(r.id, r.owner, r.wake_at) for r in again] == [("halted", "w2", T0 + 5)]
        # A claim by id keeps it too; a commit that clears it settles the alert.
        assert await store.claim("halted", owner="w3", now=T0 + 101, lease_until=T0 + 200)
        run = await store.get_run("halted")
        assert run is not None
        assert (run.owner, run.wake_at) == ("w3", T0 + 5)
        lease = Lease("w3", run.lease_epoch)
        await store.commit(
            change("halted", lease, status=RunStatus.NEEDS_ATTENTION, wake_at=None, release=True)
        )
        assert await due_ids(store, T0 + 1_000) == set()

    @contract
    async def test_mail_makes_a_run_due_before_its_timer(self, store: Store) -> None:
        await new_run(store, "sleeping", status=RunStatus.RUNNING, wake_at=T0 + 500, **FREE)
        await new_run(store, "paused", status=RunStatus.PAUSED, **FREE)
        assert await due_ids(store) == set()
        await store.post("sleeping", "cancel", {}, at=T0)
        await store.post("paused", "signal", {"name": "resume"}, at=T0)
        assert await due_ids(store) == {"sleeping", "paused"}

    @contract
    async def test_a_run_released_with_a_hold_is_not_due_before_it_even_with_mail(
        self, store: Store
    ) -> None:
        for run_id, status in (("active", RunStatus.RUNNING), ("settled", RunStatus.COMPLETED)):
            await new_run(store, run_id, status=status)
            await store.post(run_id, "cancel", {}, at=T0)
            await store.release(run_id, A, hold_until=T0 + 60)
        held = await store.get_run("active")
        assert held is not None
        assert (held.owner, held.wake_at) == (None, T0 + 60)
        assert await due_ids(store, T0 + 59) == set()
        # An operator's claim by id is not held back.
        taken = await store.claim("settled", owner="operator", now=T0 + 1, lease_until=T0 + 1e6)
        assert taken is not None
        assert taken.lease_epoch == A.epoch + 1
        assert await due_ids(store, T0 + 61) == {"active"}

    @contract
    async def test_a_release_without_a_hold_keeps_the_timer(self, store: Store) -> None:
        await new_run(store, "r1", status=RunStatus.RUNNING, wake_at=T0 + 30)
        await store.release("r1", A)
        released = await store.get_run("r1")
        assert released is not None
        assert (released.owner, released.lease_until, released.wake_at) == (None, None, T0 + 30)
        assert await due_ids(store, T0 + 29) == set()
        assert await due_ids(store, T0 + 30) == {"r1"}

    @contract
    async def test_claim_due_saga_filter_applies_to_runs_with_mail(self, store: Store) -> None:
        for run_id, saga in (("o1", "order"), ("t1", "trip")):
            await new_run(store, run_id, saga=saga, status=RunStatus.COMPLETED, **FREE)
            await store.post(run_id, "cancel", {}, at=T0)
        assert await due_ids(store, sagas=[]) == set()
        assert await due_ids(store, sagas=[("trip", "1"), ("order", "2")]) == {"t1"}
        assert await due_ids(store, sagas=None) == {"o1"}


def steps_of(run_id: str, seq: int) -> tuple[Event, ...]:
    """One step-started event of a run, at ``seq``."""
    return (Event(run_id, seq, EventKind.STEP_STARTED, T0 + seq, step="s", attempt=1),)

"""The contract for runs.

Creating and committing runs, fencing and group commit, claiming, reading,
and two stores sharing one storage. Where the subclass says how many
transactions its store has written (`RunContract.flushes`), the
concurrent-commits test also checks that group commit shares them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagakit.errors import LeaseLost, StateError, StoreError
from sagakit.journal import JSON, Event, EventKind, RunStatus
from sagakit.store import ACTIVE_STATUSES, Backlog, Lease, Store
from sagakit.store.testing.support import (
    T0,
    A,
    StoreFactory,
    change,
    contract,
    new_run,
    opened,
    record,
    seqs,
    steps,
)


class RunContract:
    """What every store does with runs, their journals and their leases."""

    def flushes(self, store: Store) -> int | None:
        """Transactions ``store`` has written so far, if it counts them; None if not.

        A backend with group commit overrides this, so that the contract checks
        that concurrent commits share transactions.
        """
        return None

    # -- creating and committing -------------------------------------------------------

    @contract
    async def test_create_run_stores_the_run_and_its_first_events(self, store: Store) -> None:
        stored = await new_run(store, "r1")
        assert stored == record("r1")
        assert await store.get_run("r1") == stored
        assert await store.journal("r1") == [
            Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
        ]
        assert await store.get_run("nope") is None
        assert await store.journal("nope") == []

    @contract
    async def test_create_run_answers_the_run_as_stored(self, store: Store) -> None:
        # A status as its string, a stale last seq and mail in the record
        # passed in: the answer is the run as stored (the engine's records
        # are so already, and are answered as they are).
        given = record("r1", status="running", last_seq=0, mail=3)
        started = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
        stored, created = await store.create_run(given, [started])
        assert created
        assert type(stored.status) is RunStatus
        assert (stored.status, stored.last_seq, stored.mail) == (RunStatus.RUNNING, 1, 0)
        assert await store.get_run("r1") == stored
        already = record("r2", status=RunStatus.RUNNING, last_seq=1)
        first = Event("r2", 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
        assert await store.create_run(already, [first]) == (already, True)

    @contract
    async def test_create_run_is_idempotent(self, store: Store) -> None:
        first = await new_run(store, "r1")
        again = Event("r1", 1, EventKind.RUN_STARTED, T0 + 5, data={"state": {"n": 99}})
        stored, created = await store.create_run(record("r1", state={"n": 99}), [again])
        assert not created
        assert stored == first
        assert await seqs(store, "r1") == [1]

    @contract
    async def test_commit_appends_events_and_updates_the_row(self, store: Store) -> None:
        await new_run(store, "r1")
        events = steps("r1", 2, 3)
        error: JSON = {"cause": {"type": "ValueError"}}
        await store.commit(
            change("r1", events=events, status=RunStatus.COMPENSATING, error=error, at=T0 + 7)
        )
        run = await store.get_run("r1")
        assert run is not None
        assert (run.status, run.state, run.error) == (RunStatus.COMPENSATING, {"n": 3}, error)
        assert (run.updated_at, run.last_seq, run.created_at) == (T0 + 7, 4, T0)
        assert (run.owner, run.lease_epoch, run.lease_until) == (A.owner, 1, T0 + 30)
        assert (await store.journal("r1"))[1:] == list(events)

    @contract
    async def test_commit_without_events_updates_the_row_only(self, store: Store) -> None:
        await new_run(store, "r1")
        await store.commit(change("r1", events=steps("r1", 2)))
        await store.commit(change("r1", state={"n": 42}, wake_at=T0 + 60))
        run = await store.get_run("r1")
        assert run is not None
        assert (run.state, run.last_seq, run.wake_at) == ({"n": 42}, 3, T0 + 60)
        await store.commit(change("r1"))  # wake_at is written as given: None clears it
        assert (await store.get_run("r1")) == record(
            "r1", status=RunStatus.RUNNING, state={"n": 0}, updated_at=T0 + 1, last_seq=3
        )

    @contract
    async def test_a_commit_that_keeps_its_status_still_writes_the_rest(self, store: Store) -> None:
        # keeps_status lets a store skip the status and timer columns; all else is
        # written as by any commit, alone or in a batch beside commits that move.
        ids = [f"r{i}" for i in range(6)]
        for run_id in ids:
            await new_run(store, run_id, status=RunStatus.RUNNING)
        kept = {"r0", "r2", "r4"}
        await asyncio.gather(
            *(
                store.commit(
                    change(
                        run_id,
                        events=steps(run_id, 2, 2),
                        status=RunStatus.RUNNING if run_id in kept else RunStatus.COMPLETED,
                        state={"n": 7},
                        error={"e": run_id},
                        at=T0 + 5,
                        release=run_id in {"r2", "r3"},
                        keeps_status=run_id in kept,
                    )
                )
                for run_id in ids
            )
        )
        for run_id in ids:
            run = await store.get_run(run_id)
            assert run is not None
            status = RunStatus.RUNNING if run_id in kept else RunStatus.COMPLETED
            released = run_id in {"r2", "r3"}
            assert (run.status, run.state, run.error) == (status, {"n": 7}, {"e": run_id})
            assert (run.updated_at, run.last_seq, run.wake_at) == (T0 + 5, 3, None)
            assert (run.owner is None, run.lease_until is None) == (released, released)
            assert await seqs(store, run_id) == [1, 2, 3]

    @contract
    async def test_commit_with_release_gives_the_lease_up(self, store: Store) -> None:
        await new_run(store, "r1")
        await store.commit(change("r1", events=steps("r1", 2, 1), release=True))
        run = await store.get_run("r1")
        assert run is not None
        assert (run.owner, run.lease_until, run.lease_epoch) == (None, None, 1)
        with pytest.raises(LeaseLost):  # released means no longer ours to write
            await store.commit(change("r1", events=steps("r1", 3, 1)))
        assert await seqs(store, "r1") == [1, 2]

    @contract
    async def test_commit_to_an_unknown_run_is_refused(self, store: Store) -> None:
        with pytest.raises(LeaseLost):
            await store.commit(change("ghost", events=steps("ghost", 2)))
        assert await store.journal("ghost") == []

    @contract
    async def test_json_round_trips_unicode_and_nested_data(self, store: Store) -> None:
        state: JSON = {
            "名前": "Zoë 🚀",
            "nested": {"list": [1, 2.5, None, True, "ß"], "empty": {}, "deep": [[{"a": []}]]},
            "quote": "\"'\\\n\t",
        }
        await new_run(store, "r1", state=state)
        data: JSON = {"result": state, "note": "ünïcödé"}
        event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="réserver", attempt=1, data=data)
        await store.commit(change("r1", events=(event,), state=state, error={"why": ["ç", 1]}))
        run = await store.get_run("r1")
        assert run is not None
        assert (run.state, run.error) == (state, {"why": ["ç", 1]})
        assert (await store.journal("r1", after_seq=1)) == [event]

    @contract
    async def test_a_write_that_is_not_json_is_refused_and_names_its_part(
        self, store: Store
    ) -> None:
        await new_run(store, "r1")
        bad_data = Event(
            "r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1, data={"x": object()}
        )
        refused = [
            (change("r1", state={"price": float("nan")}), "state of run 'r1'.*NaN or Infinity"),
            (change("r1", state={"when": object()}), "state of run 'r1' is not JSON"),
            (change("r1", error={"why": float("inf")}), "error of run 'r1'.*NaN or Infinity"),
            (change("r1", events=(bad_data,)), "event 2 data of run 'r1' is not JSON"),
        ]
        for commit, message in refused:
            with pytest.raises(StateError, match=message):
                await store.commit(commit)
        with pytest.raises(StateError, match="state of run 'r2'"):
            await store.create_run(record("r2", state={"n": float("nan")}), [])
        # Nothing of them was written, and the next commit lands as usual.
        assert await seqs(store, "r1") == [1]
        assert await store.get_run("r2") is None
        await store.commit(change("r1", events=steps("r1", 2), state={"price": "NaN"}))
        run = await store.get_run("r1")
        assert run is not None
        assert (run.state, run.last_seq) == ({"price": "NaN"}, 3)

    @contract
    async def test_returned_records_and_events_are_copies(self, store: Store) -> None:
        run = await new_run(store, "r1", state={"items": [1]})
        run.state["items"].append(2)
        fetched = await store.get_run("r1")
        assert fetched is not None
        fetched.state["items"].append(3)
        (await store.journal("r1"))[0].data["state"]["n"] = 5
        again = await store.get_run("r1")
        assert again is not None
        assert again.state == {"items": [1]}
        assert (await store.journal("r1"))[0].data == {"state": {"n": 0}}

    # -- fencing and group commit -------------------------------------------------------

    @contract
    async def test_a_commit_under_a_stale_lease_is_refused_and_writes_nothing(
        self, store: Store
    ) -> None:
        await new_run(store, "r1")
        taken = await store.claim("r1", owner="worker-b", now=T0 + 31, lease_until=T0 + 60)
        assert taken is not None
        assert (taken.owner, taken.lease_epoch) == ("worker-b", 2)
        with pytest.raises(LeaseLost) as caught:
            await store.commit(change("r1", events=steps("r1", 2), state={"n": 666}))
        assert caught.value.run_id == "r1"
        assert await store.get_run("r1") == taken
        assert await seqs(store, "r1") == [1]
        assert await store.renew({"r1": A}, lease_until=T0 + 90) == {"r1"}
        await store.release("r1", A)  # no-op: B keeps it
        assert await store.get_run("r1") == taken
        await store.commit(change("r1", Lease("worker-b", 2), events=steps("r1", 2)))
        assert await seqs(store, "r1") == [1, 2, 3]

    @contract
    async def test_same_owner_with_an_old_epoch_is_fenced_too(self, store: Store) -> None:
        await new_run(store, "r1", owner=None, lease_epoch=0, lease_until=None)
        first = await store.claim("r1", owner="w", now=T0, lease_until=T0 + 10)
        assert first is not None
        second = await store.claim("r1", owner="w", now=T0 + 11, lease_until=T0 + 40)
        assert second is not None
        assert (first.lease_epoch, second.lease_epoch) == (1, 2)
        with pytest.raises(LeaseLost):
            await store.commit(change("r1", Lease("w", 1), events=steps("r1", 2)))
        await store.commit(change("r1", Lease("w", 2), events=steps("r1", 2)))

    @contract
    async def test_concurrent_commits_all_land(self, store: Store) -> None:
        runs = [f"r{i}" for i in range(50)]
        await asyncio.gather(*(new_run(store, run_id) for run_id in runs))
        flushes = self.flushes(store)
        # 4 commits per run, all issued at once; each run's commits in seq order.
        commits = [
            change(run_id, events=steps(run_id, 2 + 2 * k), state={"k": k}, at=T0 + k)
            for k in range(4)
            for run_id in runs
        ]
        await asyncio.gather(*(store.commit(c) for c in commits))
        for run_id in runs:
            assert await seqs(store, run_id) == list(range(1, 10))
            run = await store.get_run(run_id)
            assert run is not None
            assert (run.state, run.last_seq, run.updated_at) == ({"k": 3}, 9, T0 + 3)
        if flushes is not None:
            # Group commit: the 200 commits shared a few transactions.
            after = self.flushes(store)
            assert after is not None
            assert after - flushes <= 3 < len(commits)

    @contract
    async def test_a_refused_commit_does_not_affect_the_rest_of_its_batch(
        self, store: Store
    ) -> None:
        runs = [f"r{i}" for i in range(10)]
        await asyncio.gather(*(new_run(store, run_id) for run_id in runs))
        await store.claim("r3", owner="thief", now=T0 + 31, lease_until=T0 + 60)
        await store.commit(change("r7", events=steps("r7", 2)))
        commits = [change(run_id, events=steps(run_id, 2)) for run_id in runs]
        commits[7] = change("r7", events=steps("r7", 3))  # seq 3 is already taken
        results = await asyncio.gather(*(store.commit(c) for c in commits), return_exceptions=True)
        assert isinstance(results[3], LeaseLost)
        assert isinstance(results[7], StoreError)
        assert "r7" in str(results[7])
        assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [3, 7]
        assert [r for r in results if not isinstance(r, BaseException)] == [False] * 8
        assert await seqs(store, "r3") == [1]
        assert await seqs(store, "r7") == [1, 2, 3]
        run7 = await store.get_run("r7")
        assert run7 is not None
        assert run7.last_seq == 3
        for run_id in runs:
            if run_id not in ("r3", "r7"):
                assert await seqs(store, run_id) == [1, 2, 3]

    @contract
    async def test_renew_extends_held_leases_and_reports_lost_ones(self, store: Store) -> None:
        for run_id in ("r1", "r2", "r3"):
            await new_run(store, run_id)
        leases = {"r1": A, "r2": Lease(A.owner, 7), "r3": Lease("other", 1), "ghost": A}
        assert await store.renew(leases, lease_until=T0 + 99) == {"r2", "r3", "ghost"}
        assert await store.renew({}, lease_until=T0 + 99) == set()
        r1, r2 = await store.get_run("r1"), await store.get_run("r2")
        assert r1 is not None
        assert r2 is not None
        assert (r1.lease_until, r2.lease_until) == (T0 + 99, T0 + 30)

    @contract
    async def test_release_frees_the_run_for_anyone(self, store: Store) -> None:
        await new_run(store, "r1", wake_at=None)
        await store.release("r1", A)
        run = await store.get_run("r1")
        assert run is not None
        assert (run.owner, run.lease_until, run.lease_epoch, run.last_seq) == (None, None, 1, 1)
        taken = await store.claim("r1", owner="b", now=T0, lease_until=T0 + 30)
        assert taken is not None
        assert taken.lease_epoch == 2
        await store.release("ghost", A)  # unknown runs are no error either

    # -- claiming ------------------------------------------------------------------------

    @contract
    async def test_claim_takes_free_or_lapsed_leases_only(self, store: Store) -> None:
        await new_run(store, "live")  # owned by A until T0 + 30
        assert await store.claim("live", owner="b", now=T0 + 30, lease_until=T0 + 60) is None
        assert await store.claim("live", owner=A.owner, now=T0 + 5, lease_until=T0 + 60) is None
        taken = await store.claim("live", owner="b", now=T0 + 30.5, lease_until=T0 + 60)
        assert taken is not None
        assert (taken.owner, taken.lease_epoch, taken.lease_until) == ("b", 2, T0 + 60)
        assert await store.get_run("live") == taken
        assert await store.claim("ghost", owner="b", now=T0, lease_until=T0 + 60) is None

    @contract
    async def test_claim_clears_the_timer_and_works_on_any_status(self, store: Store) -> None:
        for status in RunStatus:
            await new_run(store, status.value, status=status, owner=None, wake_at=T0 + 500)
            taken = await store.claim(status.value, owner="op", now=T0, lease_until=T0 + 30)
            assert taken is not None
            # A run that needs attention keeps its timer: its owed alert.
            kept = T0 + 500 if status is RunStatus.NEEDS_ATTENTION else None
            assert (taken.status, taken.wake_at, taken.owner) == (status, kept, "op")

    @contract
    async def test_claim_due_claims_only_due_active_runs(self, store: Store) -> None:
        free: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
        for status in RunStatus:
            await new_run(store, f"{status.value}", status=status, **free)
        await new_run(store, "sleeping", wake_at=T0 + 100, **free)
        await new_run(store, "awake", wake_at=T0 + 10, **free)
        await new_run(store, "owned")  # A's lease is live until T0 + 30
        await new_run(store, "lapsed", lease_until=T0 + 5)
        claimed = await store.claim_due(owner="w", now=T0 + 10, lease_until=T0 + 400, limit=100)
        expected = {s.value for s in ACTIVE_STATUSES} | {"awake", "lapsed"}
        assert {r.id for r in claimed} == expected
        for run in claimed:
            assert (run.owner, run.lease_until, run.wake_at) == ("w", T0 + 400, None)
            assert run == await store.get_run(run.id)
        assert {r.id: r.lease_epoch for r in claimed}["lapsed"] == 2
        assert await store.claim_due(owner="x", now=T0 + 10, lease_until=T0 + 40, limit=100) == []
        later = await store.claim_due(owner="x", now=T0 + 100, lease_until=T0 + 140, limit=100)
        assert {r.id for r in later} == {"sleeping", "owned"}  # A's lease lapsed meanwhile

    @contract
    async def test_claim_due_takes_the_oldest_first_up_to_the_limit(self, store: Store) -> None:
        # Oldest by timer, else by creation; when a run last changed does not count.
        free: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
        await new_run(store, "new", created_at=T0 + 3, updated_at=T0 + 3, **free)
        await new_run(store, "old", created_at=T0 + 1, updated_at=T0 + 8, **free)
        await new_run(store, "timer", created_at=T0 + 9, updated_at=T0 + 9, wake_at=T0 + 2, **free)
        await new_run(store, "older", created_at=T0 + 0.5, updated_at=T0 + 9, **free)
        first = await store.claim_due(owner="w", now=T0 + 10, lease_until=T0 + 40, limit=3)
        assert [r.id for r in first] == ["older", "old", "timer"]
        assert await store.claim_due(owner="w", now=T0 + 10, lease_until=T0 + 40, limit=0) == []
        rest = await store.claim_due(owner="w", now=T0 + 10, lease_until=T0 + 40, limit=3)
        assert [r.id for r in rest] == ["new"]

    @contract
    async def test_claim_due_can_be_restricted_to_some_sagas(self, store: Store) -> None:
        free: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
        await new_run(store, "o1", saga="order", version="1", **free)
        await new_run(store, "o2", saga="order", version="2", **free)
        await new_run(store, "t1", saga="trip", version="1", **free)
        claim: dict[str, Any] = {"owner": "w", "now": T0, "lease_until": T0 + 30, "limit": 10}
        assert await store.claim_due(**claim, sagas=[]) == []
        picked = await store.claim_due(**claim, sagas=[("order", "2"), ("trip", "1"), ("x", "1")])
        assert {r.id for r in picked} == {"o2", "t1"}
        assert [r.id for r in await store.claim_due(**claim, sagas=None)] == ["o1"]

    @contract
    async def test_backlog_counts_attention_alerts_owed_and_due_runs(self, store: Store) -> None:
        free: dict[str, Any] = {"owner": None, "lease_until": None, "lease_epoch": 0}
        attention = RunStatus.NEEDS_ATTENTION
        await new_run(store, "a1", saga="order", status=attention, wake_at=T0 + 1, **free)
        await new_run(store, "a2", saga="order", status=attention, **free)
        await new_run(store, "a3", saga="trip", status=attention, wake_at=T0 + 50, **free)
        await new_run(store, "fresh", created_at=T0 + 4, updated_at=T0 + 9, **free)
        await new_run(store, "retry", created_at=T0, wake_at=T0 + 3, **free)
        await new_run(store, "later", created_at=T0, wake_at=T0 + 100, **free)
        await new_run(store, "owned", created_at=T0 - 5)  # A's lease is live until T0 + 30
        await new_run(store, "done", created_at=T0 - 9, status=RunStatus.COMPLETED, **free)
        expected = Backlog({"order": 2, "trip": 1}, alerts_owed=2, due=3, oldest_due=T0 + 1)
        # A run needing attention whose alert is due is due too (a worker delivers it).
        assert await store.backlog(now=T0 + 10) == expected
        # The contract's own default, from list_runs, agrees with the store's.
        assert await Store.backlog(store, now=T0 + 10) == expected
        assert await store.backlog(now=T0 + 200) == Backlog(
            {"order": 2, "trip": 1}, alerts_owed=2, due=6, oldest_due=T0 - 5
        )
        await store.claim_due(owner="w", now=T0 + 200, lease_until=T0 + 900, limit=100)
        assert await store.backlog(now=T0 + 200) == Backlog(
            {"order": 2, "trip": 1}, alerts_owed=2, due=0, oldest_due=None
        )

    # -- reading ------------------------------------------------------------------------

    @contract
    async def test_list_runs_filters_orders_and_pages(self, store: Store) -> None:
        for i in range(6):
            status = RunStatus.COMPLETED if i % 2 else RunStatus.RUNNING
            saga = "trip" if i == 5 else "order"
            await new_run(store, f"r{i}", created_at=T0 + i, status=status, saga=saga)
        ids = [r.id for r in await store.list_runs()]
        assert ids == ["r5", "r4", "r3", "r2", "r1", "r0"]
        assert [r.id for r in await store.list_runs(limit=2, offset=1)] == ["r4", "r3"]
        assert [r.id for r in await store.list_runs(offset=5)] == ["r0"]
        assert await store.list_runs(limit=0) == []
        completed = await store.list_runs(status=RunStatus.COMPLETED)
        assert [r.id for r in completed] == ["r5", "r3", "r1"]
        assert [r.id for r in await store.list_runs(status=RunStatus.COMPLETED, saga="order")] == [
            "r3",
            "r1",
        ]
        assert [r.id for r in await store.list_runs(saga="trip")] == ["r5"]
        assert await store.list_runs(status=RunStatus.PAUSED) == []

    @contract
    async def test_journal_reads_after_a_seq_in_order(self, store: Store) -> None:
        await new_run(store, "r1")
        for first in (2, 5, 8):
            await store.commit(change("r1", events=steps("r1", first, 3)))
        assert await seqs(store, "r1") == list(range(1, 11))
        assert await seqs(store, "r1", after_seq=6) == [7, 8, 9, 10]
        assert await seqs(store, "r1", after_seq=10) == []

    @contract
    async def test_journals_reads_many_runs_at_once(self, store: Store) -> None:
        await new_run(store, "r1")
        await new_run(store, "r2")
        await store.commit(change("r1", events=steps("r1", 2, 3)))
        found = await store.journals(["r2", "nope", "r1", "r2"])
        assert sorted(found) == ["nope", "r1", "r2"]
        assert found["r1"] == await store.journal("r1")
        assert [e.seq for e in found["r1"]] == [1, 2, 3, 4]
        assert found["r2"] == await store.journal("r2")
        assert found["nope"] == []
        assert await store.journals([]) == {}

    @contract
    async def test_one_batch_of_every_kind_of_write(self, store: Store) -> None:
        """Writes of every kind, issued at once, each get their own answer.

        New runs, a taken id, mail read, a finished run's reservations, a lost
        lease and plain commits, all issued at once (one group commit where the
        store batches).
        """
        await every_kind_of_write(store, reads_mail=True)

    @contract
    async def test_one_batch_of_every_kind_of_write_but_reading_mail(self, store: Store) -> None:
        """As above, the mail left waiting.

        (SQLite writes a batch that reads no mail as one statement without
        BEGIN, the others in a transaction.)
        """
        await every_kind_of_write(store, reads_mail=False)

    # -- two processes on one storage -------------------------------------------------

    def test_two_stores_on_one_storage_share_runs_and_fencing(
        self, make_store: StoreFactory
    ) -> None:
        async def body() -> None:
            async with opened(make_store()) as a, opened(make_store()) as b:
                await new_run(a, "r1")
                seen = await b.get_run("r1")
                assert seen is not None
                assert seen.owner == A.owner
                assert await b.claim("r1", owner="b", now=T0 + 1, lease_until=T0 + 60) is None
                taken = await b.claim("r1", owner="b", now=T0 + 31, lease_until=T0 + 60)
                assert taken is not None
                with pytest.raises(LeaseLost):
                    await a.commit(change("r1", events=steps("r1", 2)))
                assert await a.renew({"r1": A}, lease_until=T0 + 90) == {"r1"}
                await b.commit(
                    change("r1", Lease("b", 2), events=steps("r1", 2), state={"by": "b"})
                )
                run = await a.get_run("r1")
                assert run is not None
                assert (run.state, run.last_seq) == ({"by": "b"}, 3)
                assert await seqs(a, "r1") == [1, 2, 3]

        asyncio.run(body())

    def test_store_can_be_reopened_and_closed_twice(self, make_store: StoreFactory) -> None:
        async def body() -> None:
            store = make_store()
            with pytest.raises(StoreError, match="not open"):
                await store.get_run("r1")
            await store.open()
            await store.open()
            await new_run(store, "r1")
            await store.close()
            await store.close()
            with pytest.raises(StoreError, match="not open"):
                await store.commit(change("r1"))
            await store.open()
            assert await store.get_run("r1") is not None
            await store.close()

        asyncio.run(body())


async def every_kind_of_write(store: Store, *, reads_mail: bool) -> None:
    """Issue one write of every kind at once and check each one's answer."""
    for run_id in ("taken", "mailed", "done", "stolen", "plain"):
        await new_run(store, run_id)
    mail = await store.post("mailed", "cancel", {"reason": "x"}, at=T0 + 1)
    assert mail is not None
    await store.post("mailed", "signal", {"name": "y"}, at=T0 + 1)
    await store.reserve("seat", run_id="done", now=T0, expires_at=T0 + 600)
    await store.claim("stolen", owner="thief", now=T0 + 31, lease_until=T0 + 60)
    fresh = Event("fresh", 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 0}})
    again = Event("taken", 1, EventKind.RUN_STARTED, T0, data={"state": {"n": 9}})
    results = await asyncio.gather(
        store.create_run(record("fresh"), [fresh]),
        store.create_run(record("taken", state={"n": 9}), [again]),
        store.commit(
            change("mailed", events=steps("mailed", 2), mail_read=(mail.id,) if reads_mail else ())
        ),
        store.commit(
            change("done", events=steps("done", 2), status=RunStatus.COMPLETED, release=True)
        ),
        store.commit(change("stolen", events=steps("stolen", 2))),
        store.commit(change("plain", events=steps("plain", 2), state={"k": 1})),
        return_exceptions=True,
    )
    created, taken, mailed, done, stolen, plain = results
    assert created == (record("fresh"), True)
    assert isinstance(taken, tuple)
    assert taken[1] is False
    assert taken[0].state == {"n": 0}
    assert mailed is True  # the signal still waits
    left = ["signal"] if reads_mail else ["cancel", "signal"]
    assert [m.kind for m in await store.mail("mailed")] == left
    assert done is False
    assert await store.reservations(run_id="done") == []
    assert isinstance(stolen, LeaseLost)
    assert plain is False
    assert await seqs(store, "fresh") == [1]
    assert [e.data for e in await store.journal("taken")] == [{"state": {"n": 0}}]
    for run_id in ("mailed", "done", "plain"):
        assert await seqs(store, run_id) == [1, 2, 3]
    assert await seqs(store, "stolen") == [1]
    finished = await store.get_run("done")
    assert finished is not None
    assert finished.status is RunStatus.COMPLETED
    assert finished.owner is None
    row = await store.get_run("plain")
    assert row is not None
    assert (row.state, row.last_seq) == ({"k": 1}, 3)
    mailed_row = await store.get_run("mailed")
    assert mailed_row is not None
    assert mailed_row.mail == len(left)

"""The contract for purging settled runs (`Store.purge`).

Only settled runs last changed before the cutoff go, with their journal,
mail and reservations; active, paused and needs_attention runs, and runs
whose lease is live, stay whatever the caller asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sagakit.journal import RunStatus
from sagakit.store import FINISHED_STATUSES, Purged, Store
from sagakit.store.testing.support import FREE, T0, change, contract, new_run, steps


async def _settled(store: Store, run_id: str, status: RunStatus, at: float) -> None:
    """A run that reached ``status`` at ``at``, lease released, with a journal of three events."""
    await new_run(store, run_id)
    await store.commit(change(run_id, events=steps(run_id, 2), status=status, at=at, release=True))


class PurgeContract:
    """What every store does when asked to purge old runs."""

    @contract
    async def test_purge_deletes_settled_runs_before_the_cutoff_only(self, store: Store) -> None:
        for i, status in enumerate(FINISHED_STATUSES):
            await _settled(store, f"old-{i}", status, T0 + 10)
        await _settled(store, "recent", RunStatus.COMPLETED, T0 + 100)
        purged = await store.purge(before=T0 + 100, limit=100)
        assert sorted(p.run.id for p in purged) == [f"old-{i}" for i in range(4)]
        assert all(p.journal is None for p in purged)  # no archive asked
        for i in range(4):
            assert await store.get_run(f"old-{i}") is None
            assert await store.journal(f"old-{i}") == []
        assert await store.get_run("recent") is not None
        assert len(await store.journal("recent")) == 3
        assert await store.purge(before=T0 + 100, limit=100) == []

    @contract
    async def test_purge_never_takes_unsettled_runs(self, store: Store) -> None:
        kept = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING, RunStatus.PAUSED]
        kept.append(RunStatus.NEEDS_ATTENTION)
        for status in kept:
            await new_run(store, str(status), **FREE, status=status)
        assert await store.purge(before=T0 + 1e9, limit=100) == []
        for status in kept:
            assert await store.get_run(str(status)) is not None
        for status in kept:
            with pytest.raises(ValueError, match="never purged"):
                await store.purge(before=T0 + 1e9, statuses=[status])
        with pytest.raises(ValueError, match="unknown run status"):
            await store.purge(before=T0 + 1e9, statuses=["done"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="limit"):
            await store.purge(before=T0 + 1e9, limit=0)

    @contract
    async def test_purge_takes_only_the_statuses_asked(self, store: Store) -> None:
        await _settled(store, "done", RunStatus.COMPLETED, T0 + 10)
        await _settled(store, "failed", RunStatus.FAILED, T0 + 10)
        purged = await store.purge(before=T0 + 20, statuses=[RunStatus.COMPLETED])
        assert [p.run.id for p in purged] == ["done"]
        assert await store.get_run("failed") is not None

    @contract
    async def test_purge_leaves_a_run_whose_lease_is_live(self, store: Store) -> None:
        await _settled(store, "held", RunStatus.COMPLETED, T0 + 10)
        # An operator claims the settled run; its lease outlives the cutoff.
        assert await store.claim("held", owner="op", now=T0 + 20, lease_until=T0 + 1000)
        assert await store.purge(before=T0 + 500) == []
        assert [p.run.id for p in await store.purge(before=T0 + 2000)] == ["held"]

    @contract
    async def test_purge_returns_journals_and_deletes_mail_and_reservations(
        self, store: Store
    ) -> None:
        await _settled(store, "r1", RunStatus.CANCELLED, T0 + 10)
        await store.post("r1", "signal", {"name": "late"}, at=T0 + 11)
        await store.reserve("room", run_id="r1", now=T0 + 12, expires_at=T0 + 1e9)
        before = await store.journal("r1")
        archived: list[Purged] = []
        [purged] = await store.purge(before=T0 + 20, archive=archived.extend)
        assert archived == [purged]
        assert purged.run.id == "r1"
        assert purged.run.status is RunStatus.CANCELLED
        # As stored: a wrapping store (encryption) may hand back its values sealed.
        assert purged.journal is not None
        assert [(e.seq, e.kind, e.step) for e in purged.journal] == [
            (e.seq, e.kind, e.step) for e in before
        ]
        assert await store.mail("r1") == []
        assert await store.reservations() == []
        assert await store.post("r1", "signal", {}, at=T0 + 30) is None

    @contract
    async def test_purge_deletes_nothing_when_the_archive_fails(self, store: Store) -> None:
        await _settled(store, "r1", RunStatus.COMPLETED, T0 + 10)
        await store.reserve("room", run_id="r1", now=T0 + 12, expires_at=T0 + 1e9)

        def full(batch: Sequence[Purged]) -> None:
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError, match="No space left"):
            await store.purge(before=T0 + 20, archive=full)
        assert await store.get_run("r1") is not None
        assert len(await store.journal("r1")) == 3
        assert [r.name for r in await store.reservations()] == ["room"]
        assert [p.run.id for p in await store.purge(before=T0 + 20)] == ["r1"]

    @contract
    async def test_purge_goes_in_batches_oldest_first(self, store: Store) -> None:
        for i in range(5):
            await _settled(store, f"r{i}", RunStatus.COMPLETED, T0 + 10)
        first = await store.purge(before=T0 + 20, limit=2)
        assert [p.run.id for p in first] == ["r0", "r1"]
        assert len(await store.purge(before=T0 + 20, limit=2)) == 2
        assert len(await store.purge(before=T0 + 20, limit=2)) == 1
        assert await store.purge(before=T0 + 20, limit=2) == []

"""Reconciliation on every store (memory, SQLite, PostgreSQL): orphans found, removed, journaled.

A fake outside system (a dict of buckets tagged with idempotency keys) and a
saga whose compensation has a bug: it says it deleted the bucket and leaves it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sagakit import (
    Engine,
    EventKind,
    Outcome,
    PermanentError,
    Reason,
    Reconciler,
    Resource,
    RetryPolicy,
    RunStatus,
    Saga,
    SagaError,
    StepContext,
    Verdict,
)

ONCE = RetryPolicy(max_attempts=1)


class Cloud:
    """Buckets by id, each tagged with the key it was made under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, Resource] = {}
        self.removed: list[str] = []
        self.broken: set[str] = set()  # ids whose removal raises

    def create(self, key: str, *, created_at: float | None = None) -> str:
        with self.lock:
            for bucket in self.buckets.values():
                if bucket.idempotency_key == key:
                    return bucket.id
            ident = f"b{len(self.buckets) + len(self.removed) + 1}"
            # Made an hour ago unless told: past any grace period of these tests.
            made = time.time() - 3600 if created_at is None else created_at
            self.buckets[ident] = Resource(ident, key, made)
            return ident

    def listing(self) -> list[Resource]:
        with self.lock:
            return list(self.buckets.values())

    def remove(self, resource: Resource) -> None:
        with self.lock:
            if resource.id in self.broken:
                raise RuntimeError(f"the cloud refuses to delete {resource.id} (token sk-secret)")
            self.buckets.pop(resource.id, None)
            self.removed.append(resource.id)


def bucket_saga(cloud: Cloud, *, buggy_undo: bool = True) -> Saga:
    saga = Saga("buckets", sensitive=["token"])

    @saga.step(retry=ONCE)
    def make_bucket(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        bucket = cloud.create(ctx.idempotency_key)
        if state.get("fail_after_create"):
            raise PermanentError("the bucket was made, then the step failed")
        return {"bucket": bucket}

    @make_bucket.compensate
    def drop_bucket(state: dict[str, Any], ctx: StepContext) -> None:
        if not buggy_undo:
            cloud.remove(Resource(state["bucket"], None))
        # the bug: it reports success and deletes nothing

    @saga.step(retry=ONCE)
    def finish(state: dict[str, Any], ctx: StepContext) -> None:
        if state.get("fail"):
            raise PermanentError("finishing failed")

    saga.add_reconciler(Reconciler("bucket", cloud.listing, cloud.remove, step="make_bucket"))
    return saga


def by_id(report: Any) -> dict[str, Any]:
    return {f.resource.id: f for f in report.findings}


def test_orphans_are_found_then_removed_and_journaled(engine: Engine) -> None:
    cloud = Cloud()
    saga = bucket_saga(cloud)
    engine.register(saga)
    kept = engine.run(saga, {}, run_id="kept")
    undone = engine.run(saga, {"fail": True}, run_id="undone")
    broken = engine.run(saga, {"fail_after_create": True}, run_id="half")
    assert (kept.status, undone.status, broken.status) == (
        RunStatus.COMPLETED,
        RunStatus.ROLLED_BACK,
        RunStatus.FAILED,
    )
    cloud.create("gone-run/make_bucket")  # a run that no store knows (purged)
    cloud.create("someone-else")  # not made by sagakit
    fresh = cloud.create("fresh-run/make_bucket", created_at=time.time())

    report = engine.reconcile(grace=60)
    found = by_id(report)
    assert {i: (f.verdict, f.reason) for i, f in found.items()} == {
        "b1": (Verdict.LIVE, Reason.OWNED),
        "b2": (Verdict.ORPHAN, Reason.STEP_COMPENSATED),
        "b3": (Verdict.ORPHAN, Reason.RUN_ENDED_WITHOUT_STEP),
        "b4": (Verdict.ORPHAN, Reason.UNKNOWN_RUN),
        "b5": (Verdict.IGNORED, Reason.FOREIGN_KEY),
        fresh: (Verdict.LIVE, Reason.IN_GRACE),
    }
    assert found["b2"].run_id == "undone"
    assert found["b2"].step == "make_bucket"
    assert found["b2"].run_status is RunStatus.ROLLED_BACK
    # A dry run removes and journals nothing.
    assert not report.applied
    assert cloud.removed == []
    assert {f.outcome for f in report.orphans} == {Outcome.FOUND}
    assert EventKind.ORPHAN_REMOVED not in {e.kind for e in engine.history("undone")}

    applied = engine.reconcile(apply=True, grace=60)
    assert applied.ok
    assert sorted(cloud.removed) == ["b2", "b3", "b4"]
    assert sorted(cloud.buckets) == sorted(["b1", "b5", fresh])
    done = by_id(applied)
    assert {i: f.outcome for i, f in done.items() if f.verdict is Verdict.ORPHAN} == {
        "b2": Outcome.REMOVED,
        "b3": Outcome.REMOVED,
        "b4": Outcome.REMOVED,
    }
    assert done["b2"].journaled
    assert done["b3"].journaled
    assert not done["b4"].journaled
    # Journaled on the run, whose status, state and lease are as they were.
    last = engine.history("undone")[-1]
    assert last.kind is EventKind.ORPHAN_REMOVED
    assert last.step == "make_bucket"
    assert last.data["resource"] == "b2"
    assert last.data["kind"] == "bucket"
    assert last.data["reason"] == "step_compensated"
    assert last.data["by"] == engine.owner
    after = engine.get("undone")
    assert after.status is RunStatus.ROLLED_BACK
    assert after.owner is None
    assert after.data == undone.data
    assert engine.history("half")[-1].kind is EventKind.ORPHAN_REMOVED

    # Nothing left to find: a second pass changes nothing.
    again = engine.reconcile(apply=True, grace=60)
    assert again.orphans == ()
    assert engine.history("undone")[-1] == last


def test_a_removal_that_raises_is_reported_masked_and_the_rest_go_on(engine: Engine) -> None:
    cloud = Cloud()
    saga = bucket_saga(cloud)
    engine.register(saga)
    engine.run(saga, {"fail": True, "token": "sk-secret"}, run_id="one")
    engine.run(saga, {"fail": True}, run_id="two")
    cloud.broken.add("b1")
    events_before = len(engine.history("one"))

    report = engine.reconcile(apply=True, grace=0)
    assert not report.ok
    outcome = {f.resource.id: f.outcome for f in report.findings}
    assert outcome == {"b1": Outcome.FAILED, "b2": Outcome.REMOVED}
    (failure,) = report.failed
    assert failure.error is not None
    assert "refuses to delete b1" in failure.error.message
    assert "sk-secret" not in failure.error.message  # a sensitive value of the run's state
    # The failed removal journaled nothing and left the run free.
    assert len(engine.history("one")) == events_before
    assert engine.get("one").owner is None
    assert "b1" in cloud.buckets


def test_a_run_still_going_or_paused_is_never_touched(engine: Engine) -> None:
    cloud = Cloud()
    saga = Saga("buckets")

    @saga.step
    def make_bucket(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"bucket": cloud.create(ctx.idempotency_key)}

    @make_bucket.compensate
    def drop_bucket(state: dict[str, Any], ctx: StepContext) -> None:
        pass

    saga.wait_for("approval")
    saga.add_reconciler(Reconciler("bucket", cloud.listing, cloud.remove))
    engine.register(saga)
    paused = engine.run(saga, {}, run_id="waiting")
    assert paused.status is RunStatus.PAUSED
    report = engine.reconcile(apply=True, grace=0)
    (finding,) = report.findings
    assert (finding.verdict, finding.reason) == (Verdict.LIVE, Reason.OWNED)
    assert cloud.removed == []


def test_a_listing_that_fails_is_reported(engine: Engine) -> None:
    def broken() -> list[Resource]:
        raise ConnectionError("the cloud is down")

    saga = bucket_saga(Cloud())
    saga.add_reconciler(Reconciler("disk", broken, lambda r: None))
    engine.register(saga)
    report = engine.reconcile()
    assert not report.ok
    (failure,) = report.listing_failures
    assert failure.kind == "disk"
    assert "the cloud is down" in failure.error.message


def test_without_reconcilers_it_says_so(engine: Engine) -> None:
    plain = Saga("plain")

    @plain.step
    def only(state: dict[str, Any], ctx: StepContext) -> None:
        pass

    engine.register(plain)
    with pytest.raises(SagaError, match="declares a reconciler"):
        engine.reconcile()
    with pytest.raises(SagaError, match="saga 'plain' declares no reconciler"):
        engine.reconcile(saga="plain")
    with pytest.raises(SagaError, match="no saga named 'nope'"):
        engine.reconcile(saga="nope")
    with pytest.raises(SagaError, match="must not be negative"):
        engine.reconcile(grace=-1)

"""The engine under stress: slow hooks, stale operators, a bad journal, a busy store."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    AttentionReport,
    Engine,
    EventKind,
    InvalidRunState,
    RetryPolicy,
    Run,
    RunNotFound,
    RunStatus,
    Saga,
    StepContext,
    StoreError,
)
from sagakit.store.sqlite import SQLiteStore
from sagakit.store.sqlite import group_commit as sqlite_group_commit
from sagakit.store.sqlite import writes as sqlite_writes
from sagakit.store.sqlite.writes import write_finish_alone, write_one

from .helpers import crash, halting_saga, on_local_clock


def test_a_hook_may_resolve_the_run_it_is_told_about(store_url: str) -> None:
    """The hook runs once the run is released, so acting on it from there works."""
    engine: Engine

    def hook(report: AttentionReport) -> None:
        assert report.cause is not None
        assert report.cause.message == "declined"
        engine.resolve(report.run.id, note="undone by the pager bot", step=report.step)

    with Engine(store_url, on_attention=hook) as engine:
        run = engine.run(halting_saga(), run_id="self-healing")
        assert run.status == RunStatus.ROLLED_BACK
        kinds = [e.kind for e in engine.history("self-healing")]
        # The alert is journaled as sent once the hook returns, after what it did.
        assert kinds[-4:] == [
            EventKind.NEEDS_ATTENTION,
            EventKind.RESOLVED,
            EventKind.RUN_FINISHED,
            EventKind.ALERT_SENT,
        ]


def test_a_slow_sync_hook_does_not_stall_the_runs_in_flight(store_url: str) -> None:
    if store_url.startswith("memory"):
        store_url += "-slow-hook"
    calls: Counter[str] = Counter()
    slow: Saga[Any] = Saga("slow-step")

    @slow.step
    async def work(state: dict[str, Any], ctx: StepContext) -> None:
        calls["work"] += 1
        await asyncio.sleep(1.0)

    def hook(report: AttentionReport) -> None:
        time.sleep(1.2)  # a pager that takes its time, longer than the lease

    async def body() -> None:
        async with (
            AsyncEngine(store_url, lease_seconds=0.3, on_attention=hook) as owner,
            AsyncEngine(store_url, lease_seconds=0.3) as thief,
        ):
            thief.register(slow)
            working = asyncio.ensure_future(owner.run(slow, run_id="w"))
            halting = asyncio.ensure_future(owner.run(halting_saga(), run_id="h"))
            for _ in range(10):
                await asyncio.sleep(0.1)
                assert await thief.recover() == []  # the heartbeat kept beating
            assert (await working).status == RunStatus.COMPLETED
            assert (await halting).status == RunStatus.NEEDS_ATTENTION

    asyncio.run(body())
    assert calls["work"] == 1


def test_an_operator_acting_on_a_stale_view_changes_nothing(store_url: str) -> None:
    with Engine(store_url) as engine:
        engine.run(halting_saga(), run_id="stale")
        before = engine.history("stale")
        with pytest.raises(InvalidRunState, match="halted on step 'book', not on step 'pay'"):
            engine.resolve("stale", note="refunded", step="pay")
        with pytest.raises(InvalidRunState, match="not on step 'pay'"):
            engine.retry("stale", step="pay")
        assert engine.history("stale") == before
        assert engine.get("stale").owner is None  # the claim was given back
        assert engine.resolve("stale", note="ok", step="book").status == RunStatus.ROLLED_BACK


def test_recover_skips_a_run_whose_journal_does_not_fit_and_goes_on(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if store_url.startswith("memory"):
        store_url += "-mismatch"
    started = asyncio.Event()

    def make(step_name: str) -> Saga[Any]:
        saga: Saga[Any] = Saga("renamed")

        async def hang(state: dict[str, Any], ctx: StepContext) -> None:
            if ctx.attempt == 1:
                started.set()
                await asyncio.sleep(60)

        saga.add_step(hang, name=step_name)
        return saga

    good: Saga[Any] = Saga("good")
    good_started = asyncio.Event()

    @good.step
    async def fine(state: dict[str, Any], ctx: StepContext) -> None:
        if ctx.attempt == 1:
            good_started.set()
            await asyncio.sleep(60)

    async def body() -> None:
        dead = AsyncEngine(store_url, lease_seconds=0.1)
        doomed = [
            asyncio.ensure_future(dead.run(make("reserve"), run_id="old")),
            asyncio.ensure_future(dead.run(good, run_id="fine")),
        ]
        await started.wait()
        await good_started.wait()
        crash(dead, *doomed)
        await asyncio.sleep(0.2)
        async with AsyncEngine(store_url) as survivor:
            # Same name and version, but the step was renamed: a deployment mistake.
            survivor.register(make("reserve_seat"), good)
            with caplog.at_level(logging.ERROR, logger="sagakit"):
                recovered = await survivor.recover()
            assert [r.id for r in recovered] == ["fine"]
            old = await survivor.get("old")
            assert old.status == RunStatus.RUNNING
            assert old.owner is None  # released, left for the right code
        await dead.close()

    asyncio.run(body())
    assert "journal of run 'old' does not fit saga 'renamed' version '1'" in caplog.text
    assert "no step named 'reserve'" in caplog.text


def test_a_passing_store_failure_is_retried_and_the_run_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    saga: Saga[Any] = Saga("patient")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file for 0.5 s
        threading.Timer(0.5, blocker.execute, args=("ROLLBACK",)).start()

    @saga.step
    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    try:
        with (
            caplog.at_level(logging.WARNING, logger="sagakit"),
            Engine(f"sqlite:///{path}?busy_timeout=0.1", lease_seconds=4.0) as engine,
        ):
            assert engine.run(saga, run_id="p").status == RunStatus.COMPLETED
    finally:
        time.sleep(0.1)
        blocker.close()
    assert "the store failed" in caplog.text
    assert "retrying in" in caplog.text


def test_an_engine_that_cannot_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    before = threading.active_count()
    for _ in range(3):
        with (
            pytest.raises(StoreError, match="missing-dir"),
            Engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"),
        ):
            pass
    assert threading.active_count() == before


def test_a_run_is_stored_with_its_first_steps_write_ahead_record(store_url: str) -> None:
    """`run` writes no row of its own: the run is created by its first commit."""
    saga: Saga[Any] = Saga("two-steps")
    for name in ("one", "two"):
        saga.add_step(lambda state, ctx: None, name=name)

    async def body() -> list[list[EventKind]]:
        async with AsyncEngine(store_url) as engine:
            created: list[list[EventKind]] = []
            create_run = engine.store.create_run

            async def spy(run: Any, events: Any) -> Any:
                created.append([e.kind for e in events])
                return await create_run(run, events)

            engine.store.create_run = spy  # type: ignore[method-assign]
            run = await engine.run(saga, run_id="folded")
            assert run.status == RunStatus.COMPLETED
            assert run == await engine.get("folded")
            kinds = [e.kind for e in await engine.history("folded")]
            assert kinds[:3] == [
                EventKind.RUN_STARTED,
                EventKind.STEP_STARTED,
                EventKind.STEP_SUCCEEDED,
            ]
            return created

    assert asyncio.run(body()) == [[EventKind.RUN_STARTED, EventKind.STEP_STARTED]]


def test_each_commit_says_truly_whether_it_keeps_the_runs_status(store_url: str) -> None:
    """`Commit.keeps_status` lets a store skip rewriting status and timer (and
    their indexes); it must be True exactly when both are as the row holds them."""
    saga: Saga[Any] = Saga("moves")
    failures = Counter[str]()

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {"booked": True}

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @saga.step(retry=RetryPolicy(max_attempts=2, initial_delay=0.05, jitter=0))
    def flaky(state: dict[str, Any], ctx: StepContext) -> None:
        failures["flaky"] += 1
        if failures["flaky"] == 1:
            raise ConnectionError("try again")  # a retry later: a commit with a timer

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def refuse(state: dict[str, Any], ctx: StepContext) -> None:
        raise ValueError("no")  # the run turns to compensating, then rolled back

    async def body() -> list[tuple[str, float | None, bool]]:
        async with AsyncEngine(store_url) as engine:
            seen: list[tuple[str, float | None, bool]] = []
            commit, create_run = engine.store.commit, engine.store.create_run

            async def spy_create(run: Any, events: Any) -> Any:
                seen.append((str(run.status), run.wake_at, False))
                return await create_run(run, events)

            async def spy_commit(change: Any) -> Any:
                seen.append((str(change.status), change.wake_at, change.keeps_status))
                return await commit(change)

            engine.store.create_run = spy_create  # type: ignore[method-assign]
            engine.store.commit = spy_commit  # type: ignore[method-assign, assignment]
            run = await engine.run(saga, run_id="moving")
            assert run.status == RunStatus.ROLLED_BACK
            assert run == await engine.get("moving")
            return seen

    seen = asyncio.run(body())
    assert any(keeps for _, _, keeps in seen)
    assert any(wake for _, wake, _ in seen)
    for (status, wake_at, _), (next_status, next_wake, keeps) in itertools.pairwise(seen):
        assert keeps == (next_status == status and next_wake == wake_at)


def counting_steps(name: str, calls: Counter[str]) -> Saga[Any]:
    """Steps one, two and three, each counting its calls in ``calls``."""
    saga: Saga[Any] = Saga(name)
    for step_name in ("one", "two", "three"):

        def step(state: dict[str, Any], ctx: StepContext, step_name: str = step_name) -> None:
            calls[step_name] += 1

        saga.add_step(step, name=step_name)
    return saga


def test_a_commit_fenced_out_by_its_own_drives_new_lease_is_made_again(store_url: str) -> None:
    """Claimed again by its own engine while a commit is under way, the drive
    adopts the new lease; the commit, fenced out under the old one, is made
    again under the new one, and the run goes on without running a step twice."""
    calls: Counter[str] = Counter()
    saga = counting_steps("reclaimed", calls)

    async def body() -> tuple[int, list[EventKind]]:
        async with AsyncEngine(on_local_clock(store_url)) as engine:
            commit = engine.store.commit
            adopted: list[int] = []

            async def claimed_meanwhile(change: Any) -> Any:
                if not adopted and change.events and change.events[-1].step == "two":
                    # The lease lapsed unseen; this engine's own claim takes the run again.
                    later = time.time() + 3600
                    taken = await engine.store.claim(
                        change.run_id, owner=engine.owner, now=later, lease_until=later + 60
                    )
                    assert taken is not None
                    assert engine.drives.carry_on(taken)
                    adopted.append(taken.lease_epoch)
                return await commit(change)  # the first try is under the old lease

            engine.store.commit = claimed_meanwhile  # type: ignore[method-assign, assignment]
            run = await engine.run(saga, run_id="r")
            assert run.status == RunStatus.COMPLETED
            record = await engine.store.get_run("r")
            assert record is not None
            assert adopted == [record.lease_epoch]
            return record.lease_epoch, [e.kind for e in await engine.history("r")]

    epoch, kinds = asyncio.run(body())
    assert epoch == 2
    assert kinds.count(EventKind.STEP_STARTED) == 3
    assert calls == Counter({"one": 1, "two": 1, "three": 1})


@pytest.mark.parametrize("found_by", ["renewal", "commit"])
def test_a_drive_finds_its_own_late_reclaim_in_the_row_and_carries_on(
    store_url: str, found_by: str
) -> None:
    """The answer to the claim that took the run again comes after the lease
    is found lost (by a renewal, or by a commit fenced out): the drive reads
    the row, sees its own process's newer lease, adopts it and goes on; the
    late answer then finds it adopted, and no second drive starts."""
    calls: Counter[str] = Counter()
    saga = counting_steps("late-answer", calls)

    async def body() -> tuple[int, list[bool]]:
        async with AsyncEngine(on_local_clock(store_url)) as engine:
            commit = engine.store.commit
            taken: list[Any] = []
            answered: list[bool] = []

            async def reclaimed_unseen(change: Any) -> Any:
                step = change.events[-1].step if change.events else None
                if taken and not answered:
                    # The claim's answer, late: the drive holds that lease already.
                    answered.append(engine.drives.carry_on(taken[0]))
                if taken or step != "two":
                    return await commit(change)
                landed = await commit(change) if found_by == "renewal" else None
                later = time.time() + 3600
                claimed = await engine.store.claim(
                    change.run_id, owner=engine.owner, now=later, lease_until=later + 60
                )
                assert claimed is not None
                taken.append(claimed)  # its answer is not handed to the drive yet
                if found_by == "renewal":
                    engine.drives[change.run_id].lost = True  # as the heartbeat would say
                    return landed
                return await commit(change)  # fenced out: the old lease is gone

            engine.store.commit = reclaimed_unseen  # type: ignore[method-assign, assignment]
            run = await engine.run(saga, run_id="r")
            assert run.status == RunStatus.COMPLETED
            record = await engine.store.get_run("r")
            assert record is not None
            assert taken[0].lease_epoch == record.lease_epoch
            return record.lease_epoch, answered

    epoch, answered = asyncio.run(body())
    assert (epoch, answered) == (2, [True])
    assert calls == Counter({"one": 1, "two": 1, "three": 1})


def test_a_start_the_store_refuses_runs_nothing_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    calls: list[str] = []
    saga: Saga[Any] = Saga("refused")

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        calls.append("book")

    with Engine(f"sqlite:///{path}?busy_timeout=0.2") as engine:
        engine.open()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file
        try:
            with pytest.raises(StoreError, match="database is locked") as raised:
                engine.run(saga, run_id="never")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Nothing was stored, so there is no journal to resume from.
        assert "resumes from its journal" not in str(raised.value)
        assert calls == []
        with pytest.raises(RunNotFound, match="never"):
            engine.get("never")
        assert engine.run(saga, run_id="never").status == RunStatus.COMPLETED
    assert calls == ["book"]


def test_one_run_alone_commits_on_the_loop_without_stalling_it_on_a_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone commit is written on the event loop's thread; but when another
    process holds the write lock, it waits on the store's thread, and the loop
    goes on serving other coroutines meanwhile."""
    path = tmp_path / "runs.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    saga: Saga[Any] = Saga("alone")

    @saga.step
    async def first(state: dict[str, Any], ctx: StepContext) -> None:
        if ctx.run_id == "behind-a-lock":  # another process starts writing for a while
            blocker.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(1.0, blocker.execute, "ROLLBACK")

    @saga.step
    async def second(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    async def body() -> tuple[set[str], set[str], float]:
        threads: set[str] = set()
        async with AsyncEngine(f"sqlite:///{path}") as engine:
            assert isinstance(engine.store, SQLiteStore)

            def spying(write_how: Any) -> Any:
                def spy(cur: Any, q: Any, write: Any) -> Any:
                    threads.add(threading.current_thread().name)
                    return write_how(cur, q, write)

                return spy

            await engine.run(saga, run_id="warm-up")  # starts the heartbeat task, too
            # Both callers: the loop's lone commit (the one that finishes the
            # run is one statement), and the store thread's write by write.
            monkeypatch.setattr(sqlite_group_commit, "write_one", spying(write_one))
            monkeypatch.setattr(
                sqlite_group_commit, "write_finish_alone", spying(write_finish_alone)
            )
            monkeypatch.setattr(sqlite_writes, "write_one", spying(write_one))
            await engine.run(saga, run_id="quick")
            alone, behind = set(threads), threads
            behind.clear()
            longest = 0.0

            async def ticker() -> None:
                nonlocal longest
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    longest, last = max(longest, now - last), now

            ticking = asyncio.ensure_future(ticker())
            try:
                run = await engine.run(saga, run_id="behind-a-lock")
            finally:
                ticking.cancel()
            assert run.status == RunStatus.COMPLETED
            return alone, behind, longest

    try:
        alone, behind, longest = asyncio.run(body())
    finally:
        blocker.close()
    assert alone == {threading.main_thread().name}
    assert "sagakit-sqlite_0" in behind  # the commit behind the lock went to the store's thread
    assert longest < 0.5, f"the event loop stalled for {longest:.2f}s behind another's lock"


def test_after_lone_commits_the_stores_thread_still_waits_for_a_lock(tmp_path: Path) -> None:
    """Lone commits turn the connection's busy timeout off for the loop's
    sake; the store's thread turns it back on before it waits for a lock."""
    path = tmp_path / "runs.db"
    saga: Saga[Any] = Saga("alone")
    saga.add_step(lambda state, ctx: None, name="only")

    async def body() -> None:
        async with AsyncEngine(f"sqlite:///{path}?busy_timeout=5") as engine:
            await engine.run(saga, run_id="alone")
            blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                blocker.execute("BEGIN IMMEDIATE")  # another process writes for 0.3 s
                asyncio.get_running_loop().call_later(0.3, blocker.execute, "ROLLBACK")
                started = time.monotonic()
                mail = await engine.store.post("alone", "note", {}, at=time.time())
                assert mail is not None
                assert time.monotonic() - started >= 0.25  # it waited, and did not fail
            finally:
                blocker.close()

    asyncio.run(body())


def test_one_run_id_started_twice_at_once_runs_once_and_keeps_its_lease(store_url: str) -> None:
    calls: Counter[str] = Counter()
    saga: Saga[Any] = Saga("twice")

    @saga.step
    async def slow(state: dict[str, Any], ctx: StepContext) -> None:
        calls[ctx.run_id] += 1
        await asyncio.sleep(1.0)  # longer than the lease: only heartbeats keep it

    async def body() -> tuple[list[RunStatus], RunStatus, float]:
        async with AsyncEngine(store_url, lease_seconds=0.6) as engine:

            async def lease_left() -> float:
                await asyncio.sleep(0.9)  # past the first lease, while the step runs
                record = await engine.store.get_run("same")
                assert record is not None
                assert record.lease_until is not None
                return record.lease_until - time.time()

            *runs, left = await asyncio.gather(
                *(engine.run(saga, run_id="same") for _ in range(2)), lease_left()
            )
            statuses = sorted(r.status for r in runs if isinstance(r, Run))
            return statuses, (await engine.get("same")).status, float(left)  # type: ignore[arg-type]  # gather of mixed awaitables

    statuses, final, left = asyncio.run(body())
    assert calls == {"same": 1}
    assert left > 0, "the lease of the run in flight was not renewed"
    assert final == RunStatus.COMPLETED
    # One call drove it; the other found the id taken and returned the run as it stood.
    assert RunStatus.COMPLETED in statuses


def test_a_failed_renewal_is_tried_again_soon_not_a_third_of_the_lease_later(
    store_url: str,
) -> None:
    """A cut connection fails one renewal. Waiting a third of the lease for the
    next would let two failures in a row lapse every lease, and another
    process take the runs while their calls still run here."""
    lease = 1.5
    saga: Saga[Any] = Saga("renewed")

    @saga.step
    async def slow(state: dict[str, Any], ctx: StepContext) -> None:
        await asyncio.sleep(1.2)

    async def body() -> tuple[list[tuple[float, bool]], RunStatus]:
        async with AsyncEngine(store_url, lease_seconds=lease) as engine:
            renew = engine.store.renew
            attempts: list[tuple[float, bool]] = []

            async def failing_twice(
                leases: Any, *, lease_until: float, now: Any = None
            ) -> set[str]:
                failed = len(attempts) < 2
                attempts.append((time.monotonic(), failed))
                if failed:
                    raise StoreError("server closed the connection unexpectedly")
                return await renew(leases, lease_until=lease_until, now=now)

            engine.store.renew = failing_twice  # type: ignore[method-assign]
            run = await engine.run(saga, run_id="r1")
            return attempts, run.status

    attempts, status = asyncio.run(body())
    assert status == RunStatus.COMPLETED
    assert [failed for _, failed in attempts[:3]] == [True, True, False]
    first, second, third = (at for at, _ in attempts[:3])
    # A third of the lease is 0.5 s; the retries come at a tenth, then a fifth, of that.
    assert second - first < 0.25
    assert third - second < 0.35

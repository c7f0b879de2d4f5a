"""Durable enqueue and workers, on every store: start now, run elsewhere."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    Engine,
    EventKind,
    RetryPolicy,
    RunIdConflict,
    RunNotFound,
    RunStatus,
    RunTimeout,
    Saga,
    SagaError,
    StepContext,
    StoreError,
    Worker,
)
from sagakit.store import Commit, RunRecord

from .helpers import crash, halting_saga

POLL = 0.05


def steps(
    calls: Counter[str],
    *names: str,
    pause: float = 0.0,
    retry_after: float | None = None,
    name: str = "work",
) -> Saga[Any]:
    """A saga of async steps that count their calls by step and run.

    With ``retry_after``, the first step fails once and is retried that many
    seconds later.
    """
    saga: Saga[Any] = Saga(name)

    def make(step: str, first: bool) -> None:
        async def action(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
            calls[f"{step}:{ctx.run_id}"] += 1
            await asyncio.sleep(pause)
            if first and retry_after is not None and ctx.attempt == 1:
                raise ConnectionError(f"{step} is briefly unavailable")
            return {step: ctx.attempt}

        policy = RetryPolicy(
            max_attempts=3, initial_delay=retry_after or 0.01, backoff=1.0, jitter=0.0
        )
        saga.add_step(action, name=step, retry=policy)

    for n, step in enumerate(names):
        make(step, n == 0)
    return saga


@asynccontextmanager
async def working(engine: AsyncEngine, **options: Any) -> AsyncIterator[Worker]:
    """A worker running on ``engine`` for the length of the block, then stopped."""
    options.setdefault("poll_interval", POLL)
    worker = Worker(engine, **options)
    task = asyncio.ensure_future(worker.run())
    try:
        yield worker
    finally:
        worker.stop(grace=5.0)
        await asyncio.wait_for(task, 10.0)  # also raises what run() raised


async def until(
    fetch: Callable[[], Awaitable[RunRecord | None]],
    ok: Callable[[RunRecord], bool],
    timeout: float = 5.0,
) -> RunRecord:
    """Read a run's row until ``ok`` holds of it."""
    deadline = time.monotonic() + timeout
    while True:
        record = await fetch()
        if record is not None and ok(record):
            return record
        assert time.monotonic() < deadline, f"the run never got there: {record}"
        await asyncio.sleep(0.01)


def kinds(events: list[Any]) -> list[str]:
    return [f"{e.kind}:{e.step}" if e.step else str(e.kind) for e in events]


# -- start and wait -----------------------------------------------------------------


def test_start_returns_a_pending_run_at_once_and_a_worker_drives_it(store_url: str) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "reserve", "charge")

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            run = await engine.start(saga, {"who": "ada"}, run_id="s1")
            assert run.status == RunStatus.PENDING
            assert run.owner is None
            assert run.state == {"who": "ada"}
            assert kinds(await engine.history("s1")) == ["run_started"]
            record = await engine.store.get_run("s1")
            assert record is not None
            assert (record.owner, record.lease_epoch, record.lease_until) == (None, 0, None)
            assert not calls  # nothing ran: starting only records the run

            async with working(engine) as worker:
                done = await engine.wait("s1", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            assert done.state == {"who": "ada", "reserve": 1, "charge": 1}
            assert done.owner is None
            assert (worker.stats.claimed, worker.stats.finished) == (1, 1)

    asyncio.run(body())
    assert calls == Counter({"reserve:s1": 1, "charge:s1": 1})


def test_wait_gives_up_with_run_timeout_naming_the_run(engine: Engine) -> None:
    engine.start(steps(Counter(), "a"), run_id="nobody-serves-it")
    began = time.monotonic()
    with pytest.raises(RunTimeout, match=r"run 'nobody-serves-it' did not settle within 0.2s") as e:
        engine.wait("nobody-serves-it", timeout=0.2)
    assert 0.2 <= time.monotonic() - began < 2.0
    assert isinstance(e.value, TimeoutError)
    assert isinstance(e.value, SagaError)
    assert e.value.status == RunStatus.PENDING
    assert "it is still pending" in str(e.value)


def test_wait_on_an_unknown_run_raises_run_not_found_at_once(engine: Engine) -> None:
    began = time.monotonic()
    with pytest.raises(RunNotFound, match="'no-such-run'"):
        engine.wait("no-such-run", timeout=30.0)
    assert time.monotonic() - began < 1.0


def test_wait_returns_a_settled_run_at_once_needing_attention_included(engine: Engine) -> None:
    engine.run(halting_saga(), run_id="halted")
    assert engine.wait("halted", timeout=0.0).status == RunStatus.NEEDS_ATTENTION
    engine.run(steps(Counter(), "a"), run_id="done")
    assert engine.wait("done").status == RunStatus.COMPLETED


def test_start_is_idempotent(engine: Engine) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "a")
    first = engine.start(saga, {"n": 1}, run_id="once")
    again = engine.start(saga, {"n": 1}, run_id="once")
    assert again == first
    assert (first.created, again.created) == (True, False)
    assert again.state == {"n": 1}  # the stored run, as it stands
    assert kinds(engine.history("once")) == ["run_started"]
    with pytest.raises(RunIdConflict, match="'once' already belongs to a run of saga 'work'"):
        engine.start(steps(calls, "a", name="other"), run_id="once")
    # run() of a started id returns it as it stands too: it does not steal it from the workers.
    assert engine.run(saga, {"n": 1}, run_id="once") == first
    assert not calls
    # And start() of an id run() created returns that run.
    done = engine.run(saga, run_id="ran")
    assert engine.start(saga, run_id="ran") == done


# -- workers ----------------------------------------------------------------------------


def test_two_workers_share_fifty_runs_and_every_step_runs_once(store_url: str) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "reserve", "charge", "ship", pause=0.005)
    ids = [f"r{n}" for n in range(50)]

    async def body() -> None:
        async with (
            AsyncEngine(store_url, lease_seconds=5.0) as client,
            AsyncEngine(store_url, lease_seconds=5.0) as one,
            AsyncEngine(store_url, lease_seconds=5.0) as two,
        ):
            assert one.owner != two.owner
            one.register(saga)
            two.register(saga)
            for run_id in ids:
                await client.start(saga, {"id": run_id}, run_id=run_id)
            async with working(one) as first, working(two) as second:
                runs = await asyncio.gather(*(client.wait(i, timeout=30.0) for i in ids))
            assert {run.status for run in runs} == {RunStatus.COMPLETED}
            # Each run was claimed once, by one of them, and both took a share.
            assert first.stats.claimed + second.stats.claimed == 50
            assert first.stats.finished + second.stats.finished == 50
            assert first.stats.claimed > 0
            assert second.stats.claimed > 0
            for run_id in ids:
                assert kinds(await client.history(run_id)) == [
                    "run_started",
                    "step_started:reserve",
                    "step_succeeded:reserve",
                    "step_started:charge",
                    "step_succeeded:charge",
                    "step_started:ship",
                    "step_succeeded:ship",
                    "run_finished",
                ]

    asyncio.run(body())
    assert calls == Counter(
        {f"{step}:{i}": 1 for i in ids for step in ("reserve", "charge", "ship")}
    )


def test_a_worker_whose_renewals_fall_behind_carries_on_its_own_drive(store_url: str) -> None:
    """The lease lapses mid-step and the worker claims its own run again: the
    drive in flight takes the new lease, and no step runs a second time."""
    calls: Counter[str] = Counter()
    saga = steps(calls, "slow", "slower", pause=0.8)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=0.3) as engine:
            engine.register(saga)

            async def behind(leases: dict[str, Any], **_: Any) -> set[str]:
                return set()  # renewals that never land in time: each lease lapses

            engine.store.renew = behind  # type: ignore[method-assign]
            await engine.start(saga, {}, run_id="busy")
            async with working(engine) as worker:
                done = await engine.wait("busy", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            assert kinds(await engine.history("busy")) == [
                "run_started",
                "step_started:slow",
                "step_succeeded:slow",
                "step_started:slower",
                "step_succeeded:slower",
                "run_finished",
            ]
            record = await engine.store.get_run("busy")
            assert record is not None
            assert record.lease_epoch > 2  # it was claimed again, more than once
            assert (worker.stats.claimed, worker.stats.errors) == (1, 0)

    asyncio.run(body())
    assert calls == Counter({"slow:busy": 1, "slower:busy": 1})


def test_a_long_retry_timer_parks_the_run_and_a_worker_resumes_it_when_due(
    store_url: str,
) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "flaky", "after", retry_after=0.6)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="p")
            async with working(engine, park_after=0.2) as worker:
                parked = await until(
                    lambda: engine.store.get_run("p"),
                    lambda r: r.wake_at is not None and r.owner is None,
                )
                assert parked.status == RunStatus.RUNNING
                assert parked.lease_until is None
                failed = next(
                    e for e in await engine.history("p") if e.kind is EventKind.STEP_FAILED
                )
                retry_at = failed.data["retry_at"]
                assert parked.wake_at == pytest.approx(retry_at)
                assert worker.in_flight == 0  # it holds no slot while the timer runs
                done = await engine.wait("p", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            second = next(
                e
                for e in await engine.history("p")
                if e.kind is EventKind.STEP_STARTED and e.attempt == 2
            )
            assert retry_at <= second.at < retry_at + 1.0  # neither early nor forgotten
            assert worker.stats.parked == 1
            assert worker.stats.claimed == 2
            assert worker.stats.finished == 1

    asyncio.run(body())
    assert calls == Counter({"flaky:p": 2, "after:p": 1})


def test_a_short_retry_timer_is_waited_out_without_giving_the_run_up(store_url: str) -> None:
    saga = steps(Counter(), "flaky", retry_after=0.1)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="short")
            async with working(engine, park_after=2.0) as worker:
                assert (await engine.wait("short", timeout=10.0)).status == RunStatus.COMPLETED
            assert (worker.stats.claimed, worker.stats.parked) == (1, 0)

    asyncio.run(body())


def test_a_graceful_stop_finishes_the_running_step_and_hands_the_run_back(
    store_url: str,
) -> None:
    calls: Counter[str] = Counter()
    started = asyncio.Event()
    saga: Saga[Any] = Saga("graceful")

    @saga.step
    async def slow(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls["slow"] += 1
        started.set()
        await asyncio.sleep(0.3)
        return {"slow": "done"}

    @saga.step
    async def after(state: dict[str, Any], ctx: StepContext) -> None:
        calls["after"] += 1

    async def body() -> None:
        async with (
            AsyncEngine(store_url, lease_seconds=5.0) as first,
            AsyncEngine(store_url, lease_seconds=5.0) as second,
        ):
            first.register(saga)
            second.register(saga)
            await first.start(saga, run_id="g")
            worker = Worker(first, poll_interval=POLL)
            running = asyncio.ensure_future(worker.run())
            await started.wait()
            worker.stop(grace=5.0)
            await asyncio.wait_for(running, 5.0)
            record = await first.store.get_run("g")
            assert record is not None
            assert record.owner is None  # handed back at once, not left to lapse
            assert record.status == RunStatus.RUNNING
            assert record.wake_at is None  # due now, for whoever comes next
            assert kinds(await first.history("g")) == [
                "run_started",
                "step_started:slow",
                "step_succeeded:slow",  # the call in flight finished and was recorded
            ]
            assert (worker.stats.handed_back, worker.stats.finished) == (1, 0)

            async with working(second):
                done = await second.wait("g", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            assert done.state == {"slow": "done"}

    asyncio.run(body())
    assert calls == Counter({"slow": 1, "after": 1})  # the finished step was not run again


def test_a_stop_wakes_a_driver_waiting_on_a_timer_and_keeps_the_timer(store_url: str) -> None:
    saga = steps(Counter(), "flaky", retry_after=3.0)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="t")
            worker = Worker(engine, poll_interval=POLL, park_after=None)  # never parks
            running = asyncio.ensure_future(worker.run())
            waiting = await until(
                lambda: engine.store.get_run("t"), lambda r: r.wake_at is not None
            )
            assert waiting.owner == engine.owner  # held while it sleeps
            began = time.monotonic()
            worker.stop(grace=30.0)
            await asyncio.wait_for(running, 5.0)
            assert time.monotonic() - began < 2.0  # it did not sleep out the 3 s timer
            record = await engine.store.get_run("t")
            assert record is not None
            assert record.owner is None
            assert record.wake_at == pytest.approx(waiting.wake_at)
            assert worker.stats.handed_back == 1

    asyncio.run(body())


def test_a_call_still_running_after_the_grace_is_abandoned_and_its_run_released(
    store_url: str,
) -> None:
    started = asyncio.Event()
    saga: Saga[Any] = Saga("stuck")

    @saga.step
    async def hang(state: dict[str, Any], ctx: StepContext) -> None:
        started.set()
        await asyncio.sleep(60)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="h")
            worker = Worker(engine, poll_interval=POLL)
            running = asyncio.ensure_future(worker.run())
            await started.wait()
            began = time.monotonic()
            worker.stop(grace=0.2)
            await asyncio.wait_for(running, 5.0)
            assert 0.2 <= time.monotonic() - began < 2.0
            record = await engine.store.get_run("h")
            assert record is not None
            assert record.owner is None  # released: the next worker need not wait for the lease
            assert record.status == RunStatus.RUNNING
            assert kinds(await engine.history("h"))[-1] == "step_started:hang"
            assert worker.stats.handed_back == 1
            now = engine.clock()
            assert await engine.store.claim("h", owner="next", now=now, lease_until=now + 5)

    asyncio.run(body())


def test_a_second_stop_shortens_the_grace(store_url: str) -> None:
    started = asyncio.Event()
    saga: Saga[Any] = Saga("stuck")

    @saga.step
    async def hang(state: dict[str, Any], ctx: StepContext) -> None:
        started.set()
        await asyncio.sleep(60)

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="h2")
            worker = Worker(engine, poll_interval=POLL)
            running = asyncio.ensure_future(worker.run())
            await started.wait()
            worker.stop(grace=30.0)
            await asyncio.sleep(0.1)
            assert not running.done()
            worker.stop(grace=0)  # as a second SIGTERM does
            await asyncio.wait_for(running, 2.0)
            record = await engine.store.get_run("h2")
            assert record is not None
            assert record.owner is None

    asyncio.run(body())


def test_stop_before_run_makes_run_return_at_once(store_url: str) -> None:
    async def body() -> None:
        async with AsyncEngine(store_url) as engine:
            engine.register(steps(Counter(), "a"))
            await engine.start(steps(Counter(), "a"), run_id="untouched")
            worker = Worker(engine, poll_interval=POLL)
            worker.stop()
            await asyncio.wait_for(worker.run(), 2.0)
            assert worker.stats.claimed == 0
            assert (await engine.get("untouched")).status == RunStatus.PENDING

    asyncio.run(body())


# -- what goes wrong ----------------------------------------------------------------------


@pytest.mark.parametrize("mail", [False, True], ids=["no-mail", "with-mail"])
def test_a_run_whose_journal_does_not_fit_is_handed_back_with_a_timer_not_hot_looped(
    store_url: str, caplog: pytest.LogCaptureFixture, mail: bool
) -> None:
    """With mail waiting too (a cancel): mail makes a run due, but not past its hold."""
    if store_url.startswith("memory"):
        store_url += "-unfit"
    started = asyncio.Event()

    def make(step_name: str) -> Saga[Any]:
        saga: Saga[Any] = Saga("renamed")

        async def hang(state: dict[str, Any], ctx: StepContext) -> None:
            started.set()
            await asyncio.sleep(60)

        saga.add_step(hang, name=step_name)
        return saga

    calls: Counter[str] = Counter()
    good = steps(calls, "fine", name="good")

    async def body() -> None:
        dead = AsyncEngine(store_url, lease_seconds=0.1)
        doomed = asyncio.ensure_future(dead.run(make("reserve"), run_id="old"))
        await started.wait()
        crash(dead, doomed)
        await asyncio.sleep(0.2)  # its lease lapses
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            # Same name and version, but the step was renamed: a deployment mistake.
            engine.register(make("reserve_seat"), good)
            await engine.start(good, run_id="fine")
            if mail:
                await engine.store.post("old", "cancel", {"reason": "r"}, at=engine.clock())
            before = await engine.history("old")
            with caplog.at_level(logging.ERROR, logger="sagakit"):
                async with working(engine) as worker:
                    assert (await engine.wait("fine", timeout=10.0)).status == RunStatus.COMPLETED
                    await asyncio.sleep(0.25)  # five polls: a hot loop would claim it each time
                    if mail:  # more mail while it is held back changes nothing
                        await engine.store.post("old", "signal", {"name": "x"}, at=engine.clock())
                    await asyncio.sleep(0.25)
            assert worker.stats.claimed == 2  # "old" once, "fine" once
            assert len(await engine.store.mail("old")) == (2 if mail else 0)  # none lost
            record = await engine.store.get_run("old")
            assert record is not None
            assert record.owner is None
            assert record.status == RunStatus.RUNNING
            assert record.wake_at is not None
            assert record.wake_at > engine.clock() + 50  # looked at again in a minute
            assert await engine.history("old") == before  # nothing written to its journal
        await dead.close()

    asyncio.run(body())
    unfit = [r for r in caplog.records if "cannot be driven here" in r.getMessage()]
    assert len(unfit) == 1
    assert "journal of run 'old' does not fit saga 'renamed' version '1'" in unfit[0].getMessage()
    assert calls == Counter({"fine:fine": 1})


def test_a_worker_without_the_runs_version_never_claims_it_even_with_mail(
    store_url: str,
) -> None:
    calls: Counter[str] = Counter()
    old, new = steps(calls, "a", name="versioned"), steps(calls, "a", name="versioned")
    new.version = "2"  # the worker has only the newer version

    async def body() -> tuple[int, RunRecord | None]:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(old, run_id="v1-run")
            await engine.store.post("v1-run", "cancel", {"reason": "r"}, at=engine.clock())
            async with AsyncEngine(store_url, lease_seconds=5.0) as served:
                served.register(new)
                async with working(served) as worker:
                    await asyncio.sleep(10 * POLL)
            return worker.stats.claimed, await engine.store.get_run("v1-run")

    claimed, record = asyncio.run(body())
    assert claimed == 0
    assert record is not None
    assert (record.status, record.owner, record.mail) == (RunStatus.PENDING, None, 1)
    assert calls == Counter()


def test_claim_failures_are_logged_and_retried_with_backoff(
    store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "a")

    async def body() -> float:
        async with AsyncEngine(store_url, lease_seconds=5.0) as engine:
            await engine.start(saga, run_id="c")
            real = engine.store.claim_due
            failures = 0

            async def claim_due(**options: Any) -> list[RunRecord]:
                nonlocal failures
                if failures < 3:
                    failures += 1
                    raise StoreError("the database is down")
                return await real(**options)

            monkeypatch.setattr(engine.store, "claim_due", claim_due)
            began = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="sagakit"):
                async with working(engine):
                    done = await engine.wait("c", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            assert failures == 3
            return time.monotonic() - began

    took = asyncio.run(body())
    assert took >= 0.1 + 0.2 + 0.4 - 0.05  # it backed off: 0.1 s, doubling
    warned = [r.getMessage() for r in caplog.records if "could not claim runs" in r.getMessage()]
    assert len(warned) == 3
    assert "the database is down" in warned[0]
    assert calls == Counter({"a:c": 1})


def test_a_drive_the_store_fails_is_logged_and_the_run_taken_again_later(
    store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: Counter[str] = Counter()
    saga = steps(calls, "a", "b")

    async def body() -> None:
        async with AsyncEngine(store_url, lease_seconds=0.4) as engine:
            real = engine.store.commit
            broken = True

            async def commit(change: Commit) -> None:
                if broken and change.run_id == "unlucky":
                    raise StoreError("the connection dropped")
                await real(change)

            monkeypatch.setattr(engine.store, "commit", commit)
            await engine.start(saga, run_id="unlucky")
            await engine.start(saga, run_id="lucky")
            with caplog.at_level(logging.WARNING, logger="sagakit"):
                async with working(engine) as worker:
                    assert (await engine.wait("lucky", timeout=10.0)).status == "completed"
                    deadline = time.monotonic() + 5.0
                    while worker.stats.errors == 0:  # the driver's patience ran out
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.01)
                    broken = False  # the database is back; the lease lapses, the run resumes
                    done = await engine.wait("unlucky", timeout=10.0)
            assert done.status == RunStatus.COMPLETED
            assert worker.stats.claimed == 3

    asyncio.run(body())
    assert "run unlucky: left for later" in caplog.text
    # The first attempt's write-ahead record never landed, so step a had not run.
    assert calls == Counter({"a:lucky": 1, "b:lucky": 1, "a:unlucky": 1, "b:unlucky": 1})

"""AsyncEngine: the same behaviour as coroutines, many runs at once, leases."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    AttentionReport,
    EventKind,
    PermanentError,
    RetryPolicy,
    RunNotFound,
    RunStatus,
    Saga,
    StepContext,
)

from .helpers import crash, halting_saga


def counting_saga(calls: Counter[str], *, fail_every: int = 0) -> Saga[Any]:
    saga: Saga[Any] = Saga("counted")

    @saga.step
    async def reserve(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls[f"reserve:{ctx.run_id}"] += 1
        await asyncio.sleep(0)
        return {"reserved": True}

    @reserve.compensate
    async def release(state: dict[str, Any], ctx: StepContext) -> None:
        calls[f"release:{ctx.run_id}"] += 1

    @saga.step
    def charge(state: dict[str, Any], ctx: StepContext) -> None:
        calls[f"charge:{ctx.run_id}"] += 1
        if fail_every and state["n"] % fail_every == 0:
            raise PermanentError("declined")

    return saga


def run_async(body: Any) -> Any:
    return asyncio.run(body)


def test_many_runs_at_once_each_settle_correctly(store_url: str) -> None:
    calls: Counter[str] = Counter()
    saga = counting_saga(calls, fail_every=3)

    async def body() -> list[Any]:
        async with AsyncEngine(store_url) as engine:
            runs = await asyncio.gather(
                *(engine.run(saga, {"n": n}, run_id=f"r{n}") for n in range(60))
            )
            assert [r.id for r in await engine.runs(limit=1000)] != []
            return runs

    runs = run_async(body())
    for n, run in enumerate(runs):
        expected = RunStatus.ROLLED_BACK if n % 3 == 0 else RunStatus.COMPLETED
        assert run.status == expected, run.id
        assert calls[f"reserve:r{n}"] == 1
        assert calls[f"release:r{n}"] == (1 if n % 3 == 0 else 0)


def test_async_engine_reads_and_operator_actions(store_url: str) -> None:
    reports: list[AttentionReport] = []
    saga: Saga[Any] = Saga("async-ops")
    broken = {"yes"}

    @saga.step
    async def book(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @book.compensate(retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    async def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        if broken:
            raise RuntimeError("provider down")

    @saga.step
    async def pay(state: dict[str, Any], ctx: StepContext) -> None:
        raise PermanentError("declined")

    async def hook(report: AttentionReport) -> None:
        await asyncio.sleep(0)
        reports.append(report)

    async def body() -> None:
        async with AsyncEngine(store_url, on_attention=hook) as engine:
            run = await engine.run(saga, run_id="a1")
            assert run.status == RunStatus.NEEDS_ATTENTION
            assert [r.id for r in await engine.runs(status="needs_attention")] == ["a1"]
            assert (await engine.get("a1")).status == RunStatus.NEEDS_ATTENTION
            broken.clear()
            assert (await engine.retry("a1")).status == RunStatus.ROLLED_BACK
            history = await engine.history("a1")
            assert [e.kind for e in history].count(EventKind.RETRIED) == 1
            with pytest.raises(RunNotFound, match="missing"):
                await engine.get("missing")

    run_async(body())
    assert [r.step for r in reports] == ["book"]


def test_a_failing_alert_hook_is_logged_and_never_raised(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    saga = halting_saga("hook")

    def hook(report: AttentionReport) -> None:
        raise ValueError("pager is broken")

    async def body() -> RunStatus:
        async with AsyncEngine(store_url, on_attention=hook) as engine:
            return (await engine.run(saga, run_id="h")).status

    with caplog.at_level(logging.ERROR, logger="sagakit"):
        assert run_async(body()) == RunStatus.NEEDS_ATTENTION
    assert "run h: its alert to integration.test_async_engine." in caplog.text
    assert "failed (attempt 1): ValueError: pager is broken; trying again in" in caplog.text
    assert "run h needs attention" in caplog.text
    record = next(r for r in caplog.records if "needs attention" in r.getMessage())
    assert record.run_id == "h"  # type: ignore[attr-defined]
    assert record.step == "book"  # type: ignore[attr-defined]


def test_a_live_lease_is_renewed_so_recover_elsewhere_does_not_steal_the_run(
    store_url: str,
) -> None:
    if store_url.startswith("memory"):
        store_url = store_url + "-lease"
    calls: Counter[str] = Counter()
    saga: Saga[Any] = Saga("slow")

    @saga.step
    async def slow(state: dict[str, Any], ctx: StepContext) -> None:
        calls["slow"] += 1
        await asyncio.sleep(1.0)  # several lease lengths

    async def body() -> None:
        async with (
            AsyncEngine(store_url, lease_seconds=0.3) as owner,
            AsyncEngine(store_url, lease_seconds=0.3) as other,
        ):
            other.register(saga)
            running = asyncio.ensure_future(owner.run(saga, run_id="s"))
            for _ in range(8):
                await asyncio.sleep(0.1)
                assert await other.recover() == []
            assert (await running).status == RunStatus.COMPLETED

    run_async(body())
    assert calls["slow"] == 1


def test_a_run_abandoned_mid_step_is_recovered_forward_by_another_engine(store_url: str) -> None:
    if store_url.startswith("memory"):
        store_url = store_url + "-abandon"
    calls: Counter[str] = Counter()
    started = asyncio.Event()
    saga: Saga[Any] = Saga("abandoned")

    @saga.step
    async def first(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls[f"first:{ctx.attempt}"] += 1
        if ctx.attempt == 1:
            started.set()
            await asyncio.sleep(60)  # the process "dies" here
        return {"first": ctx.idempotency_key}

    @saga.step
    async def second(state: dict[str, Any], ctx: StepContext) -> None:
        calls["second"] += 1

    async def body() -> None:
        # The dead engine's lease is long enough that the survivor's first
        # look (after opening its store, slow on a loaded machine) still
        # finds it held.
        dead = AsyncEngine(store_url, lease_seconds=1.0)
        doomed = asyncio.ensure_future(dead.run(saga, run_id="ab"))
        await started.wait()
        crash(dead, doomed)
        async with AsyncEngine(store_url, lease_seconds=0.2) as survivor:
            survivor.register(saga)
            assert await survivor.recover() == []  # the lease has not lapsed yet
            await asyncio.sleep(1.1)
            (run,) = await survivor.recover()
            assert run.status == RunStatus.COMPLETED
            assert run.state["first"] == "ab/first"
        await dead.close()

    run_async(body())
    assert calls == Counter({"first:1": 1, "first:2": 1, "second": 1})


def test_recover_leaves_runs_of_unknown_sagas_untouched(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if store_url.startswith("memory"):
        store_url = store_url + "-unknown"
    started = asyncio.Event()
    saga: Saga[Any] = Saga("orphan", version="7")

    @saga.step
    async def hang(state: dict[str, Any], ctx: StepContext) -> None:
        started.set()
        await asyncio.sleep(60)

    async def body() -> None:
        dead = AsyncEngine(store_url, lease_seconds=0.1)
        doomed = asyncio.ensure_future(dead.run(saga, run_id="o"))
        await started.wait()
        crash(dead, doomed)
        await asyncio.sleep(0.2)
        async with AsyncEngine(store_url) as other:
            with caplog.at_level(logging.WARNING, logger="sagakit"):
                assert await other.recover() == []
            assert (await other.get("o")).status == RunStatus.RUNNING
        await dead.close()

    run_async(body())
    assert "saga orphan version 7 is not registered here" in caplog.text


def test_a_paused_owner_whose_run_was_taken_over_writes_nothing_when_it_wakes(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Fencing: the lease epoch moved on, so every write of the old owner is refused."""
    calls: Counter[str] = Counter()
    started = asyncio.Event()
    wake_up = asyncio.Event()
    saga: Saga[Any] = Saga("fenced")

    @saga.step
    async def charge(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls[f"charge:{ctx.attempt}"] += 1
        if ctx.attempt == 1:
            started.set()
            await wake_up.wait()  # the owner is paused here (think SIGSTOP)
        return {"charged_by": ctx.attempt}

    @saga.step
    async def ship(state: dict[str, Any], ctx: StepContext) -> None:
        calls["ship"] += 1

    async def body() -> None:
        async with (
            AsyncEngine(store_url, lease_seconds=0.2) as paused,
            AsyncEngine(store_url, lease_seconds=0.2) as other,
        ):
            first = asyncio.ensure_future(paused.run(saga, run_id="f"))
            await started.wait()
            assert paused.drives.heartbeat.task is not None
            paused.drives.heartbeat.task.cancel()  # paused: no more renewals
            await asyncio.sleep(0.3)
            other.register(saga)
            (taken,) = await other.recover()
            assert taken.status == RunStatus.COMPLETED
            settled = await other.history("f")
            with caplog.at_level(logging.WARNING, logger="sagakit"):
                wake_up.set()
                seen_by_paused = await first
            assert await other.history("f") == settled  # not one event more
            assert seen_by_paused.status == RunStatus.COMPLETED
            assert seen_by_paused.state == {"charged_by": 2}

    run_async(body())
    assert calls == Counter({"charge:1": 1, "charge:2": 1, "ship": 1})
    assert "lease lost to another process" in caplog.text

"""The engine under stress: slow hooks, stale operators, a bad journal, a busy store."""

from __future__ import annotations

import asyncio
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
    RunStatus,
    Saga,
    StepContext,
    StoreError,
)

from .helpers import crash, halting_saga


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
        assert kinds[-3:] == [EventKind.NEEDS_ATTENTION, EventKind.RESOLVED, EventKind.RUN_FINISHED]


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

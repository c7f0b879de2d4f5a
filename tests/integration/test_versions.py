"""Definition versions: runs stay pinned to the version they started with."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sagakit import (
    AsyncEngine,
    Engine,
    RunStatus,
    Saga,
    SagaError,
    SagaNotRegistered,
    StepContext,
    Worker,
)
from sagakit.definition import version_key

from .helpers import halting_saga, serving, wait_for_status


def order(version: str, calls: list[tuple[str, str]]) -> Saga[Any]:
    """One step that records which version's code ran it."""
    saga: Saga[Any] = Saga("order", version=version)

    @saga.step
    def work(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        calls.append((version, ctx.version))
        return {"ran_on": version}

    return saga


def test_new_runs_take_the_newest_version(store_url: str) -> None:
    calls: list[tuple[str, str]] = []
    with Engine(store_url) as engine:
        engine.register(order("1.9", calls), order("1.10", calls), order("1.2", calls))
        assert engine.versions("order") == ["1.2", "1.9", "1.10"]
        assert engine.saga("order").version == "1.10"
        assert engine.saga("order", "1.9").version == "1.9"
        run = engine.run("order", {})
    assert (run.version, run.status, run.data["ran_on"]) == ("1.10", RunStatus.COMPLETED, "1.10")
    assert calls == [("1.10", "1.10")]


def test_unknown_names_and_versions_are_clear_errors(store_url: str) -> None:
    with Engine(store_url) as engine:
        engine.register(order("1", []))
        with pytest.raises(SagaError, match=r"no saga named 'invoice' is registered"):
            engine.run("invoice", {})
        with pytest.raises(SagaError, match=r"saga 'order' has no version '7' .*registered: 1"):
            engine.saga("order", "7")


def test_an_old_run_finishes_on_its_own_versions_code(store_url: str) -> None:
    calls: list[tuple[str, str]] = []
    v1, v2 = order("1", calls), order("2", calls)
    with Engine(store_url) as engine:
        old = engine.start(v1, {}, run_id="old")
        new = engine.start("order", {}, run_id="new")  # v1 is the newest known here
        engine.register(v2)
        newest = engine.start("order", {}, run_id="newest")
        assert (old.version, new.version, newest.version) == ("1", "1", "2")
        with serving(store_url, v1, v2):
            for run_id, version in (("old", "1"), ("new", "1"), ("newest", "2")):
                run = wait_for_status(engine, run_id, RunStatus.COMPLETED)
                assert run.data["ran_on"] == version
    assert sorted(calls) == [("1", "1"), ("1", "1"), ("2", "2")]


def test_a_run_whose_version_is_not_loaded_is_left_untouched_and_reported(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, str]] = []

    async def main() -> None:
        async with AsyncEngine(store_url) as engine:
            await engine.start(order("1", calls), {}, run_id="pinned")
        async with AsyncEngine(store_url) as engine:
            engine.register(order("2", calls))
            worker = Worker(engine, poll_interval=0.02, report_interval=0.05)
            task = asyncio.ensure_future(worker.run())
            await engine.run("order", {}, run_id="fresh")  # a v2 run goes through meanwhile
            await asyncio.sleep(0.3)  # several polls and several reports
            worker.stop(0)
            await task
            run = await engine.get("pinned")
            assert run.status is RunStatus.PENDING
            assert len(await engine.history("pinned")) == 1  # only run_started

    with caplog.at_level(logging.WARNING, logger="sagakit"):
        asyncio.run(main())
    assert calls == [("2", "2")]
    reports = [r.getMessage() for r in caplog.records if "pinned" in r.getMessage()]
    assert reports == [
        "run pinned of saga order is on version 1, which this worker does not have "
        "(it has 2); left untouched until a worker with that version serves it"
    ]


def test_an_operator_cannot_retry_a_run_on_another_versions_code(store_url: str) -> None:
    with Engine(store_url) as engine:
        halted = engine.run(halting_saga("order"), {})
        assert halted.status is RunStatus.NEEDS_ATTENTION
    with Engine(store_url) as engine:
        engine.register(order("2", []))
        with pytest.raises(SagaNotRegistered) as caught:
            engine.retry(halted.id)
        assert engine.get(halted.id).status is RunStatus.NEEDS_ATTENTION
    assert str(caught.value) == (
        f"run {halted.id!r} belongs to saga 'order' version '1', which this engine has not "
        "registered; this engine has version(s) '2' of that saga, and a run never moves to "
        "another version's code; register that version (engine.register, or --app with the "
        "module or YAML file that defines it) before acting on it"
    )


def test_recover_leaves_other_versions_alone(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, str]] = []
    with Engine(store_url) as engine:
        engine.start(order("1", calls), {}, run_id="pinned")
    with Engine(store_url) as engine, caplog.at_level(logging.WARNING, logger="sagakit"):
        engine.register(order("2", calls))
        assert engine.recover() == []
        assert engine.get("pinned").status is RunStatus.PENDING
    assert calls == []
    assert any(
        "run pinned of saga order version 1 is not registered here (versions here: 2)"
        in r.getMessage()
        for r in caplog.records
    )


def test_version_order_compares_numbers_as_numbers() -> None:
    versions = ["2", "1.10.0", "1.9.2", "1.0", "2.0.rc1", "2.0.0", "1.0.0"]
    assert sorted(versions, key=version_key) == [
        "1.0",
        "1.0.0",
        "1.9.2",
        "1.10.0",
        "2",
        "2.0.rc1",
        "2.0.0",
    ]

"""`Engine.check` on every store: the runs in flight a changed definition would not fit.

Runs are recorded with one definition, then checked by an engine that
registers another, as a deploy would. What the check says a worker would do
is held against what `recover` (which claims runs as a worker does) then does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from sagakit import Engine, MisfitKind, RetryPolicy, RunStatus, Saga, StepContext
from sagakit.engine.checking import check_runs
from sagakit.engine.registry import SagaRegistry
from sagakit.store import open_store

LATER = RetryPolicy(max_attempts=3, initial_delay=3600.0, backoff=1.0, jitter=0.0)


def booking(*, version: str = "1", second: str = "pay", extra: str | None = None) -> Saga[Any]:
    """book, then ``second`` (whose first attempt fails, retried an hour later)."""
    saga: Saga[Any] = Saga("booking", version=version)

    @saga.step
    def book(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    @book.compensate
    def unbook(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    if extra is not None:
        saga.add_step(lambda state, ctx: None, name=extra)

    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        if ctx.attempt == 1 and not state.get("smooth"):
            raise ConnectionError("gateway busy")

    saga.add_step(pay, name=second, retry=LATER)
    return saga


def other() -> Saga[Any]:
    saga: Saga[Any] = Saga("other")

    @saga.step
    def only(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    return saga


def record(url: str) -> None:
    """Two bookings parked on their retry, one completed, one run of another saga pending."""
    with Engine(url) as engine:
        engine.register(booking(), other())
        engine.start("booking", {}, run_id="b1")
        engine.start("booking", {}, run_id="b2")
        assert engine.run("booking", {"smooth": True}, run_id="done").status is RunStatus.COMPLETED
        engine.recover()
        engine.start("other", {}, run_id="o1", deadline=None)
        assert engine.get("b1").status is RunStatus.RUNNING
        assert engine.get("b2").status is RunStatus.RUNNING


@pytest.fixture
def url(store_url: str) -> str:
    """Every store: memory, SQLite and PostgreSQL (see tests/conftest.py)."""
    record(store_url)
    return store_url


def test_the_same_definitions_fit_every_run(url: str) -> None:
    with Engine(url) as engine:
        engine.register(booking(), other())
        report = engine.check()
    assert report.ok
    assert report.checked == 3  # b1, b2 and o1: the completed run is not read
    assert report.misfits == []


def test_a_renamed_step_is_refused_and_recover_holds_those_runs_back(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Two hours on: the parked retries are due, so a claiming engine takes them up.
    with Engine(url, clock=lambda: time.time() + 7200) as engine:
        engine.register(booking(second="charge"), other())
        report = engine.check()
        assert not report.ok
        assert [(m.run_id, m.kind) for m in sorted(report.misfits, key=lambda m: m.run_id)] == [
            ("b1", MisfitKind.REFUSED),
            ("b2", MisfitKind.REFUSED),
        ]
        misfit = report.misfits[0]
        assert (misfit.saga, misfit.version, misfit.status) == ("booking", "1", RunStatus.RUNNING)
        assert misfit.reason == (
            "step 'pay' in its journal not in the definition (renamed or removed): "
            "a worker would hold it back"
        )
        # What the check said, a claiming engine does: those two are held back,
        # the run that fits is driven.
        with caplog.at_level(logging.ERROR, logger="sagakit"):
            assert [run.id for run in engine.recover()] == ["o1"]
    held = {
        r.getMessage().split()[1] for r in caplog.records if "cannot be resumed" in r.getMessage()
    }
    assert held == {"b1", "b2"}


def test_a_step_added_before_steps_done_is_a_change_a_worker_would_still_drive(url: str) -> None:
    with Engine(url) as engine:
        engine.register(booking(extra="check_card"), other())
        report = engine.check(saga="booking")
    assert report.checked == 2
    assert {m.kind for m in report.misfits} == {MisfitKind.CHANGED}
    assert report.misfits[0].reasons == (
        "step 'pay' ran before step 'check_card' had finished, but the definition now runs "
        "'check_card' first (a step added, moved or regrouped)",
    )


def test_a_version_no_longer_registered_has_no_definition(url: str) -> None:
    with Engine(url) as engine:
        engine.register(booking(version="2"))  # v1 dropped, and "other" not loaded
        report = engine.check()
    by_id = {m.run_id: m for m in report.misfits}
    assert set(by_id) == {"b1", "b2", "o1"}
    assert by_id["b1"].kind is MisfitKind.NO_DEFINITION
    assert by_id["b1"].reason == (
        "no definition for saga 'booking' version '1' (versions loaded: 2): "
        "a worker would leave it untouched"
    )
    assert "(versions loaded: none)" in by_id["o1"].reason
    with Engine(url) as engine:
        engine.register(booking(), booking(version="2"), other())  # both versions: all fit
        assert engine.check().ok


def test_the_check_reads_page_by_page_and_writes_nothing(url: str) -> None:
    async def scan() -> list[tuple[str, MisfitKind | None]]:
        store = open_store(url, read_only=True)
        registry = SagaRegistry()
        registry.register(booking(second="charge"))
        await store.open()
        try:
            seen = []
            async for record, misfit in check_runs(store, registry, page=1):
                seen.append((record.id, None if misfit is None else misfit.kind))
            return seen
        finally:
            await store.close()

    with Engine(url) as engine:
        before = {r.id: (r.status, r.updated_at, engine.history(r.id)) for r in engine.runs()}
    seen = asyncio.run(scan())
    assert sorted(seen) == [
        ("b1", MisfitKind.REFUSED),
        ("b2", MisfitKind.REFUSED),
        ("o1", MisfitKind.NO_DEFINITION),
    ]
    with Engine(url) as engine:
        after = {r.id: (r.status, r.updated_at, engine.history(r.id)) for r in engine.runs()}
    assert after == before

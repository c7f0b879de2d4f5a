"""Reservations in the journal: what a run took, refreshed, released and lost is
journaled with the next outcome, and `sagakit show` / `history` tell it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sagakit import Engine, EventKind, RetryPolicy, RunStatus, Saga, StepContext

State = dict[str, Any]
T0 = 1_700_000_000.0
RESERVATIONS = (
    EventKind.RESERVATION_TAKEN,
    EventKind.RESERVATION_REFRESHED,
    EventKind.RESERVATION_RELEASED,
    EventKind.RESERVATION_LAPSED,
)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def clock_time(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def sagakit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sagakit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def told(engine: Engine, run_id: str) -> list[tuple[EventKind, str | None, dict[str, Any]]]:
    return [(e.kind, e.step, e.data) for e in engine.history(run_id) if e.kind in RESERVATIONS]


def test_a_run_journals_what_it_reserves_refreshes_and_releases_and_show_prints_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    saga: Saga[Any] = Saga("seats")

    @saga.step
    def hold(state: State, ctx: StepContext) -> State:
        ctx.reserve_all(["seat:1", "seat:2"], ttl=30)
        clock.now += 10
        ctx.reserve("seat:1", ttl=30)  # a refresh
        ctx.release("seat:2")
        return {"held": True}

    @saga.step
    def plain(state: State, ctx: StepContext) -> None:
        return None

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Engine(url, clock=clock) as engine:
        run = engine.run(saga, {}, run_id="seats-1")
        assert run.status is RunStatus.COMPLETED
        assert told(engine, "seats-1") == [
            (
                EventKind.RESERVATION_TAKEN,
                "hold",
                {"names": ["seat:1", "seat:2"], "ttl": 30, "expires_at": T0 + 30},
            ),
            (
                EventKind.RESERVATION_REFRESHED,
                "hold",
                {"names": ["seat:1"], "ttl": 30, "expires_at": T0 + 40},
            ),
            (EventKind.RESERVATION_RELEASED, "hold", {"names": ["seat:2"], "freed": 1}),
            # The commit that finishes the run frees what it still holds.
            (EventKind.RESERVATION_RELEASED, None, {"names": ["seat:1"], "finished": True}),
        ]
        history = engine.history("seats-1")
        kinds = [e.kind for e in history]
        # Journaled with the step's outcome, after its start; the run still ends the journal.
        assert kinds.index(EventKind.RESERVATION_TAKEN) > kinds.index(EventKind.STEP_STARTED)
        assert kinds[-1] is EventKind.RUN_FINISHED
        assert engine.reservations() == []

    shown = sagakit("show", "seats-1", "--db", url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "reserved" in out
    assert f"hold: seat:1, seat:2 until {clock_time(T0 + 30)}" in out
    assert f"hold: seat:1 until {clock_time(T0 + 40)}" in out
    assert "hold: seat:2" in out
    assert "seat:1 (the run finished)" in out
    history_out = sagakit("history", "seats-1", "--db", url)
    assert history_out.returncode == 0, history_out.stderr
    assert "reservation_refreshed" in history_out.stdout
    assert f"seat:1 until {clock_time(T0 + 40)}" in history_out.stdout


def test_a_run_that_reserves_nothing_journals_no_reservation(engine: Engine) -> None:
    saga: Saga[Any] = Saga("nothing")

    @saga.step
    def one(state: State, ctx: StepContext) -> State:
        return {"x": 1}

    run = engine.run(saga, {}, run_id="nothing")
    assert run.status is RunStatus.COMPLETED
    assert told(engine, "nothing") == []


def test_the_lapse_that_fails_a_step_and_an_expiry_found_later_are_journaled(
    store_url: str,
) -> None:
    clock = FakeClock()
    saga: Saga[Any] = Saga("lapsing")

    @saga.step
    def first(state: State, ctx: StepContext) -> State:
        ctx.reserve("gate", ttl=5)
        clock.now += 6  # the step outlives its reservation
        ctx.reserve("gate", ttl=30)  # taken again, after a while without it
        ctx.reserve("door", ttl=5)
        clock.now += 6
        ctx.release("door")  # it ran out before being let go
        return {"first": True}

    @first.compensate
    def undo_first(state: State, ctx: StepContext) -> None:
        return None

    # Tried once: the lapse is what is tested, not the step's retries.
    @saga.step(retry=RetryPolicy(max_attempts=1))
    def second(state: State, ctx: StepContext) -> State:
        ctx.reserve("gate", ttl=5)
        clock.now += 6  # and this time nobody refreshes it before the commit
        return {"second": True}

    with Engine(store_url, clock=clock) as engine:
        run = engine.run(saga, {}, run_id="lapsing")
        assert run.status is RunStatus.ROLLED_BACK
        lapses = [
            (step, data["name"], data["found"])
            for kind, step, data in told(engine, "lapsing")
            if kind is EventKind.RESERVATION_LAPSED
        ]
        assert lapses == [
            ("first", "gate", "reserve"),
            ("first", "door", "release"),
            ("second", "gate", "commit"),
        ]
        history = engine.history("lapsing")
        lapse = next(e for e in history if e.data.get("found") == "commit")
        failed = next(e for e in history if e.kind is EventKind.STEP_FAILED)
        assert lapse.seq < failed.seq
        assert failed.step == "second"
        assert lapse.data["holder"] is None
        assert lapse.data["ttl"] == 5

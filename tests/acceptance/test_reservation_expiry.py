"""A reservation held by a process that was SIGKILLed frees itself after its ttl.

A real subprocess (``reserveapp.py``) reserves ``seat:1`` with a 2 s ttl and
blocks; the test kills it. Until the ttl runs out, another run asking with
``wait=0`` is refused, naming the dead run; one asking with ``wait=10`` gets
the seat as soon as the reservation expired, not before and not much later.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sagakit import (
    Engine,
    EventKind,
    Reservation,
    ReservationBusy,
    RetryPolicy,
    RunStatus,
    Saga,
    StepContext,
)
from sagakit.store import open_store

APP = Path(__file__).with_name("reserveapp.py")
TTL = 2.0
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    found: str = request.getfixturevalue("postgres_url")
    return found


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the app exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the app if it still runs (the caller checks that it did)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        assert stream is not None
        stream.close()


def reservations(url: str) -> list[Reservation]:
    """What the store holds, read through a store of the test's own."""

    async def read() -> list[Reservation]:
        store = open_store(url)
        await store.open()
        try:
            return await store.reservations()
        finally:
            await store.close()

    return asyncio.run(read())


def taker_saga(busy: list[ReservationBusy]) -> Saga[Any]:
    saga: Saga[Any] = Saga("seat-taker")

    @saga.step(retry=RetryPolicy(max_attempts=1))  # one try: the test counts the refusals
    def take(state: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        try:
            held = ctx.reserve("seat:1", ttl=5, wait=state["wait"])
        except ReservationBusy as exc:
            busy.append(exc)
            raise
        return {"holder": held.run_id, "got_at": time.time()}

    return saga


def test_a_killed_holders_reservation_expires_and_a_waiting_run_takes_it(
    url: str, tmp_path: Path
) -> None:
    busy: list[ReservationBusy] = []
    taker = taker_saga(busy)
    marker = tmp_path / "holding.json"
    # Open (and create) the store first, so that after the kill only the runs remain to do.
    with Engine(url, lease_seconds=5.0) as engine:
        engine.register(taker)
        proc = subprocess.Popen(
            [sys.executable, str(APP), url, "dead", str(marker), str(TTL)],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(marker, proc)
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL
        holding = json.loads(marker.read_text())
        expires_at: float = holding["expires_at"]
        assert holding["run_id"] == "dead"
        assert time.time() < expires_at, "too slow to see the reservation before it expired"

        early = engine.run(taker, {"wait": 0.0}, run_id="early")
        assert time.time() < expires_at, "the wait=0 attempt ran past the ttl: inconclusive"
        assert early.status is RunStatus.FAILED  # nothing before the step to compensate
        assert [(b.name, b.holder, b.expires_at) for b in busy] == [("seat:1", "dead", expires_at)]
        assert early.error is not None
        assert early.error.type == "sagakit.errors.ReservationBusy"
        assert "held by run 'dead'" in early.error.message

        started = time.time()
        late = engine.run(taker, {"wait": 10.0}, run_id="late")
        took = late.state["got_at"] - started
        assert late.status is RunStatus.COMPLETED
        assert late.state["holder"] == "late"
        assert len(busy) == 1  # the waiting run was never refused
        assert late.state["got_at"] >= expires_at  # not before the dead run's ttl ran out
        assert took >= expires_at - started  # the whole remaining ttl was waited out
        assert took < TTL + 3.0  # and not much more (the wait polls every 0.5 s at most)
        assert late.state["got_at"] - expires_at < 1.5

        # Nobody recovered the dead run: it is still in its step, but holds nothing.
        dead = engine.get("dead")
        assert dead.status is RunStatus.RUNNING
        started_events = [e for e in engine.history("dead") if e.kind is EventKind.STEP_STARTED]
        assert [(e.step, e.attempt) for e in started_events] == [("hold", 1)]
    assert reservations(url) == []  # the taker finished and freed it

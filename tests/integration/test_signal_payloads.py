"""A signal's payload is checked against the saga's state model, keys included,
whether the engine that posts it has the saga loaded or a worker reads it later."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from sagakit import AsyncEngine, Engine, Event, Run, RunStatus, Saga, StateError, Worker


class Trip(BaseModel):
    london: str = "Ritz"


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    london: str = "Ritz"


def _paused(engine: Engine, model: type[BaseModel], run_id: str) -> Saga[Any]:
    saga: Saga[Any] = Saga(f"signal-{model.__name__.lower()}", state=model)
    saga.wait_for("go")
    assert engine.run(saga, {}, run_id=run_id).status is RunStatus.PAUSED
    return saga


def test_a_payload_key_the_state_model_lacks_is_refused_and_nothing_is_posted(
    engine: Engine,
) -> None:
    _paused(engine, Trip, "t1")
    before = engine.history("t1")
    with pytest.raises(StateError, match=r"has a key the state model Trip does not have: 'paris'"):
        engine.signal("t1", "go", {"london": "Savoy", "paris": "Meurice"})
    assert engine.history("t1") == before
    assert engine.get("t1").status is RunStatus.PAUSED


def test_a_model_that_allows_extra_keys_takes_them(engine: Engine) -> None:
    _paused(engine, Open, "o1")
    run = engine.signal("o1", "go", {"london": "Savoy", "note": "late check-in"})
    assert run.status is RunStatus.COMPLETED


def test_a_worker_journals_a_posted_payload_with_unknown_keys_as_ignored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Engine(url) as typed:
        saga = _paused(typed, Trip, "t2")
    # An engine without the saga (as `sagakit signal` without --app) only posts it.
    with Engine(url) as blind:
        posted = blind.signal("t2", "go", {"paris": "Meurice"})
        assert posted.status is RunStatus.PAUSED

    async def serve() -> tuple[list[Event], Run]:
        async with AsyncEngine(url) as engine:
            engine.register(saga)
            worker = Worker(engine, poll_interval=0.02)
            task = asyncio.ensure_future(worker.run())
            try:
                deadline = time.monotonic() + 10.0
                while (record := await engine.store.get_run("t2")) is not None and record.mail:
                    assert time.monotonic() < deadline, "the worker never read the signal"
                    await asyncio.sleep(0.02)
            finally:
                worker.stop(grace=5.0)
                await asyncio.wait_for(task, 10.0)
            return await engine.history("t2"), await engine.get("t2")

    events, run = asyncio.run(serve())
    received = [e for e in events if str(e.kind) == "signal_received"]
    assert len(received) == 1
    assert "does not have: 'paris'" in received[0].data["ignored"]
    assert run.status is RunStatus.PAUSED
    assert "paris" not in run.state.model_dump()

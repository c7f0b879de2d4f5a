"""Edges of writing a big state by its changes, on the stores that do it.

The store contract (`BigStateContract`) checks that a big state always reads
back whole; these tests place a run exactly at the edge where its changes
would outweigh its snapshot, which only the store's own bookkeeping
(`sagakit.store.changes.StateChanges`) can tell, and commit there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic_core
import pytest

from sagakit.journal import Event, EventKind
from sagakit.store import open_store
from sagakit.store.testing.bigstate import big_state
from sagakit.store.testing.support import T0, A, change, record


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "postgresql":
        found: str = request.getfixturevalue("postgres_url")
        return found
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_a_commit_without_events_at_the_edge_of_the_changes_is_written(url: str) -> None:
    # A timer set or a run released commits no event: its (empty) change
    # writes nothing, so it must not tip the run into a whole write either.
    async def body() -> None:
        store = open_store(url)
        await store.open()
        try:
            state = big_state()
            first = Event("r1", 1, EventKind.RUN_STARTED, T0, data={"state": state})
            await store.create_run(record("r1", state=state), [first])
            seq = 1

            async def step(sets: dict[str, Any]) -> None:
                nonlocal state, seq
                seq += 1
                state = {**state, **sets}
                event = Event(
                    "r1", seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": sets}
                )
                await store.commit(change("r1", A, (event,), state=state))

            await step({"k000": "x" * 400})
            known = store._states._known["r1"]  # type: ignore[attr-defined]
            key = 1
            while True:
                room = known.snapshot - known.pending
                one = len(pydantic_core.to_json({f"k{key:03d}": "y" * 400}))
                if room >= 2 * one:
                    await step({f"k{key:03d}": "y" * 400})
                    key += 1
                    known = store._states._known["r1"]  # type: ignore[attr-defined]
                    continue
                # The last change leaves one byte of room.
                empty = len(pydantic_core.to_json({f"k{key:03d}": ""}))
                await step({f"k{key:03d}": "z" * (room - 1 - empty)})
                break
            known = store._states._known["r1"]  # type: ignore[attr-defined]
            assert known.snapshot - known.pending == 1
            await store.commit(change("r1", A, (), state=dict(state), wake_at=T0 + 100))
            stored = await store.get_run("r1")
            assert stored is not None
            assert (stored.state, stored.wake_at) == (state, T0 + 100)
        finally:
            await store.close()

    asyncio.run(body())

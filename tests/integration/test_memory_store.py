"""The memory store's own behaviour: private stores, and no local transactions.

The shared contract runs on the memory store in ``tests/contract``.
"""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import StateError, StoreError
from sagakit.journal import Event, EventKind
from sagakit.store.testing import T0, change, new_run, opened, record


def test_private_memory_stores_share_nothing() -> None:
    async def body() -> None:
        async with opened("memory://") as a, opened("memory://") as b:
            await new_run(a, "r1")
            assert await b.get_run("r1") is None

    asyncio.run(body())


def test_the_memory_store_has_no_local_transactions() -> None:
    async def body() -> None:
        async with opened("memory://") as store:
            with pytest.raises(StoreError, match=r"memory://.*cannot run local transactions"):
                store.local_transaction()

    asyncio.run(body())


def test_event_data_is_refused_naming_the_event_and_a_nan_string_is_kept() -> None:
    # The memory store words an event's name only once its data is refused
    # (`_data_text`): the refusals must still name it, on a commit and on a
    # create, and data that merely says "NaN" must still be stored as it is.
    def succeeded(seq: int, data: dict[str, object]) -> Event:
        return Event("r1", seq, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1, data=data)

    async def body() -> None:
        async with opened("memory://") as store:
            await new_run(store, "r1")
            refused: list[tuple[dict[str, object], str]] = [
                ({"x": float("nan")}, "event 2 data of run 'r1' holds NaN or Infinity"),
                ({"x": float("-inf")}, "event 2 data of run 'r1' holds NaN or Infinity"),
                ({"x": object()}, "event 2 data of run 'r1' is not JSON"),
            ]
            for data, message in refused:
                with pytest.raises(StateError, match=message):
                    await store.commit(change("r1", events=(succeeded(2, data),)))
            started = Event("r2", 1, EventKind.RUN_STARTED, T0, data={"x": float("nan")})
            with pytest.raises(StateError, match="event 1 data of run 'r2' holds NaN"):
                await store.create_run(record("r2"), [started])
            kept = {"note": "NaN", "also": "Infinity", "n": 1.5}
            await store.commit(change("r1", events=(succeeded(2, kept),)))
            assert (await store.journal("r1"))[-1].data == kept
            assert await store.get_run("r2") is None

    asyncio.run(body())

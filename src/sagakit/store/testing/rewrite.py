"""The contract for rewriting stored data in place (`Store.rewrite_data`).

A store that does not implement it (`Store.rewrite_data` as the base class
has it) skips these tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from sagakit.journal import JSON, Event, EventKind
from sagakit.store import Store
from sagakit.store.base import DataKind, Rewritten
from sagakit.store.testing.support import T0, change, contract, new_run


def _rewrites(store: Store) -> None:
    if type(store).rewrite_data is Store.rewrite_data:
        pytest.skip(f"{type(store).__name__} does not rewrite its data in place")


async def _three_runs(store: Store) -> None:
    """Runs r1..r3, each with a result event and a signal waiting."""
    for number in (1, 2, 3):
        run_id = f"r{number}"
        await new_run(store, run_id, state={"n": number})
        done = Event(run_id, 2, EventKind.STEP_SUCCEEDED, T0, "s", 1, {"result": {"n": number}})
        await store.commit(change(run_id, events=(done,), state={"n": number}))
        await store.post(run_id, "signal", {"name": "go", "payload": {"n": number}}, at=T0)


class RewriteContract:
    """What every store that rewrites its data in place does."""

    @contract
    async def test_rewrite_data_replaces_what_the_function_returns(self, store: Store) -> None:
        _rewrites(store)
        await _three_runs(store)
        seen: list[tuple[DataKind, str]] = []

        def double(kind: DataKind, run_id: str, value: JSON) -> JSON | None:
            seen.append((kind, run_id))
            if kind == "state":
                return {"n": value["n"] * 2}
            key = "result" if kind == "event" else "payload"
            if key not in value:
                return None  # the run_started event: left as it is
            return {**value, key: {"n": value[key]["n"] * 2}}

        # Pages of two rows: the three runs' six events take three pages.
        done = await store.rewrite_data(double, batch_size=2)
        assert done == Rewritten(runs=3, events=3, mail=3)
        assert sorted(set(seen)) == sorted(
            (kind, f"r{n}") for kind in ("state", "event", "mail") for n in (1, 2, 3)
        )
        for number in (1, 2, 3):
            run_id = f"r{number}"
            run = await store.get_run(run_id)
            assert run is not None
            assert run.state == {"n": number * 2}
            journal = await store.journal(run_id)
            assert journal[0].data == {"state": {"n": 0}}
            assert journal[1].data == {"result": {"n": number * 2}}
            (mail,) = await store.mail(run_id)
            assert mail.data == {"name": "go", "payload": {"n": number * 2}}

    @contract
    async def test_rewrite_data_returning_none_writes_nothing(self, store: Store) -> None:
        _rewrites(store)
        await _three_runs(store)
        before = [await store.get_run(f"r{n}") for n in (1, 2, 3)]
        assert await store.rewrite_data(lambda *_: None) == Rewritten()
        assert [await store.get_run(f"r{n}") for n in (1, 2, 3)] == before

    @contract
    async def test_an_error_in_rewrite_data_keeps_the_pages_before_it(self, store: Store) -> None:
        _rewrites(store)
        await _three_runs(store)

        def fail_on_r3(kind: DataKind, run_id: str, value: JSON) -> Any:
            if run_id == "r3":
                raise ValueError("no")
            return {"n": -1} if kind == "state" else None

        with pytest.raises(ValueError, match="no"):
            await store.rewrite_data(fail_on_r3, batch_size=2)
        states = []
        for number in (1, 2, 3):
            run = await store.get_run(f"r{number}")
            assert run is not None
            states.append(run.state)
        assert states == [{"n": -1}, {"n": -1}, {"n": 3}]

"""The memory store's own behaviour: private stores, no local transactions, big values.

The shared contract runs on the memory store in ``tests/contract``.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest

from sagakit import jsonutil
from sagakit.errors import StateError, StoreError
from sagakit.journal import Event, EventKind, RunStatus
from sagakit.store import memory
from sagakit.store.base import Lease
from sagakit.store.testing import FREE, T0, A, change, new_run, opened, record


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
    # (`_encode`): the refusals must still name it, on a commit and on a
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


def _started(run_id: str, state: Any) -> Event:
    return Event(run_id, 1, EventKind.RUN_STARTED, T0, data={"state": state})


def test_runs_of_one_big_state_do_not_each_hold_a_text_of_it() -> None:
    # A database holds what it stores on disk; the memory store held each
    # run's state and its `run_started` data as JSON texts, two copies of a
    # big state per run (a 10 MB state's benchmark peaked at 164 MiB). A big
    # value is now kept as a copy of its dicts and lists that shares its
    # strings, which cannot change in place.
    state = {f"k{i:04d}": f"{i:04d}" * 250 for i in range(2_000)}  # 2 MB as JSON
    size = len(jsonutil.dumps(state))

    async def body() -> int:
        async with opened("memory://") as store:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for r in range(5):
                run_id = f"r{r}"
                await store.create_run(record(run_id, state=state), [_started(run_id, state)])
                await store.commit(change(run_id, state={**state, "k0000": "new"}))
            gc.collect()
            held: int = tracemalloc.get_traced_memory()[0] - before
            read = await store.get_run("r4")
            assert read is not None
            assert read.state == {**state, "k0000": "new"}
            assert (await store.journal("r4"))[0].data == {"state": state}
            return held

    tracemalloc.start()
    try:
        held = asyncio.run(body())
    finally:
        tracemalloc.stop()
    # Five runs, each with a state and a `run_started` event: 10 texts of
    # 2 MB before (some 20 MB); the dicts of 2,000 keys now.
    assert held < size, f"{held:,} bytes held for five runs of a {size:,}-byte state"


# Values whose JSON is big, and what JSON makes of them: what the store gives
# back must be that, whether it kept the value or its text.
_BIG_VALUES: list[Any] = [
    {"keys": {f"k{i}": "x" * 100 for i in range(100)}, "n": [1, 2.5, -0.0, None, True, 10**30]},
    {"tuple": ("a" * 5_000, ["b", ("c",)]), "nested": [[{"x": ["y" * 100] * 50}]]},
    {"text": "é€😀 " * 3_000, "ключ": "значение" * 500},
    {1: "an int key, made a string by JSON", "1": "x" * 10_000},  # JSON keeps the last
    {"when": datetime.datetime(2026, 12, 7, 12, 0), "pad": "p" * 10_000},
    {"small dicts": [{"i": i} for i in range(3_000)]},  # its copy would outweigh its text
    {"says": "NaN and Infinity, as text", "pad": "p" * 10_000},
    "a big string alone " * 1_000,
    ["a big list"] * 2_000,
]


@pytest.mark.parametrize("big", [1_000, 256 * 1024])
@pytest.mark.parametrize("value", _BIG_VALUES, ids=range(len(_BIG_VALUES)))
def test_a_big_value_reads_back_as_its_json_and_is_isolated(
    value: Any, big: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "_BIG", big)
    expected = jsonutil.loads(jsonutil.dumps(value))
    state = {"v": value}

    async def body() -> None:
        async with opened("memory://") as store:
            await store.create_run(record("r1", state=state), [_started("r1", value)])
            data = {"result": value}
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1, data=data)
            await store.commit(change("r1", events=(event,), state=state))
            for _ in range(2):
                run = await store.get_run("r1")
                assert run is not None
                assert run.state == {"v": expected}
                assert jsonutil.dumps(run.state) == jsonutil.dumps({"v": expected})
                journal = await store.journal("r1")
                assert [e.data for e in journal] == [{"state": expected}, {"result": expected}]
                # What is read is the reader's: changing it changes nothing stored.
                _scribble(run.state)
                for e in journal:
                    _scribble(e.data)
            # Nor does changing what was written, after.
            _scribble(state)
            _scribble(data)
            if isinstance(value, dict | list):
                _scribble(value)
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {"v": expected}

    asyncio.run(body())


def _scribble(value: Any) -> None:
    """Change every dict and list in ``value`` in place."""
    if isinstance(value, dict):
        for item in list(value.values()):
            _scribble(item)
        value["scribbled"] = True
    elif isinstance(value, list):
        for item in value:
            _scribble(item)
        value.append("scribbled")


def test_a_big_value_is_refused_as_a_small_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_BIG", 1_000)
    pad = "p" * 2_000

    async def body() -> None:
        async with opened("memory://") as store:
            await new_run(store, "r1")
            refused: list[tuple[dict[str, Any], str]] = [
                ({"x": float("nan"), "pad": pad}, "state of run 'r1' holds NaN or Infinity"),
                ({"x": float("inf"), "pad": pad}, "state of run 'r1' holds NaN or Infinity"),
                ({"x": object(), "pad": pad}, "state of run 'r1' is not JSON"),
                ({"x": "\ud800", "pad": pad}, "state of run 'r1' is not JSON"),
            ]
            for bad, message in refused:
                with pytest.raises(StateError, match=message):
                    await store.commit(change("r1", state=bad))
                event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1, data=bad)
                with pytest.raises(StateError, match=message.replace("state", "event 2 data")):
                    await store.commit(change("r1", events=(event,)))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {"n": 0}
            assert run.last_seq == 1

    asyncio.run(body())


def test_a_big_value_is_rewritten_and_purged_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_BIG", 1_000)
    state = {"pad": "p" * 2_000, "items": [1, 2]}

    def rewrite(kind: str, run_id: str, value: Any) -> Any:
        if isinstance(value, dict) and "pad" in value:
            value["items"].append(3)  # the reader's copy: the store's changes only when written
            return {**value, "rewritten": kind}
        return None

    async def body() -> None:
        async with opened("memory://") as store:
            await store.create_run(record("r1", state=state), [_started("r1", state)])
            done = await store.rewrite_data(rewrite)
            assert (done.runs, done.events) == (1, 0)
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {"pad": state["pad"], "items": [1, 2, 3], "rewritten": "state"}
            assert (await store.journal("r1"))[0].data == {"state": state}

    asyncio.run(body())


def _nested(depth: int) -> Any:
    """``depth`` lists, each in the next."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [150, 199, 200, 201, 230])
def test_a_deep_big_value_reads_back_as_its_json_does(
    depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The encoder writes deeper values than the decoder reads back (200
    # levels): a database's store then fails to read the run, and so must
    # this one, big value or not, or a saga tested here would pass here only.
    monkeypatch.setattr(memory, "_BIG", 1_000)
    state = {"deep": _nested(depth), "pad": "p" * 100_000}  # text far bigger than the lists
    text = jsonutil.dumps(state)
    try:
        expected: Any = jsonutil.loads(text)
    except ValueError as exc:
        expected = exc

    async def body() -> None:
        async with opened("memory://") as store:
            await store.create_run(record("r1", state=state), [_started("r1", state)])
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1, data=state)
            await store.commit(change("r1", events=(event,), state=state))
            if isinstance(expected, ValueError):
                with pytest.raises(ValueError, match="recursion limit"):
                    await store.get_run("r1")
                with pytest.raises(ValueError, match="recursion limit"):
                    await store.journal("r1", after_seq=1)
            else:
                run = await store.get_run("r1")
                assert run is not None
                assert run.state == expected
                assert [e.data for e in await store.journal("r1", after_seq=1)] == [expected]

    asyncio.run(body())


# A big state as the engine commits it: a new dict at each commit, sharing
# the values it did not change (strings, a big dict, small lists and numbers).
_ROWS = {"rows": [{"i": i, "name": f"row {i}"} for i in range(2_000)]}
_STATE: dict[str, Any] = {"blob": "b" * 30_000, "rows": _ROWS, "items": [1, 2], "n": 0}


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every JSON text the memory store encodes from now on."""
    sizes: list[int] = []

    def counted(value: Any, *args: Any, **kwargs: Any) -> bytes:
        raw: bytes = jsonutil.to_json(value, *args, **kwargs)
        sizes.append(len(raw))
        return raw

    monkeypatch.setattr(memory, "to_json", counted)
    return sizes


def _stored(store: Any, run_id: str) -> Any:
    return store._data.runs[run_id].state


async def _keyed_run(store: Any, run_id: str, state: dict[str, Any], **changes: Any) -> None:
    """Create a run and commit ``state``: from that first commit on, it is kept key by key."""
    await store.create_run(record(run_id, state=state), [_started(run_id, state)])
    await store.commit(change(run_id, state=state, **changes))
    assert type(_stored(store, run_id)) is memory._Keyed


async def _read_state(store: Any, run_id: str) -> dict[str, Any]:
    """The run's state as the store reads it back."""
    run = await store.get_run(run_id)
    assert run is not None
    state: dict[str, Any] = run.state
    return state


async def _claim_as_b(store: Any, run_id: str) -> Lease:
    """The run claimed by owner ``b``, after `A`'s lease lapsed; ``b``'s lease."""
    claimed = await store.claim(run_id, owner="b", now=T0 + 100, lease_until=T0 + 200)
    assert claimed is not None
    return Lease("b", claimed.lease_epoch)


def test_a_commit_sharing_a_big_state_encodes_only_the_keys_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = len(jsonutil.dumps(_STATE))

    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", _STATE)
            sizes = _counting(monkeypatch)
            state = _STATE
            for n in range(1, 4):
                state = {**state, "n": n, "items": [*state["items"], n]}
                await store.commit(change("r1", state=state))
                # Two small keys encoded, not the 30 KB string or the rows.
                assert 0 < sum(sizes) < 100, sizes
                sizes.clear()
                assert await _read_state(store, "r1") == state
            # Under another lease, nothing is reused: every value is encoded
            # again (a string aside: it is kept as itself, not as its text).
            lease = await _claim_as_b(store, "r1")
            state = {**state, "n": 9}
            await store.commit(change("r1", lease, state=state))
            assert sum(sizes) > len(jsonutil.dumps(_ROWS)), sizes
            sizes.clear()
            # Then a new value for the big key is encoded, and only it.
            state = {**state, "rows": {"rows": []}}
            await store.commit(change("r1", lease, state=state))
            assert 0 < sum(sizes) < 100, sizes
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == state

    assert whole > memory._KEYED
    asyncio.run(body())


def test_a_state_kept_key_by_key_reads_back_in_its_key_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "_BIG", 1_000)  # the rows kept as data, not text

    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", _STATE)
            blob, rows = _STATE["blob"], _STATE["rows"]
            states: list[dict[str, Any]] = [
                {**_STATE, "items": [3]},  # a key changed
                {**_STATE, "items": [3], "added": {"x": 1}, "more": "m"},  # keys added
                {"blob": blob, "rows": rows, "more": "m"},  # keys removed
                {"more": "m", "rows": rows, "blob": blob},  # the same keys, moved
                {"more": "m", "rows": rows, "blob": blob, "rows2": rows},  # a big value twice
                {"blob": "c" * 30_000, "rows": {"rows": [0]}, "n": None},  # big values replaced
            ]
            for state in states:
                await store.commit(change("r1", state=state))
                expected = jsonutil.loads(jsonutil.dumps(state))
                for read in [await store.get_run("r1"), *await store.list_runs()]:
                    assert read is not None
                    assert read.state == expected
                    assert list(read.state) == list(state)
                    assert jsonutil.dumps(read.state) == jsonutil.dumps(state)
                    _scribble(read.state)  # the reader's copy
            assert (await store.journal("r1"))[0].data == {"state": _STATE}

    asyncio.run(body())


def test_a_refused_value_in_a_changed_key_changes_nothing() -> None:
    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", _STATE)
            kept = _stored(store, "r1")
            refused: list[tuple[Any, str]] = [
                (float("nan"), "state of run 'r1' holds NaN or Infinity"),
                ([float("inf")], "state of run 'r1' holds NaN or Infinity"),
                (object(), "state of run 'r1' is not JSON"),
                ("\ud800", "state of run 'r1' is not JSON"),
            ]
            event = Event("r1", 2, EventKind.STEP_SUCCEEDED, T0, step="s", attempt=1)
            for bad, message in refused:
                for state in ({**_STATE, "n": bad}, {**_STATE, "new": bad}):
                    with pytest.raises(StateError, match=message):
                        await store.commit(change("r1", events=(event,), state=state))
                    assert _stored(store, "r1") is kept
            run = await store.get_run("r1")
            assert run is not None
            assert (run.state, run.last_seq) == (_STATE, 1)
            # A string that says NaN is a string: taken, as when encoded whole.
            state = {**_STATE, "n": "NaN", "items": ["Infinity", {"NaN": 1}]}
            await store.commit(change("r1", events=(event,), state=state))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == state

    asyncio.run(body())


def test_a_key_replaced_in_the_committed_dict_itself_is_not_missed() -> None:
    # The store compares with its own list of the last commit's values, not
    # with the dict it was given: a caller that sets a key of that dict and
    # commits it again has the key written. (A value changed in place, deep
    # in the state, is not seen: the engine never does so, see the module.)
    async def body() -> None:
        async with opened("memory://") as store:
            state = dict(_STATE)
            await _keyed_run(store, "r1", state)
            state["n"] = 1
            state["added"] = [1]
            await store.commit(change("r1", state=state))
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {**_STATE, "n": 1, "added": [1]}

    asyncio.run(body())


def test_a_released_run_keeps_none_of_the_values_it_was_given() -> None:
    # The values compared with are the driver's: kept only while its lease
    # holds, or a finished run would hold its state twice.
    async def body() -> None:
        async with opened("memory://") as store:
            for run_id in ("r1", "r2", "r3"):
                await _keyed_run(store, run_id, _STATE)
                assert _stored(store, run_id).values is not None
            await store.commit(change("r1", state={**_STATE, "n": 1}, release=True))
            await store.release("r2", A)
            await store.claim("r3", owner="b", now=T0 + 100, lease_until=T0 + 200)
            await store.create_run(record("r4", state=_STATE, **FREE), [])  # nobody's
            for run_id in ("r1", "r2", "r3", "r4"):
                assert type(_stored(store, run_id)) is memory._Keyed
                assert _stored(store, run_id).values is None
                run = await store.get_run(run_id)
                assert run is not None
                assert run.state == {**_STATE, "n": 1 if run_id == "r1" else 0}

    asyncio.run(body())


def test_a_state_kept_key_by_key_is_rewritten_and_purged() -> None:
    def rewrite(kind: str, run_id: str, value: Any) -> Any:
        return {**value, "n": "rewritten"} if kind == "state" else None

    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", _STATE)
            finish = change("r1", state={**_STATE, "n": 1}, status=RunStatus.COMPLETED)
            await store.commit(replace(finish, release=True))
            done = await store.rewrite_data(rewrite)
            assert (done.runs, done.events) == (1, 0)
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == {**_STATE, "n": "rewritten"}
            purged = await store.purge(before=T0 + 100)
            assert [p.run.state for p in purged] == [{**_STATE, "n": "rewritten"}]

    asyncio.run(body())


def test_the_engine_s_commits_of_a_big_state_look_at_the_keys_they_set_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine names the keys each commit sets (`Commit.sets`): the store
    # then neither compares the other values nor encodes them, and what it
    # keeps reads back as the journal says.
    from sagakit import AsyncEngine, Saga, StepContext

    named: list[int] = []
    looked_at = memory._named

    def spied(state: Any, prev: Any, run_id: str, sets: tuple[str, ...]) -> Any:
        kept = looked_at(state, prev, run_id, sets)
        named.append(-1 if kept is None else len(sets))
        return kept

    monkeypatch.setattr(memory, "_named", spied)
    saga: Saga[Any] = Saga("many-keys")
    for i in range(6):

        async def change_one(state: dict[str, Any], ctx: StepContext, i: int = i) -> Any:
            if i == 3:
                state["k0003"] = "in place"  # told by comparison, named all the same
                return None
            return {f"k{i:04d}": f"step {i}", **({"new": [i]} if i == 4 else {})}

        saga.add_step(change_one, name=f"s{i}")
    start = {f"k{i:04d}": "v" * 100 for i in range(1_000)}

    async def body() -> dict[str, Any]:
        async with AsyncEngine("memory://") as engine:
            run = await engine.run(saga, start, run_id="r1")
            assert run.status == RunStatus.COMPLETED
            stored = await engine.store.get_run("r1")
            assert stored is not None
            return stored.state

    sizes = _counting(monkeypatch)
    state = asyncio.run(body())
    expected = {**start, **{f"k{i:04d}": f"step {i}" for i in range(6)}, "new": [4]}
    expected["k0003"] = "in place"
    assert state == expected
    # The first commit under the lease compares every value; the later ones
    # name one key each (the step's start commits name none). Adding a key
    # ("new") falls back to the comparison once.
    assert named.count(-1) == 1, named
    assert max(named) <= 2
    # The whole state was encoded once, for its run_started event, never
    # by a step's commit: the run's state, big by its strings alone, is
    # kept key by key from the start without a text of it whole.
    whole = len(jsonutil.dumps(start))
    assert [size >= whole for size in sizes].count(True) == 1, sizes
    assert all(size < 1_000 for size in sizes[1:]), sizes


def test_the_parts_of_keys_set_are_held_apart_then_put_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A commit that names its keys adds their parts to those held apart and
    # shares the lists of the others; past `_OVER` of them, they are put in
    # place. What reads back is what was committed at every point: before
    # and after that, after a release (the parts held apart are kept) and
    # after a claim (the next commit compares every value with them).
    monkeypatch.setattr(memory, "_OVER", 3)
    start = {f"k{i:02d}": f"start {i} " + "v" * 1_000 for i in range(40)}

    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", start)
            base = _stored(store, "r1")
            state = start
            for turn, key in enumerate(["k01", "k02", "k01", "k03", "k04", "k05", "k01"]):
                state = {**state, key: f"turn {turn}"}
                await store.commit(change("r1", state=state, sets=(key,)))
                kept = _stored(store, "r1")
                # The first commit's list of parts is shared until a fourth
                # key would be held apart (the fifth commit).
                assert (kept.parts is base.parts) == (turn < 4), turn
                assert len(kept.over or {}) <= 3
                read = await _read_state(store, "r1")
                assert (read, list(read)) == (state, list(start))
            # A key named with its own object again changes nothing kept.
            same = _stored(store, "r1")
            await store.commit(change("r1", state=dict(state), sets=("k01",)))
            assert _stored(store, "r1") is same
            # Released: the values go, the parts held apart stay.
            await store.commit(change("r1", state=state, sets=(), release=True))
            assert _stored(store, "r1").values is None
            assert await _read_state(store, "r1") == state
            lease = await _claim_as_b(store, "r1")
            state = {**state, "k06": "after the claim"}
            await store.commit(change("r1", lease, state=state, sets=("k06",)))
            state = {**state, "k07": "and after"}
            await store.commit(change("r1", lease, state=state, sets=("k07",)))
            read = await _read_state(store, "r1")
            assert (read, list(read)) == (state, list(start))

    asyncio.run(body())


def test_a_key_gained_unnamed_while_another_went_is_not_lost() -> None:
    # `Commit.sets` names every key a commit set; a committer that removes a
    # key and names only the one it added (the engine never removes one)
    # still has the added key kept, and the store does not fail.
    start = {f"k{i:02d}": "v" * 1_000 for i in range(40)}

    async def body() -> None:
        async with opened("memory://") as store:
            await _keyed_run(store, "r1", start)
            state = {key: value for key, value in start.items() if key != "k00"}
            state["added"] = "new"
            await store.commit(change("r1", state=state, sets=("added",)))
            state = {**state, "k01": "set"}
            await store.commit(change("r1", state=state, sets=("k01",)))
            read = await _read_state(store, "r1")
            assert (read["added"], read["k01"]) == ("new", "set")

    asyncio.run(body())


def test_a_new_run_big_by_its_strings_is_kept_key_by_key_and_checked_as_whole() -> None:
    # A new run's state whose strings alone reach `_KEYED` is kept key by
    # key without a text of it whole: each value refused as the whole text
    # would refuse it, and a state with a key that is not a string, or one
    # with more than 16 keys but small, kept as before.
    big = {f"k{i:02d}": "v" * 1_000 for i in range(40)}

    async def body() -> None:
        async with opened("memory://") as store:
            await store.create_run(record("r1", state=big), [])
            assert type(_stored(store, "r1")) is memory._Keyed
            assert await _read_state(store, "r1") == big
            refused: list[tuple[Any, str]] = [
                (float("nan"), "state of run 'r2' holds NaN or Infinity"),
                (object(), "state of run 'r2' is not JSON"),
                ("\ud800", "state of run 'r2' is not JSON"),
            ]
            for bad, message in refused:
                with pytest.raises(StateError, match=message):
                    await store.create_run(record("r2", state={**big, "k05": bad}), [])
                assert await store.get_run("r2") is None
            small = {f"k{i:02d}": i for i in range(40)}
            await store.create_run(record("r3", state=small), [])
            assert type(_stored(store, "r3")) is str
            numbered: dict[Any, Any] = {**big, 7: "a key JSON makes a string"}
            await store.create_run(record("r4", state=numbered), [])
            assert await _read_state(store, "r4") == {**big, "7": "a key JSON makes a string"}

    asyncio.run(body())

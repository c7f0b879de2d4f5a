"""The memory store's big dict states, kept key by key, against random commits.

Each example is a run whose state is set, added to and taken from at
random, and committed now and then: naming the keys set since the last
commit that landed (`Commit.sets`, as the engine does), or not; under the
lease that wrote the last state, or after another owner claimed the run.
With every state kept key by key (`memory._KEYED`), big values kept as
data (`memory._BIG`) and at most one, two or 64 keys' parts held apart
(`memory._OVER`), what reads back after each commit must be what was
committed, in its key order, and a refused value must change nothing.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sagakit.errors import StateError
from sagakit.store import memory
from sagakit.store.base import Lease
from sagakit.store.testing import T0, A, change, opened, record

from .harness import EXAMPLES, fuzz_settings

KEYS = [f"k{i}" for i in range(4)]

# A value a step may set: strings, numbers, None, lists and dicts (big ones
# kept as data), or something JSON refuses.
values = st.one_of(
    st.sampled_from(["", "a", "a" * 80]),
    st.integers(-2, 2),
    st.none(),
    st.lists(st.integers(), max_size=40),
    st.dictionaries(st.sampled_from(["a", "b"]), st.lists(st.text(max_size=3), max_size=30)),
    st.just(NAN := float("nan")),
)

sets = st.tuples(st.just("set"), st.sampled_from(KEYS), values)
operations = st.lists(
    st.one_of(
        sets,
        sets,
        st.tuples(st.just("again"), st.sampled_from(KEYS)),  # a key set to its own object
        st.tuples(st.just("remove"), st.sampled_from(KEYS)),
        st.tuples(st.just("commit"), st.booleans()),  # named or not
        st.tuples(st.just("commit"), st.just(True)),
        st.tuples(st.just("claim")),
    ),
    min_size=4,
    max_size=40,
)


def _refused(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


async def _play(steps: list[tuple[Any, ...]]) -> None:
    async with opened("memory://") as store:
        state: dict[str, Any] = {key: f"start {key}" for key in KEYS}
        await store.create_run(record("r1", state=state), [])
        committed = dict(state)
        lease, epochs, now = A, 0, T0 + 1_000
        named: set[str] | None = set()  # keys set since the last commit that landed
        removed: set[str] = set()  # keys removed since then
        for step in steps:
            kind = step[0]
            if kind == "set":
                state = {**state, step[1]: step[2]}
                if named is not None:
                    named.add(step[1])
                if step[1] in removed:
                    # Put back after it, not in its place: a committer that
                    # names keys says none moved, so this one names none.
                    named = None
            elif kind == "again" and step[1] in state:
                state = {**state, step[1]: state[step[1]]}
                if named is not None:
                    named.add(step[1])
            elif kind == "remove" and step[1] in state:
                # Not named: a commit only names what it sets (the engine
                # never removes a key; a store must still keep it right).
                state = {key: value for key, value in state.items() if key != step[1]}
                removed.add(step[1])
            elif kind == "commit":
                sets = tuple(sorted(named)) if step[1] and named is not None else None
                try:
                    await store.commit(change("r1", lease, state=state, sets=sets))
                except StateError:
                    assert any(_refused(value) for value in state.values())
                    # Nothing landed: the writer no longer knows what the store holds.
                    named = None
                    state = {k: v for k, v in state.items() if not _refused(v)}
                else:
                    committed, named = state, set()
                removed = set()
            elif kind == "claim":
                epochs += 1
                now += 1_000
                claimed = await store.claim("r1", owner=f"o{epochs}", now=now, lease_until=now + 10)
                assert claimed is not None
                lease, named = Lease(f"o{epochs}", claimed.lease_epoch), None
                removed = set()
            run = await store.get_run("r1")
            assert run is not None
            assert run.state == committed
            assert list(run.state) == list(committed)


# An example is a few milliseconds: ten times the other fuzz tests' count,
# for the sequences that hold keys apart and then put them in place.
@settings(fuzz_settings, max_examples=10 * EXAMPLES)
@given(steps=operations, over=st.sampled_from([1, 2, 64]))
# A commit refused for its second key after its first was taken, over a
# state holding keys apart: the state kept before it must not change.
@example(
    steps=[
        ("set", "k1", "x"),
        ("commit", True),
        ("set", "k0", "y"),
        ("set", "k2", NAN),
        ("commit", True),
    ],
    over=2,
)
def test_what_reads_back_is_what_was_last_committed(
    steps: list[tuple[Any, ...]], over: int
) -> None:
    with mock.patch.multiple(memory, _KEYED=1, _BIG=64, _OVER=over):
        asyncio.run(_play(steps))

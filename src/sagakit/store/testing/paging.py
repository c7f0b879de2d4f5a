"""The contract for listing runs a page at a time (`Store.page_runs`) and counting them.

Keyset pagination: each page is read from where the last one ended (a
`RunCursor`), newest first, with the same filters as the dashboard's runs
list; and `Store.count_runs` counts every run by saga and status. Each store's
own answer is checked against the contract's default (from `list_runs`).
"""

from __future__ import annotations

from typing import Any

import pytest

from sagakit.journal import RunStatus
from sagakit.store import RunCursor, RunFilter, Store
from sagakit.store.testing.support import T0, contract, new_run


async def _fill(store: Store) -> None:
    """Nine runs of two sagas, two versions and three statuses; three created at once."""
    rows: list[tuple[str, float, dict[str, Any]]] = [
        ("a0", T0, {}),
        ("a1", T0 + 1, {"status": RunStatus.COMPLETED}),
        ("a2", T0 + 2, {"saga": "trip"}),
        ("t1", T0 + 3, {"status": RunStatus.COMPLETED}),
        ("t2", T0 + 3, {"version": "2"}),
        ("t3", T0 + 3, {"status": RunStatus.COMPLETED, "version": "2"}),
        ("a6", T0 + 4, {"saga": "trip", "status": RunStatus.NEEDS_ATTENTION}),
        ("a7", T0 + 5, {"status": RunStatus.COMPLETED}),
        ("a8", T0 + 6, {}),
    ]
    for run_id, created, changes in rows:
        await new_run(store, run_id, created_at=created, updated_at=created, **changes)


NEWEST_FIRST = ["a8", "a7", "a6", "t3", "t2", "t1", "a2", "a1", "a0"]

# Each filter, and the runs of `_fill` it lists, newest first.
FILTERED: list[tuple[RunFilter, list[str]]] = [
    (RunFilter(saga="trip"), ["a6", "a2"]),
    (RunFilter(version="2"), ["t3", "t2"]),
    (RunFilter(status=RunStatus.COMPLETED), ["a7", "t3", "t1", "a1"]),
    (RunFilter(saga="order", status=RunStatus.COMPLETED, version="1"), ["a7", "t1", "a1"]),
    (RunFilter(since=T0 + 3), ["a8", "a7", "a6", "t3", "t2", "t1"]),
    (RunFilter(until=T0 + 3), ["a2", "a1", "a0"]),
    (RunFilter(since=T0 + 1, until=T0 + 4), ["t3", "t2", "t1", "a2", "a1"]),
    (RunFilter(status=RunStatus.COMPLETED, since=T0 + 2, until=T0 + 5), ["t3", "t1"]),
    (RunFilter(saga="nope"), []),
    (RunFilter(status=RunStatus.PAUSED), []),
]


async def _ids(store: Store, **options: Any) -> list[str]:
    return [run.id for run in await store.page_runs(**options)]


async def _walk(store: Store, where: RunFilter | None, limit: int) -> list[list[str]]:
    """Every page, oldest-ward from the first by ``after``."""
    pages: list[list[str]] = []
    after: RunCursor | None = None
    while True:
        page = await store.page_runs(after=after, limit=limit, where=where)
        if not page:
            return pages
        assert len(page) <= limit
        pages.append([run.id for run in page])
        after = RunCursor.of(page[-1])


async def _walk_back(store: Store, where: RunFilter | None, limit: int) -> list[list[str]]:
    """Every page, newest-ward from the oldest run by ``before``."""
    oldest = (await store.list_runs(limit=1000))[-1]
    pages: list[list[str]] = []
    before = RunCursor.of(oldest)
    if where is None or where.matches(oldest):
        pages.append([oldest.id])
    while True:
        page = await store.page_runs(before=before, limit=limit, where=where)
        if not page:
            return pages[::-1]
        pages.append([run.id for run in page])
        before = RunCursor.of(page[0])


class PagingContract:
    """What every store does to list runs by cursor and to count them."""

    @contract
    async def test_page_runs_walks_every_run_newest_first_by_cursor(self, store: Store) -> None:
        await _fill(store)
        assert await _ids(store, limit=100) == NEWEST_FIRST
        assert await _ids(store) == NEWEST_FIRST  # the default limit holds them all
        pages = await _walk(store, None, 2)
        # Ties on created_at are broken by id, descending: t3, t2, t1.
        assert pages == [["a8", "a7"], ["a6", "t3"], ["t2", "t1"], ["a2", "a1"], ["a0"]]
        for limit in (1, 3, 4):
            walked = await _walk(store, None, limit)
            assert [run_id for page in walked for run_id in page] == NEWEST_FIRST
        assert await _ids(store, limit=0) == []

    @contract
    async def test_page_runs_before_a_cursor_is_the_previous_page(self, store: Store) -> None:
        await _fill(store)
        t2 = RunCursor(T0 + 3, "t2")
        assert await _ids(store, after=t2, limit=2) == ["t1", "a2"]
        # The runs just newer than t2, still newest first.
        assert await _ids(store, before=t2, limit=2) == ["a6", "t3"]
        assert await _ids(store, before=RunCursor(T0 + 6, "a8"), limit=2) == []
        assert await _ids(store, after=RunCursor(T0, "a0"), limit=2) == []
        walked = await _walk_back(store, None, 2)
        assert [run_id for page in walked for run_id in page] == NEWEST_FIRST
        with pytest.raises(ValueError, match="not both"):
            await store.page_runs(after=t2, before=t2)

    @contract
    async def test_a_cursor_is_a_place_not_a_run(self, store: Store) -> None:
        """A page's last run purged (or never stored): the next page is still where it was."""
        await _fill(store)
        between = RunCursor(T0 + 3, "t25")
        assert await _ids(store, after=between, limit=3) == ["t2", "t1", "a2"]
        assert await _ids(store, before=between, limit=3) == ["a7", "a6", "t3"]
        assert await _ids(store, after=RunCursor(T0 + 99, "x"), limit=1) == ["a8"]
        assert await _ids(store, before=RunCursor(T0 - 99, "x"), limit=1) == ["a0"]

    @contract
    async def test_page_runs_filters_at_every_page(self, store: Store) -> None:
        await _fill(store)
        for where, expected in FILTERED:
            assert await _ids(store, where=where, limit=100) == expected, where
            for limit in (1, 2):
                walked = await _walk(store, where, limit)
                assert [run_id for page in walked for run_id in page] == expected, where
                back = await _walk_back(store, where, limit)
                assert [run_id for page in back for run_id in page] == expected, where
            # The contract's own default, from list_runs, agrees with the store's.
            default = await Store.page_runs(store, where=where, limit=100)
            assert [r.id for r in default] == expected, where
            cursor = RunCursor(T0 + 3, "t2")
            mine = await _ids(store, where=where, after=cursor, limit=2)
            default = await Store.page_runs(store, where=where, after=cursor, limit=2)
            assert [r.id for r in default] == mine, where
            assert mine == [r for r in expected if r in ("t1", "a2", "a1", "a0")][:2], where

    @contract
    async def test_count_runs_counts_every_run_by_saga_and_status(self, store: Store) -> None:
        assert await store.count_runs() == {}
        await _fill(store)
        expected = {
            "order": {RunStatus.PENDING: 3, RunStatus.COMPLETED: 4},
            "trip": {RunStatus.PENDING: 1, RunStatus.NEEDS_ATTENTION: 1},
        }
        assert await store.count_runs() == expected
        assert await Store.count_runs(store) == expected
        for i in range(600):  # more than a page of the default's reads
            await new_run(store, f"many-{i:03}", saga="bulk", status=RunStatus.ROLLED_BACK)
        counts = await store.count_runs()
        assert counts["bulk"] == {RunStatus.ROLLED_BACK: 600}
        assert counts == await Store.count_runs(store)

"""The dashboard's runs list by keyset cursor, and the overview's counts, on SQLite and PostgreSQL.

1,050 runs of one saga (more than the overview once counted), a second
apart, of two versions and three statuses: every page is walked older by
``?after=`` and back newer by ``?before=``, with each filter, and every bad
query string is refused with a one-line 400 page.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from sagakit import RunStatus
from sagakit.dashboard import create_app
from sagakit.store import RunRecord, open_store

from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

BASE = 1_780_000_000.0  # 2026-05-28: times the pages show in local time
RUNS = 1050


def status_of(i: int) -> RunStatus:
    if i % 10 == 0:
        return RunStatus.NEEDS_ATTENTION
    return RunStatus.ROLLED_BACK if i % 3 == 0 else RunStatus.COMPLETED


def fill(url: str) -> None:
    async def body() -> None:
        store = open_store(url)
        await store.open()
        try:
            for i in range(RUNS):
                at = BASE + i
                run = RunRecord(
                    id=f"bulk-{i:04}",
                    saga="bulk",
                    version="2" if i % 2 else "1",
                    status=status_of(i),
                    state={"i": i},
                    error=None,
                    created_at=at,
                    updated_at=at,
                )
                await store.create_run(run, [])
            await store.create_run(
                RunRecord("other-1", "other", "1", RunStatus.PAUSED, {}, None, BASE, BASE), []
            )
        finally:
            await store.close()

    asyncio.run(body())


@pytest.fixture
def client(sql_store_url: str) -> Iterator[TestClient]:
    fill(sql_store_url)
    with TestClient(create_app(sql_store_url)) as test_client:
        yield test_client


def get(client: TestClient, path: str, code: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == code, response.text
    return response.text


def ids(page: str) -> list[str]:
    return re.findall(r">((?:bulk|other)-\d+)</a>", page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None


def expected(keep: Any = lambda i: True) -> list[str]:
    return [f"bulk-{i:04}" for i in reversed(range(RUNS)) if keep(i)]


def walk(client: TestClient, first: str) -> tuple[list[list[str]], list[str]]:
    """Every page from ``first`` by its older links; and the pages' paths."""
    pages: list[list[str]] = []
    paths: list[str] = []
    path: str | None = first
    while path is not None:
        page = get(client, path)
        pages.append(ids(page))
        paths.append(path)
        path = link(page, "next")
    return pages, paths


def test_every_run_is_reached_page_by_page_and_back(client: TestClient) -> None:
    first = get(client, "/runs?saga=bulk")
    assert link(first, "prev") is None, "the first page has no newer page"
    assert link(first, "first") is None
    pages, paths = walk(client, "/runs?saga=bulk")
    assert [len(p) for p in pages] == [50] * 21, "1,050 runs, 50 a page"
    assert [run_id for page in pages for run_id in page] == expected()
    # Back from the last page by the newer links: the same pages, in reverse.
    page = get(client, paths[-1])
    assert link(page, "next") is None, "the last page has no older page"
    assert link(page, "first") == "/runs?saga=bulk"
    back = [ids(page)]
    while (newer := link(page, "prev")) is not None:
        assert "saga=bulk" in newer, "the filters stay on every link"
        page = get(client, newer)
        back.append(ids(page))
    assert back == pages[::-1]


def test_each_filter_holds_on_every_page(client: TestClient) -> None:
    def since(i: int) -> str:
        return datetime.fromtimestamp(BASE + i).isoformat(timespec="seconds")

    cases = [
        ("/runs?version=2", expected(lambda i: i % 2 == 1)),
        ("/runs?status=needs_attention", expected(lambda i: i % 10 == 0)),
        (
            "/runs?saga=bulk&version=1&status=rolled_back",
            expected(lambda i: i % 2 == 0 and status_of(i) is RunStatus.ROLLED_BACK),
        ),
        (f"/runs?saga=bulk&since={since(1000)}", expected(lambda i: i >= 1000)),
        (
            f"/runs?saga=bulk&since={since(100)}&until={since(230)}",
            expected(lambda i: 100 <= i < 230),
        ),
        (
            f"/runs?status=completed&until={since(60)}",
            expected(lambda i: i < 60 and status_of(i) is RunStatus.COMPLETED),
        ),
        ("/runs?saga=other", ["other-1"]),
        ("/runs?saga=bulk&version=9", []),
    ]
    for path, wanted in cases:
        pages, _ = walk(client, path)
        assert [run_id for page in pages for run_id in page] == wanted, path
    assert "no runs match" in get(client, "/runs?saga=bulk&version=9")


def test_the_overview_counts_every_run(client: TestClient) -> None:
    overview = get(client, "/")
    attention = sum(1 for i in range(RUNS) if status_of(i) is RunStatus.NEEDS_ATTENTION)
    assert f"{attention}</strong> runs need attention" in overview
    completed = sum(1 for i in range(RUNS) if status_of(i) is RunStatus.COMPLETED)
    assert completed > 600
    assert f'status=completed">{completed}</a>' in overview
    assert "counted up to" not in overview


def test_search_by_id_still_finds_one_run(client: TestClient) -> None:
    found = get(client, "/runs?q=bulk-0042")
    assert ids(found) == ["bulk-0042"]
    assert link(found, "next") is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("after=not-a-cursor", "after is not a cursor of the runs list"),
        ("before=eyJ4IjoxfQ", "before is not a cursor of the runs list"),
        ("after=" + "A" * 5000, "after is not a cursor of the runs list"),
        ("since=yesterday", "since must be a date or a date and time"),
        ("until=2026-13-45", "until must be a date or a date and time"),
        ("version=" + "v" * 3000, "version is longer than 2000 characters"),
        ("status=bogus", "unknown status"),
        ("page=2&version=1", "page= takes no version or time filter"),
    ],
)
def test_a_bad_query_string_is_a_400_page(client: TestClient, query: str, message: str) -> None:
    page = get(client, f"/runs?{query}", 400)
    assert message in page
    assert "Traceback" not in page


def test_after_and_before_together_are_refused(client: TestClient) -> None:
    first = get(client, "/runs")
    older = link(first, "next")
    assert older is not None
    token = older.split("after=")[1]
    page = get(client, f"/runs?after={token}&before={token}", 400)
    assert "not both" in page

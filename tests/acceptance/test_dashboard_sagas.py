"""A saga's page on the dashboard: its diagram (SVG) and its versions' runs by status.

The saga drawn has a plain check, two reservations taken in parallel, a
pivot and a retriable step, and a name made to break out of markup. Runs
of two versions are recorded on SQLite and PostgreSQL; the page counts
them per version and status.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from sagakit import Engine, PermanentError, Reserve, RunStatus, Saga, StepContext
from sagakit.dashboard import create_app

from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

SVG = "{http://www.w3.org/2000/svg}"
XSS = "<script>alert(1)</script>"
HOSTILE_STEP = "\"'><img src=x onerror=alert(3)>"


def shop(version: str) -> Saga[Any]:
    """check -> [hold_seat, hold_room] in parallel -> pay (pivot) -> notify (retriable)."""
    saga: Saga[Any] = Saga(f"shop{XSS}", version=version)

    def check(state: dict[str, Any], ctx: StepContext) -> None:
        if state.get("fail"):
            raise PermanentError("refused")

    def hold(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    def release(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    def pay(state: dict[str, Any], ctx: StepContext) -> None:
        if state.get("decline"):
            raise PermanentError("declined")

    saga.add_step(hold, name="hold_seat", compensation=release, reserve=Reserve(["seat"], ttl=60))
    saga.add_step(hold, name=HOSTILE_STEP, compensation=release)
    saga.add_step(check, name="check")
    saga.add_step(pay, name="pay", kind="pivot")
    saga.add_step(check, name="notify", kind="retriable")
    saga.parallel("hold_seat", HOSTILE_STEP)
    return saga


V1, V2 = shop("1"), shop("2")


@pytest.fixture
def url(sql_store_url: str) -> str:
    with Engine(sql_store_url) as engine:
        engine.register(V1, V2)
        for index in range(3):
            run = engine.run(V1, {}, run_id=f"v1-ok-{index}")
            assert run.status is RunStatus.COMPLETED
        assert engine.run(V1, {"decline": True}, run_id="v1-back").status is RunStatus.ROLLED_BACK
        assert engine.run(V2, {}, run_id="v2-ok").status is RunStatus.COMPLETED
    return sql_store_url


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with TestClient(create_app(url, sagas=[V1, V2])) as test_client:
        yield test_client


def saga_path(name: str, version: str | None = None) -> str:
    path = f"/sagas/{quote(name, safe='')}"
    return path if version is None else f"{path}?version={version}"


def svg_of(html: str) -> ET.Element:
    found = re.search(r"<svg .*?</svg>", html, re.S)
    assert found is not None, "no diagram on the page"
    return ET.fromstring(found.group(0))


def steps_of(svg: ET.Element, group: str) -> list[ET.Element]:
    lane = svg.find(f"{SVG}g[@class='{group}']")
    assert lane is not None
    return lane.findall(f"{SVG}g")


def box(step: ET.Element) -> tuple[float, float]:
    rect = step.find(f"{SVG}rect")
    assert rect is not None
    return float(rect.get("x", "nan")), float(rect.get("y", "nan"))


def test_the_diagram_draws_each_step_in_stage_order(client: TestClient) -> None:
    response = client.get(saga_path(V2.name))
    assert response.status_code == 200, response.text
    svg = svg_of(response.text)
    steps = steps_of(svg, "steps")
    assert [s.get("data-step") for s in steps] == [
        "hold_seat",
        HOSTILE_STEP,
        "check",
        "pay",
        "notify",
    ]
    assert [s.get("data-kind") for s in steps] == [
        "compensatable",
        "compensatable",
        "plain",
        "pivot",
        "retriable",
    ]
    assert [s.get("data-stage") for s in steps] == ["0", "0", "1", "2", "3"]
    # The pivot, and only it, is marked.
    assert [s.get("data-step") for s in steps if "pivot" in s.get("class", "")] == ["pay"]
    pay = next(s for s in steps if s.get("data-step") == "pay")
    assert "point of no return" in "".join(pay.itertext())
    # Parallel members side by side: one row, left to right; later stages below.
    (x1, y1), (x2, y2) = box(steps[0]), box(steps[1])
    assert y1 == y2
    assert x2 > x1
    ys = [box(s)[1] for s in steps[1:]]
    assert ys == sorted(ys)
    assert len(set(ys)) == len(ys)
    # The reservation is drawn, and every box points to each box of the next stage (2 + 1 + 1).
    assert "reserves seat" in "".join(steps[0].itertext())
    edges = svg.find(f"{SVG}g[@class='edges']")
    assert edges is not None
    assert len(edges.findall(f"{SVG}line")) == 4
    # Compensations, undone last first: the parallel pair together, in one row.
    undo = steps_of(svg, "undo")
    assert [s.get("data-step") for s in undo] == ["hold_seat", HOSTILE_STEP]
    assert box(undo[0])[1] == box(undo[1])[1]


def test_names_are_escaped_everywhere(client: TestClient) -> None:
    html = client.get(saga_path(V1.name)).text
    assert XSS not in html
    assert HOSTILE_STEP not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The drawing is well-formed XML whatever the names (ElementTree parses it).
    names = [s.get("data-step") for s in steps_of(svg_of(html), "steps")]
    assert HOSTILE_STEP in names


def test_runs_are_counted_per_version_and_status(client: TestClient) -> None:
    html = client.get(saga_path(V1.name)).text

    def counts(version: str) -> dict[str, str]:
        row = re.search(rf'<tr data-version="{version}">(.*?)</tr>', html, re.S)
        assert row is not None
        cells = re.findall(r'<td class="num" data-status="(\w+)">([^<]*)</td>', row.group(1))
        return {status: text for status, text in cells if text != "·"}

    assert counts("1") == {"completed": "3", "rolled_back": "1"}
    assert counts("2") == {"completed": "1"}
    # Newest version first, and the newest is the one drawn by default.
    assert html.index('data-version="2"') < html.index('data-version="1"')
    assert "version 2: stages" in html
    assert "version 1: stages" in client.get(saga_path(V1.name, "1")).text


def test_a_saga_known_only_from_the_store_shows_counts_and_says_why(url: str) -> None:
    with TestClient(create_app(url)) as client:
        response = client.get(saga_path(V1.name))
    assert response.status_code == 200
    assert "<svg" not in response.text
    assert "is not registered with this dashboard" in response.text
    assert '<tr data-version="1">' in response.text
    assert '<tr data-version="2">' in response.text


def test_an_unknown_saga_or_version(client: TestClient) -> None:
    missing = client.get(saga_path("nothing-here"))
    assert missing.status_code == 404
    assert "no saga" in missing.text
    other = client.get(saga_path(V1.name, "9"))
    assert other.status_code == 200
    assert "version 9 of saga" in other.text
    assert "<svg" not in other.text


def test_linked_from_the_overview_and_a_run(client: TestClient) -> None:
    link = f"/sagas/{quote(V1.name, safe='')}"
    assert link in client.get("/").text
    assert f"{link}?version=1" in client.get("/runs/v1-back").text

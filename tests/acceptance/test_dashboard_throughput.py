"""The overview's throughput chart (runs finished per minute), on SQLite and PostgreSQL.

Runs are finished by engines whose clock is set back by hand, so each falls
in a known minute; the chart's numbers are read from `throughput` and from
the overview's SVG.
"""

from __future__ import annotations

import re
import time

from starlette.testclient import TestClient

from sagakit import Engine, RunStatus
from sagakit.dashboard import create_app
from sagakit.dashboard.throughput import MINUTES, chart, per_minute, throughput

from . import dashapp
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

NOW = 1_800_000_000.0


def test_per_minute_buckets_by_age_and_leaves_out_the_rest() -> None:
    counts = per_minute(
        [NOW, NOW - 59.9, NOW - 60, NOW - 61, NOW - 3599, NOW - 3600, NOW + 1, NOW - 7200],
        NOW,
    )
    assert len(counts) == MINUTES
    assert counts[-1] == 2, "now and 59.9 s ago: this minute"
    assert counts[-2] == 2, "60 s and 61 s ago: the minute before"
    assert counts[0] == 1, "3599 s ago: the oldest minute; 3600 s is out of the hour"
    assert sum(counts) == 5, "the future and two hours ago are left out"


def test_the_chart_scales_bars_to_the_busiest_minute() -> None:
    drawn = chart((0,) * 57 + (1, 4, 2))
    assert (drawn.total, drawn.peak) == (7, 4)
    assert [bar.minute for bar in drawn.bars[-3:]] == [2, 1, 0]
    assert drawn.bars[-2].height == drawn.height
    assert drawn.bars[-3].height == drawn.height / 4
    assert drawn.bars[0].height == 0
    assert drawn.bars[-1].y == drawn.height - drawn.height / 2
    empty = chart((0,) * MINUTES)
    assert (empty.total, empty.peak) == (0, 0)
    assert all(bar.height == 0 for bar in empty.bars)


def finish(url: str, run_id: str, ago: float, *, order_id: str = "ok") -> RunStatus:
    """Run a refund to its end with the clock set ``ago`` seconds back."""
    with Engine(url, clock=lambda: time.time() - ago) as engine:
        engine.register(*dashapp.SAGAS)
        return engine.run(dashapp.refund, dashapp_order(order_id), run_id=run_id).status


def dashapp_order(order_id: str) -> dict[str, str]:
    return {"order_id": order_id, "card": dashapp.CARD}


def test_the_overview_counts_runs_finished_per_minute(sql_store_url: str) -> None:
    url = sql_store_url
    # Each 30 s inside its minute: the test has 30 s of slack either side.
    assert finish(url, "now-a", 30) is RunStatus.COMPLETED
    assert finish(url, "now-b", 30) is RunStatus.COMPLETED
    assert finish(url, "one-back", 90) is RunStatus.COMPLETED
    assert finish(url, "two-back", 150, order_id="bad-2") is RunStatus.ROLLED_BACK
    assert finish(url, "oldest", 59 * 60 + 30) is RunStatus.COMPLETED
    assert finish(url, "too-old", 61 * 60) is RunStatus.COMPLETED
    with Engine(url, clock=lambda: time.time() - 30) as engine:
        engine.register(*dashapp.SAGAS)  # paused: not finished, not counted
        assert engine.run(dashapp.approval, {}, run_id="waiting").status is RunStatus.PAUSED

    with Engine(url) as engine:
        counts = throughput(engine).counts
    assert counts[-3:] == (1, 1, 2)
    assert counts[0] == 1
    assert sum(counts) == 5

    with TestClient(create_app(url, read_only=True)) as client:
        html = client.get("/").text
    assert '<span class="throughput-total">5</span>' in html
    assert '<span class="throughput-peak">2</span>' in html
    bars = dict(re.findall(r'data-minute="(\d+)" data-count="(\d+)"', html))
    assert len(bars) == MINUTES
    assert (bars["0"], bars["1"], bars["2"], bars["59"]) == ("2", "1", "1", "1")
    assert sum(int(count) for count in bars.values()) == 5

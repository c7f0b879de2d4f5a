"""The overview's throughput chart: runs finished per minute over the last hour.

The stores have no query that counts runs by time, so the chart is counted
from a bounded listing: the newest `SCAN_CAP` runs (by creation) of each
finished status, bucketed by the minute their record last changed
(``updated_at``, which a finished run's record keeps). A run created long
before the newest `SCAN_CAP` of its status and finished within the hour is
missed; the page says when a listing hit the bound.

The chart is drawn on the server as inline SVG (no script, no library):
`Chart` holds the numbers and each bar's geometry, the template draws it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sagakit.engine import Engine
from sagakit.journal import RunStatus
from sagakit.run import Run

MINUTES = 60
"""How many one-minute buckets the chart holds (the last hour)."""

SCAN_CAP = 1000
"""How many runs of each finished status are read, newest created first."""

FINISHED = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED, RunStatus.FAILED)
"""The statuses a run ends in: each counts as finished in the minute it reached it."""

WIDTH = 600
"""The chart's drawing width, in SVG units (it scales to the page)."""

HEIGHT = 120
"""The chart's drawing height, in SVG units, bars only (labels go below)."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute of the chart.

    Attributes:
        minute: Minutes before now that the bucket ends (0 is the current minute).
        count: Runs finished in that minute.
        x: The bar's left edge.
        y: The bar's top edge.
        height: The bar's height (0 for an empty minute).
    """

    minute: int
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class Chart:
    """Runs finished per minute over the last hour, and how to draw it.

    Attributes:
        counts: Runs finished per minute, oldest minute first (`MINUTES` of them).
        total: Runs finished in the hour.
        peak: The busiest minute's count.
        bars: Each minute's bar, oldest first.
        capped: The finished statuses whose listing hit `SCAN_CAP`.
        bar_width: Each bar's width.
    """

    counts: tuple[int, ...]
    total: int
    peak: int
    bars: tuple[Bar, ...]
    capped: tuple[str, ...] = ()
    bar_width: float = WIDTH / MINUTES

    @property
    def width(self) -> int:
        """The drawing's width."""
        return WIDTH

    @property
    def height(self) -> int:
        """The bars' height."""
        return HEIGHT


def per_minute(finished_at: Iterable[float], now: float) -> tuple[int, ...]:
    """Count times into the `MINUTES` one-minute buckets ending at ``now``, oldest first.

    A time in ``(now - 60 s * k - 60 s, now - 60 s * k]`` counts in the
    bucket ``k`` minutes back; a time after ``now`` or older than the hour
    is left out.
    """
    counts = [0] * MINUTES
    for at in finished_at:
        age = now - at
        if age < 0:
            continue
        back = math.floor(age / 60)
        if back < MINUTES:
            counts[MINUTES - 1 - back] += 1
    return tuple(counts)


def chart(counts: tuple[int, ...], capped: Iterable[str] = ()) -> Chart:
    """The chart of ``counts`` (oldest minute first): bars scaled to the busiest minute."""
    peak = max(counts, default=0)
    step = WIDTH / len(counts) if counts else WIDTH
    bars = []
    for index, count in enumerate(counts):
        height = HEIGHT * count / peak if peak else 0.0
        bars.append(
            Bar(
                minute=len(counts) - 1 - index,
                count=count,
                x=round(index * step, 2),
                y=round(HEIGHT - height, 2),
                height=round(height, 2),
            )
        )
    return Chart(
        counts=counts,
        total=sum(counts),
        peak=peak,
        bars=tuple(bars),
        capped=tuple(sorted(capped)),
        bar_width=round(step, 2),
    )


def finished_runs(engine: Engine) -> tuple[list[Run], list[str]]:
    """The newest `SCAN_CAP` runs of each finished status, and the statuses that hit the cap."""
    runs: list[Run] = []
    capped: list[str] = []
    for status in FINISHED:
        found = engine.runs(status=status, limit=SCAN_CAP)
        if len(found) == SCAN_CAP:
            capped.append(status.value)
        runs.extend(found)
    return runs, capped


def throughput(engine: Engine, *, now: float | None = None) -> Chart:
    """Runs finished per minute over the hour before ``now`` (default: the clock), charted."""
    runs, capped = finished_runs(engine)
    now = time.time() if now is None else now
    return chart(per_minute((run.updated_at for run in runs), now), capped)

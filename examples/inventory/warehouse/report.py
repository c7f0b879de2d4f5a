"""Printing what happened: order tables, the stock ledger, and sagakit timelines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from sagakit import Engine, Run
from sagakit.timeline import build_timeline, render_timeline, short_error
from warehouse.stock import Move


def outcome_table(runs: Mapping[str, Run], units: Mapping[str, int]) -> Table:
    """One row per (status, cause): how many orders ended so, and the units they took.

    Args:
        runs: The orders' runs, by order id.
        units: The units each order still holds, by order id (0 if none).
    """
    counts: Counter[tuple[str, str]] = Counter()
    taken: Counter[tuple[str, str]] = Counter()
    for order_id, run in runs.items():
        key = (run.status.value, short_error(run.error, limit=60))
        counts[key] += 1
        taken[key] += units.get(order_id, 0)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("status")
    table.add_column("orders", justify="right")
    table.add_column("units", justify="right")
    table.add_column("why")
    for key in sorted(counts):
        table.add_row(key[0], str(counts[key]), str(taken[key]), key[1])
    return table


def stock_line(sku: str, opening: int, moves: Sequence[Move]) -> str:
    """The level's path through the ledger, e.g. ``10 -> 0 in 10 moves, never below 0``."""
    levels = [opening, *(m.qty_after for m in moves)]
    return (
        f"stock of {sku}: {levels[0]} -> {levels[-1]} in {len(moves)} moves, "
        f"never below {min(levels)}"
    )


def print_timeline(console: Console, engine: Engine, run_id: str, title: str) -> None:
    """A run's timeline, as ``sagakit show`` draws it."""
    console.print()
    console.print(title, style="bold")
    console.print(render_timeline(build_timeline(engine.history(run_id), engine.get(run_id))))

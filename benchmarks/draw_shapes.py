"""Draw what a run's shape costs: steps/s by state size, and µs per call by saga length.

Reads the tables that ``bench_state_size.py --json`` and
``bench_saga_length.py --json`` write, and draws one panel for each:

    .venv/bin/python benchmarks/bench_state_size.py --shapes keys --json state-size.json
    .venv/bin/python benchmarks/bench_saga_length.py --store memory sqlite --json saga-length.json
    .venv/bin/python benchmarks/draw_shapes.py state-size.json saga-length.json \\
        --out docs/benchmarks-shape.png

``compare_dbos.py --state-size FILE --saga-length FILE`` draws the same two
panels beside its own (see `panels`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SIZES = ("small", "1mb", "10mb")
"""The state sizes of ``bench_state_size.py``, smallest first."""
SIZE_LABELS = {"small": "2 KB", "1mb": "1 MB", "10mb": "10 MB"}
LABELS_APART = 2.0
"""Points nearer than this factor on the log scale get their labels on either side."""


def load(path: Path) -> list[dict[str, Any]]:
    """A table written by one of the benchmarks' ``--json``."""
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    return rows


def state_size_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """Steps/s of one saga by state size, a line per store (log scale).

    Only the ``keys`` shape's rows (the label says what a step does): a table
    of both shapes would otherwise draw whichever came last.
    """
    rows = [row for row in rows if row.get("shape", "keys") == "keys"]
    stores = list(dict.fromkeys(row["store"] for row in rows))
    points = {
        store: {row["size"]: row["steps_per_s"] for row in rows if row["store"] == store}
        for store in stores
    }
    for store in stores:
        sizes = [size for size in SIZES if size in points[store]]
        values = [points[store][size] for size in sizes]
        ax.plot([SIZE_LABELS[size] for size in sizes], values, marker="o", label=store)
        for size, value in zip(sizes, values, strict=True):
            # Two stores' points close on the log scale would print their
            # labels over each other: the lower one's goes under its point.
            below = any(
                value <= other[size] < value * LABELS_APART
                for name, other in points.items()
                if name != store and size in other
            )
            ax.annotate(
                f"{value:,.0f}",
                (SIZE_LABELS[size], value),
                textcoords="offset points",
                xytext=(0, -7 if below else 6),
                ha="center",
                va="top" if below else "bottom",
                fontsize=7,
            )
    ax.margins(x=0.08, y=0.12)  # room for the outer points' labels
    ax.set_yscale("log")
    ax.set_xlabel("state size (each step sets one 1 KB key)")
    ax.set_ylabel("steps/s, one saga (log scale)")
    ax.set_title("state size", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", which="both", alpha=0.3)


def saga_length_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """µs per call by saga length, a line per store and shape."""
    lines = dict.fromkeys((row["store"], row["shape"]) for row in rows)
    for store, shape in lines:
        points = sorted(
            (row["steps"], row["us_per_call"])
            for row in rows
            if (row["store"], row["shape"]) == (store, shape)
        )
        ax.plot(
            [str(steps) for steps, _ in points],
            [us for _, us in points],
            marker="o",
            linestyle="-" if shape == "completed" else "--",
            label=f"{store}, {shape}",
        )
    ax.set_xlabel("steps in the saga")
    ax.set_ylabel("µs per call (actions and compensations)")
    ax.set_title("saga length", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def panels(axes: tuple[Any, Any], state_size: Path, saga_length: Path) -> None:
    """Both panels, on the two axes given (``compare_dbos.py`` passes its own)."""
    state_size_panel(axes[0], load(state_size))
    saga_length_panel(axes[1], load(saga_length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state_size", type=Path, help="bench_state_size.py --json's file")
    parser.add_argument("saga_length", type=Path, help="bench_saga_length.py --json's file")
    parser.add_argument("--out", type=Path, default=Path("benchmarks-shape.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels((axes[0], axes[1]), args.state_size, args.saga_length)
    fig.suptitle("sagakit: what a run's shape costs", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Throughput baseline: sagas of five no-op steps, on memory and SQLite.

Prints one table: for each store and mode (one saga at a time, or many in
flight at once), sagas/s, durable steps/s, and wall time per step.

    .venv/bin/python benchmarks/bench_steps.py            # defaults
    .venv/bin/python benchmarks/bench_steps.py --sagas 2000 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit import AsyncEngine, Saga, StepContext

STEPS = 5


def make_saga(kind: str, steps: int = STEPS) -> Saga[Any]:
    """Five (or ``steps``) no-op steps, as coroutines or plain functions (run on threads)."""
    saga: Saga[Any] = Saga(f"bench-{kind}" if steps == STEPS else f"bench-{kind}-{steps}")
    for i in range(steps):
        if kind == "async":

            async def noop(state: dict[str, Any], ctx: StepContext) -> None:
                return None

        else:

            def noop(state: dict[str, Any], ctx: StepContext) -> None:  # type: ignore[misc]
                return None

        saga.add_step(noop, name=f"step{i}")
    return saga


@dataclass
class Row:
    store: str
    steps: str
    mode: str
    sagas: int
    seconds: float

    @property
    def sagas_per_s(self) -> float:
        return self.sagas / self.seconds

    @property
    def steps_per_s(self) -> float:
        return self.sagas * STEPS / self.seconds

    @property
    def ms_per_step(self) -> float:
        return self.seconds * 1000 / (self.sagas * STEPS)


async def measure(url: str, saga: Saga[Any], sagas: int, concurrency: int) -> float:
    async with AsyncEngine(url) as engine:
        await engine.run(saga, run_id="warm-up")
        start = time.perf_counter()
        if concurrency <= 1:
            for i in range(sagas):
                await engine.run(saga, run_id=f"seq-{i}")
        else:
            # A fixed set of callers, each starting its next saga as the last
            # one settles: `concurrency` in flight until all are done. (Not a
            # semaphore over every saga: asyncio's looks at all its waiters
            # on each acquire, which would be measured along with sagakit.)
            numbers = iter(range(sagas))

            async def caller() -> None:
                for i in numbers:
                    await engine.run(saga, run_id=f"par-{i}")

            await asyncio.gather(*(caller() for _ in range(concurrency)))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000, help="sagas per row")
    parser.add_argument("--concurrency", type=int, default=100, help="sagas in flight")
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="SQLite durability"
    )
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("memory", "sqlite"):
            for kind in ("async", "sync"):
                saga = make_saga(kind)
                for mode, concurrency in (("one at a time", 1), ("concurrent", args.concurrency)):
                    if store == "memory":
                        url = "memory://"
                    else:
                        path = Path(tmp) / f"{kind}-{concurrency}.db"
                        url = f"sqlite:///{path}?synchronous={args.synchronous}"
                    n = args.sagas if concurrency > 1 else max(args.sagas // 4, 50)
                    seconds = asyncio.run(measure(url, saga, n, concurrency))
                    label = mode if concurrency == 1 else f"{concurrency} in flight"
                    rows.append(Row(store, kind, label, n, seconds))

    table = Table(
        title=f"sagakit: sagas of {STEPS} no-op steps (SQLite synchronous={args.synchronous})"
    )
    for column in ("store", "steps", "mode", "sagas", "sagas/s", "steps/s", "ms/step"):
        table.add_column(
            column, justify="right" if column[0] in "sm" and column != "store" else "left"
        )
    for row in rows:
        table.add_row(
            row.store,
            row.steps,
            row.mode,
            str(row.sagas),
            f"{row.sagas_per_s:,.0f}",
            f"{row.steps_per_s:,.0f}",
            f"{row.ms_per_step:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()

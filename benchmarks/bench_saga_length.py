"""Cost per step as a saga grows longer: does a 1,000-step saga cost what five steps do?

Runs sagas of N no-op async steps, one at a time, going forward to the end
(``completed``) and, in a second shape, failing at the last step so that
every step before it is compensated (``rolled back``), and prints the time
per call (actions and compensations alike) beside the five-step saga's. The
goal is a ratio of at most 1.5 at 1,000 steps: nothing in the engine should
walk the whole saga or the whole journal at every step.

    .venv/bin/python benchmarks/bench_saga_length.py
    .venv/bin/python benchmarks/bench_saga_length.py --store sqlite --lengths 5 100 1000

The memory store shows the engine's own cost; SQLite adds a commit per step
(``synchronous=normal``, so that the disk's fsync time does not drown it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sagakit import AsyncEngine, RetryPolicy, Saga, StepContext

CALLS = 5_000
"""Calls measured per cell (whole sagas: at least one)."""


def make_saga(steps: int, *, fail_last: bool) -> Saga[Any]:
    """``steps`` no-op steps, each with a no-op compensation; the last fails if asked."""
    saga: Saga[Any] = Saga(f"length-{steps}-{'fail' if fail_last else 'ok'}")

    async def noop(state: dict[str, Any], ctx: StepContext) -> None:
        return None

    async def fail(state: dict[str, Any], ctx: StepContext) -> None:
        raise RuntimeError("the last step fails")

    for i in range(steps):
        if fail_last and i == steps - 1:
            saga.add_step(fail, name=f"s{i}", retry=RetryPolicy(max_attempts=1))
        else:
            saga.add_step(noop, name=f"s{i}", compensation=noop)
    return saga


def calls_per_run(steps: int, *, fail_last: bool) -> int:
    """Actions and compensations one run makes."""
    return 2 * steps - 1 if fail_last else steps


async def one_round(url: str, steps: int, *, fail_last: bool, tag: str) -> float:
    """Microseconds per call over about `CALLS` calls of sagas of ``steps``."""
    saga = make_saga(steps, fail_last=fail_last)
    each = calls_per_run(steps, fail_last=fail_last)
    runs = max(1, CALLS // each)
    async with AsyncEngine(url) as engine:
        await engine.run(saga, run_id=f"{tag}-warm-up")
        started = time.perf_counter()
        for i in range(runs):
            await engine.run(saga, run_id=f"{tag}-{i}")
        return (time.perf_counter() - started) * 1e6 / (runs * each)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["memory", "sqlite"], nargs="+", default=["memory"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 100, 1000])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per cell (median)")
    parser.add_argument(
        "--json", type=Path, help="also write the table here (compare_dbos.py draws it)"
    )
    args = parser.parse_args()
    table: list[dict[str, object]] = []
    print("store   shape        steps  us/call  ratio to first")
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.store:
            for fail_last in (False, True):
                shape = "rolled back" if fail_last else "completed"
                # Rounds interleaved across lengths, so that a busy minute on a
                # shared machine weighs on every length alike.
                rounds: dict[int, list[float]] = {steps: [] for steps in args.lengths}
                for r in range(args.repeat):
                    for steps in args.lengths:
                        if store == "memory":
                            url = "memory://"
                        else:
                            name = f"{steps}-{shape.replace(' ', '-')}.db"
                            url = f"sqlite:///{Path(tmp) / name}?synchronous=normal"
                        tag = f"r{r}"
                        us = asyncio.run(one_round(url, steps, fail_last=fail_last, tag=tag))
                        rounds[steps].append(us)
                base = statistics.median(rounds[args.lengths[0]])
                for steps in args.lengths:
                    us = statistics.median(rounds[steps])
                    print(f"{store:7} {shape:12} {steps:5}  {us:7.1f}  {us / base:14.2f}")
                    table.append(
                        {"store": store, "shape": shape, "steps": steps, "us_per_call": us}
                    )
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()

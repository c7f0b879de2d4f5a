"""What encryption at rest costs per step, on SQLite.

Sagas of five steps, each returning a small result that the state keeps,
one at a time and many in flight, with and without encryption keys; the
state carries a payload of ``--state-bytes`` characters (the whole state is
encrypted at each commit). Prints wall time per step and the difference.
Each configuration is measured ``--repeat`` times, alternating, and the
fastest is kept (the least disturbed by the machine).

    .venv/bin/python benchmarks/bench_encryption.py
    .venv/bin/python benchmarks/bench_encryption.py --sagas 1000 --state-bytes 4000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagakit import AsyncEngine, Saga, StepContext
from sagakit.store.encrypted import generate_key

STEPS = 5


def make_saga() -> Saga[Any]:
    saga: Saga[Any] = Saga("bench-encrypted")
    for i in range(STEPS):

        async def step(state: dict[str, Any], ctx: StepContext, i: int = i) -> dict[str, Any]:
            return {f"done{i}": True}

        saga.add_step(step, name=f"step{i}")
    return saga


async def measure(
    url: str, keys: Sequence[str] | None, sagas: int, concurrency: int, state_bytes: int
) -> float:
    saga = make_saga()
    state = {"payload": "x" * state_bytes}
    async with AsyncEngine(url, encryption_keys=keys) as engine:
        await engine.run(saga, state, run_id="warm-up")
        numbers = iter(range(sagas))
        start = time.perf_counter()

        async def caller() -> None:
            for i in numbers:
                await engine.run(saga, state, run_id=f"run-{i}")

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--state-bytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="SQLite's setting."
    )
    parser.add_argument(
        "--memory", action="store_true", help="The memory store: the CPU cost alone."
    )
    args = parser.parse_args()
    keys = [generate_key(), generate_key()]
    where = "memory store" if args.memory else f"SQLite (synchronous={args.synchronous})"
    print(
        f"{where}, {args.sagas} sagas of {STEPS} steps, "
        f"state of ~{args.state_bytes} bytes; best of {args.repeat}"
    )
    print(f"{'mode':<14}{'plain ms/step':>15}{'encrypted ms/step':>19}{'difference':>12}")
    with tempfile.TemporaryDirectory() as folder:
        modes = (("one at a time", 1), (f"{args.concurrency} at once", args.concurrency))
        for mode, concurrency in modes:
            best: dict[bool, float] = {}
            for round_ in range(args.repeat):
                for encrypted in (False, True):
                    db = Path(folder) / f"{mode[:3]}-{encrypted}-{round_}.db"
                    url = (
                        f"memory://bench-{mode[:3]}-{encrypted}-{round_}"
                        if args.memory
                        else f"sqlite:///{db}?synchronous={args.synchronous}"
                    )
                    seconds = asyncio.run(
                        measure(
                            url,
                            keys if encrypted else None,
                            args.sagas,
                            concurrency,
                            args.state_bytes,
                        )
                    )
                    per_step = seconds * 1000 / (args.sagas * STEPS)
                    best[encrypted] = min(best.get(encrypted, per_step), per_step)
            plain, sealed = best[False], best[True]
            print(f"{mode:<14}{plain:>15.3f}{sealed:>19.3f}{(sealed - plain) / plain:>+12.1%}")


if __name__ == "__main__":
    main()

"""CPU per step on SQLite with many sagas in flight: the process's, all threads.

On a machine whose cores are shared, steps/s wanders with whatever else
runs; the CPU a step costs much less. Each row runs ``--sagas`` sagas of
five no-op async steps, ``--concurrency`` at once, on a fresh SQLite file
(as `bench_steps.py`'s concurrent SQLite row does), and prints steps/s, the
process's CPU (user + system, every thread: the event loop's and the
connection's) per step, and the load average.

    .venv/bin/python benchmarks/sqlite_cpu_per_step.py --sagas 3000 --concurrency 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench_steps import STEPS, make_saga, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    saga = make_saga("async")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}?synchronous={args.synchronous}"
            cpu = time.process_time()
            seconds = asyncio.run(measure(url, saga, args.sagas, args.concurrency))
            cpu = time.process_time() - cpu
        steps = args.sagas * STEPS
        print(
            f"{steps / seconds:9,.0f} steps/s  {cpu / steps * 1e6:6.1f} µs CPU/step  "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

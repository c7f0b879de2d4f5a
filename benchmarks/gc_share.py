"""The cyclic garbage collector's share of a step with many sagas in flight, in a program.

`compare_dbos.py` measures sagakit's SQLite rows in a process of its own
that leaves the collector as Python sets it, as a program that embeds
`AsyncEngine` would (the library never touches its host's collector;
``sagakit worker``, which owns its process, tunes it: docs/operations.md).
This script runs the same sagas (five no-op async steps, ``--concurrency``
at once, on a fresh SQLite file) in a child process for each of three
settings, taking turns ``--repeat`` times:

- ``default``: the collector as Python sets it;
- ``worker``: as ``sagakit worker`` sets it for its own process
  (``gc.collect()``, ``gc.freeze()``, the youngest generation's threshold
  at 10,000);
- ``off``: ``gc.disable()``.

Each prints steps/s, the process's CPU per step, the time spent in
collections (``gc.callbacks``) per step, the collections of each
generation, and the median, 90th percentile and longest young collection.

    .venv/bin/python benchmarks/gc_share.py --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_steps import STEPS, make_saga, measure

SETTINGS = ("default", "worker", "off")


def child(setting: str, sagas: int, concurrency: int, synchronous: str) -> dict[str, Any]:
    """Measure one setting in this process; what `main` prints of it."""
    timings: list[tuple[int, float]] = []  # (generation, seconds) of each collection
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            timings.append((info["generation"], time.perf_counter() - began[0]))

    if setting == "worker":
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, *gc.get_threshold()[1:])
    elif setting == "off":
        gc.disable()
    gc.callbacks.append(timed)
    saga = make_saga("async")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}?synchronous={synchronous}"
        cpu = time.process_time()
        seconds = asyncio.run(measure(url, saga, sagas, concurrency))
        cpu = time.process_time() - cpu
    steps = sagas * STEPS
    young = sorted(t for g, t in timings if g == 0) or [0.0]
    return {
        "steps_per_s": steps / seconds,
        "cpu_us": cpu * 1e6 / steps,
        "gc_us": sum(t for _, t in timings) * 1e6 / steps,
        "collections": [sum(1 for g, _ in timings if g == n) for n in range(3)],
        "young_us": [
            statistics.median(young) * 1e6,
            young[int(len(young) * 0.9)] * 1e6,
            young[-1] * 1e6,
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = child(args.child, args.sagas, args.concurrency, args.synchronous)
        print(json.dumps(result))
        return
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    for _ in range(args.repeat):
        for setting in SETTINGS:
            command = [sys.executable, __file__, "--child", setting, "--sagas", str(args.sagas)]
            command += ["--concurrency", str(args.concurrency), "--synchronous", args.synchronous]
            out = subprocess.run(
                command,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows[setting].append(json.loads(out.splitlines()[-1]))
    print(
        f"{args.sagas:,} sagas of {STEPS} no-op async steps, {args.concurrency:,} at once, "
        f"SQLite synchronous={args.synchronous}; each turn in a process of its own"
    )
    header = (
        f"{'setting':<8} {'steps/s':>22} {'CPU µs/step':>18} {'GC µs/step':>16} "
        f"{'collections 0/1/2':>18} {'young: median / p90 / max µs':>30}"
    )
    print(header)
    for setting, turns in rows.items():
        rates = " / ".join(f"{t['steps_per_s']:,.0f}" for t in turns)
        cpus = " / ".join(f"{t['cpu_us']:.1f}" for t in turns)
        gcs = " / ".join(f"{t['gc_us']:.1f}" for t in turns)
        last = turns[-1]
        counts = "/".join(str(n) for n in last["collections"])
        young = " / ".join(f"{v:,.0f}" for v in last["young_us"])
        print(f"{setting:<8} {rates:>22} {cpus:>18} {gcs:>16} {counts:>18} {young:>30}")
    print("(collections and young times: the last turn's)")


if __name__ == "__main__":
    main()

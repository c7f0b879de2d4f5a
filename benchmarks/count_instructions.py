"""Instructions per step of the engine itself, counted by valgrind's callgrind.

Wall time on a shared machine wanders from minute to minute; an instruction
count does not, so it shows a small change to the hot path that a timing
would drown. Runs sagas of five no-op async steps one at a time on the
memory store (the engine's own work, no I/O), under callgrind: once with
only the warm-up and once with ``--sagas`` more, and prints the difference
per step. Needs valgrind (Debian's ``valgrind`` package).

    .venv/bin/python benchmarks/count_instructions.py --sagas 200
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_steps import STEPS, make_saga

from sagakit import AsyncEngine

WARM_UP = 20


async def drive(sagas: int) -> None:
    saga = make_saga("async")
    async with AsyncEngine("memory://") as engine:
        for i in range(WARM_UP + sagas):
            await engine.run(saga, run_id=f"r{i}")


def instructions(sagas: int, folder: Path) -> int:
    """The instructions callgrind counts for the whole process driving ``sagas`` sagas."""
    out = folder / f"callgrind.{sagas}.out"
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            str(sagas),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200, help="sagas counted after the warm-up")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(drive(args.child))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        base = instructions(0, Path(tmp))
        total = instructions(args.sagas, Path(tmp))
    per_step = (total - base) / (args.sagas * STEPS)
    print(
        f"{per_step:,.0f} instructions per step (memory store, async no-op steps, "
        f"one saga at a time; {args.sagas} sagas after {WARM_UP} to warm up)"
    )


if __name__ == "__main__":
    main()

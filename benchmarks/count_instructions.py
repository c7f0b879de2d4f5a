"""Instructions per step of the engine itself, counted by valgrind's callgrind.

Wall time on a shared machine wanders from minute to minute; an instruction
count does not, so it shows a small change to the hot path that a timing
would drown. Runs sagas of five no-op async steps one at a time on the
memory store (the engine's own work, no I/O), under callgrind: once with
only the warm-up and once with ``--sagas`` more, and prints the difference
per step. Needs valgrind (Debian's ``valgrind`` package).

    .venv/bin/python benchmarks/count_instructions.py --sagas 200

With ``--steps``, the sagas have that many steps instead: counting sagas of
one step and of five tells what a run costs besides its steps (see
docs/benchmarks.md). The budget is for five.

With ``--concurrency``, that many sagas are in flight at once (on SQLite,
the group-commit path: commits batched on the connection's thread).

With ``--state``, the sagas carry a big state (``bench_state_size.py``'s
``keys`` shape: 1 KB values under 1,000 keys for ``1mb``, 10,000 for
``10mb``) and each step sets one key: what a step costs with that state,
apart from its run's start and end (which write the whole state), counted
as the difference between sagas of ``--steps`` steps and of three times
as many, each count less its warm-up's. ``small`` is the same saga with a
state of two keys.

    .venv/bin/python benchmarks/count_instructions.py --state 1mb --sagas 3 --steps 50
``--keep`` copies the counted run's callgrind output for callgrind_annotate.

With ``--check``, the count is compared with the budget committed in
``benchmarks/instruction_budget.json`` for this Python's version, and the
script exits 1 when it is more than 5 % over: the test command runs it so
(``tests/guard/test_instruction_budget.py``), so that a change that slows the
hot path fails CI on any machine. When the hot path gets faster, lower the
budget to the new count (``--update-budget`` writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_state_size
from bench_steps import STEPS, make_saga

from sagakit import AsyncEngine

WARM_UP = 20
WARM_UP_STATE = 1
"""Sagas run first with ``--state``: each step's function called once, caches filled."""
BUDGET = Path(__file__).with_name("instruction_budget.json")
OVER = 0.05
"""How far over the budget a count may be before ``--check`` fails."""


async def drive_state(sagas: int, steps: int, size: int, url: str) -> None:
    """Drive ``sagas`` sagas whose steps each set one key of a state of ``size`` bytes."""
    saga = bench_state_size.make_saga("keys", size, steps)
    state = bench_state_size.initial_state("keys", size)
    async with AsyncEngine(url, lease_seconds=30.0) as engine:
        for i in range(WARM_UP_STATE + sagas):
            await engine.run(saga, dict(state), run_id=f"r{i}")


async def drive(
    sagas: int, steps: int = STEPS, url: str = "memory://", concurrency: int = 1
) -> None:
    saga = make_saga("async", steps)
    # Many at once take minutes under callgrind, and leases renewed every
    # third of a lease would add writes that the same run outside it (a
    # second or two) never makes: those runs' leases outlast the count.
    lease = 30.0 if concurrency == 1 else 3600.0
    async with AsyncEngine(url, lease_seconds=lease) as engine:
        if concurrency == 1:
            for i in range(WARM_UP + sagas):
                await engine.run(saga, run_id=f"r{i}")
            return
        for i in range(WARM_UP):
            await engine.run(saga, run_id=f"w{i}")
        # A fixed set of callers, each starting its next saga as the last
        # one settles (as bench_steps.py does).
        numbers = iter(range(sagas))

        async def caller() -> None:
            for i in numbers:
                await engine.run(saga, run_id=f"r{i}")

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        # How the commits were grouped varies from run to run with the
        # threads' turns, and the count with it: say how many transactions.
        print(f"transactions: {getattr(engine.store, 'flushes', 0)}", file=sys.stderr)


def instructions(
    sagas: int,
    folder: Path,
    steps: int = STEPS,
    sqlite: bool = False,
    concurrency: int = 1,
    *,
    state: str | None = None,
) -> int:
    """The instructions callgrind counts for the whole process driving ``sagas`` sagas.

    With ``sqlite``, on a fresh SQLite file in ``folder`` (``synchronous=normal``:
    callgrind counts no kernel work, so FULL's fsyncs would not show anyway).
    """
    out = folder / f"callgrind.{sagas}.{steps}.out"
    url = (
        f"sqlite:///{folder / f'{sagas}.{steps}.db'}?synchronous=normal" if sqlite else "memory://"
    )
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            str(sagas),
            "--steps",
            str(steps),
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            *(["--state", state] if state is not None else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        # Fixed string hashing: dict and set layouts, and so the count, are
        # the same from one run to the next.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    grouped = re.search(r"transactions: (\d+)", done.stderr)
    if grouped is not None and concurrency > 1:
        print(f"{grouped.group(1)} transactions for {sagas} sagas at once")
    return int(found.group(1))


def python_version() -> str:
    """The budget's key: instruction counts differ between Python versions."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def check(per_step: float, update: bool) -> int:
    """Compare ``per_step`` with the committed budget; the exit status."""
    budgets: dict[str, int] = json.loads(BUDGET.read_text()) if BUDGET.exists() else {}
    version = python_version()
    if update:
        budgets[version] = round(per_step)
        BUDGET.write_text(json.dumps(budgets, indent=2, sort_keys=True) + "\n")
        print(f"budget for Python {version} set to {round(per_step):,} in {BUDGET.name}")
        return 0
    budget = budgets.get(version)
    if budget is None:
        print(
            f"no instruction budget for Python {version} in {BUDGET.name}: "
            "measure one with --update-budget and commit it"
        )
        return 1
    limit = budget * (1 + OVER)
    verdict = "within" if per_step <= limit else "OVER"
    print(
        f"{verdict} budget: {per_step:,.0f} against {budget:,} (Python {version}; "
        f"fails above {limit:,.0f}, {OVER:.0%} over)"
    )
    if per_step > limit:
        print(
            "the engine's hot path costs more instructions than before: find what "
            "made it slower (a profile of bench_steps.py), or, if the cost is "
            "worth it, raise the budget with --update-budget and say why in the commit"
        )
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200, help="sagas counted after the warm-up")
    parser.add_argument("--check", action="store_true", help="exit 1 if over the budget")
    parser.add_argument(
        "--update-budget", action="store_true", help="write this count as the budget"
    )
    parser.add_argument(
        "--steps", type=int, default=STEPS, help=f"steps per saga (the budget is for {STEPS})"
    )
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="count on the SQLite store (a fresh file) instead of the memory store; "
        "the budget is the memory store's, so --check refuses this",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="sagas in flight at once (the budget is for one at a time)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy the counted run's callgrind output here (for callgrind_annotate)",
    )
    parser.add_argument(
        "--state",
        choices=sorted(bench_state_size.SIZES),
        help="sagas whose steps each set one key of a state this big (see above)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", default="memory://", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.child is not None and args.state is not None:
        size = bench_state_size.SIZES[args.state]
        asyncio.run(drive_state(args.child, args.steps, size, args.url))
        return
    if args.child is not None:
        asyncio.run(drive(args.child, args.steps, args.url, args.concurrency))
        return
    if args.state is not None and (args.check or args.update_budget or args.concurrency != 1):
        parser.error("--state counts one saga at a time, without the budget")
    if args.steps != STEPS and (args.check or args.update_budget):
        parser.error(f"the budget is for sagas of {STEPS} steps: no --steps with it")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.concurrency != 1 and (args.check or args.update_budget):
        parser.error("the budget is for one saga at a time: no --concurrency with it")
    if args.sqlite and (args.check or args.update_budget):
        parser.error("the budget is the memory store's: no --sqlite with it")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.state is not None:
        # Of each length, the warm-up alone and with the counted sagas: what
        # the sagas added, less what the shorter ones added, is their extra
        # steps' alone (a first call of each step's function, and each run's
        # start and end, cancel out).
        added = []
        for steps in (args.steps, 3 * args.steps):
            with tempfile.TemporaryDirectory() as tmp:
                alone = instructions(0, Path(tmp), steps, args.sqlite, state=args.state)
                total = instructions(args.sagas, Path(tmp), steps, args.sqlite, state=args.state)
            added.append(total - alone)
        per_step = (added[1] - added[0]) / (args.sagas * 2 * args.steps)
        store = "SQLite store, synchronous=normal" if args.sqlite else "memory store"
        print(
            f"{per_step:,.0f} instructions per step ({store}, a {args.state} state of the "
            f"keys shape, one key set per step; {args.sagas} sagas of {3 * args.steps} steps "
            f"less {args.sagas} of {args.steps}, each after {WARM_UP_STATE} to warm up)"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = instructions(0, Path(tmp), args.steps, args.sqlite)
        total = instructions(args.sagas, Path(tmp), args.steps, args.sqlite, args.concurrency)
        if args.keep is not None:
            shutil.copyfile(Path(tmp) / f"callgrind.{args.sagas}.{args.steps}.out", args.keep)
    per_step = (total - base) / (args.sagas * args.steps)
    store = "SQLite store, synchronous=normal" if args.sqlite else "memory store"
    at_once = "one saga at a time" if args.concurrency == 1 else f"{args.concurrency} at once"
    print(
        f"{per_step:,.0f} instructions per step ({store}, async no-op steps, "
        f"{args.steps} a saga, {at_once}; {args.sagas} sagas after {WARM_UP} to warm up)"
    )
    if args.check or args.update_budget:
        raise SystemExit(check(per_step, args.update_budget))


if __name__ == "__main__":
    main()

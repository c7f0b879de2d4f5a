"""What a big state costs: steps/s, bytes written per step and peak memory.

Runs one saga whose steps each change one top-level key of the state, with
states of three sizes (small, 1 MB, 10 MB) in two shapes:

- ``keys``: 1 KB values under many keys (1,000 keys for 1 MB); each step
  sets one of them to a new 1 KB value.
- ``blob``: one big string under one key, and a small counter that each
  step sets.

Each row runs in a child process of its own, so that its peak memory is its
own: ``peak RSS`` is how far the child's resident set grew past what it was
just before it built the state (``ru_maxrss``, which counts SQLite's and
psycopg's buffers too); with ``--tracemalloc``, a second child counts the
peak of Python's own allocations over the same span.

Steps/s: each run's steps, timed from its first step's call to its last's
(``--steps`` steps, each with its commit; not the run's start, which writes
the whole first state, nor its end).

ms per run of one step: the runs of one step that the measure makes
first, each timed whole (its start with the whole first state, its one
step, its end).

Bytes per step:

- to store: the JSON text the store handed to the database for the steps'
  commits (counted as each write is queued for group commit: its JSON
  array and the big parts bound on their own on SQLite, its state, error,
  change and events' data, big parts sent on their own included, on
  PostgreSQL): what sagakit asks to be written, before the database's
  pages, indexes and WAL. The measure works on older sagakit too.
- written, SQLite: what the process handed to ``write()`` while the steps
  ran (``wchar`` of ``/proc/self/io``): the WAL's 4 KiB pages, and the
  checkpoints that copy them into the database, which may copy pages
  written by a run's start (its whole first state) too: noisy.
- PostgreSQL: how far the server's WAL moved (``pg_current_wal_lsn()``
  before and after). The server's WAL is shared by every client, so other
  work on the server at the same time is counted too: run it on a quiet
  server, and read the median of ``--repeat``.
- memory: nothing is written.

    .venv/bin/python benchmarks/bench_state_size.py
    .venv/bin/python benchmarks/bench_state_size.py --stores sqlite,postgresql --repeat 3
    .venv/bin/python benchmarks/bench_state_size.py --sizes small,1mb --shapes keys --tracemalloc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit import AsyncEngine, Saga, StepContext

SIZES = {"small": 2_000, "1mb": 1_000_000, "10mb": 10_000_000}
VALUE = 1_000  # bytes of each value the ``keys`` shape sets
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def noise(length: int, seed: int) -> str:
    """``length`` characters that do not compress (PostgreSQL compresses what it stores)."""
    return random.Random(seed).randbytes(length // 2 + 1).hex()[:length]


def initial_state(shape: str, size: int) -> dict[str, Any]:
    """A state of about ``size`` bytes (as JSON) in ``shape``."""
    if shape == "keys":
        count = max(size // (VALUE + 10), 2)
        return {f"k{i:05d}": noise(VALUE, i) for i in range(count)}
    return {"blob": noise(size, 0), "counter": 0}


def make_saga(shape: str, size: int, steps: int, stamps: list[float] | None = None) -> Saga[Any]:
    """``steps`` steps, each of which changes one top-level key of the state.

    With ``stamps``, each step appends the time it was called: from the
    first step's call to the last's, the run did ``steps - 1`` steps, each
    with its commit, and nothing of its start or its end.
    """
    saga: Saga[Any] = Saga(f"bench-state-{shape}-{size}-{steps}")

    def stamp() -> None:
        if stamps is not None:
            stamps.append(time.perf_counter())

    count = len(initial_state(shape, size)) if shape == "keys" else 0
    for i in range(steps):
        if shape == "keys":
            key, value = f"k{i % count:05d}", noise(VALUE, -1 - i)

            async def change(
                state: dict[str, Any], ctx: StepContext, key: str = key, value: str = value
            ) -> dict[str, Any]:
                stamp()
                return {key: value}

        else:

            async def change(  # type: ignore[misc]
                state: dict[str, Any], ctx: StepContext, i: int = i
            ) -> dict[str, Any]:
                stamp()
                return {"counter": i + 1}

        saga.add_step(change, name=f"step{i}")
    return saga


def rss_now() -> int:
    """The resident set of this process now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def written() -> int:
    """Bytes this process has handed to write() so far."""
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


async def wal_lsn() -> int:
    """The PostgreSQL server's WAL position, in bytes."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
        cur = await conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def count_handed(store: str) -> list[int]:
    """Count the bytes of JSON each write queued for group commit carries (see the docstring)."""
    handed = [0]
    if store == "sqlite":
        from sagakit.store.sqlite.group_commit import GroupCommit

        queue = GroupCommit.queue_write

        def counted(self: Any, write: Any) -> Any:
            # ``size`` counts a big write's parts bound on their own too.
            handed[0] += getattr(write, "size", None) or len(write.text)
            return queue(self, write)

        GroupCommit.queue_write = counted  # type: ignore[method-assign]
    elif store == "postgresql":
        from sagakit.store.postgresql.group_commit import GroupCommit as PgGroupCommit

        send = PgGroupCommit.write

        async def sent(self: Any, write: Any) -> Any:
            texts = [v for v in write.row if isinstance(v, str) and v[:1] in "{["]
            handed[0] += sum(map(len, texts)) + sum(len(e[-1]) for e in write.events)
            # A big part is sent on its own, a placeholder in its place; an
            # event's data put together around the state's text already sent
            # (params None, then the text before it and after it) sends those two.
            handed[0] += sum(
                len(params[0]) if params[0] is not None else len(params[1]) + len(params[2])
                for _, params in getattr(write, "big", ())
            )
            return await send(self, write)

        PgGroupCommit.write = sent  # type: ignore[method-assign]
    return handed


async def child(
    store: str, shape: str, size: int, *, steps: int, runs: int, traced: bool
) -> dict[str, float]:
    """Run ``runs`` sagas of ``steps`` steps on a state of ``size``; what it measured."""
    schema = f"bench_state_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        if store == "memory":
            url = "memory://"
        elif store == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        else:
            url = f"{PG_URL}?schema={schema}"
        stamps: list[float] = []
        saga = make_saga(shape, size, steps + 1, stamps)
        handed = count_handed(store)
        try:
            async with AsyncEngine(url) as engine:
                await engine.run(make_saga(shape, SIZES["small"], 1), {"a": 1}, run_id="warm-up")
                base_rss = rss_now()
                if traced:
                    tracemalloc.start()
                state = initial_state(shape, size)
                # Runs of one step, then runs of 1 + ``steps``: the difference
                # is what the steps wrote, without what starting a run wrote
                # (the first state is written with it, whatever the design).
                # Their time is read from the steps' own stamps instead: a
                # big state's start varies by more than the steps cost, and
                # a difference of two times could come out below zero.
                spent = []
                stepping = 0.0
                for label, each in (("one", make_saga(shape, size, 1)), ("many", saga)):
                    lsn = await wal_lsn() if store == "postgresql" else 0
                    handed_before = handed[0]
                    wrote = written()
                    start = time.perf_counter()
                    for r in range(runs):
                        stamps.clear()
                        run = await engine.run(each, state, run_id=f"{label}-{r}")
                        run.raise_for_status()
                        if label == "many":
                            assert len(stamps) == steps + 1, stamps
                            stepping += stamps[-1] - stamps[0]
                    seconds = time.perf_counter() - start
                    wrote = written() - wrote
                    if store == "postgresql":
                        wrote = await wal_lsn() - lsn
                    spent.append((seconds, wrote, handed[0] - handed_before))
                peak_traced = tracemalloc.get_traced_memory()[1] if traced else 0
                tracemalloc.stop()
                first = await engine.get("many-0")
                assert len(first.state) == len(state)
        finally:
            if store == "postgresql":
                await drop_schema(schema)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "seconds": stepping,
        "one_step_run": spent[0][0] / runs,  # a run of one step, its start and end included
        "steps": steps * runs,
        "wrote": spent[1][1] - spent[0][1],
        "handed": spent[1][2] - spent[0][2],
        "peak_rss": max(peak_rss - base_rss, 0),
        "peak_traced": peak_traced,
    }


def in_child(args: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the child {args} failed:\n{done.stderr[-3000:]}")
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgresql", help="memory, sqlite, postgresql")
    parser.add_argument("--shapes", default="keys,blob")
    parser.add_argument("--sizes", default="small,1mb,10mb")
    parser.add_argument("--steps", type=int, default=20, help="steps per saga")
    parser.add_argument("--runs", type=int, default=3, help="sagas per row")
    parser.add_argument("--repeat", type=int, default=1, help="children per row (medians)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python's peak")
    parser.add_argument(
        "--json", type=Path, help="also write the rows here (compare_dbos.py draws them)"
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    if args.child:
        store, shape, size, steps, runs, traced = args.child
        measured = asyncio.run(
            child(store, shape, SIZES[size], steps=int(steps), runs=int(runs), traced=traced == "1")
        )
        print(json.dumps(measured))
        return

    for option, given, known in (
        ("--stores", args.stores, ("memory", "sqlite", "postgresql")),
        ("--shapes", args.shapes, ("keys", "blob")),
        ("--sizes", args.sizes, tuple(SIZES)),
    ):
        unknown = sorted(set(given.split(",")) - set(known))
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")

    table = Table(
        title=f"sagakit: steps that each change one key of a big state "
        f"({args.steps} steps per saga, {args.runs} sagas per row, median of {args.repeat})"
    )
    columns = (
        "store",
        "shape",
        "state",
        "steps/s",
        "bytes to store/step",
        "bytes written/step",
        "ms per run of one step",
    )
    for column in (*columns, "peak RSS"):
        table.add_column(column, justify="left" if column in ("store", "shape") else "right")
    if args.tracemalloc:
        table.add_column("peak traced", justify="right")
    for store in args.stores.split(","):
        for shape in args.shapes.split(","):
            for size in args.sizes.split(","):
                common = [store, shape, size, str(args.steps), str(args.runs)]
                found = [in_child([*common, "0"]) for _ in range(args.repeat)]
                steps = found[0]["steps"]
                rate = statistics.median(steps / f["seconds"] for f in found)
                wrote = statistics.median(f["wrote"] / steps for f in found)
                handed = statistics.median(f["handed"] / steps for f in found)
                peak = statistics.median(f["peak_rss"] for f in found)
                one_step = statistics.median(f["one_step_run"] for f in found)
                cells = [store, shape, size, f"{rate:,.0f}"]
                cells += [
                    f"{handed:,.0f}" if store != "memory" else "-",
                    f"{wrote:,.0f}",
                    f"{one_step * 1e3:,.2f}",
                    mib(peak),
                ]
                if args.tracemalloc:
                    cells.append(mib(in_child([*common, "1"])["peak_traced"]))
                table.add_row(*cells)
                Console().print(f"{store} {shape} {size}: {cells[3:]}", style="dim")
                rows.append(
                    {
                        "store": store,
                        "shape": shape,
                        "size": size,
                        "steps_per_s": rate,
                        "bytes_to_store_per_step": handed,
                        "peak_rss": peak,
                        "ms_per_one_step_run": one_step * 1e3,
                    }
                )
    Console().print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

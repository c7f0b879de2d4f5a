"""What one commit of the SQLite store makes SQLite do, counted rather than timed.

Runs sagas of five no-op async steps through `AsyncEngine.run` on a fresh
SQLite file, one at a time (``--concurrency 1``) or many in flight, and
prints, per commit (one transaction of the store) and per step:

- the statements the store executed (from sqlite3's trace callback; the
  statements a trigger runs are not counted, the one that fired it is);
- the pages written to the WAL, and which tables and indexes they belong
  to (read from the WAL's frame headers and the ``dbstat`` table, with
  automatic checkpoints turned off for the count, so every frame stays in
  the file);
- the CPU time of the event loop's thread and of the store's thread.

Pages, statements and frames do not depend on how busy the machine is;
the CPU times do, a little, and the wall time a lot (printed with the load
average beside it). A second pass with checkpoints on, as the store runs,
gives the CPU and wall time.

    .venv/bin/python benchmarks/sqlite_commit_cost.py --sagas 300
    .venv/bin/python benchmarks/sqlite_commit_cost.py --sagas 3000 --concurrency 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import sqlite3
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_steps import STEPS, make_saga

from sagakit import AsyncEngine

_FRAME_HEADER = 24
_WAL_HEADER = 32


def thread_cpu(tid: int) -> float:
    """Seconds of CPU (user and system) thread ``tid`` of this process has used."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _bare(sql: str) -> str:
    """A statement's text without its comments, on one line."""
    return " ".join(re.sub(r"--[^\n]*", "", sql).split())


def wal_frames(path: str) -> tuple[list[int], int]:
    """The page number of each frame in the WAL at ``path``, and how many commits they hold."""
    data = Path(f"{path}-wal").read_bytes()
    if len(data) < _WAL_HEADER:
        return [], 0
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, commits = [], 0
    offset = _WAL_HEADER
    salt = data[16:24]
    while offset + _FRAME_HEADER + page_size <= len(data):
        page, size_after = struct.unpack(">II", data[offset : offset + 8])
        if data[offset + 8 : offset + 16] != salt:
            break  # a frame left over from before the WAL was restarted
        pages.append(page)
        commits += size_after != 0
        offset += _FRAME_HEADER + page_size
    return pages, commits


async def run_sagas(engine: AsyncEngine, sagas: int, concurrency: int, tag: str) -> None:
    saga = make_saga("async")
    if concurrency <= 1:
        for i in range(sagas):
            await engine.run(saga, run_id=f"{tag}-{i}")
        return
    numbers = iter(range(sagas))

    async def caller() -> None:
        for i in numbers:
            await engine.run(saga, run_id=f"{tag}-{i}")

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def measure(path: str, args: argparse.Namespace, *, count: bool) -> dict[str, Any]:
    url = f"sqlite:///{path}?synchronous={args.synchronous}"
    async with AsyncEngine(url) as engine:
        await run_sagas(engine, min(args.concurrency, 100), args.concurrency, "warm-up")
        store: Any = engine.store
        connection = store._connection  # a benchmark may look inside
        db: sqlite3.Connection = connection.db
        store_tid = await asyncio.get_running_loop().run_in_executor(
            connection._executor, threading.get_native_id
        )
        statements: collections.Counter[str] = collections.Counter()
        if args.autocheckpoint is not None and not count:
            with connection.lock:
                db.execute(f"PRAGMA wal_autocheckpoint = {args.autocheckpoint}").fetchall()
        if count:
            # Each statement by its name in queries.sql (the trace gives its
            # text with the parameters in it, which begins as the query does).
            # (The text before its first parameter, as a parameter's value
            # takes its place in the trace.)
            by_prefix: dict[str, list[str]] = {}
            for name, text in connection.queries.items():
                prefix = re.split(r"[?:]\w*", _bare(text), maxsplit=1)[0][:80]
                by_prefix.setdefault(prefix, []).append(name)
            # Longest first; queries that begin alike share one label.
            prefixes = sorted(((p, "/".join(n)) for p, n in by_prefix.items()), reverse=True)
            names: dict[str, str] = {}

            def name_of(text: str) -> str:
                if text[:80] not in names:
                    found = (name for prefix, name in prefixes if text.startswith(prefix))
                    names[text[:80]] = next(found, text[:40])
                return names[text[:80]]

            last: list[str] = [""]

            def traced(sql: str) -> None:
                # sqlite3 reports each statement a trigger runs with the text
                # of the statement that fired it: a repeat is not counted.
                if sql != last[0]:
                    statements[name_of(_bare(sql))] += 1
                last[0] = sql

            with connection.lock:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                db.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
                db.set_trace_callback(traced)
        flushes = store.flushes
        loop_cpu, store_cpu = thread_cpu(threading.get_native_id()), thread_cpu(store_tid)
        start = time.perf_counter()
        await run_sagas(engine, args.sagas, args.concurrency, "run")
        seconds = time.perf_counter() - start
        loop_cpu = thread_cpu(threading.get_native_id()) - loop_cpu
        store_cpu = thread_cpu(store_tid) - store_cpu
        commits = store.flushes - flushes
        result: dict[str, Any] = {
            "seconds": seconds,
            "commits": commits,
            "loop_cpu": loop_cpu,
            "store_cpu": store_cpu,
        }
        if count:
            with connection.lock:
                db.set_trace_callback(None)
                pages, wal_commits = wal_frames(path)
                owner = dict(db.execute("SELECT pageno, name FROM dbstat").fetchall())
            result["statements"] = statements
            result["frames"] = collections.Counter(owner.get(p, "?") for p in pages)
            result["wal_commits"] = wal_commits
    return result


def report(args: argparse.Namespace, counted: dict[str, Any], timed: dict[str, Any]) -> None:
    steps = args.sagas * STEPS
    commits = counted["commits"]
    print(
        f"{args.sagas} sagas of {STEPS} async no-op steps, {args.concurrency} in flight, "
        f"synchronous={args.synchronous}; SQLite {sqlite3.sqlite_version}"
    )
    print(f"commits (store transactions): {commits}, {commits / steps:.3f} per step")
    total = sum(counted["statements"].values())
    print(f"statements: {total / commits:.2f} per commit, {total / steps:.2f} per step")
    for sql, n in counted["statements"].most_common(12):
        print(f"  {n / commits:7.3f}/commit  {sql}")
    frames = counted["frames"]
    pages = sum(frames.values())
    print(
        f"WAL frames (pages written): {pages / commits:.2f} per commit, {pages / steps:.2f} per "
        f"step ({counted['wal_commits']} commits in the WAL)"
    )
    for name, n in frames.most_common():
        print(f"  {n / commits:7.3f}/commit  {name}")
    for label, run in (("counted pass (tracing)", counted), ("timed pass", timed)):
        print(
            f"{label}: {run['seconds'] * 1e3 / steps:.3f} ms/step, {steps / run['seconds']:,.0f}"
            f" steps/s; CPU per step: loop {run['loop_cpu'] * 1e6 / steps:.0f} µs, store's "
            f"thread {run['store_cpu'] * 1e6 / steps:.0f} µs"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=300, help="sagas measured after a warm-up")
    parser.add_argument("--concurrency", type=int, default=1, help="sagas in flight")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="normal")
    parser.add_argument(
        "--autocheckpoint",
        type=int,
        help="the timed pass's wal_autocheckpoint, in pages (default: the store's own)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        counted = asyncio.run(measure(str(Path(tmp) / "count.db"), args, count=True))
        timed = asyncio.run(measure(str(Path(tmp) / "time.db"), args, count=False))
    report(args, counted, timed)


if __name__ == "__main__":
    main()

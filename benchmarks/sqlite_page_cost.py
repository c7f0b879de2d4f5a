"""What a page written to the WAL adds to an fsynced commit on this disk.

The one-saga rows of `compare_dbos.py` measure sagakit against the disk's
floor: a bare sqlite3 loop whose commits write two pages (a small row
inserted, another replaced). A commit of sagakit's writes about five
(`sqlite_commit_cost.py`: the run's row, the journal's table and its
key's index, and at a run's start and end the indexes a new or finished
run touches). This script runs the same loop (`compare_dbos.floor_commits`)
writing 2 to ``--max-pages`` pages a commit: each page past two is one
more small row appended to a table of its own, so each commit writes that
many WAL frames (counted from the WAL in a pass of its own, with automatic
checkpoints off, and printed beside the time). Page counts take turns,
``--repeat`` times, on fresh files; the medians, and the least-squares
slope of microseconds against pages, are printed.

    .venv/bin/python benchmarks/sqlite_page_cost.py --repeat 5

Wall time on a shared disk wanders: read the slope with the load average
printed beside it, and compare runs made at a quiet hour.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from compare_dbos import floor_commits, floor_schema
from sqlite_commit_cost import wal_frames


def bare_loop(path: Path, pages: int, commits: int, synchronous: str, *, count: bool) -> float:
    """Microseconds per commit of a loop writing ``pages`` WAL pages a commit; with
    ``count``, the WAL frames a commit wrote instead.

    Timed, the WAL is checkpointed as SQLite does by default (as the floor's
    loop in `compare_dbos.py` is): a WAL that only grew would add the file's
    growth to every fsync. Counted, automatic checkpoints are off, so that
    every frame stays in the WAL to be read back.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if count:
            conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        floor_schema(conn, pages - 2)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        start = time.perf_counter()
        floor_commits(conn, commits, pages - 2)
        seconds = time.perf_counter() - start
        if count:
            frames, written = wal_frames(str(path))
            return len(frames) / max(written, 1)
        return seconds * 1e6 / commits
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-pages", type=int, default=6, help="the most pages a commit writes")
    parser.add_argument("--commits", type=int, default=1000, help="commits per loop")
    parser.add_argument("--repeat", type=int, default=5, help="turns of every page count")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--dir", type=Path, help="where the files go (default: the temp dir)")
    args = parser.parse_args()
    if args.max_pages < 3:
        parser.error("--max-pages must be at least 3")
    counts = list(range(2, args.max_pages + 1))
    times: dict[int, list[float]] = {n: [] for n in counts}
    frames: dict[int, float] = {}
    for n in counts:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            frames[n] = bare_loop(Path(tmp) / "bare.db", n, 200, args.synchronous, count=True)
    for _ in range(args.repeat):
        for n in counts:
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                path = Path(tmp) / "bare.db"
                times[n].append(bare_loop(path, n, args.commits, args.synchronous, count=False))
    load = os.getloadavg()[0]
    print(
        f"{args.commits:,} commits a loop, synchronous={args.synchronous}, "
        f"{args.repeat} turns; SQLite {sqlite3.sqlite_version}"
    )
    print(f"{'pages':>5}  {'WAL frames/commit':>17}  {'µs/commit (median)':>18}  turns")
    for n in counts:
        turns = ", ".join(f"{t:.0f}" for t in times[n])
        print(f"{n:>5}  {frames[n]:>17.2f}  {statistics.median(times[n]):>18.1f}  {turns}")
    xs = [frames[n] for n in counts for _ in times[n]]
    ys = [t for n in counts for t in times[n]]
    slope = statistics.linear_regression(xs, ys).slope
    print(f"slope: {slope:.1f} µs a page (every turn, least squares); load {load:.2f}")


if __name__ == "__main__":
    main()

"""What a small commit writes to a SQLite store: WAL frames and bytes per commit.

Creates ``--runs`` runs with a small state, then commits ``--steps`` steps
to each, the runs interleaved (as a worker drives many at once), one event
and one changed key per commit. Automatic checkpoints are off while it
counts, so the WAL holds every frame the commits wrote: the figure does
not depend on the machine's load, nor on where checkpoints fall.

    .venv/bin/python benchmarks/bench_commit_pages.py --runs 10 --steps 100
    .venv/bin/python benchmarks/bench_commit_pages.py --runs 200 --steps 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from sagakit.journal import Event, EventKind
from sagakit.store import open_store
from sagakit.store.testing.support import T0, A, change, record


def _written() -> int:
    """Bytes this process has handed ``write()`` so far (``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


async def measure(path: Path, runs: int, steps: int) -> None:
    """Print the WAL frames and bytes the commits wrote, per commit."""
    store: Any = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        states: dict[str, dict[str, Any]] = {}
        for n in range(runs):
            run_id = f"run-{n:05d}"
            state = {"n": 0, "order": {"id": run_id, "items": [1, 2, 3]}}
            states[run_id] = state
            started = Event(run_id, 1, EventKind.RUN_STARTED, T0, data={"state": state})
            await store.create_run(record(run_id, state=state), [started])
        db = store._connection.db  # the store's own connection: its pragmas apply to it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        before = _written()
        for seq in range(2, steps + 2):
            for n in range(runs):
                run_id = f"run-{n:05d}"
                states[run_id] = {**states[run_id], "n": seq}
                event = Event(
                    run_id, seq, EventKind.STEP_SUCCEEDED, T0 + seq, "s", 1, {"result": {"n": seq}}
                )
                await store.commit(change(run_id, A, (event,), state=states[run_id]))
        written = _written() - before
        wal = os.path.getsize(f"{path}-wal")
    finally:
        await store.close()
    commits = runs * steps
    frames = (wal - 32) // (page + 24)  # the WAL's header, then a header per frame
    print(
        f"runs={runs} steps={steps} commits={commits} frames/commit={frames / commits:.3f} "
        f"WAL bytes/commit={wal / commits:,.0f} write() bytes/commit={written / commits:,.0f}"
    )


def main() -> None:
    """Parse the options and measure once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder) / "runs.db", options.runs, options.steps))


if __name__ == "__main__":
    main()

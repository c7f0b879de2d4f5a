"""Recovery after SIGKILL, side by side: sagakit and DBOS Transact on SQLite.

The recovery row of `compare_dbos.py`, measured the same way for both:

1. a process starts ``runs`` sagas (DBOS workflows) of five async steps on a
   fresh SQLite file (WAL, ``synchronous=FULL``): sagakit through
   ``AsyncEngine.run``, DBOS through ``DBOS.start_workflow_async``. The third
   step waits for an hour, so that once every run is in it, each has two
   steps done and one in flight;
2. then that process gets SIGKILL, and at once a fresh process is started on
   the same file whose steps do not wait: sagakit a `sagakit.Worker`
   polling every 0.2 s, whose engine's lease is ``lease`` seconds, as the
   killed process's was; DBOS launched under the killed process's executor id, so
   that its launch-time recovery takes that process's pending workflows;
3. the file is read every 20 ms until every run has completed.

Reported per system: seconds from the kill, and from the new process's
start, until every run completed; the steps in flight at the kill (the
killed process's count of runs inside the third step); and the steps run
again, i.e. calls in the new process of the steps that had started before
the kill (the first three). Both systems should run each interrupted step
once more and none that had finished. sagakit resumes a run only once the
lease of the process that died has lapsed, so that a process that is only
slow is never doubled; DBOS resumes its own executor's workflows at launch,
trusting that no other process carries that executor id.

    .venv/bin/python benchmarks/compare_recovery.py --runs 1000

DBOS is optional (``pip install -e '.[bench]'``); without it only sagakit is
measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from sagakit import AsyncEngine, Saga, StepContext, Worker

STEPS = 5
SLOW_STEP = 2  # the step every run is in when its process is killed
READY = "READY"  # printed by the first process once every run is in the slow step
RESULT = "RESULT "
POLL = 0.02  # seconds between two reads of the file by the parent

# The queries that count completed runs in each system's own tables.
_SETTLED = {
    "sagakit": "SELECT count(*) FROM runs WHERE status = 'completed'",
    "dbos": "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'",
}


class RecoveryFailed(RuntimeError):
    """A recovery measurement could not be made; the message says why."""


# -- the child processes --------------------------------------------------------


class Calls:
    """The step calls of this process, by step index, and the crash phase's wait."""

    counts = [0] * STEPS
    wait_in_slow_step = False
    runs = 0

    @classmethod
    async def call(cls, index: int) -> None:
        """Count a call; in the first process, wait in the slow step."""
        cls.counts[index] += 1
        if index == SLOW_STEP and cls.wait_in_slow_step:
            if cls.counts[index] == cls.runs:
                print(READY, flush=True)
            await asyncio.sleep(3600)


def sagakit_saga() -> Saga[Any]:
    """Five counted async steps."""
    saga: Saga[Any] = Saga("compare-recovery")
    for i in range(STEPS):

        async def step(state: dict[str, Any], ctx: StepContext, index: int = i) -> None:
            await Calls.call(index)

        saga.add_step(step, name=f"step{i}")
    return saga


async def sagakit_child(spec: dict[str, Any]) -> None:
    """The first process (runs and waits) or the second (a worker that resumes them)."""
    saga = sagakit_saga()
    url = f"sqlite:///{spec['path']}?synchronous=full"
    async with AsyncEngine(url, lease_seconds=spec["lease"]) as engine:
        if spec["phase"] == "crash":
            await asyncio.gather(*(engine.run(saga, run_id=f"r{i}") for i in range(spec["runs"])))
            return
        await engine.register(saga)
        worker = Worker(engine, concurrency=spec["runs"], poll_interval=0.2)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()
    print(RESULT + json.dumps({"calls": Calls.counts}), flush=True)


def dbos_child(spec: dict[str, Any]) -> None:
    """As `sagakit_child`, for DBOS: its recovery is its launch under the same executor id."""
    import dbos_noop
    from dbos import DBOS

    if spec["phase"] == "crash":
        dbos_noop.use_wal(spec["path"])
    dbos_noop.count_steps_with(Calls.call)
    dbos_noop.launch(f"sqlite:///{spec['path']}", executor_id="recovery")
    workflow = dbos_noop.five_counted_steps
    if spec["phase"] == "crash":

        async def start_all() -> None:
            await asyncio.gather(
                *(DBOS.start_workflow_async(workflow) for _ in range(spec["runs"]))
            )
            await asyncio.sleep(3600)  # until killed

        asyncio.run(start_all())
        return
    dbos_noop.serve_until_sigterm()
    print(RESULT + json.dumps({"calls": Calls.counts}), flush=True)


def child_main(raw: str) -> None:
    """Entry point of a child process."""
    spec: dict[str, Any] = json.loads(raw)
    Calls.wait_in_slow_step = spec["phase"] == "crash"
    Calls.runs = spec["runs"]
    if spec["system"] == "sagakit":
        asyncio.run(sagakit_child(spec))
    else:
        dbos_child(spec)


# -- the parent -----------------------------------------------------------------


def _spawn(spec: dict[str, Any], stderr: IO[str]) -> subprocess.Popen[str]:
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=stderr,  # a file: a full pipe nobody reads would stall the child
        text=True,
    )


def _wait_for_ready(proc: subprocess.Popen[str], timeout: float) -> bool:
    """Whether ``proc`` printed READY (every run in the slow step) within ``timeout``."""
    stdout = proc.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        # Wait for output with the time left: a child stuck before it prints
        # must not hang the benchmark. It prints nothing but READY.
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stdout], [], [], left)[0]:
            return False
        line = stdout.readline()
        if not line:  # the child exited
            return False
        if line.strip() == READY:
            return True


def _completed(path: Path, system: str) -> int:
    try:
        with sqlite3.connect(path, timeout=30) as conn:
            found: int = conn.execute(_SETTLED[system]).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the tables are not there yet
    return found


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def measure(system: str, runs: int, lease: float, timeout: float = 900) -> dict[str, Any]:
    """One recovery of ``runs`` runs for ``system`` ("sagakit" or "dbos").

    Returns:
        ``from_kill`` and ``from_restart`` (seconds until every run completed),
        ``in_flight`` (steps in flight at the kill), ``rerun`` (calls in the new
        process of steps that had started before the kill) and ``calls`` (that
        process's calls per step).

    Raises:
        RecoveryFailed: a process failed, or the runs did not complete in time.
    """
    with tempfile.TemporaryDirectory(prefix=f"recovery-{system}-") as tmp:
        path, log = Path(tmp) / "recovery.db", Path(tmp) / "stderr.log"
        spec = {"system": system, "path": str(path), "runs": runs, "lease": lease}
        with log.open("w") as stderr:
            first = _spawn({**spec, "phase": "crash"}, stderr)
            try:
                ready = _wait_for_ready(first, timeout)
            finally:
                first.send_signal(signal.SIGKILL)
                first.communicate()
            if not ready:
                raise RecoveryFailed(f"{system}: not every run got in flight:\n{_tail(log)}")
            killed = time.monotonic()
            second = _spawn({**spec, "phase": "resume"}, stderr)
            restarted = time.monotonic()
            try:
                while _completed(path, system) < runs:
                    if second.poll() is not None or time.monotonic() - killed > timeout:
                        break
                    time.sleep(POLL)
                done = time.monotonic()
                finished = _completed(path, system)
            finally:
                second.send_signal(signal.SIGTERM)
                try:
                    out, _ = second.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    second.kill()
                    out, _ = second.communicate()
        if finished < runs:
            raise RecoveryFailed(
                f"{system}: {finished} of {runs} runs completed after the kill:\n{_tail(log)}"
            )
        results = [line for line in out.splitlines() if line.startswith(RESULT)]
        if not results:
            raise RecoveryFailed(f"{system}: the new process printed no result:\n{_tail(log)}")
        calls: list[int] = json.loads(results[-1][len(RESULT) :])["calls"]
    return {
        "from_kill": done - killed,
        "from_restart": done - restarted,
        "in_flight": runs,
        "rerun": sum(calls[: SLOW_STEP + 1]),
        "calls": calls,
    }


def main() -> None:
    """Measure each system once and print what was measured."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs in flight at the kill")
    parser.add_argument("--lease", type=float, default=2.0, help="sagakit's lease, seconds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child)
        return
    systems = ["sagakit"]
    try:
        import dbos  # noqa: F401

        systems.append("dbos")
    except ImportError as exc:
        print(f"DBOS Transact cannot be imported ({exc}): measuring sagakit only")
    for system in systems:
        print(system, json.dumps(measure(system, args.runs, args.lease)))


if __name__ == "__main__":
    main()

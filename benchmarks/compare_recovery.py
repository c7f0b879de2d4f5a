"""Recovery after SIGKILL, side by side: sagakit and DBOS Transact on SQLite.

The recovery row of `compare_dbos.py`, measured the same way for both:

1. a process starts ``runs`` sagas (DBOS workflows) of five async steps on a
   fresh SQLite file (WAL, ``synchronous=FULL``): sagakit through
   ``AsyncEngine.run``, DBOS through ``DBOS.start_workflow_async``. The third
   step waits for an hour, so that once every run is in it, each has two
   steps done and one in flight;
2. then that process gets SIGKILL, and at once a fresh process is started on
   the same file whose steps do not wait: for sagakit, by default the
   ``sagakit worker`` command (``--worker cli``: what an operator restarts,
   with its own start-up, the command line's imports and the tuning of the
   process it owns) serving the same saga, polling every 0.2 s, or with
   ``--worker api`` a `sagakit.Worker` built by the script; DBOS launched
   under the killed process's executor id, so that its launch-time recovery
   takes that process's pending workflows;
3. the file is read every 20 ms until every run has completed.

sagakit is measured in one or more modes (``--modes``):

- ``lease``: the new process is another worker, which resumes the runs once
  the killed process's lease (``--lease`` seconds) has lapsed. The killed
  process leases under a name no later process recognises, as a process of
  another host would;
- ``worker-id``: both processes run under the same worker id (``sagakit
  worker --worker-id``), with leases of 300 s: the new process takes back at
  once the runs its earlier incarnation held, on the operator's promise that
  no other live process has that id (DBOS's executor id, the same promise);
- ``same-host``: both processes have their default identity (host, pid and
  process start), leases of 300 s: the new process proves the killed one
  gone (its pid is) and takes its runs back at once.

Reported per system: seconds from the kill, and from the new process's
start, until every run completed; the steps in flight at the kill (the
killed process's count of runs inside the third step); and the steps run
again, i.e. calls in the new process of the steps that had started before
the kill (the first three). Both systems should run each interrupted step
once more and none that had finished. Another worker resumes a run only
once the lease of the process that died has lapsed, so that a process that
is only slow is never doubled; a restart under the same identity takes the
runs back at once (fenced: each claim bumps the lease epoch); DBOS resumes
its own executor's workflows at launch, trusting that no other process
carries that executor id.

    .venv/bin/python benchmarks/compare_recovery.py --runs 1000
    .venv/bin/python benchmarks/compare_recovery.py --modes worker-id,same-host --repeat 3
    .venv/bin/python benchmarks/compare_recovery.py --skip-dbos --worker cli,api

Beside the seconds, the new process's CPU time (user + system, all its
threads, until it exits on SIGTERM once the runs are done): on a machine
shared with other work the wall time follows the load, the CPU time much
less.

DBOS is optional (``pip install -e '.[bench]'``); without it only sagakit is
measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import signal
import sqlite3
import statistics
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
STARTED = "STARTED "  # printed by the new process, with the time, once its imports are done
POLL = 0.02  # seconds between two reads of the file by the parent
MODES = ("lease", "worker-id", "same-host")  # how the new sagakit process knows the runs
WORKERS = ("cli", "api")  # what the new sagakit process is: `sagakit worker`, or a script's Worker
IDENTITY_LEASE = 300.0  # the restart modes' lease: far longer than any recovery measured
WORKER_ID = "recovery"

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


SAGA = sagakit_saga()
"""The saga both processes run; ``sagakit worker --app compare_recovery:SAGA`` serves it."""


def sagakit_cli_child(spec: dict[str, Any]) -> None:
    """The second process as ``sagakit worker``: the command run in this process.

    In this process, so that its step calls are counted here; the command's
    own modules are imported first, and counted as imports.
    """
    from sagakit.cli import main as sagakit_main
    from sagakit.cli import worker as _  # noqa: F401  (the command the group imports)

    imported = time.time()
    # The command imports the app by its name: the module running as __main__.
    sys.modules.setdefault("compare_recovery", sys.modules["__main__"])
    args = ["worker", "--db", f"sqlite:///{spec['path']}?synchronous=full", "--poll", "0.2"]
    args += ["--app", "compare_recovery:SAGA", "--concurrency", str(spec["runs"])]
    args += ["--lease", repr(spec["lease"])]
    if spec.get("mode") == "worker-id":
        args += ["--worker-id", WORKER_ID]
    print(STARTED + repr(imported), flush=True)
    try:
        sagakit_main(args)  # until SIGTERM
    except SystemExit as exit:
        if exit.code:
            raise
    print(RESULT + json.dumps({"calls": Calls.counts}), flush=True)


async def sagakit_child(spec: dict[str, Any]) -> None:
    """The first process (runs and waits) or the second (a worker that resumes them)."""
    saga = SAGA
    url = f"sqlite:///{spec['path']}?synchronous=full"
    mode = spec.get("mode", "lease")
    options: dict[str, Any] = {"lease_seconds": spec["lease"]}
    if mode == "worker-id":
        options["worker_id"] = WORKER_ID
    elif mode == "lease" and spec["phase"] == "crash":
        # A name in the form older versions wrote, which no process
        # recognises: the new worker waits out the lease, as for another host.
        options["owner"] = f"elsewhere:{os.getpid()}:{os.urandom(4).hex()}"
    async with AsyncEngine(url, **options) as engine:
        if spec["phase"] == "crash":
            await asyncio.gather(*(engine.run(saga, run_id=f"r{i}") for i in range(spec["runs"])))
            return
        print(STARTED + repr(spec["imported"]), flush=True)
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
    else:
        print(STARTED + repr(time.time()), flush=True)
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
    spec["imported"] = time.time()  # sagakit's imports (at the top) are done
    Calls.wait_in_slow_step = spec["phase"] == "crash"
    Calls.runs = spec["runs"]
    if spec["system"] == "sagakit" and spec["phase"] == "crash":
        # Compiled here into the cache the new process reads (see `_spawn`),
        # as pip compiles an installed package's files: the command line's
        # modules too (click's imports, and what they import of the standard
        # library), which the new process imports and this one does not.
        import sagakit.cli.main
        import sagakit.cli.worker  # noqa: F401
    if spec["system"] == "sagakit" and spec["phase"] == "resume" and spec.get("worker") == "cli":
        sagakit_cli_child(spec)
    elif spec["system"] == "sagakit":
        asyncio.run(sagakit_child(spec))
    else:
        dbos_child(spec)


# -- the parent -----------------------------------------------------------------


def _spawn(spec: dict[str, Any], stderr: IO[str], pycache: Path) -> subprocess.Popen[str]:
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    # Python's bytecode cache on, in ``pycache``: the first process compiles,
    # the new one starts from the cache, as from an installed package (whose
    # files pip compiles, as it did DBOS's). Without it (PYTHONDONTWRITEBYTECODE
    # set, an editable install) every start compiles sagakit from source.
    env = {**os.environ, "PYTHONPATH": path, "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        env=env,
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


def measure(
    system: str,
    runs: int,
    lease: float,
    *,
    timeout: float = 900,
    mode: str = "lease",
    worker: str = "cli",
) -> dict[str, Any]:
    """One recovery of ``runs`` runs for ``system`` ("sagakit" or "dbos").

    ``mode`` (sagakit only, see `MODES`): how the new process knows the runs;
    the restart modes lease for `IDENTITY_LEASE` seconds, not ``lease``.
    ``worker`` (sagakit only, see `WORKERS`): the new process is the
    ``sagakit worker`` command ("cli") or a `Worker` the script builds ("api").

    Returns:
        ``from_kill`` and ``from_restart`` (seconds until every run completed),
        ``in_flight`` (steps in flight at the kill), ``rerun`` (calls in the new
        process of steps that had started before the kill), ``calls`` (that
        process's calls per step) and ``cpu`` (its CPU seconds, user + system,
        until it exited).

    Raises:
        RecoveryFailed: a process failed, or the runs did not complete in time.
    """
    with tempfile.TemporaryDirectory(prefix=f"recovery-{system}-") as tmp:
        path, log = Path(tmp) / "recovery.db", Path(tmp) / "stderr.log"
        if mode not in MODES:
            raise ValueError(f"unknown recovery mode {mode!r}")
        if system == "sagakit" and mode != "lease":
            lease = IDENTITY_LEASE
        if worker not in WORKERS:
            raise ValueError(f"unknown worker {worker!r}")
        spec = {"system": system, "path": str(path), "runs": runs, "lease": lease, "mode": mode}
        spec["worker"] = worker
        with log.open("w") as stderr:
            first = _spawn({**spec, "phase": "crash"}, stderr, Path(tmp) / "pycache")
            try:
                ready = _wait_for_ready(first, timeout)
            finally:
                first.send_signal(signal.SIGKILL)
                first.communicate()
            if not ready:
                raise RecoveryFailed(f"{system}: not every run got in flight:\n{_tail(log)}")
            killed = time.monotonic()
            # The first process is reaped: what the children used from here is the new one's.
            reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
            spawned = time.time()  # the wall clock, which the child's STARTED line uses too
            second = _spawn({**spec, "phase": "resume"}, stderr, Path(tmp) / "pycache")
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
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = sum(getattr(used, f) - getattr(reaped, f) for f in ("ru_utime", "ru_stime"))
        if finished < runs:
            raise RecoveryFailed(
                f"{system}: {finished} of {runs} runs completed after the kill:\n{_tail(log)}"
            )
        results = [line for line in out.splitlines() if line.startswith(RESULT)]
        if not results:
            raise RecoveryFailed(f"{system}: the new process printed no result:\n{_tail(log)}")
        calls: list[int] = json.loads(results[-1][len(RESULT) :])["calls"]
        started = [
            float(line[len(STARTED) :]) for line in out.splitlines() if line.startswith(STARTED)
        ]
    return {
        "from_kill": done - killed,
        "from_restart": done - restarted,
        # The new process's own start-up (interpreter and imports), and what is left.
        "imports": started[0] - spawned if started else None,
        "in_flight": runs,
        "rerun": sum(calls[: SLOW_STEP + 1]),
        "calls": calls,
        "cpu": cpu,
    }


def main() -> None:
    """Measure each system (sagakit in each mode) ``--repeat`` times; print each and the medians."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs in flight at the kill")
    parser.add_argument("--lease", type=float, default=2.0, help="sagakit's lease, seconds")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"sagakit's modes, comma-separated (of {', '.join(MODES)})",
    )
    parser.add_argument(
        "--worker",
        default="cli",
        help="sagakit's new process, comma-separated: cli (the `sagakit worker` command) "
        "and/or api (a Worker built by this script)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each")
    parser.add_argument("--skip-dbos", action="store_true", help="measure sagakit only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child)
        return
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    workers = [worker.strip() for worker in args.worker.split(",") if worker.strip()]
    unknown = sorted(set(modes) - set(MODES)) + sorted(set(workers) - set(WORKERS))
    if unknown:
        parser.error(f"unknown modes or workers {', '.join(unknown)}")
    cases = [("sagakit", mode, worker) for mode in modes for worker in workers]
    if not args.skip_dbos:
        try:
            import dbos  # noqa: F401

            cases.append(("dbos", "lease", "cli"))
        except ImportError as exc:
            print(f"DBOS Transact cannot be imported ({exc}): measuring sagakit only")

    def name_of(system: str, mode: str, worker: str) -> str:
        return system if system == "dbos" else f"sagakit {mode} {worker}"

    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    loads: list[float] = []
    for turn in range(max(1, args.repeat)):  # the cases take turns: each sees the same moments
        for case in cases:
            system, mode, worker = case
            load = os.getloadavg()[0]
            loads.append(load)
            result = measure(system, args.runs, args.lease, mode=mode, worker=worker)
            found.setdefault(case, []).append(result)
            print(
                f"{name_of(*case)} ({turn + 1}, load {load:.1f}): {json.dumps(result)}", flush=True
            )
    theirs = found.get(("dbos", "lease", "cli"))
    dbos_restart = None if theirs is None else statistics.median(r["from_restart"] for r in theirs)
    print()
    print(f"{args.runs:,} runs in flight; medians of {max(1, args.repeat)}, seconds:")
    head = f"{'case':<26} {'from the kill':>13} {'from the start':>14} {'of it imports':>13}"
    print(f"{head} {'CPU':>5} {'rerun':>6} {'ratio':>6}")
    for case, results in found.items():
        kill = statistics.median(r["from_kill"] for r in results)
        start = statistics.median(r["from_restart"] for r in results)
        imports = statistics.median(r["imports"] or 0.0 for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        rerun = max(r["rerun"] for r in results)
        ratio = "" if dbos_restart is None or case[0] == "dbos" else f"{dbos_restart / start:.1f}x"
        print(
            f"{name_of(*case):<26} {kill:>13.2f} {start:>14.2f} {imports:>13.2f} {cpu:>5.2f} "
            f"{rerun:>6} {ratio:>6}"
        )
    print(f"load average (1 min) before each measurement: {', '.join(f'{x:.1f}' for x in loads)}")
    if dbos_restart is not None:
        print("ratio: DBOS's seconds from its new process's start over sagakit's")


if __name__ == "__main__":
    main()

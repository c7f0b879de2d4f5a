"""Side by side with DBOS Transact: sagas (workflows) of five no-op steps.

One command measures sagakit and DBOS Transact on identical workloads and
prints one table, then draws a chart of steps/s:

1. SQLite, one saga at a time: wall time per step (latency), and beside it
   the disk's floor: a bare sqlite3 loop of fsynced commits on the same disk;
2. SQLite, 100 and 1,000 sagas started at once (``asyncio.gather``, or
   ``DBOS.start_workflow`` for DBOS's synchronous style), repeated in rounds
   until ``--burst-total`` sagas have run: steps/s;
3. PostgreSQL, 1 and 4 worker processes draining a backlog of runs:
   sagakit's ``sagakit worker`` processes, 50 runs in flight each (as in
   ``bench_workers.py``, whose functions are reused), ``--pg-sagas-sagakit``
   runs; DBOS processes dequeuing one DBOS queue (``worker_concurrency`` 50,
   polled every ``--dbos-poll`` seconds), ``--pg-sagas`` runs; steps/s from
   the first run started to the last finished, read from each system's own
   tables. The backlogs differ so that each system drains its own for
   seconds: 2,000 runs last DBOS 20 to 35 s, sagakit's four workers well
   under one, of which the workers' start, one after another, was then a
   large share (docs/benchmarks.md);
4. process CPU time per step, for the SQLite rows, and for sagakit the
   same workloads once more on its in-memory store: the engine's own CPU,
   without a database (DBOS has no such mode);
5. recovery after SIGKILL on SQLite (``compare_recovery.py``): ``--recovery-runs``
   runs in flight when their process is killed; seconds until a new process
   has completed them all, and how many steps it ran again: sagakit once as
   another worker that waits out the lease, once restarted under the killed
   process's worker id (DBOS: relaunched under its executor id, both times);
6. resident memory (RSS) of the process after the SQLite throughput rows.

Steps and workflows are measured both as coroutines and as plain functions
(which DBOS runs on its executor's threads, sagakit on its thread pool), and
each row compares each system in its faster mode, named under its figure;
a second table gives every mode's steps/s (``--steps async`` or ``sync``:
one mode only). ``compare_peers.py`` puts Prefect and Celery beside them.

Every measurement runs in a fresh child process (DBOS is a process-wide
singleton, and a fresh process makes CPU time and RSS comparable) on a fresh
SQLite file, PostgreSQL schema (sagakit) or database (DBOS), removed after.

SQLite durability is the same for both: WAL with ``synchronous=FULL`` (every
commit fsynced). That is sagakit's default; DBOS sets neither pragma, so its
system database runs SQLite's defaults (rollback journal, FULL): the file is
switched to WAL before DBOS opens it (the journal mode is stored in the
file). ``--dbos-sqlite-journal delete`` keeps DBOS's own default instead.

    .venv/bin/python benchmarks/compare_dbos.py
    .venv/bin/python benchmarks/compare_dbos.py --quick --skip-postgres

DBOS is optional (``pip install -e '.[bench]'``); without it only sagakit
is measured. PostgreSQL is ``$SAGAKIT_BENCH_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bench_workers
import compare_recovery
import psycopg
from bench_steps import make_saga
from compare_recovery import RecoveryFailed
from rich.console import Console
from rich.table import Table

from sagakit import AsyncEngine

STEPS = 5
HERE = Path(__file__).resolve().parent
DEFAULT_PNG = HERE.parent / "docs" / "benchmarks-dbos.png"
RESULT = "RESULT "  # a child's last stdout line: this prefix, then JSON
WORKER_CONCURRENCY = 50  # runs in flight per worker process, for both systems

console = Console(stderr=True)


# -- child processes: one measurement each ------------------------------------


@dataclass
class Timing:
    """What a timed loop cost: wall seconds, CPU seconds (user + system, and
    user alone), and the steps it ran."""

    seconds: float
    cpu: float
    user: float
    steps: int


def cpu_now() -> tuple[float, float]:
    """(user + system, user) CPU seconds of this process, all threads.

    User time is kept apart because on SQLite much of the system time is the
    kernel's work for fsync, which neither library's code spends.
    """
    # getrusage has microsecond resolution; os.times() counts 10 ms ticks.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_utime


def timing_since(start: float, cpu: tuple[float, float], steps: int) -> Timing:
    """The `Timing` of a loop that began at ``start`` (perf_counter) and ``cpu``."""
    total, user = cpu_now()
    return Timing(time.perf_counter() - start, total - cpu[0], user - cpu[1], steps)


async def timed_async(
    one_round: Callable[[int], Awaitable[None]], rounds: int, sagas: int
) -> Timing:
    """Run ``rounds`` rounds of ``one_round``; CPU is the whole process's, all threads."""
    cpu, start = cpu_now(), time.perf_counter()
    for r in range(rounds):
        await one_round(r)
    return timing_since(start, cpu, sagas * STEPS)


def timed_sync(one_round: Callable[[int], None], rounds: int, sagas: int) -> Timing:
    """As `timed_async`, for a round that is a plain function."""
    cpu, start = cpu_now(), time.perf_counter()
    for r in range(rounds):
        one_round(r)
    return timing_since(start, cpu, sagas * STEPS)


def rss_mb() -> float:
    """This process's resident set size now, in MiB (peak RSS where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rounds_of(spec: dict[str, Any]) -> tuple[int, int]:
    """(rounds, sagas in all) for a SQLite measurement."""
    at_once: int = spec["at_once"]
    rounds = spec["sagas"] if at_once == 1 else max(1, math.ceil(spec["sagas"] / at_once))
    return rounds, rounds * at_once


async def sagakit_sqlite(spec: dict[str, Any]) -> dict[str, Any]:
    """One SQLite measurement of sagakit, through `AsyncEngine.run` as a program would.

    With ``spec["store"] == "memory"`` the same loop runs on the in-memory
    store instead: what the engine costs by itself, with no database.
    """
    saga = make_saga(spec["style"])
    at_once: int = spec["at_once"]
    rounds, sagas = rounds_of(spec)
    in_memory = spec.get("store") == "memory"
    # Spelled out although full is the default, so the row's setting is visible here.
    synchronous = spec.get("synchronous", "full")
    url = "memory://" if in_memory else f"sqlite:///{spec['path']}?synchronous={synchronous}"
    async with AsyncEngine(url) as engine:
        await engine.run(saga, run_id="warm-up")

        async def one_round(r: int) -> None:
            if at_once == 1:
                await engine.run(saga, run_id=f"r{r}")
            else:
                await asyncio.gather(
                    *(engine.run(saga, run_id=f"r{r}-{i}") for i in range(at_once))
                )

        timing = await timed_async(one_round, rounds, sagas)
        memory = rss_mb()  # before the check below reads every run back
        completed = len(await engine.runs(status="completed", limit=sagas + 1))
    result = {**timing.__dict__, "rss_mb": memory, "completed": completed, "expected": sagas + 1}
    if at_once == 1 and not in_memory:  # the disk's floor, on the same disk right after
        floor = bare_commit_us(Path(spec["path"]).with_name("bare.db"), synchronous=synchronous)
        result["commit_us"], result["commit_cpu_us"] = floor
    return result


def floor_schema(conn: sqlite3.Connection, extra_pages: int = 0) -> None:
    """The tables of the floor's loop (`floor_commits`), and one more for each extra page."""
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, state TEXT)")
    conn.execute("CREATE TABLE events (run INTEGER, seq INTEGER, data TEXT)")
    for t in range(extra_pages):
        conn.execute(f"CREATE TABLE extra{t} (n INTEGER)")


def floor_commits(conn: sqlite3.Connection, commits: int, extra_pages: int = 0) -> None:
    """The floor's loop: ``commits`` commits, each of one small row inserted and another
    replaced (two WAL pages), and of one small row appended to each extra table
    (`floor_schema`), one page more each (`sqlite_page_cost.py`)."""
    for i in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events VALUES (?, ?, ?)", (i // 6, i, "x" * 100))
        conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?)", (i // 6, "{}"))
        for t in range(extra_pages):
            conn.execute(f"INSERT INTO extra{t} VALUES (?)", (i,))
        conn.execute("COMMIT")


def bare_commit_us(
    path: Path, commits: int = 1000, synchronous: str = "full"
) -> tuple[float, float]:
    """Microseconds per commit of a bare sqlite3 loop (WAL, ``synchronous``
    FULL: each commit fsynced) at ``path``: (wall time, process CPU time).

    Each commit inserts one small row and updates another, about what one of
    sagakit's commits writes: no engine can commit faster on this disk with
    this durability, so a step one at a time (six commits for five steps)
    costs at least 1.2 times this. The CPU time is mostly the kernel's, for
    the fsync: a floor under the CPU per step one at a time as well. With
    ``synchronous="normal"`` WAL fsyncs only at checkpoints: the floor is
    then mostly SQLite's own CPU.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        floor_schema(conn)
        cpu, start = cpu_now(), time.perf_counter()
        floor_commits(conn, commits)
        timing = timing_since(start, cpu, commits)
        return timing.seconds * 1e6 / commits, timing.cpu * 1e6 / commits
    finally:
        conn.close()


def dbos_sqlite(spec: dict[str, Any]) -> dict[str, Any]:
    """One SQLite measurement of DBOS, calling its workflows as a program would."""
    import dbos_noop  # imports dbos; only child processes that measure DBOS get here
    from dbos import DBOS

    if spec["journal"] == "wal":
        dbos_noop.use_wal(spec["path"])

    dbos_noop.launch(f"sqlite:///{spec['path']}", executor_id="sqlite")
    workflow = dbos_noop.workflow(spec["style"])
    at_once: int = spec["at_once"]
    rounds, sagas = rounds_of(spec)
    try:
        if spec["style"] == "async":

            async def one_round(r: int) -> None:
                if at_once == 1:
                    await workflow()
                else:
                    await asyncio.gather(*(workflow() for _ in range(at_once)))

            async def measure() -> Timing:
                await workflow()  # warm-up
                return await timed_async(one_round, rounds, sagas)

            timing = asyncio.run(measure())
        else:

            def one_round_sync(r: int) -> None:
                if at_once == 1:
                    workflow()
                else:
                    # DBOS's way to have many synchronous workflows in flight:
                    # each runs on its executor's thread pool.
                    handles = [DBOS.start_workflow(workflow) for _ in range(at_once)]
                    for handle in handles:
                        handle.get_result()

            workflow()  # warm-up
            timing = timed_sync(one_round_sync, rounds, sagas)
        memory = rss_mb()
        settings = dbos_sqlite_settings()
    finally:
        DBOS.destroy()
    return {**timing.__dict__, "rss_mb": memory, **settings}


def dbos_sqlite_settings() -> dict[str, str]:
    """The journal mode and synchronous level DBOS's own connections actually run with.

    Read through DBOS's engine (a private attribute, for this check only),
    because ``synchronous`` is per connection and another connection would
    only show its own.
    """
    try:
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        level_name = names.get(int(level), str(level)) if level is not None else "?"
        return {"journal_mode": str(journal), "synchronous": level_name}
    except Exception as exc:  # a check only: a changed private API must not fail the run
        return {"journal_mode": "?", "synchronous": f"? ({exc})"}


def dbos_pg_enqueue(spec: dict[str, Any]) -> dict[str, Any]:
    """Create DBOS's tables and queue, and enqueue the backlog, dequeuing nothing here."""
    import dbos_noop
    from dbos import DBOS

    dbos_noop.launch(spec["url"], executor_id="enqueuer", listen=False)
    try:
        queue = dbos_noop.register_queue(spec["worker_concurrency"], spec["poll"])
        workflow = dbos_noop.workflow(spec["style"])
        sagas: int = spec["sagas"]
        if spec["style"] == "async":

            async def enqueue() -> None:
                for first in range(0, sagas, 200):
                    count = min(200, sagas - first)
                    await asyncio.gather(*(queue.enqueue_async(workflow) for _ in range(count)))

            asyncio.run(enqueue())
        else:
            for _ in range(sagas):
                queue.enqueue(workflow)
    finally:
        DBOS.destroy()
    return {"enqueued": sagas}


def dbos_pg_worker(spec: dict[str, Any]) -> None:
    """A DBOS process that serves the benchmark's queue until SIGTERM."""
    import dbos_noop

    # Both workflows were registered when dbos_noop was imported, before launch.
    dbos_noop.launch(spec["url"], executor_id=spec["executor_id"])
    dbos_noop.register_queue(spec["worker_concurrency"], spec["poll"])
    dbos_noop.serve_until_sigterm()


def child_main(raw: str) -> None:
    """Entry point of a child process: run one measurement, print its result."""
    spec: dict[str, Any] = json.loads(raw)
    role = spec["role"]
    if role == "sqlite" and spec["system"] == "sagakit":
        result = asyncio.run(sagakit_sqlite(spec))
    elif role == "sqlite":
        result = dbos_sqlite(spec)
    elif role == "dbos-pg-enqueue":
        result = dbos_pg_enqueue(spec)
    elif role == "dbos-pg-worker":
        dbos_pg_worker(spec)
        return
    else:
        raise SystemExit(f"unknown child role {role!r}")
    print(RESULT + json.dumps(result), flush=True)


# -- the parent: run the children, collect, print, draw -----------------------


class ChildFailed(RuntimeError):
    """A child process exited with an error; the message ends with its stderr."""


def child_command(spec: dict[str, Any]) -> list[str]:
    """The command that runs this script as a child doing ``spec``."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]


def child_env() -> dict[str, str]:
    """Children import `dbos_noop` and `bench_steps` from this directory."""
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_child(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run one measurement in a fresh process and return what it printed."""
    done = subprocess.run(
        child_command(spec),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if done.returncode == 0 and line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT) :])
            if done.stderr.strip():
                # Warnings are part of the result: say so rather than hide them.
                result["stderr"] = done.stderr.strip()
            return result
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise ChildFailed(
        f"{spec['role']} ({spec.get('system', 'dbos')}) exited {done.returncode}:\n{tail}"
    )


@dataclass
class Measured:
    """One system's numbers for one workload (None: not measured)."""

    seconds: float | None = None
    cpu: float | None = None
    user: float | None = None
    steps: int = 0
    rss_mb: float | None = None
    seconds_range: tuple[float, float] | None = None
    """The fastest and slowest of the repeats that this median was taken over."""
    commit_us: float | None = None
    """One at a time on SQLite: a bare fsynced commit on the same disk (`bare_commit_us`)."""
    commit_cpu_us: float | None = None
    """The CPU time of that bare commit."""
    restart_seconds: float | None = None
    """Recovery: seconds from the new process's start (``seconds``: from the kill)."""
    rerun: int | None = None
    """Recovery: steps that had started before the kill and ran again
    (``steps``: the steps in flight at the kill)."""

    @property
    def steps_per_s(self) -> float | None:
        return None if self.seconds is None else self.steps / self.seconds

    @property
    def ms_per_step(self) -> float | None:
        return None if self.seconds is None else self.seconds * 1000 / self.steps

    @property
    def cpu_us_per_step(self) -> float | None:
        return None if self.cpu is None else self.cpu * 1e6 / self.steps

    @property
    def user_us_per_step(self) -> float | None:
        return None if self.user is None else self.user * 1e6 / self.steps

    @property
    def rate_range(self) -> tuple[float, float] | None:
        """The lowest and highest steps/s of the repeats."""
        if self.seconds_range is None:
            return None
        fastest, slowest = self.seconds_range
        return self.steps / slowest, self.steps / fastest

    @property
    def ms_range(self) -> tuple[float, float] | None:
        """The lowest and highest ms/step of the repeats."""
        if self.seconds_range is None:
            return None
        fastest, slowest = self.seconds_range
        return fastest * 1000 / self.steps, slowest * 1000 / self.steps


def median_of(samples: list[Measured]) -> Measured:
    """Each figure's median over the repeats of one measurement (failed ones left out).

    A median, not the best run: this machine's speed varies from minute to
    minute, and one run alone can land at either end.
    """
    ok = [m for m in samples if m.seconds is not None]
    if not ok:
        return Measured()

    def median(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    seconds = [m.seconds for m in ok if m.seconds is not None]
    return Measured(
        median(seconds),
        median([m.cpu for m in ok]),
        median([m.user for m in ok]),
        ok[0].steps,
        median([m.rss_mb for m in ok]),
        (min(seconds), max(seconds)) if len(ok) > 1 else None,
        median([m.commit_us for m in ok]),
        median([m.commit_cpu_us for m in ok]),
        median([m.restart_seconds for m in ok]),
        # The worst repeat, not the median: one step run twice too often is a finding.
        max((m.rerun for m in ok if m.rerun is not None), default=None),
    )


def measure_sqlite(
    system: str,
    at_once: int,
    sagas: int,
    args: argparse.Namespace,
    notes: list[str],
    *,
    store: str = "sqlite",
    style: str = "async",
    synchronous: str = "full",
) -> Measured:
    """One SQLite workload for one system, in its own process and temp directory
    (``store="memory"``: sagakit on its in-memory store instead), with steps
    and workflow as coroutines (``style="async"``) or plain functions (``"sync"``);
    ``synchronous`` is sagakit's SQLite setting (DBOS's is its own)."""
    with tempfile.TemporaryDirectory(prefix=f"compare-{system}-") as tmp:
        spec = {
            "role": "sqlite",
            "system": system,
            "store": store,
            "style": style,
            "path": str(Path(tmp) / "bench.db"),
            "at_once": at_once,
            "sagas": sagas,
            "journal": args.dbos_sqlite_journal,
            "synchronous": synchronous,
        }
        result = run_child(spec)
    if system == "dbos":
        seen = f"{result.get('journal_mode')}/{result.get('synchronous')}"
        notes.append(
            f"DBOS SQLite, {at_once} at once: its connections ran journal/synchronous = {seen}"
        )
    if "stderr" in result:
        notes.append(f"{system} SQLite, {at_once} at once, stderr: {result['stderr'][:500]}")
    if system == "sagakit" and result.get("completed") != result.get("expected"):
        notes.append(
            f"sagakit {store}, {at_once} at once: {result.get('completed')} of "
            f"{result.get('expected')} runs completed"
        )
    return Measured(
        result["seconds"],
        result["cpu"],
        result["user"],
        result["steps"],
        result["rss_mb"],
        commit_us=result.get("commit_us"),
        commit_cpu_us=result.get("commit_cpu_us"),
    )


def measure_recovery(system: str, runs: int, lease: float, mode: str = "lease") -> Measured:
    """Recovery after SIGKILL with ``runs`` runs in flight (`compare_recovery.measure`).

    Its seconds are from the kill; in a restart mode (``mode`` not "lease"),
    from the new process's start, which is what that row compares.
    """
    found = compare_recovery.measure(system, runs, lease, mode=mode)
    return Measured(
        found["from_kill"] if mode == "lease" else found["from_restart"],
        steps=found["in_flight"],
        restart_seconds=found["from_restart"],
        rerun=found["rerun"],
    )


def with_database(base: str, name: str) -> str:
    """``base`` with its database name replaced."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def sagakit_postgres(
    base: str, workers: int, sagas: int, logs: Path, style: str = "async"
) -> Measured:
    """sagakit on PostgreSQL, as `bench_workers.measure` does it, without the pickup part.

    ``style="sync"`` runs the saga whose steps are plain functions, which each
    worker runs on its thread pool.
    """
    app = "SAGA_SYNC" if style == "sync" else "SAGA"
    saga = bench_workers.saga_named(app)
    schema = f"compare_{uuid.uuid4().hex[:8]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    options = argparse.Namespace(concurrency=WORKER_CONCURRENCY, poll=1.0)
    try:
        ids = [f"t{i}" for i in range(sagas)]
        asyncio.run(bench_workers.enqueue(url, ids, saga))
        bench_workers.warm_cache(logs)
        procs = bench_workers.start_workers(url, workers, options, logs, app)
        try:
            bench_workers.wait_settled(base, schema, "t", len(ids), timeout=600)
            times = bench_workers.journal_times(base, schema, "t")
        finally:
            bench_workers.stop_workers(procs)
        began = min(t["step_started"] for t in times.values())
        ended = max(t["run_finished"] for t in times.values())
        return Measured(ended - began, steps=sagas * STEPS)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def dbos_postgres(
    base: str,
    workers: int,
    sagas: int,
    args: argparse.Namespace,
    logs: Path,
    *,
    style: str = "async",
) -> Measured:
    """DBOS on PostgreSQL: a backlog in a fresh database, drained by ``workers`` processes."""
    name = f"dbos_bench_{uuid.uuid4().hex[:8]}"
    url = with_database(base, name)
    common = {"url": url, "style": style, "poll": args.dbos_poll}
    common["worker_concurrency"] = WORKER_CONCURRENCY
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run_child({"role": "dbos-pg-enqueue", "sagas": sagas, **common})
        for i in range(workers):
            spec = {"role": "dbos-pg-worker", "executor_id": f"worker{i}", **common}
            with (logs / f"dbos-worker{i}.log").open("w") as out:
                procs.append(
                    subprocess.Popen(
                        child_command(spec), env=child_env(), stdout=out, stderr=subprocess.STDOUT
                    )
                )
        deadline = time.monotonic() + 900
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), "
                    "count(*) FILTER (WHERE status = 'ERROR') FROM dbos.workflow_status"
                ).fetchone()
                assert row is not None
                if row[0] + row[1] >= sagas:
                    break
                dead = [p.args for p in procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    log = (logs / "dbos-worker0.log").read_text()[-2000:]
                    raise ChildFailed(f"DBOS workers died or timed out ({row[0]} done):\n{log}")
                time.sleep(0.2)
            if row[1]:
                raise ChildFailed(f"{row[1]} DBOS workflows ended in ERROR")
            # started_at_epoch_ms: when a worker dequeued the workflow;
            # completed_at: when its outcome was recorded (both ms since the epoch).
            first, last = conn.execute(
                "SELECT min(started_at_epoch_ms), max(coalesce(completed_at, updated_at)) "
                "FROM dbos.workflow_status"
            ).fetchone() or (0, 0)
        return Measured((last - first) / 1000, steps=sagas * STEPS)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


@dataclass
class Row:
    """One line of the table: a workload and both systems' values."""

    workload: str
    settings: str
    unit: str  # "steps/s", "ms/step", "µs/step", "µs/commit", "MiB", "s" or "steps"
    sagakit: float | None
    dbos: float | None
    target: str = ""
    chart: str | None = None  # label on the chart (steps/s rows only)
    sagakit_user: float | None = None  # CPU rows: user time alone, µs/step
    dbos_user: float | None = None
    sagakit_range: tuple[float, float] | None = None  # over the repeats, in the row's unit
    dbos_range: tuple[float, float] | None = None
    sagakit_mode: str | None = None  # the step mode these figures come from, when both ran
    dbos_mode: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "steps/s"

    @property
    def ratio(self) -> float | None:
        """Above 1 when sagakit is better: sagakit/DBOS for throughput, else DBOS/sagakit."""
        if not self.sagakit or not self.dbos:
            return None
        return self.sagakit / self.dbos if self.higher_is_better else self.dbos / self.sagakit

    def fmt(
        self,
        value: float | None,
        user: float | None = None,
        spread: tuple[float, float] | None = None,
        mode: str | None = None,
    ) -> str:
        if value is None:
            return "n/a"
        if mode is not None:
            # Plain text: rich would read "[...]" as markup and drop it.
            return f"{self.fmt(value, user, spread)}\n{mode} steps"
        if user is not None:
            return f"{value:,.0f} µs/step\n(user {user:,.0f})"
        if self.unit == "ms/step":
            text = f"{value:.3f} ms/step"
            return text if spread is None else f"{text}\n({spread[0]:.3f} to {spread[1]:.3f})"
        if self.unit == "MiB":
            return f"{value:,.0f} MiB"
        if self.unit == "s":
            text = f"{value:,.2f} s"
            return text if spread is None else f"{text}\n({spread[0]:,.2f} to {spread[1]:,.2f})"
        text = f"{value:,.0f} {self.unit}"
        return text if spread is None else f"{text}\n({spread[0]:,.0f} to {spread[1]:,.0f})"


def modes_table(medians: dict[tuple[str, str, int, str], Measured], systems: list[str]) -> Table:
    """Steps/s of every workload in each step mode: what the main table chose from."""
    table = Table(
        title="Each step mode: steps/s (medians; the faster of each pair is in the table above)"
    )
    table.add_column("workload")
    for system in systems:
        name = "DBOS" if system == "dbos" else system
        for style in ("async", "sync"):
            table.add_column(f"{name}, {style} steps", justify="right")
    labels = {"sqlite": "SQLite, {n:,} at once", "pg": "PostgreSQL, {n} worker process(es)"}
    keys = {(kind, n) for kind, _, n, _ in medians if kind in labels}
    for kind, n in sorted(keys, key=lambda k: (k[0] != "sqlite", k[1])):
        cells = []
        for system in systems:
            for style in ("async", "sync"):
                rate = medians.get((kind, system, n, style), Measured()).steps_per_s
                cells.append("n/a" if rate is None else f"{rate:,.0f}")
        table.add_row(labels[kind].format(n=n), *cells)
    return table


def recovery_rows(
    recovery: dict[tuple[str, int], Measured],
    args: argparse.Namespace,
    durability: str,
    restarted: Measured | None = None,
) -> dict[str, Row]:
    """The rows of the recovery after SIGKILL (`compare_recovery.py`).

    ``restarted``: sagakit restarted under the killed process's worker id,
    seconds from the new process's start.
    """
    runs = args.recovery_runs
    s = recovery.get(("sagakit", runs), Measured())
    d = recovery.get(("dbos", runs), Measured())
    r = restarted or Measured()
    settings = (
        f"{durability}; {runs:,} runs of 5 async steps started by one process, "
        "killed (SIGKILL) once every run is inside its 3rd step; at once a new process "
        f"resumes them. sagakit: a Worker, lease {args.lease:g} s (resumes once it lapses), "
        "polling 0.2 s; DBOS: relaunched under the killed process's executor id"
    )
    fast = None if s.seconds is None else s.seconds <= 10
    settled = check(fast, "≤10 s") + (
        "" if runs >= 10_000 else "\n(10,000 runs: bench_recovery.py)"
    )
    once = None if s.rerun is None else s.rerun <= s.steps
    return {
        "recovery": Row(
            f"Recovery after SIGKILL, {runs:,} runs in flight: all completed again",
            settings + "; seconds from the kill",
            "s",
            s.seconds,
            d.seconds,
            target=settled,
            chart=f"after SIGKILL:\nanother worker,\n{runs:,} in flight",
            sagakit_range=s.seconds_range,
            dbos_range=d.seconds_range,
        ),
        "recovery-restart": Row(
            "same, from the new process's start",
            "as above",
            "s",
            s.restart_seconds,
            d.restart_seconds,
        ),
        "recovery-rerun": Row(
            "same: steps run again",
            "calls in the new process of steps that had started before the kill "
            f"(the worst repeat); {runs:,} steps were in flight",
            "steps",
            None if s.rerun is None else float(s.rerun),
            None if d.rerun is None else float(d.rerun),
            target=check(once, "≤ the steps in flight"),
        ),
        "recovery-identity": Row(
            f"Recovery after SIGKILL, {runs:,} runs in flight, restarted under the same "
            "identity: all completed, from the new process's start",
            f"as above, but sagakit's new worker has the killed one's worker id and leases "
            f"of {compare_recovery.IDENTITY_LEASE:g} s: it takes its runs back at once "
            "(fenced); DBOS as above (its executor id)",
            "s",
            r.seconds,
            d.restart_seconds,
            target=check(None if r.seconds is None else r.seconds <= 0.5, "≤0.5 s"),
            chart=f"after SIGKILL:\nsame identity,\n{runs:,} in flight",
            sagakit_range=r.seconds_range,
        ),
    }


def check(ok: bool | None, text: str) -> str:
    """A target, marked met, missed, or unknown (no measurement)."""
    mark = "?" if ok is None else ("met" if ok else "MISSED")
    return f"{text}: {mark}"


def targets(rows: dict[str, Row]) -> None:
    """Mark the issue's targets on the rows they concern."""
    restarted = rows.get("recovery-identity")
    if restarted is not None:
        fast = None if restarted.sagakit is None else restarted.sagakit <= 0.5
        ahead = None if restarted.ratio is None else restarted.ratio >= 20
        restarted.target = f"{check(fast, '≤0.5 s')}; {check(ahead, '≥20x')}"
    burst = rows.get("1000")
    if burst is not None:
        fast = None if burst.sagakit is None else burst.sagakit >= 10_000
        ahead = None if burst.ratio is None else burst.ratio >= 50
        burst.target = f"{check(fast, '≥10,000/s')}; {check(ahead, '≥50x DBOS at its best')}"
    # One saga alone, against the floor measured beside it: six commits for
    # five steps, before any other work. FULL: at most 0.06 ms/step above it;
    # normal: at most 0.12 ms/step in all.
    for key, floor_key in (("seq", "floor"), ("seq-normal", "floor-normal")):
        seq, floor = rows.get(key), rows.get(floor_key)
        if seq is None:
            continue
        per_step = None if floor is None or floor.sagakit is None else floor.sagakit * 6 / 5000
        above = None if seq.sagakit is None or per_step is None else seq.sagakit - per_step
        if key == "seq":
            seq.target = check(None if above is None else above <= 0.06, "≤0.06 ms above the floor")
        else:
            ok = None if seq.sagakit is None else seq.sagakit <= 0.12
            seq.target = check(ok, "≤0.12 ms")
        if per_step is not None and above is not None:
            seq.target += f"\n(floor {per_step:.3f} ms; {above:.3f} above)"
    pg = rows.get("pg4")
    if pg is not None:
        fast = None if pg.sagakit is None else pg.sagakit >= 5_000
        ahead = None if pg.ratio is None else pg.ratio >= 40
        pg.target = f"{check(fast, '≥5,000/s')}; {check(ahead, '≥40x DBOS at its best')}"
    cpu_seq, floor_cpu = rows.get("cpu-seq"), rows.get("floor-cpu")
    if cpu_seq is not None and floor_cpu is not None and floor_cpu.sagakit is not None:
        # Six such commits for five steps, as for the latency.
        cpu_seq.target = f"(the commits alone {floor_cpu.sagakit * 6 / 5:.0f} µs)"
    for key in ("seq", "100", "1000"):
        for prefix, what in (("cpu-", "≤100 µs"), ("cpu-engine-", "≤100 µs in the engine itself")):
            row = rows.get(prefix + key)
            if row is not None:
                ok = None if row.sagakit is None else row.sagakit <= 100
                row.target = "\n".join(filter(None, (check(ok, what), row.target)))


def draw(rows: list[Row], path: Path, title: str, shapes: tuple[Path, Path] | None = None) -> None:
    """Grouped bars: steps/s per workload on a log scale (the systems differ by
    decades) and, in a panel beside it, the seconds of the recovery rows.

    With ``shapes`` (the ``--json`` files of ``bench_state_size.py`` and
    ``bench_saga_length.py``), a row of two more panels below: sagakit's
    steps/s by state size and its µs per call by saga length
    (`draw_shapes.panels`).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rates = [r for r in rows if r.chart is not None and r.unit == "steps/s"]
    seconds = [r for r in rows if r.chart is not None and r.unit == "s"]
    height = 5.2 + (4.2 if shapes else 0)
    fig = plt.figure(figsize=(11.5 if seconds or shapes else 10, height))
    grid = fig.add_gridspec(2 if shapes else 1, 2, height_ratios=[5.2, 4.2] if shapes else None)
    if seconds:
        # Wide enough that each recovery row's two-line label stays clear of the next.
        top = grid[0, :].subgridspec(1, 2, width_ratios=[len(rates), 0.9 * len(seconds)])
        ax, side = fig.add_subplot(top[0]), fig.add_subplot(top[1])
    else:
        ax = fig.add_subplot(grid[0, :])
    if shapes is not None:
        from draw_shapes import panels

        panels((fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])), *shapes)
    _bars(ax, rates, lambda v: f"{v:,.0f}")
    ax.set_yscale("log")
    # Plain numbers on the axis: "5,000" reads better than "5 x 10^3".
    plain = FuncFormatter(lambda y, _: f"{y:,.0f}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("durable steps/s (log scale)")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    if seconds:
        _bars(side, seconds, lambda v: f"{v:,.2f} s" if v < 1 else f"{v:,.1f} s")
        side.set_ylabel("seconds until all completed (lower is better)")
        side.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_rows(rows: list[Row], title: str, png: Path) -> Path:
    """Write the chart's rows and title beside ``png`` (same name, ``.json``): what
    ``--redraw`` draws again without measuring."""
    path = png.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn = [asdict(row) for row in rows if row.chart is not None]
    path.write_text(json.dumps({"title": title, "rows": drawn}, indent=1) + "\n")
    return path


def redraw(saved: Path, png: Path, shapes: tuple[Path, Path] | None) -> None:
    """Draw ``png`` again from the rows `save_rows` wrote."""
    try:
        found = json.loads(saved.read_text())
        rows = [
            Row(
                **{
                    **row,
                    "sagakit_range": _pair(row.get("sagakit_range")),
                    "dbos_range": _pair(row.get("dbos_range")),
                }
            )
            for row in found["rows"]
        ]
        title = str(found["title"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{saved}: not the rows of a compare_dbos.py chart ({exc})") from None
    draw(rows, png, title, shapes)
    print(f"chart: {png}")


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _bars(ax: Any, rows: list[Row], label: Callable[[float], str]) -> None:
    """Draw sagakit's and DBOS's bars for ``rows`` on ``ax``, each labelled."""
    width = 0.38
    for offset, name, color in ((-0.5, "sagakit", "#2a7ab0"), (0.5, "DBOS", "#e07b39")):
        values = [(r.sagakit if name == "sagakit" else r.dbos) or 0 for r in rows]
        xs = [i + offset * width for i in range(len(rows))]
        bars = ax.bar(xs, values, width, label=name, color=color)
        for bar, value in zip(bars, values, strict=True):
            if value:
                ax.annotate(
                    label(value),
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(range(len(rows)), [r.chart or "" for r in rows], fontsize=9)


def dbos_missing() -> str | None:
    """Why DBOS cannot be imported, or None when it can.

    Imported here, although only children use it, so that a broken install
    is reported once, up front, rather than as a failure on every DBOS row.
    """
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def server_settings(base: str) -> str:
    """The PostgreSQL server's version and durability settings, for the table."""
    with psycopg.connect(base) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
    major = str(version[0] if version else "?").split()[0]
    return (
        f"PostgreSQL {major}, fsync={fsync[0] if fsync else '?'}, "
        f"synchronous_commit={commit[0] if commit else '?'}"
    )


def main() -> None:
    """Parse options; as a child, measure one thing; otherwise run every row."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite rows only")
    parser.add_argument("--out", type=Path, default=DEFAULT_PNG, help="where to write the PNG")
    parser.add_argument(
        "--shapes",
        nargs=2,
        type=Path,
        metavar=("STATE_SIZE_JSON", "SAGA_LENGTH_JSON"),
        help="also draw these (bench_state_size.py and bench_saga_length.py --json)",
    )
    parser.add_argument(
        "--steps",
        choices=["best", "async", "sync"],
        default="best",
        help="step and workflow functions as coroutines (async) or plain functions run on "
        "threads (sync); best (the default) measures both and shows each system's faster",
    )
    parser.add_argument(
        "--sequential", type=int, default=300, help="sagas run one at a time (latency rows)"
    )
    parser.add_argument(
        "--burst-total",
        type=int,
        default=2000,
        help="sagas per burst row, in rounds of 100 or 1,000 started at once",
    )
    parser.add_argument(
        "--pg-sagas", type=int, default=2000, help="DBOS's backlog per PostgreSQL row"
    )
    parser.add_argument(
        "--pg-sagas-sagakit",
        type=int,
        default=10_000,
        help="sagakit's backlog per PostgreSQL row (larger: it drains it 30-50x faster)",
    )
    parser.add_argument(
        "--dbos-poll",
        type=float,
        default=0.1,
        help="DBOS queue polling interval, seconds (DBOS's default is 1.0)",
    )
    parser.add_argument(
        "--dbos-sqlite-journal",
        choices=["wal", "delete"],
        default="wal",
        help="DBOS's SQLite journal: wal (as sagakit) or delete (DBOS's default)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measure each row this many times, the systems taking turns; the table "
        "shows the medians and the range",
    )
    parser.add_argument(
        "--recovery-runs",
        type=int,
        default=1000,
        help="runs in flight at the SIGKILL of the recovery row (0: no recovery row)",
    )
    parser.add_argument(
        "--lease", type=float, default=2.0, help="sagakit's lease in the recovery row, seconds"
    )
    parser.add_argument(
        "--redraw",
        type=Path,
        metavar="ROWS_JSON",
        help="measure nothing: draw the chart again from the rows a run saved beside its "
        "PNG (with --shapes, the lower panels from those files)",
    )
    parser.add_argument(
        "--one-saga",
        action="store_true",
        help="only the one-at-a-time rows on SQLite (FULL and normal, beside their bare "
        "commits) and in memory: no bursts, recovery, PostgreSQL or chart",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child)
        return
    if args.out.suffix.lower() != ".png":
        # Found after the whole run otherwise, by the chart's writer.
        parser.error(f"--out {args.out}: the chart is a PNG file (its rows go beside it, .json)")
    if args.redraw is not None:
        redraw(args.redraw, args.out, args.shapes)
        return
    if args.one_saga:
        args.burst_total, args.recovery_runs, args.skip_postgres = 0, 0, True

    if args.quick:
        args.sequential, args.burst_total, args.repeat = 20, 0, 1
        args.pg_sagas, args.pg_sagas_sagakit = 200, 200
        args.recovery_runs = min(args.recovery_runs, 100)
    bursts = (100, 1000)
    missing = dbos_missing()
    has_dbos = missing is None
    if missing is not None:
        console.print(
            f"[yellow]DBOS Transact cannot be imported ({missing}); install it with "
            "pip install -e '.\\[bench]'. Measuring sagakit only; ratios are n/a.[/yellow]"
        )
    systems = ["sagakit", "dbos"] if has_dbos else ["sagakit"]
    notes: list[str] = []
    base = os.environ.get("SAGAKIT_BENCH_POSTGRES", bench_workers.DEFAULT_URL)

    def attempt(what: str, fn: Callable[[], Measured]) -> Measured:
        """Measure, or report the failure and carry on with the other rows."""
        console.log(f"measuring {what}")
        try:
            return fn()
        except (
            ChildFailed,
            RecoveryFailed,
            subprocess.TimeoutExpired,
            OSError,
            psycopg.Error,
        ) as exc:
            console.print(f"[red]{what} failed:[/red] {exc}")
            notes.append(f"{what} failed: {str(exc).splitlines()[0]}")
            return Measured()

    repeat = max(1, args.repeat)
    # Each system is compared in its faster step mode: DBOS runs plain-function
    # steps on its executor's threads about twice as fast as coroutine steps,
    # sagakit the other way round. Both modes are measured, taking turns.
    styles = ["async", "sync"] if args.steps == "best" else [args.steps]
    samples: dict[tuple[str, str, int, str], list[Measured]] = {}
    loads: list[float] = []  # the load average at each turn of the one-at-a-time rows
    for at_once, sagas in (
        (1, args.sequential),
        *((b, max(b, args.burst_total)) for b in bursts if not args.one_saga),
    ):
        for turn in range(repeat):  # the systems take turns, so both see the same moments
            if at_once == 1:
                loads.append(os.getloadavg()[0])
            for style in styles:
                for system in systems:
                    samples.setdefault(("sqlite", system, at_once, style), []).append(
                        attempt(
                            f"{system} SQLite, {style} steps, {at_once} at once "
                            f"({turn + 1}/{repeat})",
                            partial(
                                measure_sqlite, system, at_once, sagas, args, notes, style=style
                            ),
                        )
                    )
            if at_once == 1:
                # sagakit on synchronous=normal too (its SQLite store's other
                # setting), in its faster mode one at a time, beside a bare
                # loop on the same setting: what the engine adds above it.
                samples.setdefault(("sqlite-normal", "sagakit", 1, "async"), []).append(
                    attempt(
                        f"sagakit SQLite normal, async steps, 1 at once ({turn + 1}/{repeat})",
                        partial(
                            measure_sqlite,
                            "sagakit",
                            1,
                            sagas,
                            args,
                            notes,
                            style="async",
                            synchronous="normal",
                        ),
                    )
                )
            # The engine alone, in the first mode only: it is a reading of
            # sagakit's own CPU, not a comparison.
            samples.setdefault(("memory", "sagakit", at_once, styles[0]), []).append(
                attempt(
                    f"sagakit in memory, {styles[0]} steps, {at_once} at once "
                    f"({turn + 1}/{repeat})",
                    partial(
                        measure_sqlite,
                        "sagakit",
                        at_once,
                        sagas,
                        args,
                        notes,
                        store="memory",
                        style=styles[0],
                    ),
                )
            )
    for turn in range(repeat if args.recovery_runs > 0 else 0):
        for system in systems:
            samples.setdefault(("recovery", system, args.recovery_runs, "async"), []).append(
                attempt(
                    f"{system} recovery of {args.recovery_runs:,} runs ({turn + 1}/{repeat})",
                    partial(measure_recovery, system, args.recovery_runs, args.lease),
                )
            )
        samples.setdefault(("recovery-id", "sagakit", args.recovery_runs, "async"), []).append(
            attempt(
                f"sagakit recovery of {args.recovery_runs:,} runs under the same worker id "
                f"({turn + 1}/{repeat})",
                partial(measure_recovery, "sagakit", args.recovery_runs, args.lease, "worker-id"),
            )
        )
    pg_settings = ""
    if not args.skip_postgres:
        pg_settings = server_settings(base)
        with tempfile.TemporaryDirectory(prefix="compare-logs-") as tmp:
            logs = Path(tmp)
            for workers in (1, 4):
                for turn in range(repeat):
                    for style in styles:
                        samples.setdefault(("pg", "sagakit", workers, style), []).append(
                            attempt(
                                f"sagakit PostgreSQL, {style} steps, {workers} workers "
                                f"({turn + 1}/{repeat})",
                                partial(
                                    sagakit_postgres,
                                    base,
                                    workers,
                                    args.pg_sagas_sagakit,
                                    logs,
                                    style,
                                ),
                            )
                        )
                        if has_dbos:
                            samples.setdefault(("pg", "dbos", workers, style), []).append(
                                attempt(
                                    f"DBOS PostgreSQL, {style} steps, {workers} processes "
                                    f"({turn + 1}/{repeat})",
                                    partial(
                                        dbos_postgres,
                                        base,
                                        workers,
                                        args.pg_sagas,
                                        args,
                                        logs,
                                        style=style,
                                    ),
                                )
                            )
    medians = {key: median_of(m) for key, m in samples.items()}
    modes: dict[tuple[str, str, int], str] = {}  # (kind, system, n): the faster mode

    def fastest(kind: str) -> dict[tuple[str, int], Measured]:
        """Per (system, n), the median of the step mode with the most steps/s."""
        best: dict[tuple[str, int], Measured] = {}
        for (k, system, n, style), m in medians.items():
            if k != kind or m.steps_per_s is None:
                continue
            known = best.get((system, n))
            if known is None or (known.steps_per_s or 0) < m.steps_per_s:
                best[(system, n)] = m
                modes[(kind, system, n)] = style
        return best

    sqlite, postgres, memory, recovery, normal = (
        fastest(kind) for kind in ("sqlite", "pg", "memory", "recovery", "sqlite-normal")
    )

    def value(table: dict[tuple[str, int], Measured], system: str, key: int) -> Measured:
        return table.get((system, key), Measured())

    journal = "WAL" if args.dbos_sqlite_journal == "wal" else "DBOS: rollback journal (DELETE)"
    durability = (
        "WAL + synchronous=FULL, both"
        if args.dbos_sqlite_journal == "wal"
        else f"sagakit: WAL + FULL; {journal} + FULL"
    )
    style = (
        "each system's faster step mode (named under its figure)"
        if args.steps == "best"
        else f"{args.steps} steps"
    )
    rows: dict[str, Row] = {}
    s, d = value(sqlite, "sagakit", 1), value(sqlite, "dbos", 1)
    rows["seq"] = Row(
        "SQLite, one at a time: latency",
        f"{durability}; {style}; {s.steps // STEPS or args.sequential} sagas",
        "ms/step",
        s.ms_per_step,
        d.ms_per_step,
        sagakit_range=s.ms_range,
        dbos_range=d.ms_range,
    )
    rows["seq-rate"] = Row(
        "SQLite, one at a time: throughput",
        "as above",
        "steps/s",
        s.steps_per_s,
        d.steps_per_s,
        chart="SQLite\none at a time",
        sagakit_range=s.rate_range,
        dbos_range=d.rate_range,
    )
    rows["floor"] = Row(
        "SQLite, a bare fsynced commit",
        "the same disk, right after each one-at-a-time run: a sqlite3 loop of 1,000 "
        "commits of two small rows, WAL + FULL (the disk's floor; no engine's)",
        "µs/commit",
        s.commit_us,
        None,
    )
    rows["floor-cpu"] = Row(
        "CPU of a bare fsynced commit",
        "the same loop: process CPU time, user + system (mostly the kernel's, for the fsync)",
        "µs/commit",
        s.commit_cpu_us,
        None,
    )
    n = value(normal, "sagakit", 1)
    if n.seconds is not None:
        rows["seq-normal"] = Row(
            "SQLite normal, one at a time: latency",
            f"WAL + synchronous=normal (sagakit only; no fsync but at checkpoints); "
            f"async steps; {n.steps // STEPS or args.sequential} sagas",
            "ms/step",
            n.ms_per_step,
            None,
            sagakit_range=n.ms_range,
        )
        rows["floor-normal"] = Row(
            "SQLite normal, a bare commit",
            "the same loop as the bare fsynced commit's, on synchronous=normal, right after "
            "each normal run",
            "µs/commit",
            n.commit_us,
            None,
        )
    for b in bursts:
        s, d = value(sqlite, "sagakit", b), value(sqlite, "dbos", b)
        rows[str(b)] = Row(
            f"SQLite, {b:,} started at once",
            f"{durability}; {style}; {s.steps // STEPS or max(b, args.burst_total):,} sagas "
            f"in rounds of {b:,}",
            "steps/s",
            s.steps_per_s,
            d.steps_per_s,
            chart=f"SQLite\n{b:,} at once",
            sagakit_range=s.rate_range,
            dbos_range=d.rate_range,
        )
    for workers in (1, 4) if not args.skip_postgres else ():
        s, d = value(postgres, "sagakit", workers), value(postgres, "dbos", workers)
        plural = "es" if workers > 1 else ""
        rows[f"pg{workers}"] = Row(
            f"PostgreSQL, {workers} worker process{plural}",
            f"{pg_settings}; runs enqueued first, {args.pg_sagas_sagakit:,} for sagakit and "
            f"{args.pg_sagas:,} for DBOS; sagakit: {workers} x "
            f"`sagakit worker` --concurrency {WORKER_CONCURRENCY}; DBOS: {workers} "
            f"process{plural}, 1 queue, worker_concurrency={WORKER_CONCURRENCY}, "
            f"polling {args.dbos_poll:g} s, {style}",
            "steps/s",
            s.steps_per_s,
            d.steps_per_s,
            chart=f"PostgreSQL\n{workers} worker{'s' if workers > 1 else ''}",
            sagakit_range=s.rate_range,
            dbos_range=d.rate_range,
        )
    for key, label in (("seq", "one at a time"), *((str(b), f"{b:,} at once") for b in bursts)):
        at_once = 1 if key == "seq" else int(key)
        s, d = value(sqlite, "sagakit", at_once), value(sqlite, "dbos", at_once)
        rows[f"cpu-{key}"] = Row(
            f"CPU per step, SQLite {label}",
            "process CPU time, user + system, all threads / steps; same runs as above",
            "µs/step",
            s.cpu_us_per_step,
            d.cpu_us_per_step,
            sagakit_user=s.user_us_per_step,
            dbos_user=d.user_us_per_step,
        )
    for key, label in (("seq", "one at a time"), *((str(b), f"{b:,} at once") for b in bursts)):
        m = value(memory, "sagakit", 1 if key == "seq" else int(key))
        rows[f"cpu-engine-{key}"] = Row(
            f"CPU per step, the engine alone, {label}",
            "sagakit only: the same sagas on its in-memory store (no database), "
            "process CPU time as above",
            "µs/step",
            m.cpu_us_per_step,
            None,
            sagakit_user=m.user_us_per_step,
        )
    if args.recovery_runs > 0:
        restarted = median_of(
            samples.get(("recovery-id", "sagakit", args.recovery_runs, "async"), [Measured()])
        )
        rows.update(recovery_rows(recovery, args, durability, restarted))
    for b in bursts:
        s, d = value(sqlite, "sagakit", b), value(sqlite, "dbos", b)
        rows[f"rss-{b}"] = Row(
            f"RSS after {b:,} at once",
            "resident memory of the measuring process after its last round",
            "MiB",
            s.rss_mb,
            d.rss_mb,
        )
    if args.steps == "best":
        # Which mode each figure came from: the rows measured in both modes,
        # and the rows read from the same runs (CPU, RSS).
        sources = {"seq": ("sqlite", 1), "seq-rate": ("sqlite", 1), "cpu-seq": ("sqlite", 1)}
        for b in bursts:
            for key in (str(b), f"cpu-{b}", f"rss-{b}"):
                sources[key] = ("sqlite", b)
        for workers in (1, 4):
            sources[f"pg{workers}"] = ("pg", workers)
        for key, (kind, n) in sources.items():
            if key in rows:
                rows[key].sagakit_mode = modes.get((kind, "sagakit", n))
                rows[key].dbos_mode = modes.get((kind, "dbos", n))
    targets(rows)

    table = Table(
        title=(
            f"sagakit vs DBOS Transact: sagas/workflows of {STEPS} no-op steps — "
            "ratio > 1 means sagakit is better (throughput: sagakit/DBOS; "
            "latency, CPU, RSS: DBOS/sagakit)"
        )
    )
    table.add_column("workload")
    table.add_column("settings", max_width=60)
    table.add_column("sagakit", justify="right")
    table.add_column("DBOS", justify="right")
    table.add_column("ratio (>1: sagakit better)", justify="right")
    table.add_column("issue target (sagakit)")
    for row in rows.values():
        if args.one_saga and row.sagakit is None and row.dbos is None:
            continue  # a row of the workloads --one-saga leaves out
        ratio = "n/a" if row.ratio is None else f"{row.ratio:,.1f}x"
        table.add_row(
            row.workload,
            row.settings,
            row.fmt(row.sagakit, row.sagakit_user, row.sagakit_range, row.sagakit_mode),
            row.fmt(row.dbos, row.dbos_user, row.dbos_range, row.dbos_mode),
            ratio,
            row.target,
        )
    Console(width=200).print(table)
    if len(styles) > 1:
        Console(width=200).print(modes_table(medians, systems))
    machine = (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    print(f"machine: {machine}")
    if has_dbos:
        from importlib.metadata import version

        print(f"DBOS Transact {version('dbos')}")
    if loads:
        seen = ", ".join(f"{x:.1f}" for x in loads)
        print(f"load average (1 min) at the one-at-a-time turns: {seen}")
    for note in notes:
        print(f"note: {note}")
    if args.one_saga:
        return  # no chart of the one-at-a-time rows alone

    try:
        title = (
            f"sagakit vs DBOS Transact: sagas of 5 no-op steps, {style} ({machine})\n"
            f"SQLite: {durability}" + (f"; {pg_settings}" if pg_settings else "")
        )
        saved = save_rows(list(rows.values()), title, args.out)
        draw(list(rows.values()), args.out, title, args.shapes)
        print(f"chart: {args.out} (its rows: {saved})")
    except ImportError:
        console.print(
            "[yellow]matplotlib is not installed: no chart (pip install -e '.\\[bench]')[/yellow]"
        )


if __name__ == "__main__":
    main()

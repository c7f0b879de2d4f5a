"""Side by side with more peers: sagakit, DBOS Transact, Prefect and Celery.

The same workload for each, a saga (workflow, flow, chain) of five no-op
steps, started in rounds of ``--in-flight`` at once, each round awaited
before the next, until ``--sagas`` have run; steps/s from the first start
to the last finish. Each tool runs as a user would set it up on one machine
with what PyPI and Debian offer:

- sagakit: `AsyncEngine.run` on SQLite (WAL, ``synchronous=FULL``), async steps;
- DBOS Transact: on SQLite (switched to WAL, ``synchronous=FULL``), both step
  modes measured (coroutines, and plain functions on its threads through
  ``DBOS.start_workflow``), the faster shown;
- Prefect, local mode: no ``PREFECT_API_URL``, so the flow's process starts
  Prefect's ephemeral server on a SQLite file in a fresh ``PREFECT_HOME``; an
  async ``@flow`` awaiting an async ``@task`` five times, flows started with
  ``asyncio.gather``. Its ephemeral server refuses (HTTP 503) more than a few
  dozen flows at once on this machine, so Prefect runs at most
  ``--prefect-in-flight`` at once and ``--prefect-sagas`` in all;
- Celery on the local Redis (``$SAGAKIT_CELERY_REDIS``, default
  ``redis://127.0.0.1:6379/0``): a ``chain`` of five ``noop.si()`` tasks,
  results on the same Redis, ``--celery-workers`` worker processes
  (``celery worker --pool threads``, ``--celery-concurrency`` each), with the
  durable settings Celery documents (``task_acks_late``,
  ``task_reject_on_worker_lost``); every key it writes is prefixed and
  removed after.

The table says, for each, what a crash of the worker mid-run leaves and
whether the tool undoes finished steps (compensation). sagakit and DBOS run
in fresh child processes of `compare_dbos.py`, as in that script.

    .venv/bin/pip install -e '.[bench]'     # DBOS, Prefect, Celery with redis-py
    .venv/bin/python benchmarks/compare_peers.py
    .venv/bin/python benchmarks/compare_peers.py --quick
    .venv/bin/python benchmarks/compare_peers.py --in-flight 100 1000

A tool that is not installed is left out, and the script says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import compare_dbos
from rich.console import Console
from rich.table import Table

STEPS = 5
HERE = Path(__file__).resolve().parent
RESULT = compare_dbos.RESULT

console = Console(stderr=True)

# What each tool keeps when the process running a saga dies mid-run, and
# whether it undoes finished steps. From each tool's documentation and its
# settings in this script; the crash itself is measured for sagakit and DBOS
# in `compare_recovery.py`, not here.
DURABILITY = {
    "sagakit": (
        "every step's start and outcome committed and fsynced (SQLite FULL) before the "
        "run goes on; a run whose process dies is resumed by any worker once its lease "
        "lapses, at the step that was interrupted",
        "yes, durable: the undo steps of finished steps run in reverse, and resume "
        "after a crash as well",
    ),
    "dbos": (
        "each step's outcome checkpointed in its system database (here SQLite, WAL, FULL); "
        "a dead process's workflows are resumed by a process launched under the same "
        "executor id, after the last finished step",
        "none built in: undo written by hand in the workflow (try/except)",
    ),
    "prefect": (
        "flow and task run states in the server's SQLite (WAL, synchronous=NORMAL: a power "
        "cut may lose the last ones); task results not kept by default; a flow run whose "
        "process dies is left Running (heartbeats can mark it Crashed) and is not "
        "resumed: a rerun runs every task again unless results are persisted and cached",
        "in-process only: a transaction's on_rollback hooks run when a later task fails "
        "in the same process, not after a crash",
    ),
    "celery": (
        "a chain lives in its messages: with acks_late and reject_on_worker_lost the "
        "interrupted task is redelivered once Redis's visibility timeout lapses (1 h by "
        "default) and the chain goes on from it (that task may run twice); this Redis "
        "keeps nothing on disk, so a Redis restart loses every chain in flight",
        "none: a link_error callback runs on failure; finished tasks are not undone",
    ),
}
NAMES = {"sagakit": "sagakit", "dbos": "DBOS Transact", "prefect": "Prefect", "celery": "Celery"}
PACKAGES = {"sagakit": "sagakit", "dbos": "dbos", "prefect": "prefect", "celery": "celery"}


@dataclass
class Sample:
    """One measurement: wall seconds for ``steps`` steps, ``in_flight`` at once."""

    seconds: float
    steps: int
    in_flight: int
    mode: str = ""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


# -- Prefect, in a child process (its ephemeral server is per process) ---------


def prefect_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run Prefect's flows in this process; ``PREFECT_HOME`` is set by the parent."""
    from prefect import flow, task

    @task(name="noop")
    async def noop() -> None:
        return None

    @flow(name="five-noops")
    async def five_noops() -> None:
        for _ in range(STEPS):
            await noop()

    at_once: int = spec["at_once"]
    rounds = max(1, -(-spec["sagas"] // at_once))

    async def measure() -> float:
        await five_noops()  # warm-up: starts the ephemeral server
        start = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(five_noops() for _ in range(at_once)))
        return time.perf_counter() - start

    seconds = asyncio.run(measure())
    return {"seconds": seconds, "steps": rounds * at_once * STEPS}


def measure_prefect(at_once: int, sagas: int) -> Sample:
    """Prefect's local mode in a fresh process with a fresh ``PREFECT_HOME``."""
    with tempfile.TemporaryDirectory(prefix="compare-prefect-") as home:
        env = {
            **compare_dbos.child_env(),
            "PREFECT_HOME": home,
            # Its info logs (one line per task) would flood the terminal; the
            # other tools log warnings only as well.
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Its server takes longer than the default 20 s to start on this
            # busy two-core machine at times; a slow start is not measured.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
        env.pop("PREFECT_API_URL", None)  # local mode: the ephemeral server
        spec = {"role": "prefect", "at_once": at_once, "sagas": sagas}
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    for line in reversed(done.stdout.splitlines()):
        if done.returncode == 0 and line.startswith(RESULT):
            result = json.loads(line[len(RESULT) :])
            return Sample(result["seconds"], result["steps"], at_once, "async flow and tasks")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise compare_dbos.ChildFailed(
        f"Prefect exited {done.returncode}: {last}\n{done.stderr[-1500:]}"
    )


# -- Celery, driven from this process, its workers as subprocesses ------------


class CeleryRun:
    """Celery worker processes on the local Redis, started once, stopped at the end."""

    def __init__(self, redis_url: str, workers: int, concurrency: int, logs: Path) -> None:
        self.prefix = f"sagakit-compare-{uuid.uuid4().hex[:8]}:"
        # celery_noop reads these when it is imported, here and in the workers.
        os.environ["SAGAKIT_CELERY_REDIS"] = redis_url
        os.environ["SAGAKIT_CELERY_PREFIX"] = self.prefix
        import celery_noop

        self.app = celery_noop.app
        self.noop = celery_noop.noop
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.settings = f"{workers} x `celery worker --pool threads --concurrency {concurrency}`"
        for i in range(workers):
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_noop",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "warning",
                "--hostname",
                f"compare{i}@%h",
                # No broadcast chatter between workers: they only take tasks.
                "--without-gossip",
                "--without-mingle",
            ]
            with (logs / f"celery{i}.log").open("w") as out:
                self.procs.append(
                    subprocess.Popen(
                        command, env=compare_dbos.child_env(), stdout=out, stderr=subprocess.STDOUT
                    )
                )
        self.chain_of_five().apply_async().get(timeout=120)  # warm-up: the workers are up

    def chain_of_five(self) -> Any:
        from celery import chain  # type: ignore[import-untyped]

        return chain(*(self.noop.si() for _ in range(STEPS)))

    def measure(self, at_once: int, sagas: int) -> Sample:
        rounds = max(1, -(-sagas // at_once))
        start = time.perf_counter()
        for _ in range(rounds):
            pending = [self.chain_of_five().apply_async() for _ in range(at_once)]
            # Polled rather than `result.get()`: waiting on many results at
            # once through the Redis backend's pub/sub missed one here and
            # waited out its timeout although the chain had finished.
            deadline = time.monotonic() + 600
            while pending:
                pending = [r for r in pending if not r.ready()]
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} Celery chains did not finish")
                if pending:
                    time.sleep(0.005)
        seconds = time.perf_counter() - start
        return Sample(seconds, rounds * at_once * STEPS, at_once, "chain of 5 tasks")

    def close(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for first in range(0, len(keys), 1000):
            client.delete(*keys[first : first + 1000])


# -- sagakit and DBOS, through compare_dbos.py's child processes --------------


def measure_sqlite(system: str, style: str, at_once: int, sagas: int) -> Sample:
    """sagakit or DBOS on a fresh SQLite file, in a child of `compare_dbos.py`."""
    with tempfile.TemporaryDirectory(prefix=f"compare-{system}-") as tmp:
        result = compare_dbos.run_child(
            {
                "role": "sqlite",
                "system": system,
                "store": "sqlite",
                "style": style,
                "path": str(Path(tmp) / "bench.db"),
                "at_once": at_once,
                "sagas": sagas,
                "journal": "wal",
            },
            timeout=1800,
        )
    return Sample(result["seconds"], result["steps"], at_once, f"{style} steps")


# -- the parent ---------------------------------------------------------------


def installed(system: str) -> str | None:
    """The installed version of a tool, or None when it cannot be imported."""
    try:
        __import__(system)
        return version(PACKAGES[system])
    except (ImportError, PackageNotFoundError):
        return None


def median_sample(samples: list[Sample]) -> tuple[Sample, tuple[float, float] | None]:
    """The sample of median steps/s, and the range over all (None for one sample)."""
    ordered = sorted(samples, key=lambda s: s.steps_per_s)
    middle = ordered[len(ordered) // 2]
    if len(ordered) % 2 == 0:  # an even count: the mean of the middle two
        low = ordered[len(ordered) // 2 - 1]
        rate = statistics.mean([low.steps_per_s, middle.steps_per_s])
        middle = Sample(middle.steps / rate, middle.steps, middle.in_flight, middle.mode)
    spread = (ordered[0].steps_per_s, ordered[-1].steps_per_s) if len(ordered) > 1 else None
    return middle, spread


def main() -> None:
    """Parse options; as a child, run Prefect's flows; otherwise measure every tool."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one repeat")
    parser.add_argument(
        "--in-flight", type=int, nargs="+", default=[100], help="sagas started at once"
    )
    parser.add_argument("--sagas", type=int, default=1000, help="sagas per measurement")
    parser.add_argument("--prefect-in-flight", type=int, default=10)
    parser.add_argument("--prefect-sagas", type=int, default=50)
    parser.add_argument("--celery-workers", type=int, default=2)
    parser.add_argument("--celery-concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per cell; medians")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(NAMES),
        help="measure only these tools (default: every one installed)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = prefect_child(json.loads(args.child))
        print(RESULT + json.dumps(result), flush=True)
        return
    if args.quick:
        args.sagas, args.prefect_sagas, args.repeat = 200, 20, 1

    redis_url = os.environ.get("SAGAKIT_CELERY_REDIS", "redis://127.0.0.1:6379/0")
    versions = {system: installed(system) for system in args.only or NAMES}
    for system, ver in versions.items():
        if ver is None:
            console.print(
                f"[yellow]{NAMES[system]} is not installed: left out "
                "(pip install -e '.\\[bench]')[/yellow]"
            )
    systems = [s for s, v in versions.items() if v is not None]
    notes: list[str] = []
    samples: dict[tuple[str, int], list[Sample]] = {}

    def attempt(what: str, key: tuple[str, int], fn: Callable[[], Sample]) -> None:
        console.log(f"measuring {what}")
        try:
            samples.setdefault(key, []).append(fn())
        except Exception as exc:  # one tool's failure must not end the others' rows
            console.print(f"[red]{what} failed:[/red] {exc}")
            notes.append(f"{what} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")

    with tempfile.TemporaryDirectory(prefix="compare-peers-logs-") as logs:
        celery: CeleryRun | None = None
        if "celery" in systems:
            try:
                celery = CeleryRun(
                    redis_url, args.celery_workers, args.celery_concurrency, Path(logs)
                )
            except Exception as exc:
                notes.append(f"Celery could not start: {exc}")
        try:
            for at_once in args.in_flight:
                for turn in range(max(1, args.repeat)):  # the tools take turns
                    label = f"{at_once} at once ({turn + 1}/{args.repeat})"
                    for system in systems:
                        if system in ("sagakit", "dbos"):
                            # Both step modes; the faster is kept per turn.
                            for style in ("async", "sync"):
                                attempt(
                                    f"{NAMES[system]}, {style} steps, {label}",
                                    (f"{system}-{style}", at_once),
                                    partial(measure_sqlite, system, style, at_once, args.sagas),
                                )
                        elif system == "prefect":
                            n = min(at_once, args.prefect_in_flight)
                            attempt(
                                f"Prefect, {label} (at most {n})",
                                ("prefect", at_once),
                                partial(measure_prefect, n, args.prefect_sagas),
                            )
                        elif system == "celery" and celery is not None:
                            attempt(
                                f"Celery, {label}",
                                ("celery", at_once),
                                partial(celery.measure, at_once, args.sagas),
                            )
        finally:
            if celery is not None:
                celery.close()

    table = Table(
        title=f"Sagas of {STEPS} no-op steps, side by side: steps/s (median of "
        f"{args.repeat}, range below), and what survives a crash"
    )
    for column in (
        "tool",
        "in flight",
        "how",
        "steps/s",
        "sagakit is",
        "a crash of the worker mid-run",
        "compensation",
    ):
        table.add_column(
            column,
            justify="right" if column in ("in flight", "steps/s", "sagakit is") else "left",
            max_width=48 if column.startswith(("a crash", "compensation")) else None,
        )
    for at_once in args.in_flight:
        best: dict[str, tuple[Sample, tuple[float, float] | None, str]] = {}
        for system in systems:
            keys = (
                [(f"{system}-{style}", at_once) for style in ("async", "sync")]
                if system in ("sagakit", "dbos")
                else [(system, at_once)]
            )
            found = [median_sample(samples[k]) for k in keys if samples.get(k)]
            if not found:
                continue
            sample, spread = max(found, key=lambda f: f[0].steps_per_s)
            how = sample.mode
            if system in ("sagakit", "dbos") and len(found) > 1:
                other = min(found, key=lambda f: f[0].steps_per_s)[0]
                how += f" (faster; {other.mode}: {other.steps_per_s:,.0f} steps/s)"
            best[system] = (sample, spread, how)
        ours = best.get("sagakit")
        for system, (sample, spread, how) in best.items():
            rate = f"{sample.steps_per_s:,.0f}"
            if spread is not None:
                rate += f"\n({spread[0]:,.0f} to {spread[1]:,.0f})"
            ratio = (
                ""
                if system == "sagakit" or ours is None
                else f"{ours[0].steps_per_s / sample.steps_per_s:,.1f}x faster"
            )
            settings = how
            if system == "celery" and celery is not None:
                settings += f"; {celery.settings}; acks_late, reject_on_worker_lost"
            if system in ("sagakit", "dbos"):
                settings += "; SQLite WAL + FULL"
            if system == "prefect":
                settings += "; ephemeral server on SQLite"
            crash, undo = DURABILITY[system]
            table.add_row(
                f"{NAMES[system]} {versions[system]}",
                f"{sample.in_flight:,}",
                settings,
                rate,
                ratio,
                crash,
                undo,
            )
    Console(width=220).print(table)
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        + ", ".join(f"{NAMES[s]} {versions[s]}" for s in systems)
    )
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()

"""Real `sagakit worker` processes sharing one PostgreSQL database.

Workers are SIGKILLed, SIGSTOPped past their lease and resumed, and have
their database connections terminated under them. Every run must settle,
every effect must happen once (the ledger deduplicates by idempotency key),
no two processes may run the same step at once, and a worker that lost its
lease must write nothing more to those runs.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sagakit import Engine
from sagakit.store.postgresql import parse_url

from . import ledgerapp

pytestmark = pytest.mark.slow
APP_DIR = Path(__file__).parent


@dataclass
class Setup:
    url: str  # the store URL (with its schema)
    conninfo: str  # what psycopg connects to
    schema: str
    tmp: Path

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(query.encode(), params)
            return cur.fetchall() if cur.description else []

    def statuses(self) -> dict[str, int]:
        rows = self.sql(f"SELECT status, count(*) FROM {self.schema}.runs GROUP BY status")
        return dict(rows)


@pytest.fixture
def setup(postgres_url: str, tmp_path: Path) -> Setup:
    conninfo, options = parse_url(postgres_url)
    schema = options["schema"]
    ledgerapp.create_ledger(conninfo, schema)
    return Setup(postgres_url, conninfo, schema, tmp_path)


class Worker:
    """A `sagakit worker` subprocess; its output goes to a file (a full pipe would block it)."""

    def __init__(
        self, setup: Setup, name: str, *, concurrency: int, lease: float, step_seconds: float = 0.02
    ) -> None:
        self.name = name
        self.log = setup.tmp / f"{name}.log"
        url = f"{setup.url}&application_name=sagakit-worker-{setup.schema}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APP_DIR), os.environ.get("PYTHONPATH", "")]),
            "LEDGER_URL": setup.conninfo,
            "LEDGER_SCHEMA": setup.schema,
            "STEP_SECONDS": str(step_seconds),
        }
        command = [
            sys.executable,
            "-m",
            "sagakit",
            "worker",
            "--db",
            url,
            "--app",
            "ledgerapp",
            "--concurrency",
            str(concurrency),
            "--lease",
            str(lease),
            "--poll",
            "0.2",
            "--grace",
            "10",
        ]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        """SIGTERM: a graceful stop must end with exit code 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, f"{self.name} exited with {code}:\n{self.output()[-3000:]}"

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return time.time()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # never leave a process behind, whatever the test did
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGCONT)
            worker.proc.kill()
            worker.proc.wait(timeout=10)


def start_runs(setup: Setup, count: int) -> None:
    with Engine(setup.url) as engine:
        for i in range(count):
            # Every tenth order fails at s4 and rolls back s1..s3.
            engine.start(ledgerapp.saga, {"fail_at": "s4" if i % 10 == 0 else None}, run_id=f"o{i}")


def wait_until(condition: Any, what: str, timeout: float, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.output()[-2000:]}" for w in workers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def settled(setup: Setup, count: int) -> bool:
    statuses = setup.statuses()
    return statuses.get("completed", 0) + statuses.get("rolled_back", 0) == count


def expected_effects(count: int) -> set[str]:
    keys = set()
    for i in range(count):
        if i % 10 == 0:
            keys |= {f"o{i}/{s}" for s in ("s1", "s2", "s3", "s4")}
            keys |= {f"o{i}/{s}/compensate" for s in ("s1", "s2", "s3")}
        else:
            keys |= {f"o{i}/{s}" for s in ledgerapp.STEPS}
    return keys


def check_outcome(setup: Setup, count: int) -> None:
    """Every run settled as its input says, with a clean journal."""
    assert setup.statuses() == {"completed": count - count // 10, "rolled_back": count // 10}
    owned = setup.sql(f"SELECT count(*) FROM {setup.schema}.runs WHERE owner IS NOT NULL")
    assert owned == [(0,)]
    # A step or compensation succeeds once per run in the journal, whatever happened.
    doubled = setup.sql(
        f"SELECT run_id, step, kind, count(*) FROM {setup.schema}.events "
        "WHERE kind IN ('step_succeeded', 'compensation_succeeded') "
        "GROUP BY run_id, step, kind HAVING count(*) > 1"
    )
    assert doubled == []


def complaints(workers: list[Worker]) -> str:
    """What the workers logged above INFO: why a run changed hands, if one did."""
    lines = [
        f"{w.name} ({w.pid}): {line}"
        for w in workers
        for line in w.output().splitlines()
        if "WARNING" in line or "ERROR" in line
    ]
    return "\n".join(lines[-40:]) or "(the workers logged no warning)"


def check_ledger(
    setup: Setup,
    count: int,
    *,
    killed: dict[int, float],
    max_repeats: int,
    workers: list[Worker],
) -> list[tuple[Any, ...]]:
    """Effects once each; repeated calls only where a killed process was cut off;
    never two processes in the same step at once. Returns the repeated calls."""
    effects = {key for (key,) in setup.sql(f"SELECT key FROM {setup.schema}.effects")}
    assert effects == expected_effects(count)
    calls: dict[str, list[tuple[float, float | None, int]]] = defaultdict(list)
    for key, started, finished, pid in setup.sql(
        f"SELECT key, started, finished, pid FROM {setup.schema}.calls ORDER BY started"
    ):
        calls[key].append((started, finished, pid))
    repeated = []
    for key, made in calls.items():
        for (_, finished, pid), (next_started, _, next_pid) in itertools.pairwise(made):
            repeated.append((key, pid, next_pid))
            # Only a call whose outcome a kill kept out of the journal (cut off,
            # or finished but not yet committed) is made again, and only after
            # that process was dead.
            assert pid in killed, (
                f"{key}: process {pid} was not killed, yet its call was redone by "
                f"{next_pid}: {made}\n{complaints(workers)}"
            )
            assert next_started > killed[pid], f"{key}: two processes ran it at once"
            assert finished is None or finished <= killed[pid]
    assert len(repeated) <= max_repeats
    unfinished = [k for k, made in calls.items() if made[-1][1] is None]
    assert unfinished == []
    return repeated


def test_three_workers_share_300_runs_and_survive_one_being_killed(
    setup: Setup, workers: list[Worker]
) -> None:
    count = 300
    start_runs(setup, count)
    # A lease long enough that a live worker slowed down by a loaded machine
    # keeps its runs (renewals come every third of it): only the killed
    # worker's calls may be made again. Its runs are taken over once it lapses.
    workers.extend(Worker(setup, f"w{i}", concurrency=20, lease=4.0) for i in range(3))
    victim = workers[0]
    owned_by_victim = (
        f"SELECT count(*) FROM {setup.schema}.runs WHERE owner LIKE '%:{victim.pid}:%'"
    )
    # Kill it mid-way, while it holds runs.
    wait_until(
        lambda: (
            setup.statuses().get("completed", 0) >= count // 3
            and setup.sql(owned_by_victim)[0][0] > 0
        ),
        "a third of the runs to complete, with the victim holding some",
        60,
        workers,
    )
    killed_at = victim.kill()
    wait_until(lambda: settled(setup, count), "every run to settle", 90, workers)
    for worker in workers[1:]:
        worker.stop()
    check_outcome(setup, count)
    # At most the victim's in-flight calls (its concurrency) are made again.
    check_ledger(setup, count, killed={victim.pid: killed_at}, max_repeats=20, workers=workers)
    # Both survivors took part, and the killed one had done work before.
    pids = {pid for (pid,) in setup.sql(f"SELECT DISTINCT pid FROM {setup.schema}.effects")}
    assert {w.pid for w in workers} <= pids


def test_a_stopped_worker_that_lost_its_lease_writes_nothing_after_it_resumes(
    setup: Setup, workers: list[Worker]
) -> None:
    count = 40
    stalled = Worker(setup, "stalled", concurrency=40, lease=1.0, step_seconds=0.3)
    workers.append(stalled)
    start_runs(setup, count)
    wait_until(
        lambda: (
            setup.sql(
                f"SELECT count(*) FROM {setup.schema}.runs WHERE owner IS NOT NULL "
                "AND status = 'running'"
            )[0][0]
            >= 10
        ),
        "the first worker to hold runs",
        30,
        workers,
    )
    stalled.proc.send_signal(signal.SIGSTOP)
    time.sleep(1.5)  # past its lease
    rescuer = Worker(setup, "rescuer", concurrency=40, lease=5.0, step_seconds=0.3)
    workers.append(rescuer)
    wait_until(lambda: settled(setup, count), "the rescuer to settle every run", 60, workers)
    journal = f"SELECT run_id, seq, kind, step FROM {setup.schema}.events ORDER BY run_id, seq"
    before = setup.sql(journal)
    rows_before = setup.sql(f"SELECT * FROM {setup.schema}.runs ORDER BY id")
    stalled.proc.send_signal(signal.SIGCONT)
    # Give it time to finish the calls it was in, try to commit, and renew.
    wait_until(lambda: "lease lost" in stalled.output(), "the stale worker to notice", 20, workers)
    time.sleep(1.0)
    assert setup.sql(journal) == before
    assert setup.sql(f"SELECT * FROM {setup.schema}.runs ORDER BY id") == rows_before
    stalled.stop()
    rescuer.stop()
    check_outcome(setup, count)
    # The calls it was frozen in finished after it resumed: a lease cannot
    # fence an external service, so their effects rely on the idempotency key.
    effects = {key for (key,) in setup.sql(f"SELECT key FROM {setup.schema}.effects")}
    assert effects == expected_effects(count)


def test_terminated_database_connections_do_not_lose_or_repeat_work(
    setup: Setup, workers: list[Worker]
) -> None:
    count = 150
    start_runs(setup, count)
    # Nobody is killed here, so no run needs its lease to lapse; a long one
    # keeps a worker that is slow to reconnect on a loaded machine from
    # losing its runs to the other meanwhile, which would repeat a call.
    workers.extend(Worker(setup, f"w{i}", concurrency=15, lease=8.0) for i in range(2))
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = 'sagakit-worker-{setup.schema}'"
    )
    # Cut them off mid-work, not while they start: a worker that cannot open
    # its store (migrate, check the schema) exits with that error by design.
    for worker in workers:
        owned = f"SELECT count(*) FROM {setup.schema}.runs WHERE owner LIKE '%:{worker.pid}:%'"
        claimed = lambda query=owned: setup.sql(query)[0][0] > 0  # noqa: E731
        wait_until(claimed, f"{worker.name} to claim runs", 60, workers)
    cuts = 0
    deadline = time.monotonic() + 90
    while not settled(setup, count) and time.monotonic() < deadline:
        time.sleep(0.4)
        if cuts < 6:
            cuts += len(setup.sql(terminate)) > 0
    wait_until(lambda: settled(setup, count), "every run to settle", 60, workers)
    assert cuts >= 3, "the workers were never cut off: the test proved nothing"
    for worker in workers:
        assert worker.proc.poll() is None, f"{worker.name} died:\n{worker.output()[-3000:]}"
        worker.stop()
    check_outcome(setup, count)
    # Nobody was killed: every call but the ones whose commit was cut ran once.
    effects = {key for (key,) in setup.sql(f"SELECT key FROM {setup.schema}.effects")}
    assert effects == expected_effects(count)
    running_twice = setup.sql(
        f"SELECT a.key FROM {setup.schema}.calls a JOIN {setup.schema}.calls b "
        "ON a.key = b.key AND a.id < b.id "
        "AND b.started < coalesce(a.finished, 'infinity'::float8)"
    )
    assert running_twice == []
    assert any("PostgreSQL" in w.output() for w in workers), "no connection error was seen"

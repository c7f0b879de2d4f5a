"""A `sagakit worker` SIGKILLed mid-step and restarted under the same identity.

The leases are five minutes long, and every wait here is bounded far below
that: the restarted worker must take its runs back at once, either because it
carries the same ``--worker-id`` or because it is on the same host as the
process that died (whose pid is gone). A worker beside a live one on the
same host must not take that one's runs, with or without a shared id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sagakit import Engine, RunStatus
from sagakit.store import RunRecord
from sagakit.store.testing import opened

from . import identityapp
from .helpers import fails, sagakit
from .stores import sql_store_url

__all__ = ["sql_store_url"]  # a fixture, used by name

pytestmark = pytest.mark.slow
APP_DIR = Path(__file__).parent
RUNS = 6
LEASE = "300"  # the bound on every wait below is far shorter: no lease lapses here
WAIT = 60.0


class WorkerProcess:
    """A ``sagakit worker --app identityapp`` subprocess, its log in a file."""

    def __init__(self, url: str, tmp: Path, name: str, *options: str, hang: bool) -> None:
        self.log = tmp / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APP_DIR), os.environ.get("PYTHONPATH", "")]),
            "IDENTITYAPP_LEDGER": str(tmp / "ledger.db"),
        }
        env.pop("SAGAKIT_WORKER_ID", None)
        if hang:
            env["IDENTITYAPP_HANG"] = "1"
        command = [sys.executable, "-m", "sagakit", "worker", "--db", url, "--app", "identityapp"]
        command += ["--lease", LEASE, "--poll", "0.05", "--concurrency", "20", *options]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=tmp)

    def kill(self) -> None:
        """SIGKILL it and reap it: its pid is gone afterwards."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> str:
        """SIGTERM it, wait for it, and return its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def calls(tmp: Path) -> Counter[tuple[str, str]]:
    """How many times each step of each run was called, by (run, step)."""
    try:
        with sqlite3.connect(tmp / "ledger.db", timeout=30) as db:
            rows = db.execute("SELECT run, step FROM calls").fetchall()
    except sqlite3.OperationalError:  # no call yet: no table
        return Counter()
    return Counter((run, step) for run, step in rows)


def records(url: str) -> list[RunRecord]:
    """The runs as stored, read through a store of this process."""

    async def read() -> list[RunRecord]:
        async with opened(url) as store:
            return await store.list_runs(limit=100)

    return asyncio.run(read())


def wait_until(what: str, done: Callable[[], bool], worker: WorkerProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited early:\n{worker.stop()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT}s\n{worker.stop()}")
        time.sleep(0.1)


def start_runs(url: str) -> None:
    with Engine(url) as engine:
        for i in range(RUNS):
            engine.start(identityapp.saga, run_id=f"r{i}")


def all_hanging(tmp: Path) -> Callable[[], bool]:
    return lambda: sum(1 for (_, step) in calls(tmp) if step == "second") == RUNS


def statuses(url: str) -> Counter[RunStatus]:
    return Counter(run.status for run in records(url))


def owners(url: str) -> set[str | None]:
    return {run.owner for run in records(url)}


def completed(url: str) -> Callable[[], bool]:
    return lambda: statuses(url)[RunStatus.COMPLETED] == RUNS


def check_resumed_once(tmp: Path) -> None:
    """The step in flight at the kill ran once more; the steps done before it, never again."""
    found = calls(tmp)
    for i in range(RUNS):
        run = f"r{i}"
        assert (found[run, "first"], found[run, "second"], found[run, "third"]) == (1, 2, 1)


@pytest.mark.parametrize("identity", ["worker-id", "same-host"])
def test_a_restarted_worker_takes_its_runs_back_at_once(
    sql_store_url: str,
    tmp_path: Path,
    identity: str,
) -> None:
    options = ("--worker-id", "orders-1") if identity == "worker-id" else ()
    start_runs(sql_store_url)
    first = WorkerProcess(sql_store_url, tmp_path, "first", *options, hang=True)
    try:
        wait_until("every run inside its second step", all_hanging(tmp_path), first)
    finally:
        first.kill()
    held = owners(sql_store_url)
    assert len(held) == 1
    assert None not in held  # every lease live: five minutes to go
    started = time.monotonic()
    second = WorkerProcess(sql_store_url, tmp_path, "second", *options, hang=False)
    try:
        wait_until("every run completed", completed(sql_store_url), second)
    finally:
        log = second.stop()
    assert time.monotonic() - started < float(LEASE)  # bounded by WAIT, in fact
    check_resumed_once(tmp_path)
    # On the same host the first process is proven gone, with or without an id.
    assert "(a process of this host that is gone) are taken back at once" in log
    if options:
        assert all(owner.startswith("orders-1/") for owner in held if owner)


@pytest.mark.parametrize("identity", ["worker-id", "same-host"])
def test_a_live_worker_of_the_same_host_is_not_doubled(
    sql_store_url: str,
    tmp_path: Path,
    identity: str,
) -> None:
    # Two workers side by side under one identity: the second must leave the
    # first's runs alone while it lives, and take them once it is dead.
    options = ("--worker-id", "orders-1") if identity == "worker-id" else ()
    start_runs(sql_store_url)
    first = WorkerProcess(sql_store_url, tmp_path, "first", *options, hang=True)
    second: WorkerProcess | None = None
    try:
        wait_until("every run inside its second step", all_hanging(tmp_path), first)
        held = owners(sql_store_url)
        second = WorkerProcess(sql_store_url, tmp_path, "second", *options, hang=False)
        # Longer than the second worker's start and its next look for dead processes.
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:
            assert second.proc.poll() is None, second.stop()
            assert owners(sql_store_url) == held
            assert sum(n for (_, step), n in calls(tmp_path).items() if step == "second") == RUNS
            time.sleep(0.2)
        assert statuses(sql_store_url)[RunStatus.COMPLETED] == 0
    finally:
        first.kill()
    assert second is not None
    try:
        wait_until("every run completed once the first died", completed(sql_store_url), second)
    finally:
        log = second.stop()
    check_resumed_once(tmp_path)
    if options:
        assert "worker id orders-1 is also used by" in log


@pytest.mark.parametrize("bad", ["a/b", "two words"])
def test_a_worker_id_that_could_be_misread_is_refused(tmp_path: Path, bad: str) -> None:
    done = sagakit(
        tmp_path,
        "worker",
        "--db",
        f"sqlite:///{tmp_path / 'r.db'}",
        "--app",
        "x",
        "--worker-id",
        bad,
    )
    assert "must be 1 to 100 printable characters" in fails(done, 2)
    done = sagakit(
        tmp_path,
        "worker",
        "--db",
        f"sqlite:///{tmp_path / 'r.db'}",
        "--app",
        "x",
        environ={"SAGAKIT_WORKER_ID": bad},
    )
    assert "--worker-id" in fails(done, 2)

"""Real workers with short leases through a PostgreSQL outage.

A throwaway PostgreSQL cluster of the test's own (initdb, pg_ctl on a port
and a socket directory of its own) is stopped with ``-m immediate`` in the
middle of hundreds of runs, kept down for a while, and started again. Every
run must settle, and no two calls of one idempotency key may ever have run at
the same time: a worker that cannot reach the store to renew a lease stops
starting calls for that run before the lease lapses, so the worker that takes
the run over is the only one calling its step.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sagakit import Engine

from . import outageapp

pytestmark = pytest.mark.slow
APP_DIR = Path(__file__).parent
RUNS = 500
WORKERS = 3
LEASE = 2.0
OUTAGE = 30.0  # long: every commit in flight fails past its patience
BLIP = 2.0  # about a lease: renewals fail while drives may still be between calls


def _bin_dir() -> Path | None:
    """Where PostgreSQL's server programs are: on PATH, or under /usr/lib/postgresql."""
    found = shutil.which("pg_ctl")
    if found is not None:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A PostgreSQL cluster in a temporary directory, on a port of its own."""

    bin: Path
    data: Path
    sockets: Path
    port: int
    log: Path
    as_user: tuple[str, ...]  # runuser -u postgres --, when the tests run as root

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                *args,
            ],
            check=check,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-w", "-o", options, "start")

    def crash(self) -> None:
        """Stop at once, as a crash or a cut network would: no goodbye to any client."""
        self.ctl("-m", "immediate", "stop")


def _unavailable(why: str) -> None:
    """Skip, except under CI=true: there a test that cannot run fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI cannot run this test: {why}")
    pytest.skip(why)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        raise AssertionError("unreachable")
    as_user: tuple[str, ...] = ()
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, and there is no postgres user to run initdb as")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root, and there is no runuser to run initdb with")
            raise AssertionError("unreachable")
        as_user = (runuser, "-u", "postgres", "--")
    # Not pytest's tmp_path: as root, that is a directory the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="sagakit-outage-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "pgdata"
    sockets = base / "sockets"
    subprocess.run([*as_user, "mkdir", str(sockets)], check=True, timeout=10)
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    found = Cluster(bin_dir, data, sockets, _free_port(), base / "postgres.log", as_user)
    try:
        found.start()
        yield found
    finally:
        found.ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


class Worker:
    """A `sagakit worker` subprocess; its output goes to a file (a full pipe would block it)."""

    def __init__(self, url: str, tmp: Path, name: str) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APP_DIR), os.environ.get("PYTHONPATH", "")]),
            "OUTAGE_CALLS": str(tmp / "calls.txt"),
            "STEP_SECONDS": "0.2",
        }
        command = [
            sys.executable,
            "-m",
            "sagakit",
            "worker",
            "--db",
            url,
            "--app",
            "outageapp",
            "--concurrency",
            "10",
            "--lease",
            str(LEASE),
            "--poll",
            "0.2",
            "--grace",
            "10",
        ]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # never leave a process behind, whatever the test did
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)


def _calls(path: Path) -> list[tuple[str, float, float, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        key, started, ended, pid = line.split("\t")
        rows.append((key, float(started), float(ended), int(pid)))
    return rows


def _settled(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM sagakit.runs WHERE status = 'completed' AND owner IS NULL"
        ).fetchone()
        return int(row[0]) if row else 0


def test_short_leases_hold_through_an_outage(
    cluster: Cluster, workers: list[Worker], tmp_path: Path
) -> None:
    # pool_timeout=10 (the default) is longer than the lease: the renewal must
    # not wait on it.
    url = f"{cluster.url}?pool_timeout=10"
    with Engine(url) as engine:
        for i in range(RUNS):
            engine.start(outageapp.saga, {}, run_id=f"r{i}")
    workers.extend(Worker(url, tmp_path, f"w{n}") for n in range(WORKERS))
    calls_file = tmp_path / "calls.txt"
    deadline = time.monotonic() + 60
    while len(_calls(calls_file)) < RUNS // 2:  # a third of the way through
        assert time.monotonic() < deadline, "the workers did not get going"
        assert all(w.proc.poll() is None for w in workers)
        time.sleep(0.05)
    faults: list[tuple[float, float]] = []  # (down, up), by the wall clock
    cluster.crash()
    down_at = time.time()
    time.sleep(OUTAGE)
    cluster.start()
    faults.append((down_at, time.time()))
    deadline = time.monotonic() + 60
    while len(_calls(calls_file)) < RUNS * 2:  # two thirds of the way through
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in workers)
            raise AssertionError(f"the workers did not carry on after the outage\n{logs}")
        time.sleep(0.05)
    cluster.crash()
    down_at = time.time()
    time.sleep(BLIP)
    cluster.start()
    faults.append((down_at, time.time()))
    deadline = time.monotonic() + 90
    while True:
        try:
            if _settled(cluster.url) == RUNS:
                break
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in workers)
            raise AssertionError(f"not every run settled\n{logs}")
        time.sleep(0.2)
    for worker in workers:
        worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.proc.wait(timeout=30) == 0, worker.output()[-3000:]

    by_key: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for key, started, ended, pid in _calls(calls_file):
        by_key[key].append((started, ended, pid))
    assert set(by_key) == {f"r{i}/{s}" for i in range(RUNS) for s in outageapp.STEPS}
    repeated = {key: calls for key, calls in by_key.items() if len(calls) > 1}
    for key, calls in repeated.items():
        calls.sort()
        for (_, first_end, _), (second_start, _, _) in itertools.pairwise(calls):
            assert first_end <= second_start, f"two calls of {key} overlapped: {calls}"
        # A repeat is explained by a call in flight at a fault: the first call
        # ran while the server was down or going down (its success could not
        # be recorded), and it ended before the repeat started.
        first_start, first_end, _ = calls[0]
        assert any(first_start <= up and first_end >= down - LEASE for down, up in faults), (
            key,
            calls,
            faults,
        )
    logs = "\n".join(w.output() for w in workers)
    assert "Traceback" not in logs
    assert "overloaded" not in logs  # the outage is named for what it was
    assert "could not reach the store to renew the leases" in logs
    # The figures, for the record (pytest -s shows them).
    print(
        f"\nruns {RUNS}, outages 2 ({OUTAGE:.0f}s, {BLIP:.0f}s), settled {_settled(cluster.url)}, "
        f"calls {sum(len(c) for c in by_key.values())}, keys repeated {len(repeated)}"
    )

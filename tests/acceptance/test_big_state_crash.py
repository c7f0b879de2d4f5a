"""A process SIGKILLed while it writes a big state, then recovered (SQLite, PostgreSQL).

A big state is written by the keys each commit sets, and whole again now
and then (``sagakit.store.changes``). Wherever the kill lands (in a change,
in a whole write, between the statements of a commit), the run's state as
stored must be the journal's (its first state with every recorded result
applied), and the run, recovered, must end with the state it would have
had without the crash.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit import Engine, EventKind, RunStatus

from . import bigstateapp

APP = Path(__file__).with_name("bigstateapp.py")

pytestmark = pytest.mark.slow


def events_written(url: str) -> int:
    """How many journal events the store holds (0 before its schema exists)."""
    if url.startswith("postgresql"):
        import psycopg

        from sagakit.store.postgresql import parse_url

        base, options = parse_url(url)
        with psycopg.connect(base, autocommit=True) as conn:
            try:
                row = conn.execute(f"SELECT count(*) FROM {options['schema']}.events").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return 0 if row is None else int(row[0])
    path = url.removeprefix("sqlite:///")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def run_app(url: str, *args: str, big: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), *args[:1], url, *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APP.parent), os.environ.get("PYTHONPATH", "")]),
            "BIGSTATE_BIG": "1" if big else "0",
        },
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Fresh storage of each SQL store (PostgreSQL: a schema of its own)."""
    if request.param == "postgresql":
        found: str = request.getfixturevalue("postgres_url")
        return found
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.mark.parametrize(
    ("kill_after", "big"),
    [(40, False), (150, False), (300, False), (420, False), (3, True), (60, True), (300, True)],
)
def test_killed_while_writing_a_big_state_recovers_it(url: str, kill_after: int, big: bool) -> None:
    # big: a state past what SQLite writes with its parts bound on their own
    # (its first write, the write that moves it out of the run's row, and a
    # later one that writes it whole again are each such a write).
    proc = run_app(url, "run", "r1", big=big)
    deadline = time.monotonic() + 60
    while events_written(url) < kill_after:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited before the kill: {proc.communicate()}")
        assert time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    with Engine(url) as engine:
        run = engine.get("r1")
        journal = engine.history("r1")
    assert run.status is RunStatus.RUNNING
    done = [e for e in journal if e.kind is EventKind.STEP_SUCCEEDED]
    assert 0 < len(done) < bigstateapp.STEPS
    # The row as the last commit that landed left it: the journal's state.
    assert run.state == bigstateapp.expected(len(done), big)
    assert journal[0].data["state"] == bigstateapp.initial(big)

    time.sleep(1.2)  # let the dead process's lease lapse
    recovering = run_app(url, "recover", big=big)
    out, err = recovering.communicate(timeout=120)
    assert recovering.returncode == 0, err
    assert "r1 completed" in out
    with Engine(url) as engine:
        run = engine.get("r1")
    assert run.status is RunStatus.COMPLETED
    assert run.state == bigstateapp.expected(bigstateapp.STEPS, big)

"""A real process SIGKILLed inside a local-transaction step, and right after
it committed, then recovered: the step's row exists exactly once either way.

Killed inside the step (after its insert, before it returned): the insert
dies with the transaction, recovery runs the step again (attempt 2), and one
row results. Killed in the next step: the row and the step's success record
were committed together, so recovery does not run the step again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagakit import Engine, Run, RunStatus

from . import localtxapp

APP = Path(__file__).with_name("localtxapp.py")
pytestmark = pytest.mark.slow


class Setup:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.table = f"orgs_{uuid.uuid4().hex[:10]}"
        self.calls = tmp / "calls.txt"
        self.marker = tmp / "hanging"

    def rows(self) -> list[tuple[object, ...]]:
        return localtxapp.sql(self.url, f"SELECT name, run_id FROM {self.table}")

    def called(self) -> Counter[str]:
        """Calls per ``step:attempt``."""
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return Counter(":".join(line.split()[:2]) for line in lines)

    def history(self, run_id: str) -> list[str]:
        with Engine(self.url) as engine:
            return [f"{e.kind}:{e.step}:{e.attempt}" for e in engine.history(run_id)]


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    found = Setup(url, tmp_path)
    localtxapp.sql(url, f"CREATE TABLE {found.table} (name TEXT NOT NULL, run_id TEXT NOT NULL)")
    # What the app reads at each call, for the recovery in this process (which never hangs).
    monkeypatch.setenv("LOCALTX_TABLE", found.table)
    monkeypatch.setenv("LOCALTX_CALLS", str(found.calls))
    monkeypatch.delenv("LOCALTX_HANG", raising=False)
    yield found
    localtxapp.sql(url, f"DROP TABLE IF EXISTS {found.table}")  # PostgreSQL: in public


def run_and_kill(setup: Setup, run_id: str, hang: str) -> None:
    """Run the app until it hangs where told, then SIGKILL it."""
    env = {**os.environ, "LOCALTX_HANG": hang, "LOCALTX_MARKER": str(setup.marker)}
    proc = subprocess.Popen(
        [sys.executable, str(APP), setup.url, run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not setup.marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the app exited early: {proc.communicate()}")
            assert time.monotonic() < deadline, "the app never reached its hang"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()
    assert proc.returncode == -signal.SIGKILL


def recover(setup: Setup) -> list[Run]:
    """Recover in this process as soon as the dead process's 1 s lease lapsed."""
    with Engine(setup.url, lease_seconds=5.0) as engine:
        engine.register(localtxapp.saga)
        deadline = time.monotonic() + 15
        while not (recovered := engine.recover()):
            assert time.monotonic() < deadline, "the dead process's lease never lapsed"
            time.sleep(0.1)
        return recovered


def test_killed_inside_the_local_step_runs_it_again_and_leaves_one_row(setup: Setup) -> None:
    run_and_kill(setup, "r1", "inside")
    assert setup.called() == Counter({"create_org:1": 1})  # it inserted, then hung
    assert setup.rows() == []  # the insert died with the process's transaction
    assert setup.history("r1")[-1] == "step_started:create_org:1"  # no success recorded

    recovered = recover(setup)
    assert [(r.id, r.status) for r in recovered] == [("r1", RunStatus.COMPLETED)]
    assert recovered[0].state == {"org": "acme", "org_created": True, "notified": True}
    assert setup.rows() == [("acme", "r1")]
    assert setup.called() == Counter({"create_org:1": 1, "create_org:2": 1, "notify:1": 1})
    events = setup.history("r1")
    assert events[1:5] == [
        "step_started:create_org:1",
        "step_started:create_org:2",  # a crash is not a failure: no step_failed
        "step_succeeded:create_org:2",
        "step_started:notify:1",
    ]
    assert events[-1] == "run_finished:None:None"


def test_killed_after_the_local_commit_does_not_run_the_local_step_again(
    setup: Setup,
) -> None:
    run_and_kill(setup, "r2", "after")
    assert setup.rows() == [("acme", "r2")]  # committed with the step's record
    before = setup.history("r2")
    assert before[1:] == [
        "step_started:create_org:1",
        "step_succeeded:create_org:1",
        "step_started:notify:1",
    ]

    recovered = recover(setup)
    assert [(r.id, r.status) for r in recovered] == [("r2", RunStatus.COMPLETED)]
    assert setup.rows() == [("acme", "r2")]
    assert setup.called() == Counter({"create_org:1": 1, "notify:1": 1, "notify:2": 1})
    events = setup.history("r2")
    assert [e for e in events if e.startswith("step_started:create_org")] == [
        "step_started:create_org:1"
    ]
    assert events[len(before) :] == [
        "step_started:notify:2",
        "step_succeeded:notify:2",
        "run_finished:None:None",
    ]
